"""The transport-neutral prediction core: assign, predict, fall back, log, mirror.

REST ``/predict`` and the KServe route both call :meth:`PredictionService.predict`; neither
knows about assignment, models or the outcome log, and this module knows nothing of HTTP.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from router.errors import BackpressureError, ModelFailedError, StoreError
from router.outcomes.answered import AnsweredBatch, AnsweredRows
from router.serving.assignment import CHAMPION
from router.serving.batching import Predictor
from router.serving.model import Prediction
from router.serving.snapshot import Snapshot


class RecordSink(Protocol):
    """Where answered rows go: the background outcome writer (never blocks)."""

    @property
    def accepting(self) -> bool: ...

    def submit_answered(self, answered: AnsweredRows) -> None: ...

    def submit_batch(self, batch: AnsweredBatch) -> None: ...


class Mirror(Protocol):
    """Shadow traffic: takes a copy of an answered request; must return at once."""

    def offer(self, snapshot: Snapshot, rows: np.ndarray, row_ids: list[str],
              unit_id: str | None, segments: dict[str, str] | None = None) -> None: ...


@dataclass(slots=True)
class Answer:
    """What the client gets back, before any wire format (not frozen: a frozen dataclass sets
    each of its seven fields through ``object.__setattr__``, six times the cost of a plain
    one's ``__init__``)."""

    request_id: str
    row_ids: list[str]
    variant: str
    model: str  # the name the YAML serves it under
    version: str
    labels: list[Any]
    probabilities: list[dict[str, float]] | None

    def probability(self, i: int) -> float | None:
        """The probability of the predicted label of row ``i``."""
        if self.probabilities is None:
            return None
        return self.probabilities[i][str(self.labels[i])]


def row_ids_for(request_id: str, n_rows: int, batch: bool) -> list[str]:
    """Ids that feedback names: the request id, or ``<request_id>:<index>`` per batch row."""
    return [f"{request_id}:{i}" for i in range(n_rows)] if batch else [request_id]


class PredictionService:
    """Routes one validated request to a variant, answers it and logs every row.

    An answer is logged by the model's batcher, with the batch it came in
    (:meth:`Predictor.log_to`); a failed call, here.
    """

    def __init__(self, predictor: Predictor, sink: RecordSink, *,
                 mirror: Mirror | None = None, rng: random.Random | None = None) -> None:
        self.predictor = predictor
        self.sink = sink
        predictor.log_to(sink.submit_batch)
        self.mirror = mirror
        self._rng = rng or random.Random()
        # (variant, what) -> count; read by /stats and /metrics.
        self.counts: Counter[tuple[str, str]] = Counter()

    def variant_for(self, snapshot: Snapshot, unit_id: str | None) -> str:
        split = snapshot.split
        if split is None:
            return CHAMPION
        arm = split.arm(unit_id, self._rng)
        return CHAMPION if arm is None else snapshot.arms[arm]

    async def predict(self, snapshot: Snapshot, rows: np.ndarray, *, request_id: str,
                      batch: bool, unit_id: str | None, forced: str | None = None,
                      segments: dict[str, str] | None = None) -> Answer:
        """Answer ``rows`` and log them (with the request's ``segments`` values); ``forced``
        names the variant the client chose.

        A forced request is served by that variant alone (no fallback, no shadow copy: a
        tester who asked for the challenger must see its failure) and logged as forced, which
        keeps it out of every statistic.
        """
        if not self.sink.accepting:
            # Refusing new work keeps the promise that an answered prediction is logged.
            raise BackpressureError("the outcome log is behind; retry shortly")
        row_ids = row_ids_for(request_id, len(rows), batch)
        variant = forced or self.variant_for(snapshot, unit_id)
        is_forced = forced is not None
        model = snapshot.models[variant]
        started = time.perf_counter()
        try:
            prediction = await self.predictor.predict(model, rows, (
                snapshot.tags[variant], row_ids, unit_id, segments, is_forced, False, started))
        except StoreError:
            raise  # the log refused the answer: not a model failure
        except Exception as exc:
            self.counts[(variant, "errors")] += 1
            self._log(snapshot, variant, rows, row_ids, None, started, unit_id,
                      error=_describe(exc), forced=is_forced, segments=segments)
            if is_forced:
                raise ModelFailedError(
                    f"the {variant} model failed on forced request {request_id}: "
                    f"{_describe(exc)}", [{"request_id": request_id, "variant": variant}]
                ) from exc
            if variant == CHAMPION:
                raise ModelFailedError(
                    f"the champion model failed on request {request_id}: {_describe(exc)}",
                    [{"request_id": request_id}]) from exc
            # A challenger failed: the champion answers, the failure stays the challenger's.
            self.counts[(variant, "fallbacks")] += 1
            return await self._fallback(snapshot, rows, row_ids, request_id, unit_id, segments)
        self.counts[(variant, "requests")] += 1
        if self.mirror is not None and snapshot.config.mode == "shadow" and not is_forced:
            self.mirror.offer(snapshot, rows, row_ids, unit_id, segments)
        return self._answer(snapshot, request_id, row_ids, variant, prediction)

    async def _fallback(self, snapshot: Snapshot, rows: np.ndarray, row_ids: list[str],
                        request_id: str, unit_id: str | None,
                        segments: dict[str, str] | None) -> Answer:
        model = snapshot.champion
        started = time.perf_counter()
        try:
            prediction = await self.predictor.predict(model, rows, (
                snapshot.tags[CHAMPION], row_ids, unit_id, segments, False, True, started))
        except StoreError:
            raise
        except Exception as exc:
            self.counts[(CHAMPION, "errors")] += 1
            self._log(snapshot, CHAMPION, rows, row_ids, None, started, unit_id,
                      error=_describe(exc), fallback=True, segments=segments)
            raise ModelFailedError(
                f"both models failed on request {request_id}: {_describe(exc)}",
                [{"request_id": request_id}]) from exc
        return self._answer(snapshot, request_id, row_ids, CHAMPION, prediction)

    @staticmethod
    def _answer(snapshot: Snapshot, request_id: str, row_ids: list[str], variant: str,
                prediction: Prediction) -> Answer:
        model = snapshot.models[variant]
        probabilities = None
        classes = snapshot.tags[variant].classes
        if prediction.probabilities is not None and classes is not None:
            probabilities = [dict(zip(classes, row, strict=True))
                             for row in prediction.probabilities.tolist()]
        return Answer(request_id, row_ids, variant, snapshot.names[variant], model.version,
                      prediction.labels, probabilities)

    def _log(self, snapshot: Snapshot, variant: str, rows: np.ndarray, row_ids: list[str],
             prediction: Prediction | None, started: float, unit_id: str | None, *,
             error: str | None = None, fallback: bool = False, forced: bool = False,
             segments: dict[str, str] | None = None) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        self.sink.submit_answered(answered_rows(
            snapshot, variant, rows, row_ids, prediction, latency_ms, unit_id, error=error,
            fallback=fallback, forced=forced, segments=segments))


def answered_rows(snapshot: Snapshot, variant: str, rows: np.ndarray, row_ids: list[str],
                  prediction: Prediction | None, latency_ms: float, unit_id: str | None, *,
                  error: str | None = None, shadow: bool = False, fallback: bool = False,
                  forced: bool = False, segments: dict[str, str] | None = None
                  ) -> AnsweredRows:
    """A request's rows for the outcome log as they are: one tuple of references, no
    per-row record on the serving core (``router.outcomes.answered``)."""
    # Positional, in the field order: keywords cost three times as much on this path.
    return AnsweredRows(
        row_ids, time.time(), snapshot.tags[variant],
        None if prediction is None else prediction.labels, latency_ms, shadow, unit_id, error,
        fallback, forced, segments, rows,
        None if prediction is None else prediction.probabilities)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
