"""``analysis_columns``: the outcome log of one experiment as numpy columns, for the statistics.

Every store answers the same question the same way; this module holds the one definition,
the memory store's reference implementation and what the SQL stores share (their queries are in
``sqlite_columns`` and ``postgres_columns``), so that ``/stats`` over a million rows never
builds a record per row. The columns, one entry per logged prediction of the experiment (in the
chosen revisions), the same order for every column: the order the store logged them (by
insertion id; the memory store groups by revision first), which output monitoring relies on
to take the latest predictions:

``ts`` (float, unix seconds, to the microsecond: the time the gateway stamped on the row, the
same for every row of a model call, which may answer many requests: ``router.stats.requests``
tells requests apart), ``revision`` (int), ``challenger``,
``shadow``, ``fallback``, ``error``, ``forced`` (bool), ``latency_ms`` (float, to the
nanosecond) and
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
repeat a request's inputs, and forced requests, which are test traffic).
With ``segments`` (segment key names): ``segments``, an ``(n, len(segments))`` object array
of the value each row carries for each key, in the order asked (``str``, or ``None`` where the
row carries none); equal values are one ``str`` object, so a million rows cost a pointer each.
With ``arms`` (the variants of several challengers, in order): ``arm``, an int per row, the
place of its variant among them counted from 1, and 0 for any other (the champion).
Always:
``unknown_feedback_ids``, a 0-d int array counting the request ids that feedback names and
no prediction of any experiment has.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import orjson

from router.outcomes.records import FeedbackRecord, PredictionRecord

__all__ = [
    "FLAG_BITS", "FLAG_CHALLENGER", "FLAG_ERROR", "FLAG_FALLBACK", "FLAG_FORCED", "FLAG_MASK",
    "FLAG_SHADOW", "AnalysisColumns", "ColumnQuestion", "Columns", "KeptRead", "arm_case",
    "features_array", "features_from_json", "flags_columns", "latest_features_query",
    "latest_feedback", "memory_columns", "revision_filter", "segments_from", "unit_keys",
]

Columns = dict[str, np.ndarray]


class AnalysisColumns(TypedDict, total=False):
    """The analysis columns as the statistics read them: the one definition of their names
    (the module doc says what each holds and when it is there). The stores build them as a
    plain :data:`Columns` dict; ``router.stats``, ``router.monitoring`` and
    ``router.stats.analyze`` read them through this type."""

    ts: np.ndarray
    revision: np.ndarray
    challenger: np.ndarray
    shadow: np.ndarray
    fallback: np.ndarray
    forced: np.ndarray
    error: np.ndarray
    latency_ms: np.ndarray
    feedback_id: np.ndarray
    predicted: np.ndarray
    label: np.ndarray
    true_probability: np.ndarray
    value: np.ndarray
    label_value: np.ndarray
    unit_key: np.ndarray
    features: np.ndarray
    segments: np.ndarray
    arm: np.ndarray
    unknown_feedback_ids: np.ndarray

# Bits of the flags column: one small integer per row instead of five columns to transfer.
FLAG_CHALLENGER, FLAG_SHADOW, FLAG_FALLBACK, FLAG_ERROR, FLAG_FORCED = 1, 2, 4, 8, 16
FLAG_BITS = 5
FLAG_MASK = (1 << FLAG_BITS) - 1


def flags_columns(flags: np.ndarray) -> Columns:
    return {
        "challenger": (flags & FLAG_CHALLENGER) > 0,
        "shadow": (flags & FLAG_SHADOW) > 0,
        "fallback": (flags & FLAG_FALLBACK) > 0,
        "error": (flags & FLAG_ERROR) > 0,
        "forced": (flags & FLAG_FORCED) > 0,
    }


# A variant name inlined in SQL as a string literal: the characters config allows for it.
_ARM_NAME = re.compile(r"[A-Za-z0-9._-]+")


def arm_case(arms: Sequence[str], column: str = "p.variant") -> str:
    """SQL (SQLite and PostgreSQL alike) giving a row's ``arm``: ``column``'s place among
    ``arms`` from 1, else 0. Names are inlined, not bound: each store places its parameters
    differently, and a variant name holds nothing a literal must escape (checked here)."""
    for name in arms:
        if not _ARM_NAME.fullmatch(name):
            raise ValueError(f"arm {name!r}: letters, digits, '.', '_' and '-' only")
    whens = " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(arms, 1))
    return f"(CASE {column} {whens} ELSE 0 END)"


def _empty(classes: Sequence[str] | None, units: bool, true_probability: bool) -> Columns:
    columns: Columns = {
        "ts": np.zeros(0), "revision": np.zeros(0, np.int64),
        **flags_columns(np.zeros(0, np.int64)),
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


def unit_keys(ids: Sequence[str | None]) -> np.ndarray:
    """``hash`` of each unit id, 0 for none (a clash of two 64-bit hashes among a million ids
    has a chance near 1e-7, and only miscounts one unit)."""
    return np.fromiter(map(hash, (i or "" for i in ids)), dtype=np.int64, count=len(ids))


def segments_from(logged: Sequence[Mapping[str, Any] | None], keys: Sequence[str]
                  ) -> np.ndarray:
    """The ``segments`` column of rows whose logged segment objects are ``logged`` (None for a
    row without one): an ``(n, len(keys))`` object array, each distinct value one ``str``
    object (a database hands over one string per row)."""
    out = np.empty((len(logged), len(keys)), dtype=object)
    same: dict[str, str] = {}
    for j, key in enumerate(keys):
        # Not a mapping: no values (a row written by hand, say), rather than a failed read.
        found = [m.get(key) if isinstance(m, dict) else None for m in logged]
        text = [v if v is None or type(v) is str else str(v) for v in found]
        out[:, j] = [v if v is None else same.setdefault(v, v) for v in text]
    return out


def features_array(rows: list[Any], width: int | None = None) -> np.ndarray:
    """Rows of feature lists as a float array; JSON's null (a NaN that was logged) is NaN."""
    if not rows:
        return np.zeros((0, width or 0))
    return np.array(rows, dtype=float)


