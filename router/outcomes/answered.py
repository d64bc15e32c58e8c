"""``AnsweredRows``: what the gateway hands to the outcome log for one request, as it stands.

A request's rows leave the serving process as the model answered them: one tuple of
references per request (its row ids, its model, its label list, and its feature and
probability arrays), not one ``PredictionRecord`` per row. The per-row work (feature tuples,
probability dicts, the probability of the predicted label) happens where the rows are written:
in the writer process, off the core that serves. :func:`pack` turns many of them into one
message with a C-level copy per array; :func:`unpack` and :func:`records_of` make the records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from router.outcomes.records import PredictionRecord

__all__ = ["AnsweredRows", "ModelTag", "pack", "records_of", "row_count", "unpack"]


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


_ARRAYS = 2  # the trailing fields of AnsweredRows that pack() sends as bytes
_HEAD = len(AnsweredRows._fields) - _ARRAYS
_FLOAT = np.dtype(np.float64)

# One packed batch: the leading fields of each request, then each request's arrays as float64
# bytes (None for no probabilities).
Packed = tuple[list[tuple[Any, ...]], list[bytes], list[bytes | None]]


def row_count(entries: Iterable[AnsweredRows]) -> int:
    return sum(len(entry[0]) for entry in entries)


def pack(entries: Sequence[AnsweredRows]) -> Packed:
    """Many requests' rows as plain values for one pickle: an array pickles through a Python
    reduction each, its bytes in C."""
    head = [entry[:_HEAD] for entry in entries]
    features = [_bytes(entry[-2]) for entry in entries]
    probabilities = [None if entry[-1] is None else _bytes(entry[-1]) for entry in entries]
    return head, features, probabilities


def _bytes(array: np.ndarray) -> bytes:
    if array.dtype != _FLOAT:
        array = array.astype(_FLOAT)
    return array.tobytes()


def unpack(packed: Packed) -> list[PredictionRecord]:
    """The records of a packed batch, in order."""
    head, features, probabilities = packed
    counts = [len(fields[0]) for fields in head]
    feature_rows = _row_lists(features, counts)
    probability_rows = _row_lists(probabilities, counts)
    out: list[PredictionRecord] = []
    start = 0
    for fields in head:
        out += _records(fields, feature_rows, probability_rows, start)
        start += len(fields[0])
    return out


def records_of(answered: AnsweredRows) -> list[PredictionRecord]:
    """One ``PredictionRecord`` per row of ``answered``."""
    probabilities = answered.probabilities
    return _records(answered, answered.features.tolist(),
                    None if probabilities is None else probabilities.tolist(), 0)


def _row_lists(chunks: Sequence[bytes | None], counts: list[int]
               ) -> list[list[float] | None]:
    """Every request's rows of one array, as lists, in one list (None where a request has
    none). One conversion for the batch when every request has the same width, as the
    requests of one model do: numpy's per-call cost is most of the work for one row."""
    total = sum(counts)
    if chunks and None not in chunks:
        data = b"".join(chunks)  # type: ignore[arg-type]  # no None, as checked
        width = len(data) // (_FLOAT.itemsize * total) if total else 0
        if width and all(len(c) == n * width * _FLOAT.itemsize  # type: ignore[arg-type]
                         for c, n in zip(chunks, counts, strict=True)):
            rows: list[Any] = \
                np.frombuffer(data, dtype=_FLOAT).reshape(total, width).tolist()
            return rows
    each: list[list[float] | None] = []
    for chunk, n in zip(chunks, counts, strict=True):
        each += [None] * n if chunk is None else \
            np.frombuffer(chunk, dtype=_FLOAT).reshape(n, -1).tolist()
    return each


def _records(fields: Sequence[Any], feature_rows: Sequence[list[float] | None],
             probability_rows: Sequence[list[float] | None] | None, start: int
             ) -> list[PredictionRecord]:
    """The records of one request whose rows start at ``start`` of the row lists."""
    (row_ids, ts, tag, labels, latency_ms, shadow, unit_id, error, fallback, forced,
     segments) = fields[:_HEAD]
    experiment, revision, variant, model, version, classes = tag
    out = []
    for i, row_id in enumerate(row_ids):
        label = None if labels is None else labels[i]
        values = None if probability_rows is None or classes is None \
            else probability_rows[start + i]
        by_class = None if values is None else dict(zip(classes, values, strict=True))
        probability = None if by_class is None or label is None else by_class.get(str(label))
        # Positional, in the field order: keywords cost three times as much per record.
        out.append(PredictionRecord(
            row_id, ts, experiment, revision, variant, model, version,
            tuple(feature_rows[start + i]),  # type: ignore[arg-type]  # features are never None
            label, probability, latency_ms, shadow, unit_id, by_class, error, fallback, forced,
            segments))
    return out
