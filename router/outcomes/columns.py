"""``analysis_columns``: the outcome log of one experiment as numpy columns, for the statistics.

Every store answers the same question the same way; this module holds the one definition and
the query behind each store, so that ``/stats`` over a million rows never builds a record per
row. The columns, one entry per logged prediction of the experiment (in the chosen revisions), in
an order the stores do not promise but which is the same for every column:

``ts`` (float, unix seconds, to the microsecond: the time the gateway stamped on the row, the
same for every row of a batch request), ``revision`` (int), ``challenger``,
``shadow``, ``fallback``, ``error`` (bool), ``latency_ms`` (float, to the nanosecond) and
``feedback_id`` (int): the arrival rank of the latest feedback for the row's request id (ranks
grow with arrival, so sorting on them puts the labelled outcomes in the order their labels
came in), or -1 when none has arrived.

With ``classes`` (a classifier's labels as ``str``): ``predicted`` and ``label``, the index in
``classes`` of the predicted label and of the true label, -1 when there is none (an error, no
feedback, feedback with a value instead of a label), and -2 for a true label that is no class.
With ``true_probability`` also ``true_probability``: the probability the model gave the true
label (0.0 for a label that is no class; NaN without a label or without probabilities).
Without ``classes`` (a regressor): ``value`` and ``label_value``, NaN where absent.

With ``units``: ``unit_key``, an int per row naming its sticky unit id (a 64-bit hash of the
id: Python's ``hash`` on SQLite and in memory, the server's ``hashtextextended`` on
PostgreSQL, so comparable within one call only; 0 where the row has none), and
``ts`` only where the unit id is absent (NaN elsewhere): rows are then told apart by unit, and
reading every timestamp would cost a tenth of the whole query. Integers rather than the ids
themselves: the statistics only count distinct units, and a million strings cost more.
With ``feature_rows = k``: ``features``, a ``(<= k, n_features)`` float array of the inputs of
the latest ``k`` answered requests (shadow copies and fallback answers left out, since they
repeat a request's inputs). Always: ``unknown_feedback_ids``, a 0-d int array counting the
request ids that feedback names and no prediction of any experiment has.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from router.outcomes.records import FeedbackRecord, PredictionRecord

__all__ = ["SQLiteColumnCache", "memory_columns", "postgres_columns", "sqlite_columns"]

Columns = dict[str, np.ndarray]

# Bits of the flags column: one small integer per row instead of four columns to transfer.
_CHALLENGER, _SHADOW, _FALLBACK, _ERROR = 1, 2, 4, 8


def _flags_columns(flags: np.ndarray) -> Columns:
    return {
        "challenger": (flags & _CHALLENGER) > 0,
        "shadow": (flags & _SHADOW) > 0,
        "fallback": (flags & _FALLBACK) > 0,
        "error": (flags & _ERROR) > 0,
    }


def _empty(classes: Sequence[str] | None, units: bool, true_probability: bool) -> Columns:
    columns: Columns = {
        "ts": np.zeros(0), "revision": np.zeros(0, np.int64),
        **_flags_columns(np.zeros(0, np.int64)),
        "latency_ms": np.zeros(0), "feedback_id": np.zeros(0, np.int64),
    }
    if classes is not None:
        columns["predicted"] = np.zeros(0, np.int64)
        columns["label"] = np.zeros(0, np.int64)
        if true_probability:
            columns["true_probability"] = np.zeros(0)
    else:
        columns["value"] = np.zeros(0)
        columns["label_value"] = np.zeros(0)
    if units:
        columns["unit_key"] = np.zeros(0, dtype=np.int64)
    return columns


def _unit_keys(ids: Sequence[str | None]) -> np.ndarray:
    """``hash`` of each unit id, 0 for none (a clash of two 64-bit hashes among a million ids
    has a chance near 1e-7, and only miscounts one unit)."""
    return np.fromiter(map(hash, (i or "" for i in ids)), dtype=np.int64, count=len(ids))


def _features_array(rows: list[Any], width: int | None = None) -> np.ndarray:
    """Rows of feature lists as a float array; JSON's null (a NaN that was logged) is NaN."""
    if not rows:
        return np.zeros((0, width or 0))
    return np.array(rows, dtype=float)