def latest_features_query(experiment: str, revisions: Sequence[int] | None, limit: int,
                          placeholder: str, *, experiment_sql: str = "p.experiment"
                          ) -> tuple[str, list[Any]]:
    """The query of the ``limit`` latest served rows' ``id`` and ``features`` (their JSON
    text), newest first, for the store to aggregate into one JSON array text, and its
    parameters."""
    revision_sql, revision_params = revision_filter(revisions, placeholder)
    return ("SELECT p.id, p.features FROM predictions AS p "
            f"WHERE {experiment_sql} = {placeholder}{revision_sql} AND p.shadow = 0 "
            f"AND p.fallback = 0 AND p.forced = 0 ORDER BY p.id DESC LIMIT {placeholder}",
            [experiment, *revision_params, int(limit)])


def features_from_json(text: str | None) -> np.ndarray:
    """:func:`features_array` of the rows' features aggregated into one JSON array text (one
    parse instead of one per row); None when there were none."""
    return features_array(orjson.loads(text) if text else [])


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
    segments: Sequence[str] = (),
    arms: Sequence[str] = (),
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
        if segments:
            columns["segments"] = segments_from([], segments)
        if arms:
            columns["arm"] = np.zeros(0, np.int64)
        columns["unknown_feedback_ids"] = np.array(unknown)
        return columns

    index = {c: i for i, c in enumerate(classes or ())}
    joined = [latest.get(r.request_id) for r in rows]
    columns = {
        "ts": np.array([r.ts for r in rows], dtype=float),
        "revision": np.array([r.revision for r in rows], dtype=np.int64),
        **flags_columns(np.array(
            [FLAG_CHALLENGER * (r.variant == "challenger") + FLAG_SHADOW * r.shadow
             + FLAG_FALLBACK * r.fallback + FLAG_ERROR * (r.error is not None)
             + FLAG_FORCED * r.forced for r in rows],
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
        columns["unit_key"] = unit_keys([r.unit_id for r in rows])
        columns["ts"][columns["unit_key"] != 0] = math.nan
    if segments:
        columns["segments"] = segments_from([r.segments for r in rows], segments)
    if feature_rows:
        served = [r for r in predictions if r.experiment == experiment
                  and (wanted is None or r.revision in wanted)
                  and not r.shadow and not r.fallback and not r.forced]
        columns["features"] = features_array(
            [list(r.features) for r in served[-feature_rows:]])
    if arms:
        place = {name: i for i, name in enumerate(arms, 1)}
        columns["arm"] = np.array([place.get(r.variant, 0) for r in rows], dtype=np.int64)
    columns["unknown_feedback_ids"] = np.array(unknown)
    return columns


def _number(prediction: Any) -> float:
    if isinstance(prediction, bool) or not isinstance(prediction, int | float):
        return math.nan
    return float(prediction)


class ColumnQuestion:
    """What a read of the columns asks, as the SQL stores' queries hold it."""

    def __init__(self, experiment: str, revisions: Sequence[int] | None,
                 classes: Sequence[str] | None, units: bool, true_probability: bool,
                 segments: Sequence[str] = (), arms: Sequence[str] = ()) -> None:
        self.classes = None if classes is None else list(classes)
        self.segments = tuple(segments)
        self.arms = tuple(arms)
        self.units = units
        self.true_probability = true_probability and classes is not None
        self.experiment = experiment
        self.revisions = revisions

    @property
    def question(self) -> tuple[Any, ...]:
        """What these columns answer: reads of equal questions can be combined."""
        return (self.experiment, None if self.revisions is None else tuple(self.revisions),
                None if self.classes is None else tuple(self.classes), self.units,
                self.true_probability, self.segments, self.arms)


class KeptRead:
    """A SQL store's latest read of one question, kept so that the next read of the same
    question reads only what was logged since: the raw columns, and the newest prediction and
    feedback ids it saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.question: tuple[Any, ...] | None = None
        self.raw: Columns | None = None
        self.max_prediction_id = 0
        self.max_feedback_id = 0

    def arrays(self) -> list[np.ndarray]:
        """The kept columns (none when nothing is kept)."""
        raw = self.raw
        return [] if raw is None else [v for v in raw.values() if isinstance(v, np.ndarray)]


def revision_filter(revisions: Sequence[int] | None, placeholder: str) -> tuple[str, list[int]]:
    if revisions is None:
        return "", []
    if not revisions:
        return " AND 1 = 0", []
    marks = ", ".join(placeholder for _ in revisions)
    return f" AND p.revision IN ({marks})", [int(r) for r in revisions]



def latest_feedback(out: Columns) -> Columns:
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
