"""Shadow mode: a challenger's bounded mirror queue and its dispatcher thread.

The request path calls :meth:`ShadowMirror.offer` after the champion answered: it samples,
takes a lock for an append and returns; a full queue drops the work and counts the drop. One
dispatcher thread takes batches off the queue (rows of consecutive offers for the same
challenger, up to ``batching.max_batch``; after a lull it lets the first offer wait up to 50 ms
for company), has a :class:`Scorer` run the challenger with the per-call timeout, and hands
``shadow=True`` records to the outcome writer. Where the challenger runs (by default a worker
process of its own at low priority) is the scorer's business: :mod:`router.shadow.scorers`.
One mirror serves one challenger (its ``variant``); with several, each has its own mirror,
queue, thread and worker (:mod:`router.shadow.fleet`).

Counts are in rows (one row is one shadow prediction). At any moment
``offered == done + failed + timed_out + dropped + queue_depth``, where ``queue_depth`` is the
rows accepted and not yet settled (queued or being scored).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from router.errors import StoreError
from router.serving.assignment import CHALLENGER
from router.serving.model import Prediction, ServedModel
from router.serving.service import RecordSink, answered_rows
from router.serving.snapshot import Snapshot
from router.shadow.scorers import Outcome, ProcessScorer, Scorer, ThreadScorer, scorer_from_env
from router.shadow.worker import describe
from router.thread_names import name_native_thread

__all__ = ["Outcome", "ProcessScorer", "Scorer", "ShadowMirror", "ThreadScorer", "scorer_from_env"]

log = logging.getLogger("router.shadow.mirror")

# How long the first offer after a lull waits for company before it is scored. A forest pays
# most of its cost per call, not per row (docs/performance.md), and every call costs this process a
# wake-up, a pipe round trip and a GIL hand-off: fewer, fuller calls cost both sides far less,
# and nobody waits for a shadow answer.
_LINGER_S = 0.05
# After the drain deadline, time for the dispatcher to kill a cut call and settle its counts.
_CLOSE_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class _Work:
    """One offered request: the snapshot the champion used, its rows and their ids."""

    snapshot: Snapshot
    rows: np.ndarray
    row_ids: list[str]
    unit_id: str | None
    queued_at: float  # time.monotonic()
    segments: dict[str, str] | None = None


class ShadowMirror:
    """Takes copies of answered requests without waiting; scores them off the request path.

    Args:
        sink: where the shadow records go (the outcome writer; thread-safe).
        scorer: runs the challenger; by default :func:`scorer_from_env`.
        rng: draws the ``shadow.sample_percent`` sample.
        variant: the challenger this mirror serves, as snapshots name its model.
    """

    def __init__(self, sink: RecordSink, *, scorer: Scorer | None = None,
                 rng: random.Random | None = None, variant: str = CHALLENGER) -> None:
        self._sink = sink
        self.variant = variant
        self._scorer = scorer if scorer is not None else scorer_from_env()
        self._rng = rng or random.Random()
        # Guarded by _lock (with _wakeup on it): the queue, its depth and the counters.
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: deque[_Work] = deque()
        self._depth = 0
        self._inflight = 0
        self._offered = self._done = self._dropped = self._failed = self._timed_out = 0
        self._warm: ServedModel | None = None
        self._closed = False
        self._abandoned = False  # close() gave up on the dispatcher and counted its rows
        self._until = math.inf  # the drain deadline, once close() sets one
        self._thread: threading.Thread | None = None

    @property
    def scorer(self) -> Scorer:
        return self._scorer

    def start(self, snapshot: Snapshot | None = None) -> None:
        """Start the dispatcher; in shadow mode, get the challenger ready before traffic."""
        if self._thread is not None:
            raise RuntimeError("ShadowMirror.start() called twice")
        if snapshot is not None and snapshot.config.mode == "shadow":
            self._warm = snapshot.models.get(self.variant)
        self._thread = threading.Thread(target=self._run, name="shadow-dispatch",
                                        daemon=True)
        self._thread.start()

    # -- request path ----------------------------------------------------------------------

    def offer(self, snapshot: Snapshot, rows: np.ndarray, row_ids: list[str],
              unit_id: str | None, segments: dict[str, str] | None = None) -> None:
        """Queue a copy of an answered request for the challenger, or count it dropped.

        Never waits: a lock held only for appends and counter updates. The sample and the
        bound come from ``snapshot``, so a reload changes them at once.
        """
        if self.variant not in snapshot.models:
            return
        settings = snapshot.config.shadow
        if settings.sample_percent < 100 and self._rng.random() * 100 >= settings.sample_percent:
            return
        n = len(row_ids)
        with self._lock:
            self._offered += n
            if self._closed or self._depth + n > settings.queue_size:
                self._dropped += n
                return
            self._queue.append(_Work(snapshot, rows, row_ids, unit_id, time.monotonic(),
                                     segments))
            self._depth += n
            # Wake the dispatcher only when it can act: after a lull, or for a full batch.
            if len(self._queue) == 1 or \
                    self._depth - self._inflight >= snapshot.config.batching.max_batch:
                self._wakeup.notify()

    def counts(self) -> dict[str, int]:
        """Rows ``offered``, ``done``, ``dropped``, ``failed`` (raised), ``timed_out``, and the
        ``queue_depth`` (rows queued or being scored)."""
        with self._lock:
            return {"offered": self._offered, "done": self._done, "dropped": self._dropped,
                    "failed": self._failed, "timed_out": self._timed_out,
                    "queue_depth": self._depth}

    # -- shutdown --------------------------------------------------------------------------

    def close(self, drain_s: float) -> None:
        """Score what is queued for up to ``drain_s`` seconds; count the rest as dropped.

        Called before the outcome writer closes, so the drained records reach the store.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._until = time.monotonic() + drain_s
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(drain_s + _CLOSE_GRACE_S)
        with self._lock:
            left = sum(_rows_of(w) for w in self._queue)
            self._queue.clear()
            if self._thread is not None and self._thread.is_alive():
                # A thread-run call that no timeout can stop: its rows are not done either.
                self._abandoned = True
                left += self._inflight
                self._inflight = 0
            self._dropped += left
            self._depth -= left
        self._scorer.close()
        if left:
            log.warning("shadow: %d queued rows not scored within shadow.drain_s = %g s; "
                        "counted as dropped", left, drain_s)
        counts = self.counts()
        if counts["offered"]:
            # Rows the challenger did not score are comparisons lost: worth a warning.
            missed = counts["dropped"] + counts["failed"] + counts["timed_out"]
            log.log(logging.WARNING if missed else logging.INFO,
                    "shadow: %(offered)d offered, %(done)d done, %(failed)d failed, "
                    "%(timed_out)d timed out, %(dropped)d dropped", counts)

    # -- dispatcher thread -----------------------------------------------------------------

    def _deadline(self) -> float:
        return self._until

    def _run(self) -> None:
        name_native_thread()
        while True:
            with self._lock:
                while not (self._queue or self._closed or self._warm is not None):
                    self._wakeup.wait()
                if self._closed and (not self._queue or time.monotonic() >= self._until):
                    return
                self._linger()
                warm, self._warm = self._warm, None
                batch = self._take_batch() if self._queue else []
            if warm is not None:
                try:
                    self._scorer.prepare(warm, self._deadline)
                except Exception as exc:
                    # The first offered batch will try again and count its failure.
                    log.warning("shadow: could not get the challenger ready: %s", exc)
            if batch:
                self._score(batch)

    def _linger(self) -> None:
        """Wait (the lock released meanwhile) until the oldest offer is ``_LINGER_S`` old, a
        full batch waits, or shutdown begins: then one call takes them all."""
        while self._queue and not self._closed and self._warm is None:
            first = self._queue[0]
            if self._depth - self._inflight >= first.snapshot.config.batching.max_batch:
                return
            remaining = first.queued_at + _LINGER_S - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.wait(remaining)

    def _take_batch(self) -> list[_Work]:
        """Consecutive offers for one challenger, up to ``batching.max_batch`` rows (called
        under the lock). An offer larger than that still goes whole."""
        first = self._queue.popleft()
        batch, size = [first], _rows_of(first)
        limit = first.snapshot.config.batching.max_batch
        challenger = first.snapshot.models.get(self.variant)
        while self._queue and self._queue[0].snapshot.models.get(self.variant) is challenger \
                and size + _rows_of(self._queue[0]) <= limit:
            work = self._queue.popleft()
            batch.append(work)
            size += _rows_of(work)
        self._inflight = size
        return batch

    def _score(self, batch: list[_Work]) -> None:
        challenger = batch[0].snapshot.models.get(self.variant)
        assert challenger is not None  # offer() queues nothing without one
        timeout_s = batch[0].snapshot.config.shadow.timeout_ms / 1000
        try:
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([w.rows for w in batch])
            outcome = self._scorer.score(challenger, rows, timeout_s, self._deadline)
            if outcome.kind == "error" and outcome.per_row and len(batch) > 1:
                # One bad row must fail only its own request, as in the champion's batcher.
                for work in batch:
                    self._settle([work], self._scorer.score(challenger, work.rows, timeout_s,
                                                            self._deadline))
                return
        except Exception as exc:  # a bug here must not kill the thread and strand the queue
            log.exception("shadow: unexpected error")
            outcome = Outcome("error", 0.0, error=describe(exc))
        self._settle(batch, outcome)

    def _settle(self, batch: list[_Work], outcome: Outcome) -> None:
        n = sum(_rows_of(w) for w in batch)
        kind = outcome.kind
        if kind != "cut":
            try:
                _log(self._sink, batch, outcome, self.variant)
            except StoreError as exc:
                log.warning("shadow: %d records not logged: %s", n, exc)
                kind = "cut"  # not in the log, so not done: counted as dropped
        with self._lock:
            if self._abandoned:
                return  # close() already counted these rows as dropped
            if kind == "ok":
                self._done += n
            elif kind == "error":
                self._failed += n
            elif kind == "timeout":
                self._timed_out += n
            else:
                self._dropped += n
            self._depth -= n
            self._inflight -= n


def _rows_of(work: _Work) -> int:
    """Rows of one offer: the unit every count is in."""
    return len(work.row_ids)


def _log(sink: RecordSink, batch: list[_Work], outcome: Outcome, variant: str) -> None:
    """Hand the challenger's rows of each offer of the batch to the log, as the service does."""
    start = 0
    for work in batch:
        n = _rows_of(work)
        prediction = outcome.prediction
        if prediction is not None:
            probabilities = None if prediction.probabilities is None \
                else prediction.probabilities[start:start + n]
            prediction = Prediction(prediction.labels[start:start + n], probabilities)
        # The latency is the call's duration, which the whole batch shared.
        sink.submit_answered(answered_rows(
            work.snapshot, variant, work.rows, work.row_ids, prediction, outcome.seconds * 1000,
            work.unit_id, error=outcome.error, shadow=True, segments=work.segments))
        start += n
