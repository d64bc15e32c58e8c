"""``analysis_columns`` on SQLite: one statement over rowid ranges, read in parallel, and the
latest read kept and extended by what is logged after it (see ``router.outcomes.columns`` for
what the columns are)."""

from __future__ import annotations

import itertools
import math
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from router.outcomes.columns import (
    FLAG_BITS,
    FLAG_CHALLENGER,
    FLAG_ERROR,
    FLAG_FALLBACK,
    FLAG_FORCED,
    FLAG_MASK,
    FLAG_SHADOW,
    ColumnQuestion,
    Columns,
    arm_case,
    flags_columns,
    latest_feedback,
    revision_filter,
    segments_from,
    unit_keys,
)

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
# The flags take the code's low bits; the predicted and the true class ride above them.
_FLAG_SPAN = 1 << FLAG_BITS
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


class _SQLiteQuery(ColumnQuestion):
    """The one statement behind the columns, for any rowid range of the predictions table.

    Every column travels as one ``group_concat`` text that numpy parses at C speed, and as an
    integer where possible: SQLite writes integers as text much faster than REALs. The flags,
    the predicted class and the true class share one integer (``code``).
    """

    def __init__(self, experiment: str, revisions: Sequence[int] | None,
                 classes: Sequence[str] | None, units: bool, true_probability: bool,
                 segments: Sequence[str] = (), arms: Sequence[str] = ()) -> None:
        super().__init__(experiment, revisions, classes, units, true_probability, segments,
                         arms)
        self.fixed_revision = int(revisions[0]) if revisions is not None \
            and len(set(revisions)) == 1 else None
        code = (f"(p.variant = 'challenger') * {FLAG_CHALLENGER} + p.shadow * {FLAG_SHADOW} "
                f"+ p.fallback * {FLAG_FALLBACK} + (p.error IS NOT NULL) * {FLAG_ERROR} "
                f"+ p.forced * {FLAG_FORCED}")
        params: list[Any] = []
        # The true label's index (-1 without feedback, -2 for no class): in the code here, and
        # alone in the query that brings rows read earlier up to date (``updates``).
        self.label_sql = ""
        if self.classes is not None:
            k = len(self.classes) + 1
            self.label_sql = (f"(CASE WHEN f.label IS NULL THEN -1 ELSE "
                              f"{_class_case('f.label', k - 1, -2)} END)")
            code += (f" + {_FLAG_SPAN} * (({_class_case('p.label', k - 1, -1)}) + 1) "
                     f"+ {_FLAG_SPAN * k} * ({self.label_sql} + 2)")
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
        if arms:
            self.columns.append(("arm", arm_case(arms)))
        if self.segments:
            # Each row's logged JSON object as it is, the rows' joined by commas: one parse of
            # the whole text picks the values out. A third of the cost of asking SQLite for
            # them (json_extract per key and row) over 200,000 rows.
            self.columns.append(("segments", "ifnull(p.segments, 'null')"))
        revision_sql, revision_params = revision_filter(revisions, "?")
        self.where = f"p.experiment = ?{revision_sql} AND p.id BETWEEN ? AND ?"
        self.params = params
        self.where_params: list[Any] = [experiment, *revision_params]
        # A plain join, one row per feedback record of the request id: latest_feedback keeps
        # the latest. Cheaper than a subquery for the latest on every row. Feedback is read up
        # to an id fixed at the start, so that later feedback is all left to the next read.
        self.source = ("FROM predictions AS p LEFT JOIN feedback AS f "
                       f"ON f.request_id = p.request_id AND f.id <= ? WHERE {self.where}")
        self.sql = (f"SELECT count(*), "
                    f"{', '.join(f'group_concat({sql})' for _, sql in self.columns)} "
                    f"{self.source}")

    def run(self, conn: sqlite3.Connection, low: int, high: int, max_feedback_id: int
            ) -> Columns:
        """The columns of the rows with ``low <= id <= high``, joined with the feedback of id
        up to ``max_feedback_id``."""
        row = conn.execute(self.sql, [*self.params, max_feedback_id, *self.where_params, low,
                                      high]).fetchone()
        n = int(row[0])
        texts = dict(zip((name for name, _ in self.columns), row[1:], strict=True))
        out: Columns = {}
        unit_ts_text: str | None = None
        for name, text in texts.items():
            if name == "unit_key":
                ids: list[str] = (text or "").split(_UNIT_SEPARATOR) if n else []
                if len(ids) != n:  # a unit id holding the separator: fetch them one by one
                    ids = [r[0] for r in conn.execute(
                        f"SELECT p.unit_id {self.source}",
                        [max_feedback_id, *self.where_params, low, high])]
                out[name] = unit_keys(ids)
            elif name in ("true_probability", "value", "label_value"):
                out[name] = _parse(text, float, n, name)
            elif name == "ts_us" and self.units:
                unit_ts_text = text  # parsed once the unit ids say where the values go
            elif name == "segments":
                out[name] = segments_from(orjson.loads(f"[{text}]") if n else [],
                                          self.segments)
            else:
                out[name] = _parse(text, np.int64, n, name)
        if self.units:
            missing = out["unit_key"] == 0
            ts = np.full(n, math.nan)
            ts[missing] = _parse(unit_ts_text, np.int64, int(missing.sum()), "ts") / 1e6
            out["ts"] = ts
        else:
            out["ts"] = out.pop("ts_us") / 1e6
        return latest_feedback(out)

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
            revision_sql, revision_params = revision_filter(self.revisions, "?")
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
        revision_sql, revision_params = revision_filter(self.revisions, "?")
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
            out["code"][at] = (code[at] & FLAG_MASK) + _FLAG_SPAN * (
                (code[at] >> FLAG_BITS) % k + k * (updates["label"][last] + 2))
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
            **flags_columns(code & FLAG_MASK),
            "latency_ms": raw.pop("latency_ns") / 1e6,
            "feedback_id": raw.pop("feedback_id"),
        }
        if self.classes is not None:
            k = len(self.classes) + 1
            columns["predicted"] = (code >> FLAG_BITS) % k - 1
            columns["label"] = (code >> FLAG_BITS) // k - 2
        columns.update(raw)
        distinct, outside = unknown
        # Distinct by sorting: np.unique hashes, many times slower on a million values.
        matched = np.sort(np.concatenate([columns["feedback_id"], outside.astype(np.int64)]))
        matched = matched[matched >= 0]
        n_matched = int(np.count_nonzero(matched[1:] != matched[:-1])) + 1 if matched.size else 0
        columns["unknown_feedback_ids"] = np.array(distinct - n_matched)
        return columns


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


