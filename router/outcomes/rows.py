"""Records to and from database rows: the conversions every SQL store shares."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from router.outcomes.records import FeedbackRecord, PredictionRecord

__all__ = [
    "PREDICTION_COLUMNS",
    "StoreRow",
    "features_by_request",
    "features_from_json",
    "feedback_row",
    "prediction_columns",
    "prediction_from_row",
    "prediction_row",
    "record_of_row",
    "to_json",
]

# The order of prediction_row's values, and of the columns prediction_from_row reads.
PREDICTION_COLUMNS = (
    "request_id, ts, experiment, revision, variant, shadow, model, version, unit_id, "
    "features, prediction, label, value, probability, probabilities, latency_ms, error, fallback, "
    "forced, segments"
)
SELECTED_PREDICTION_COLUMNS = (
    "request_id, ts, experiment, revision, variant, shadow, model, version, unit_id, "
    "features, prediction, probability, probabilities, latency_ms, error, fallback, forced, "
    "segments"
)

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _json_default(obj: Any) -> Any:
    # numpy values orjson does not take natively become Python values; anything else its str,
    # so that one odd value cannot make a batch unwritable (the writer would retry it forever).
    tolist = getattr(obj, "tolist", None)
    return tolist() if callable(tolist) else str(obj)


def to_json(obj: Any) -> str:
    return orjson.dumps(obj, default=_json_default, option=_JSON_OPTIONS).decode()


class StoreRow(tuple[Any, ...]):
    """A prediction already as the SQL stores write it: ``prediction_row``'s values, in
    ``PREDICTION_COLUMNS`` order. The writer process makes these straight from a model call's
    arrays (``router.outcomes.answered.store_rows_of_batch``), without a record per row; a
    store takes one wherever it takes a record, and spill files and dead letters hold the
    record it reads back as (:func:`record_of_row`)."""

    __slots__ = ()


def prediction_columns(prediction: Any) -> tuple[str | None, str | None, float | None]:
    """The ``prediction``, ``label`` and ``value`` columns of a label or a value."""
    if prediction is None:
        return None, None, None
    value = float(prediction) if isinstance(prediction, numbers.Real) \
        and not isinstance(prediction, bool) else None
    return to_json(prediction), str(prediction), value


def prediction_row(r: PredictionRecord | StoreRow) -> tuple[Any, ...]:
    if isinstance(r, StoreRow):
        return r
    prediction, label, value = prediction_columns(r.prediction)
    # Explicit conversions: sqlite3 cannot bind numpy scalars (np.int64 revision, ...).
    return (
        str(r.request_id),
        float(r.ts),
        str(r.experiment),
        int(r.revision),
        str(r.variant),
        1 if r.shadow else 0,
        str(r.model),
        str(r.version),
        None if r.unit_id is None else str(r.unit_id),
        to_json(r.features),
        prediction,
        label,
        value,
        None if r.probability is None else float(r.probability),
        None if r.probabilities is None else to_json(r.probabilities),
        float(r.latency_ms),
        None if r.error is None else str(r.error),
        1 if r.fallback else 0,
        1 if r.forced else 0,
        to_json(r.segments) if r.segments else None,
    )


def record_of_row(row: Sequence[Any]) -> PredictionRecord:
    """The record a row of ``PREDICTION_COLUMNS`` holds (``label`` and ``value`` are made
    from ``prediction``, so they are not read)."""
    return prediction_from_row((*row[:11], *row[13:]))


def features_from_json(text: str) -> tuple[float, ...]:
    """A row's logged inputs: JSON has no NaN, so orjson wrote it as null, read back as NaN."""
    return tuple(math.nan if x is None else float(x) for x in orjson.loads(text))


def features_by_request(rows: Iterable[tuple[str, str]]) -> dict[str, tuple[float, ...]]:
    """``(request_id, features JSON)`` rows in log order as each id's first logged inputs."""
    found: dict[str, tuple[float, ...]] = {}
    for request_id, features in rows:
        if request_id not in found:
            found[request_id] = features_from_json(features)
    return found


def prediction_from_row(row: tuple[Any, ...]) -> PredictionRecord:
    return PredictionRecord(
        request_id=row[0],
        ts=row[1],
        experiment=row[2],
        revision=row[3],
        variant=row[4],
        shadow=bool(row[5]),
        model=row[6],
        version=row[7],
        unit_id=row[8],
        features=features_from_json(row[9]),
        prediction=None if row[10] is None else orjson.loads(row[10]),
        probability=row[11],
        probabilities=None if row[12] is None else orjson.loads(row[12]),
        latency_ms=row[13],
        error=row[14],
        fallback=bool(row[15]),
        forced=bool(row[16]),
        segments=None if row[17] is None else orjson.loads(row[17]),
    )


def feedback_row(r: FeedbackRecord) -> tuple[Any, ...]:
    return (
        str(r.request_id),
        float(r.ts),
        None if r.label is None else str(r.label),
        None if r.value is None else float(r.value),
    )
