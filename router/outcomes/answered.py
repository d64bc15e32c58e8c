"""What the gateway hands to the outcome log, as the model answered it: no
``PredictionRecord`` per row on the core that serves.

- ``AnsweredBatch``: one model call's answer, handed over by the model's batcher: the batch's
  arrays once, and the ``Asked`` tuples its requests gave the batcher, as columns
  (:func:`answered_batch`). :mod:`router.outcomes.batch_packing` packs it for the pipe to the
  writer process.
- ``AnsweredRows``: one request's rows, logged alone (a failed call, a shadow copy);
  :func:`hand` encodes it as one JSON bytes object where it is made (one C call).

The per-row work (feature texts, probability dicts, the probability of the predicted label)
happens where the rows are written, in the writer process, off the core that serves:
:func:`store_rows_of_batch` (a batch's rows as the store writes them), :func:`records_of_handed`,
or :func:`records_of_batch` and :func:`records_of` for a writer in the serving process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from router.outcomes.records import PredictionRecord
from router.outcomes.rows import StoreRow, prediction_columns, to_json

_NAN = float("nan")

__all__ = ["AnsweredBatch", "AnsweredRows", "Asked", "Handed", "ModelTag", "answered_batch",
           "hand", "records_of", "records_of_batch", "records_of_handed", "row_count",
           "store_rows_of_batch"]


class ModelTag(NamedTuple):
    """Who answered: the same for every request a variant of one snapshot answers, so the
    gateway builds it once per snapshot and every request shares it (and a pickled batch
    names it once)."""

    experiment: str
    revision: int
    variant: str
    model: str  # the name the YAML serves it under
    version: str
    classes: tuple[str, ...] | None  # the probability columns' class names, as str


class AnsweredRows(NamedTuple):
    """One request's rows as answered (or failed): the fields of ``PredictionRecord`` that are
    the same for all its rows, once, and its rows as arrays.

    ``labels`` is ``None`` when the model failed (``error`` says how); ``probabilities`` is
    ``(n_rows, n_classes)`` in ``tag.classes`` order, or ``None``. The arrays are kept last so
    that :func:`pack` can cut them off.
    """

    row_ids: list[str]
    ts: float
    tag: ModelTag
    labels: list[Any] | None
    latency_ms: float
    shadow: bool
    unit_id: str | None
    error: str | None
    fallback: bool
    forced: bool
    segments: dict[str, str] | None
    features: np.ndarray  # (n_rows, n_features)
    probabilities: np.ndarray | None


_HEAD = len(AnsweredRows._fields) - 2  # the fields before the two arrays
_FLOAT = np.dtype(np.float64)
_NUMBERS = "biuf"  # numpy dtype kinds
# Labels JSON carries back as the same value, so the store writes the same str() of it: a
# tuple would come back a list, an enum its value; such labels travel as they are.
_PLAIN_LABELS = frozenset({str, int, float, bool})
_JSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_SUBCLASS
_dumps = orjson.dumps


# One request's rows as the writer process is sent them: who answered, how many rows, and the
# rest as JSON bytes (or, for values JSON would change, the ``AnsweredRows`` itself). A plain
# tuple: a named tuple's constructor is a Python call, on the request path.
Handed = tuple[ModelTag, int, "bytes | AnsweredRows"]


def row_count(entries: Iterable[Handed]) -> int:
    return sum(entry[1] for entry in entries)


def hand(answered: AnsweredRows) -> Handed:
    """``answered`` encoded where it was made, while its objects are in the core's cache, so
    that the hand-over thread reads one bytes object per request instead of a dozen objects
    gone cold (docs/performance.md, "Where logging's cost goes")."""
    (row_ids, ts, tag, labels, latency_ms, shadow, unit_id, error, fallback, forced, segments,
     features, probabilities) = answered
    if labels is None or (len(labels) == 1 and type(labels[0]) in _PLAIN_LABELS) \
            or _PLAIN_LABELS.issuperset(map(type, labels)):
        features = _floats(features)
        probabilities = None if probabilities is None else _floats(probabilities)
        try:
            return tag, len(row_ids), _dumps(
                (row_ids, ts, labels, latency_ms, shadow, unit_id, error, fallback, forced,
                 segments, features, probabilities), option=_JSON)
        except TypeError:  # an array orjson takes only as lists (not contiguous, objects)
            pass
        try:
            return tag, len(row_ids), _dumps(
                (row_ids, ts, labels, latency_ms, shadow, unit_id, error, fallback, forced,
                 segments, features.tolist(),
                 None if probabilities is None else probabilities.tolist()), option=_JSON)
        except TypeError:  # a value JSON has no form for: a huge int, an object
            pass
    return tag, len(row_ids), answered


def records_of_handed(handed: Handed) -> list[PredictionRecord]:
    """The records of one handed request."""
    tag, _, payload = handed
    if not isinstance(payload, bytes):
        return records_of(payload)
    (row_ids, ts, labels, latency_ms, shadow, unit_id, error, fallback, forced, segments,
     features, probabilities) = orjson.loads(payload)
    if probabilities is not None:
        # JSON has no NaN: orjson writes it (and an infinity) as null.
        probabilities = [[_NAN if p is None else p for p in row] if None in row else row
                         for row in probabilities]
    return _records((row_ids, ts, tag, labels, latency_ms, shadow, unit_id, error, fallback,
                     forced, segments), features, probabilities)


# What a request tells the model's batcher so that the batch's answer can be logged in one
# piece: who answers, its row ids, its sticky unit, its segment values, whether the client
# chose the variant, whether it is the champion's answer after the challenger failed, and when
# it was asked (``time.perf_counter``). A plain tuple, built on the request path.
Asked = tuple[ModelTag, list[str], "str | None", "dict[str, str] | None", bool, bool, float]


class AnsweredBatch(NamedTuple):
    """One model call's answer as the log takes it: the arrays of the rows it logs, once, and
    its requests' ``Asked`` fields as seven columns, one entry a request, in row order (each
    request's rows follow the last one's). Made by :func:`answered_batch`; the records are
    made where the batch is written (:func:`records_of_batch`)."""

    rows: int  # rows to log: len(features), the sum of the requests' row ids
    ts: float  # unix seconds, when the model answered
    done: float  # time.perf_counter() then: each request's latency is done - its asked time
    features: np.ndarray  # (n_rows, n_features)
    labels: list[Any]
    probabilities: np.ndarray | None  # (n_rows, n_classes), or None
    # tags, row ids, unit ids, segments, forced, fallback, asked times: a column each
    asked: tuple[tuple[Any, ...], ...]


def answered_batch(ts: float, done: float, features: np.ndarray, labels: list[Any],
                   probabilities: np.ndarray | None, asked: Sequence[Asked]) -> AnsweredBatch:
    """``asked``'s requests, whose rows are those of the arrays in order, as one batch.

    Turned into columns here (``zip``, in C), so that each request's tuple is freed on the
    event loop that made it, not 20 ms later by the thread that hands the batch over, and
    that thread packs seven columns instead of a tuple a request (docs/performance.md)."""
    # Not strict: each Asked has its seven fields, and checking costs a fifth of the zip.
    return AnsweredBatch(len(features), ts, done, features, labels, probabilities,
                         tuple(zip(*asked, strict=False)))


def records_of_batch(batch: AnsweredBatch) -> list[PredictionRecord]:
    """The records of an ``AnsweredBatch``, request by request in its order."""
    _, ts, done, features, labels, probabilities, asked = batch
    feature_rows = _floats(features).tolist()
    probability_rows = None if probabilities is None else _floats(probabilities).tolist()
    out: list[PredictionRecord] = []
    start = 0
    for tag, row_ids, unit_id, segments, forced, fallback, asked_at in zip(*asked, strict=True):
        end = start + len(row_ids)
        out += _records(
            (row_ids, ts, tag, labels[start:end], (done - asked_at) * 1000, False, unit_id,
             None, fallback, forced, segments), feature_rows[start:end],
            None if probability_rows is None else probability_rows[start:end])
        start = end
    return out


def store_rows_of_batch(batch: AnsweredBatch) -> list[StoreRow]:
    """The rows the SQL stores write for an ``AnsweredBatch``:
    ``prediction_row`` of each of :func:`records_of_batch`'s records, made without them (2.5
    µs a row against 4.3 to 4.8, docs/performance.md). Raises on a value a store cannot take
    (a probability that is not a number): the records then go as they are, to be set aside."""
    _, ts, done, features, labels, probabilities, asked = batch
    ts = float(ts)
    feature_texts = list(map(_json_text, _floats(features).tolist()))
    probability_rows = None if probabilities is None else _floats(probabilities).tolist()
    columns: dict[Any, tuple[str | None, str | None, float | None]] = {}  # by label
    out: list[StoreRow] = []
    start = 0
    for tag, row_ids, unit_id, segments, forced, fallback, asked_at in zip(*asked, strict=True):
        experiment, revision, variant, model, version, classes = tag
        experiment, revision, variant = str(experiment), int(revision), str(variant)
        model, version = str(model), str(version)
        unit_id = None if unit_id is None else str(unit_id)
        latency_ms = float((done - asked_at) * 1000)
        fallback, forced = 1 if fallback else 0, 1 if forced else 0
        segments = to_json(segments) if segments else None
        by_class: dict[str, Any] | None = None
        probability = probability_text = None
        for i, row_id in enumerate(row_ids, start):
            label = labels[i]
            try:
                prediction = columns.get((type(label), label))
                if prediction is None:
                    prediction = columns[(type(label), label)] = prediction_columns(label)
            except TypeError:  # a label that is no dict key (a list)
                prediction = prediction_columns(label)
            if probability_rows is not None and classes is not None:
                by_class = dict(zip(classes, probability_rows[i], strict=True))
                probability = None if prediction[1] is None else by_class.get(prediction[1])
                if probability is not None:
                    probability = float(probability)
                probability_text = _json_text(by_class)
            out.append(StoreRow((
                str(row_id), ts, experiment, revision, variant, 0, model, version, unit_id,
                feature_texts[i], prediction[0], prediction[1], prediction[2], probability,
                probability_text, latency_ms, None, fallback, forced, segments)))
        start += len(row_ids)
    return out


def _json_text(value: Any) -> str:
    """``to_json``'s text of plain numbers and str keys, in one orjson call; ``to_json`` for
    anything else (a numpy value, a key that is not a str)."""
    try:
        return _dumps(value).decode()
    except TypeError:
        return to_json(value)


def _floats(array: np.ndarray) -> np.ndarray:
    """Numbers as float64, as a record holds them (an engine may answer float32)."""
    return array.astype(_FLOAT, copy=False) if array.dtype.kind in _NUMBERS else array


def records_of(answered: AnsweredRows) -> list[PredictionRecord]:
    """One ``PredictionRecord`` per row of ``answered``."""
    probabilities = answered.probabilities
    return _records(answered, _floats(answered.features).tolist(),
                    None if probabilities is None else _floats(probabilities).tolist())


def _records(fields: Sequence[Any], feature_rows: Sequence[list[float]],
             probability_rows: Sequence[list[float]] | None) -> list[PredictionRecord]:
    """The records of one request: its leading fields, and its arrays as lists of rows."""
    (row_ids, ts, tag, labels, latency_ms, shadow, unit_id, error, fallback, forced,
     segments) = fields[:_HEAD]
    experiment, revision, variant, model, version, classes = tag
    out = []
    for i, row_id in enumerate(row_ids):
        label = None if labels is None else labels[i]
        values = None if probability_rows is None or classes is None \
            else probability_rows[i]
        by_class = None if values is None else dict(zip(classes, values, strict=True))
        probability = None if by_class is None or label is None else by_class.get(str(label))
        # Positional, in the field order: keywords cost three times as much per record.
        out.append(PredictionRecord(
            row_id, ts, experiment, revision, variant, model, version,
            tuple(feature_rows[i]),
            label, probability, latency_ms, shadow, unit_id, by_class, error, fallback, forced,
            segments))
    return out