# -- memory ------------------------------------------------------------------------------------


def memory_columns(
    predictions: Sequence[PredictionRecord],
    feedback: Sequence[FeedbackRecord],
    experiment: str,
    revisions: Sequence[int] | None = None,
    *,
    classes: Sequence[str] | None = None,
    units: bool = False,
    true_probability: bool = False,
    feature_rows: int = 0,
) -> Columns:
    """The columns of records held in memory (a loop per record: for tests and small logs)."""
    latest: dict[str, tuple[int, FeedbackRecord]] = {}
    for rank, record in enumerate(feedback):
        latest[record.request_id] = (rank, record)
    predicted_ids = {r.request_id for r in predictions}
    unknown = sum(1 for request_id in latest if request_id not in predicted_ids)
    wanted = None if revisions is None else set(revisions)
    rows = sorted(
        (r for r in predictions
         if r.experiment == experiment and (wanted is None or r.revision in wanted)),
        key=lambda r: r.revision)  # stable: insertion order within a revision
    if not rows:
        columns = _empty(classes, units, true_probability)
        if feature_rows:
            columns["features"] = np.zeros((0, 0))
        columns["unknown_feedback_ids"] = np.array(unknown)
        return columns

    index = {c: i for i, c in enumerate(classes or ())}
    joined = [latest.get(r.request_id) for r in rows]
    columns = {
        "ts": np.array([r.ts for r in rows], dtype=float),
        "revision": np.array([r.revision for r in rows], dtype=np.int64),
        **_flags_columns(np.array(
            [_CHALLENGER * (r.variant == "challenger") + _SHADOW * r.shadow
             + _FALLBACK * r.fallback + _ERROR * (r.error is not None) for r in rows],
            dtype=np.int64)),
        "latency_ms": np.array([r.latency_ms for r in rows], dtype=float),
        "feedback_id": np.array([-1 if j is None else j[0] for j in joined], dtype=np.int64),
    }
    if classes is not None:
        labels = [None if j is None else j[1].label for j in joined]
        columns["predicted"] = np.array(
            [-1 if r.prediction is None else index.get(str(r.prediction), -1) for r in rows],
            dtype=np.int64)
        columns["label"] = np.array(
            [-1 if label is None else index.get(label, -2) for label in labels], dtype=np.int64)
        if true_probability:
            columns["true_probability"] = np.array(
                [math.nan if label is None or r.probabilities is None
                 else float(r.probabilities.get(label, 0.0))
                 for r, label in zip(rows, labels, strict=True)], dtype=float)
    else:
        columns["value"] = np.array(
            [_number(r.prediction) for r in rows], dtype=float)
        columns["label_value"] = np.array(
            [math.nan if j is None or j[1].value is None else j[1].value for j in joined],
            dtype=float)
    if units:
        columns["unit_key"] = _unit_keys([r.unit_id for r in rows])
        columns["ts"][columns["unit_key"] != 0] = math.nan
    if feature_rows:
        served = [r for r in predictions if r.experiment == experiment
                  and (wanted is None or r.revision in wanted)
                  and not r.shadow and not r.fallback]
        columns["features"] = _features_array(
            [list(r.features) for r in served[-feature_rows:]])
    columns["unknown_feedback_ids"] = np.array(unknown)
    return columns


def _number(prediction: Any) -> float:
    if isinstance(prediction, bool) or not isinstance(prediction, int | float):
        return math.nan
    return float(prediction)


# -- SQLite ------------------------------------------------------------------------------------

# Above this many rows the query is split by rowid range over several connections at once:
# sqlite3 lets go of the GIL while a statement runs, so each range gets its own core.
_PARALLEL_ROWS = 200_000
_WORKERS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                        else os.cpu_count() or 1))
_MMAP_BYTES = 1 << 30
# Above this much new feedback since the kept read, reading everything again is cheaper than
# fetching the updates one row at a time.
_MAX_UPDATES = 100_000
_UNIT_SEPARATOR = "\x1f"
# Unknown ids by difference: feedback's distinct request ids, less those some prediction
# matched, named by their latest feedback row. The phase's predictions bring their matches in
# the main query; this one finds the others' (cheaply: the index covers its WHERE).
_FEEDBACK_IDS_SQL = "SELECT count(DISTINCT request_id) FROM feedback"
_OUTSIDE_MATCHES_SQL = (
    "SELECT count(*), group_concat((SELECT max(g.id) FROM feedback AS g "
    "WHERE g.request_id = p.request_id)) FROM predictions AS p WHERE {}")


def _class_case(column: str, n_classes: int, otherwise: int) -> str:
    """SQL giving the index of ``column`` among ``n_classes`` bound parameters."""
    whens = " ".join(f"WHEN ? THEN {i}" for i in range(n_classes))
    return f"CASE {column} {whens} ELSE {otherwise} END"


def _revision_filter(revisions: Sequence[int] | None, placeholder: str) -> tuple[str, list[int]]:
    if revisions is None:
        return "", []
    if not revisions:
        return " AND 1 = 0", []
    marks = ", ".join(placeholder for _ in revisions)
    return f" AND p.revision IN ({marks})", [int(r) for r in revisions]


class _SQLiteQuery:
    """The one statement behind the columns, for any rowid range of the predictions table.

    Every column travels as one ``group_concat`` text that numpy parses at C speed, and as an
    integer where possible: SQLite writes integers as text much faster than REALs. The flags,
    the predicted class and the true class share one integer (``code``).
    """

    def __init__(self, experiment: str, revisions: Sequence[int] | None,
                 classes: Sequence[str] | None, units: bool, true_probability: bool) -> None:
        self.classes = None if classes is None else list(classes)
        self.units = units
        self.true_probability = true_probability and classes is not None
        self.experiment = experiment
        self.revisions = revisions
        self.fixed_revision = int(revisions[0]) if revisions is not None \
            and len(set(revisions)) == 1 else None
        code = (f"(p.variant = 'challenger') * {_CHALLENGER} + p.shadow * {_SHADOW} "
                f"+ p.fallback * {_FALLBACK} + (p.error IS NOT NULL) * {_ERROR}")
        params: list[Any] = []
        # The true label's index (-1 without feedback, -2 for no class): in the code here, and
        # alone in the query that brings rows read earlier up to date (``updates``).
        self.label_sql = ""
        if self.classes is not None:
            k = len(self.classes) + 1
            self.label_sql = (f"(CASE WHEN f.label IS NULL THEN -1 ELSE "
                              f"{_class_case('f.label', k - 1, -2)} END)")
            code += (f" + 16 * (({_class_case('p.label', k - 1, -1)}) + 1) + {16 * k} * ("
                     f"{self.label_sql} + 2)")
            params += [*self.classes, *self.classes]
        # (name, SQL); NULLs are skipped by group_concat, which ts uses on purpose below.
        self.columns: list[tuple[str, str]] = [
            ("pid", "p.id"),
            ("code", code),
            ("latency_ns", "CAST(p.latency_ms * 1000000 AS INTEGER)"),
            ("feedback_id", "ifnull(f.id, -1)"),
        ]
        if self.fixed_revision is None:
            self.columns.append(("revision", "p.revision"))
        # The statistics need a row's time only to tell requests apart where it has no unit id.
        ts = "CAST(round(p.ts * 1000000) AS INTEGER)"
        self.columns.append(("ts_us", f"CASE WHEN p.unit_id IS NULL THEN {ts} END"
                             if units else ts))
        # The predicted label's probability is at hand when the prediction was right; only
        # wrong ones need the JSON. A label holding '"' cannot be written as a JSON path.
        self.true_probability_sql = """ifnull(CASE
            WHEN f.label IS NULL OR p.probabilities IS NULL THEN NULL
            WHEN p.label = f.label THEN p.probability
            WHEN instr(f.label, '"') > 0 THEN NULL
            ELSE ifnull(json_extract(p.probabilities, '$."' || f.label || '"'), 0.0)
            END, 'nan')"""
        if self.true_probability:
            self.columns.append(("true_probability", self.true_probability_sql))
        if self.classes is None:
            self.columns.append(("value", "ifnull(p.value, 'nan')"))
            self.columns.append(("label_value", "ifnull(f.value, 'nan')"))
        if units:
            self.columns.append(("unit_key",
                                 f"ifnull(p.unit_id, ''), char({ord(_UNIT_SEPARATOR)})"))
        revision_sql, revision_params = _revision_filter(revisions, "?")
        self.where = f"p.experiment = ?{revision_sql} AND p.id BETWEEN ? AND ?"
        self.params = params
        self.where_params: list[Any] = [experiment, *revision_params]
        # A plain join, one row per feedback record of the request id: _latest_feedback keeps
        # the latest. Cheaper than a subquery for the latest on every row. Feedback is read up
        # to an id fixed at the start, so that later feedback is all left to the next read.
        self.source = ("FROM predictions AS p LEFT JOIN feedback AS f "
                       f"ON f.request_id = p.request_id AND f.id <= ? WHERE {self.where}")
        self.sql = (f"SELECT count(*), "
                    f"{', '.join(f'group_concat({sql})' for _, sql in self.columns)} "
                    f"{self.source}")

    @property
    def question(self) -> tuple[Any, ...]:
        """What these columns answer: reads of equal questions can be combined."""
        return (self.experiment, None if self.revisions is None else tuple(self.revisions),
                None if self.classes is None else tuple(self.classes), self.units,
                self.true_probability)

    def run(self, conn: sqlite3.Connection, low: int, high: int, max_feedback_id: int
            ) -> Columns:
        """The columns of the rows with ``low <= id <= high``, joined with the feedback of id
        up to ``max_feedback_id``."""
        row = conn.execute(self.sql, [*self.params, max_feedback_id, *self.where_params, low,
                                      high]).fetchone()
        n = int(row[0])
        texts = dict(zip((name for name, _ in self.columns), row[1:], strict=True))
        out: Columns = {}
        for name, text in texts.items():
            if name == "unit_key":
                ids: list[str] = (text or "").split(_UNIT_SEPARATOR) if n else []
                if len(ids) != n:  # a unit id holding the separator: fetch them one by one
                    ids = [r[0] for r in conn.execute(
                        f"SELECT p.unit_id {self.source}",
                        [max_feedback_id, *self.where_params, low, high])]
                out[name] = _unit_keys(ids)
            elif name in ("true_probability", "value", "label_value"):
                out[name] = _parse(text, float, n, name)
            elif name == "ts_us" and self.units:
                out[name] = text  # parsed once the unit ids say where the values go
            else:
                out[name] = _parse(text, np.int64, n, name)
        if self.units:
            missing = out["unit_key"] == 0
            ts = np.full(n, math.nan)
            ts[missing] = _parse(out.pop("ts_us"), np.int64, int(missing.sum()), "ts") / 1e6
            out["ts"] = ts
        else:
            out["ts"] = out.pop("ts_us") / 1e6
        return _latest_feedback(out)

    def unknown_ids(self, conn: sqlite3.Connection) -> tuple[int, np.ndarray]:
        """Feedback's distinct request ids, and the latest feedback rows that predictions
        outside these revisions matched."""
        (distinct,) = conn.execute(_FEEDBACK_IDS_SQL).fetchone()
        revisions = sorted(set(self.revisions or ()))
        if revisions and revisions == list(range(revisions[0], revisions[-1] + 1)):
            # A phase is a run of consecutive revisions: ranges the index seeks to directly,
            # where NOT (...) would walk every index entry of the experiment.
            where = ("p.experiment < ? OR p.experiment > ? OR (p.experiment = ? "
                     "AND (p.revision < ? OR p.revision > ?))")
            params: list[Any] = [self.experiment] * 3 + [revisions[0], revisions[-1]]
        else:
            revision_sql, revision_params = _revision_filter(self.revisions, "?")
            where, params = f"NOT (p.experiment = ?{revision_sql})", [self.experiment,
                                                                       *revision_params]
        n, text = conn.execute(_OUTSIDE_MATCHES_SQL.format(where), params).fetchone()
        matched = np.fromstring(text or "", dtype=np.int64, sep=",") if n else np.zeros(0)
        return int(distinct), matched

    def updates(self, conn: sqlite3.Connection, after_feedback_id: int, max_feedback_id: int,
                max_prediction_id: int) -> Columns:
        """What feedback of id in ``(after_feedback_id, max_feedback_id]`` says about the rows of
        id up to ``max_prediction_id`` (read before): per matched row its ``pid``, the new
        ``feedback_id`` and the true label's index, probability or value. The latest feedback
        of a row comes last. Few rows (what arrived since the last read), so plain fetches."""
        select = ["p.id", "f.id"]
        params: list[Any] = []
        # Numbers as text, as group_concat hands them to run(): the same digits either way.
        if self.classes is not None:
            select.append(self.label_sql)
            params += self.classes
            if self.true_probability:
                select.append(f"CAST({self.true_probability_sql} AS TEXT)")
        else:
            select.append("CAST(ifnull(f.value, 'nan') AS TEXT)")
        revision_sql, revision_params = _revision_filter(self.revisions, "?")
        # The new feedback drives (CROSS JOIN keeps it the outer loop) and each of its rows
        # finds its predictions by request id; the unary + keeps SQLite off the experiment
        # index, which would walk every prediction of the experiment per feedback row.
        rows = conn.execute(
            f"SELECT {', '.join(select)} FROM feedback AS f CROSS JOIN predictions AS p "
            "ON p.request_id = f.request_id WHERE f.id > ? AND f.id <= ? AND +p.id <= ? "
            f"AND +p.experiment = ?{revision_sql.replace('p.revision', '+p.revision')} "
            "ORDER BY f.id",
            [*params, after_feedback_id, max_feedback_id, max_prediction_id, self.experiment,
             *revision_params]).fetchall()
        values = list(zip(*rows, strict=True)) if rows else [()] * len(select)
        out: Columns = {"pid": np.array(values[0], dtype=np.int64),
                        "feedback_id": np.array(values[1], dtype=np.int64)}
        if self.classes is not None:
            out["label"] = np.array(values[2], dtype=np.int64)
            if self.true_probability:
                out["true_probability"] = np.array(values[3], dtype=float)
        else:
            out["label_value"] = np.array(values[2], dtype=float)
        return out

    def apply(self, raw: Columns, updates: Columns) -> Columns:
        """``raw`` (sorted by ``pid``) with each updated row's latest feedback in place."""
        if not updates["pid"].size:
            return raw
        # The last update of each row wins: updates come in feedback order.
        pid = updates["pid"]
        order = np.lexsort((updates["feedback_id"], pid))
        last = order[np.r_[pid[order][1:] != pid[order][:-1], True]]
        at = np.searchsorted(raw["pid"], pid[last])
        out = dict(raw)
        out["feedback_id"] = raw["feedback_id"].copy()
        out["feedback_id"][at] = updates["feedback_id"][last]
        if self.classes is not None:
            k = len(self.classes) + 1
            code = raw["code"]
            out["code"] = code.copy()
            out["code"][at] = (code[at] & 15) + 16 * ((code[at] >> 4) % k
                                                      + k * (updates["label"][last] + 2))
        for name in ("true_probability", "label_value"):
            if name in updates:
                out[name] = raw[name].copy()
                out[name][at] = updates[name][last]
        return out

    def finish(self, parts: list[Columns], unknown: tuple[int, np.ndarray]) -> Columns:
        raw = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        raw.pop("pid")
        code = raw.pop("code")
        n = code.size
        columns: Columns = {
            "ts": raw.pop("ts"),
            "revision": raw.pop("revision") if self.fixed_revision is None
            else np.full(n, self.fixed_revision, dtype=np.int64),
            **_flags_columns(code & 15),
            "latency_ms": raw.pop("latency_ns") / 1e6,
            "feedback_id": raw.pop("feedback_id"),
        }
        if self.classes is not None:
            k = len(self.classes) + 1
            columns["predicted"] = (code >> 4) % k - 1
            columns["label"] = (code >> 4) // k - 2
        columns.update(raw)
        distinct, outside = unknown
        # Distinct by sorting: np.unique hashes, many times slower on a million values.
        matched = np.sort(np.concatenate([columns["feedback_id"], outside.astype(np.int64)]))
        matched = matched[matched >= 0]
        n_matched = int(np.count_nonzero(matched[1:] != matched[:-1])) + 1 if matched.size else 0
        columns["unknown_feedback_ids"] = np.array(distinct - n_matched)
        return columns


def _latest_feedback(out: Columns) -> Columns:
    """Keep, of the rows a prediction got from a plain join (one per feedback record for its
    request id), the one with the latest feedback.

    A LEFT JOIN keeps its left table as SQLite's outer loop, so the rows of one prediction
    come together: a run of equal ``pid``. A plain join and this pass cost less than asking
    SQLite for the latest feedback of every row in a subquery.
    """
    pid = out["pid"]
    if pid.size < 2:
        return out
    starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
    if starts.size == pid.size:
        return out
    run = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, pid.size]))
    fid = out["feedback_id"]
    keep = fid == np.maximum.reduceat(fid, starts)[run]
    return {name: values[keep] for name, values in out.items()}


def _parse(text: str | None, dtype: Any, n: int, name: str) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=dtype)
    values = np.fromstring(text or "", dtype=dtype, sep=",")
    if values.size != n:
        raise ValueError(f"analysis column {name}: {values.size} values for {n} rows")
    return values


def _ranges(low: int, high: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(low, high + 1, parts + 1).astype(np.int64)
    return [(int(a), int(b) - 1) for a, b in itertools.pairwise(edges.tolist()) if b > a]


class SQLiteColumnCache:
    """The raw columns of the latest question asked of one SQLite file, kept so that the next
    read of the same question reads only what was logged since.

    Predictions and feedback are only ever appended, with growing ids: rows read before keep
    their values except for the feedback joined to them, and feedback newer than the last read
    is matched to them by one small query (``_SQLiteQuery.updates``). Over a million logged
    predictions a read then costs what the new rows and the statistics cost, not the whole
    log again. One question is kept (what ``/stats`` asks), about 60 bytes per row.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.question: tuple[Any, ...] | None = None
        self.raw: Columns | None = None
        self.max_prediction_id = 0
        self.max_feedback_id = 0

    def keep(self, question: tuple[Any, ...], raw: Columns, max_prediction_id: int,
             max_feedback_id: int) -> None:
        self.question, self.raw = question, raw
        self.max_prediction_id, self.max_feedback_id = max_prediction_id, max_feedback_id

    def answers(self, question: tuple[Any, ...], max_prediction_id: int,
                max_feedback_id: int) -> bool:
        """True when the kept read is of ``question``, the log has only grown since, and not
        by so much that reading it all again would cost less (feedback since then is fetched
        row by row)."""
        return (self.raw is not None and self.question == question
                and self.max_prediction_id <= max_prediction_id
                and self.max_feedback_id <= max_feedback_id
                and max_feedback_id - self.max_feedback_id <= _MAX_UPDATES)


def _by_pid(raw: Columns) -> Columns:
    pid = raw["pid"]
    if pid.size < 2 or bool((pid[1:] > pid[:-1]).all()):
        return raw
    order = np.argsort(pid, kind="stable")
    return {name: values[order] for name, values in raw.items()}


def sqlite_columns(
    conn: sqlite3.Connection,
    path: Path,
    experiment: str,
    revisions: Sequence[int] | None = None,
    *,
    classes: Sequence[str] | None = None,
    units: bool = False,
    true_probability: bool = False,
    feature_rows: int = 0,
    timeout_s: float = 10.0,
    cache: SQLiteColumnCache | None = None,
) -> Columns:
    """The columns from a SQLite file: one pass joined with the latest feedback per request.

    A large table is read in rowid ranges on several connections of its own at once, while
    another one counts the unknown feedback ids; ``conn`` (the caller's) reads the bounds and
    the latest features. With a ``cache`` that holds an earlier read of the same question, only
    the rows and the feedback logged since are read (see :class:`SQLiteColumnCache`).
    """
    query = _SQLiteQuery(experiment, revisions, classes, units, true_probability)

    def on_own_connection(task: Callable[[sqlite3.Connection], Any]) -> Any:
        side = sqlite3.connect(path, timeout=timeout_s)
        try:
            # Read through a memory map, not a read() per page: a tenth less time over a large
            # log. Only these short-lived reading connections use it.
            side.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
            return task(side)
        finally:
            side.close()

    with cache.lock if cache is not None else contextlib.nullcontext():
        # The bounds first: rows and feedback committed later are left to the next read.
        low, high, max_feedback = conn.execute(
            "SELECT ifnull(min(id), 1), ifnull(max(id), 0), "
            "(SELECT ifnull(max(id), 0) FROM feedback) FROM predictions").fetchone()
        if cache is not None and cache.answers(query.question, high, max_feedback):
            assert cache.raw is not None
            before = cache.raw
            raw = query.apply(before, on_own_connection(lambda c: query.updates(
                c, cache.max_feedback_id, max_feedback, cache.max_prediction_id)))
            if high > cache.max_prediction_id:
                new = on_own_connection(
                    lambda c: query.run(c, cache.max_prediction_id + 1, high, max_feedback))
                raw = {name: np.concatenate([raw[name], values])
                       for name, values in _by_pid(new).items()}
            unknown = on_own_connection(query.unknown_ids)
        else:
            ranges = _ranges(low, high, _WORKERS if high - low + 1 >= _PARALLEL_ROWS else 1) \
                or [(low, high)]
            with ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="stats") as pool:
                unknown_future = pool.submit(on_own_connection, query.unknown_ids)
                others = [pool.submit(on_own_connection,
                                      lambda c, r=r: query.run(c, *r, max_feedback))
                          for r in ranges[1:]]
                first = on_own_connection(lambda c: query.run(c, *ranges[0], max_feedback))
                parts = [first, *(f.result() for f in others)]
                unknown = unknown_future.result()
            raw = _by_pid({name: np.concatenate([p[name] for p in parts]) for name in parts[0]})
        if cache is not None:
            cache.keep(query.question, raw, high, max_feedback)
    columns = query.finish([raw], unknown)
    if feature_rows:
        columns["features"] = _sqlite_features(conn, experiment, revisions, feature_rows)
    return columns


def _sqlite_features(conn: sqlite3.Connection, experiment: str,
                     revisions: Sequence[int] | None, limit: int) -> np.ndarray:
    revision_sql, revision_params = _revision_filter(revisions, "?")
    # One JSON text for all rows: one parse instead of one per row. The unary + keeps SQLite
    # on the rowid order (newest first, stopping after ``limit``) rather than the index.
    (text,) = conn.execute(
        "SELECT '[' || group_concat(features) || ']' FROM (SELECT p.features FROM predictions "
        f"AS p WHERE +p.experiment = ?{revision_sql} AND p.shadow = 0 AND p.fallback = 0 "
        "ORDER BY p.id DESC LIMIT ?)", [experiment, *revision_params, int(limit)]).fetchone()
    return _features_array(orjson.loads(text) if text else [])


# -- PostgreSQL --------------------------------------------------------------------------------


def _packed_columns(conn: Any, select: Sequence[tuple[str, str, str]], source: str,
                    params: Sequence[Any]) -> Columns:
    """The ``(name, kind, expression)`` columns of ``SELECT ... source`` as numpy arrays.

    The server packs every row into bytes (each value big-endian, 8 bytes: ``int8send`` for
    kind ``i``, ``float8send`` for ``f``) and all rows into one ``bytea``, which numpy reads
    in one call. A million rows as Python tuples, or as COPY messages read one per row, cost
    the client several times what the query itself costs.
    """
    send = {"i": "int8send", "f": "float8send"}
    row = " || ".join(f"{send[kind]}({expression})" for _, kind, expression in select)
    (packed,) = conn.execute(f"SELECT string_agg({row}, ''::bytea) {source}",
                             params).fetchone()
    dtype = np.dtype([(name, f">{kind}8") for name, kind, _ in select])
    rows = np.frombuffer(packed or b"", dtype=dtype)
    return {name: rows[name].astype(rows[name].dtype.newbyteorder("=")) for name in dtype.names}


def postgres_columns(
    conn: Any,
    experiment: str,
    revisions: Sequence[int] | None = None,
    *,
    classes: Sequence[str] | None = None,
    units: bool = False,
    true_probability: bool = False,
    feature_rows: int = 0,
    unknown_ids: Callable[[], int] | None = None,
) -> Columns:
    """The columns from PostgreSQL over the psycopg connection ``conn``: the join and the class
    lookups run in the server and the rows come back packed in one binary value.

    As on SQLite, the join keeps every feedback record of a request id (a hash join, where the
    latest per id would need a sort of the whole feedback table) and numpy keeps the latest.
    ``unknown_ids`` counts feedback naming no prediction, on another connection meanwhile
    (it is the slower half); without it, it runs on ``conn`` after the rest.
    """
    revision_sql, revision_params = _revision_filter(revisions, "%s")
    select = [
        ("pid", "i", "p.id"),
        ("ts", "f", "p.ts"),
        ("revision", "i", "p.revision::int8"),
        ("flags", "i", f"((p.variant = 'challenger')::int * {_CHALLENGER} + p.shadow * "
                       f"{_SHADOW} + p.fallback * {_FALLBACK} + (p.error IS NOT NULL)::int * "
                       f"{_ERROR})::int8"),
        ("latency_ms", "f", "p.latency_ms"),
        ("feedback_id", "i", "coalesce(f.id, -1)"),
    ]
    params: list[Any] = []
    if classes is not None:
        select += [("predicted", "i",
                    "coalesce(array_position(%s::text[], p.label) - 1, -1)::int8"),
                   ("label", "i", "(CASE WHEN f.label IS NULL THEN -1 "
                    "ELSE coalesce(array_position(%s::text[], f.label) - 1, -2) END)::int8")]
        params += [list(classes), list(classes)]
        if true_probability:
            select.append((
                "true_probability", "f",
                "CASE WHEN f.label IS NULL OR p.probabilities IS NULL THEN 'NaN'::float8 "
                "WHEN p.label = f.label THEN p.probability "
                "ELSE coalesce((p.probabilities::jsonb ->> f.label)::float8, 0.0) END"))
    else:
        select += [("value", "f", "coalesce(p.value, 'NaN')"),
                   ("label_value", "f", "coalesce(f.value, 'NaN')")]
    if units:
        # A 64-bit hash of the id in the server: the statistics only count distinct units.
        select.append(("unit_key", "i", "coalesce(hashtextextended(p.unit_id, 0), 0)"))
    source = ("FROM predictions AS p LEFT JOIN feedback AS f ON f.request_id = p.request_id "
              f"WHERE p.experiment = %s{revision_sql}")
    with conn.transaction():
        # The join hashes the feedback table: in memory, not in batches on disk.
        conn.execute("SET LOCAL work_mem = '256MB'")
        raw = _packed_columns(conn, select, source, [*params, experiment, *revision_params])
    order = np.argsort(raw["pid"], kind="stable")  # the rows of a prediction together
    raw = _latest_feedback({name: values[order] for name, values in raw.items()})
    raw.pop("pid")
    columns = {"ts": raw.pop("ts"), "revision": raw.pop("revision"),
               **_flags_columns(raw.pop("flags")), **raw}
    if units and columns["ts"].size:
        columns["ts"][columns["unit_key"] != 0] = math.nan
    if feature_rows:
        found = conn.execute(
            f"SELECT p.features FROM predictions AS p WHERE p.experiment = %s{revision_sql} "
            "AND p.shadow = 0 AND p.fallback = 0 ORDER BY p.id DESC LIMIT %s",
            [experiment, *revision_params, int(feature_rows)]).fetchall()
        columns["features"] = _features_array([orjson.loads(r[0]) for r in found])
    columns["unknown_feedback_ids"] = np.array(
        unknown_ids() if unknown_ids is not None else postgres_unknown_ids(conn))
    return columns


def postgres_unknown_ids(conn: Any) -> int:
    """The request ids that feedback names and no prediction of any experiment has."""
    with conn.transaction():
        conn.execute("SET LOCAL work_mem = '256MB'")
        (unknown,) = conn.execute(
            "SELECT count(*) FROM (SELECT DISTINCT request_id FROM feedback) AS g "
            "WHERE NOT EXISTS (SELECT 1 FROM predictions AS p "
            "WHERE p.request_id = g.request_id)").fetchone()
    return int(unknown)
