"""Per-model micro-batching: rows of concurrent requests go to the model in one call.

A scikit-learn forest pays about 3.5 ms of dispatch per call however few rows it gets, so one
call for 64 rows costs almost what one row does. Each model has one batcher; the batcher keeps
at most one call in flight. A lone request on an idle model is dispatched at once (no added
wait); while a call runs, new rows queue up and leave together, up to ``max_batch`` rows, as
soon as the model is free. Only after a call does a batch that is not full wait, up to
``max_wait_ms``, for the requests that arrived during it (:meth:`MicroBatcher._gather_more`).
Calls run in a thread pool, except what the ONNX Runtime engine can answer alone
(``ServedModel.predict_inline``, tens of microseconds a call), which runs on the
event loop for batches of at most :data:`INLINE_MAX_ROWS` rows. The batchers of one
:class:`Predictor` take turns in the pool: one scikit-learn call at a time.

Each answered call is handed to the outcome log in one piece (:meth:`Predictor.log_to`): the
batch's arrays once, and the ``Asked`` tuples its requests came with, as columns. Logging per
request instead built and encoded a dozen objects a request on the event loop
(docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.outcomes.answered import AnsweredBatch, Asked, answered_batch
from router.serving.model import Prediction, ServedModel

# How often a batcher waiting for a full batch looks at its queue.
_POLL_S = 0.0005
# Above this many rows even an inline model goes to the thread pool: about 0.5 ms of ONNX Runtime
# for a forest, the longest the event loop should stall.
INLINE_MAX_ROWS = 128


@dataclass(slots=True)
class _Job:
    rows: np.ndarray
    future: asyncio.Future[Prediction]
    asked: Asked | None  # None: not logged here (the caller logs, or nobody does)


# Takes an answered batch for the log; raises (StoreError) when the log takes no more.
BatchSink = Callable[[AnsweredBatch], None]


class MicroBatcher:
    """Queues rows for one model and feeds them to it in batches, one call at a time."""

    def __init__(self, model: ServedModel, executor: Executor, *, max_batch: int,
                 max_wait_ms: float, turn: asyncio.Lock | None = None,
                 log: BatchSink | None = None) -> None:
        self.model = model
        self.log = log
        self._executor = executor
        # Shared by the batchers of one Predictor: one thread-pool call at a time. Two
        # scikit-learn calls at once only fight over the GIL (and, on a busy core, with the event
        # loop); taking turns, each batcher gathers more rows while the other's call runs.
        # ONNX Runtime models run inline and do not take turns.
        self._inline = getattr(model, "engine", None) == "onnxruntime"
        self._turn = None if self._inline else turn
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000
        self._queue: deque[_Job] = deque()
        self._running = False
        self._task: asyncio.Task[None] | None = None  # a reference keeps the task alive
        self._loop: asyncio.AbstractEventLoop | None = None
        self.calls = 0
        self.rows = 0

    def set_limits(self, *, max_batch: int, max_wait_ms: float) -> None:
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000

    async def predict(self, rows: np.ndarray, asked: Asked | None = None) -> Prediction:
        """The model's answer for ``rows``; logged with ``asked`` once answered, if given."""
        loop = self._running_loop()
        job = _Job(rows, loop.create_future(), asked)
        self._queue.append(job)
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._drain(loop))
        return await job.future

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this batcher's requests run on, asked for once per loop:
        ``asyncio.get_running_loop`` makes a system call (getpid) every time in Python 3.11.
        One loop runs a thread's requests at a time, so a kept loop that no longer runs
        means a new one (an application started again, or a test's second loop)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        busy = False  # whether a call just ran: only then is waiting for more rows worth it
        try:
            while self._queue:
                if busy and self._max_wait_s > 0 and self._queued_rows() < self._max_batch:
                    await self._gather_more(loop)
                async with self._turn or contextlib.nullcontext():
                    # Taken once it is this batcher's turn: what queued meanwhile goes too.
                    jobs = self._take_batch()
                    await self._run(loop, jobs)
                busy = True
        finally:
            self._running = False

    async def _gather_more(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait, at most ``max_wait_ms``, for more rows after a call.

        A thread-pool (scikit-learn) call costs milliseconds however few rows it gets, so the
        wait lasts until the batch is full or the time is up: requests trickle in while the
        loop answers the last batch, and stopping as soon as the queue went quiet cost 436 µs of
        CPU per request against 331 (one forest, 64 connections, 2 ms). An inline
        (ONNX Runtime) call costs tens of microseconds, so its batcher only lets the event loop
        turn until the requests that arrived meanwhile have queued (two turns bring no row).
        """
        deadline = loop.time() + self._max_wait_s
        if not self._inline:
            while self._queued_rows() < self._max_batch and (left := deadline - loop.time()) > 0:
                await asyncio.sleep(min(left, _POLL_S))
            return
        queued, quiet = self._queued_rows(), 0
        while queued < self._max_batch and quiet < 2 and loop.time() < deadline:
            await asyncio.sleep(0)
            now = self._queued_rows()
            quiet = quiet + 1 if now == queued else 0
            queued = now

    def _queued_rows(self) -> int:
        return sum(len(job.rows) for job in self._queue)

    def _take_batch(self) -> list[_Job]:
        # A request larger than max_batch still goes whole: splitting it buys nothing.
        jobs = [self._queue.popleft()]
        size = len(jobs[0].rows)
        while self._queue and size + len(self._queue[0].rows) <= self._max_batch:
            job = self._queue.popleft()
            jobs.append(job)
            size += len(job.rows)
        return jobs

    async def _run(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        rows = jobs[0].rows if len(jobs) == 1 else np.concatenate([j.rows for j in jobs])
        try:
            result = await self._call(loop, rows)
        except Exception as exc:
            if len(jobs) == 1:
                _settle(jobs[0].future, exc=exc)
                return
            # One bad row must fail only its own request: retry each job alone.
            for job in jobs:
                try:
                    self._answer([job], job.rows, await self._call(loop, job.rows))
                except Exception as job_exc:
                    _settle(job.future, exc=job_exc)
            return
        finally:
            self.calls += 1
            self.rows += len(rows)
        self._answer(jobs, rows, result)

    def _answer(self, jobs: list[_Job], rows: np.ndarray, result: Prediction) -> None:
        """Log the call's answer for the requests still waiting, then give each its rows.
        If the log refuses it, they get its error instead: an answer is never sent unlogged."""
        if self.log is not None:
            # A request no longer waiting (its client went away) was not answered.
            asked = [job.asked for job in jobs
                     if job.asked is not None and not job.future.done()]
            if asked:
                try:
                    self.log(_logged(jobs, asked, rows, result))
                except Exception as exc:
                    for job in jobs:
                        _settle(job.future, exc=exc)
                    return
        if len(jobs) == 1:
            _settle(jobs[0].future, result)
            return
        start = 0
        for job in jobs:
            end = start + len(job.rows)
            _settle(job.future, _slice(result, start, end))
            start = end

    async def _call(self, loop: asyncio.AbstractEventLoop, rows: np.ndarray) -> Prediction:
        # The hop to a thread and back costs more than an ONNX Runtime call, and on a busy
        # core the two threads would only take turns.
        inline = getattr(self.model, "predict_inline", None)
        if inline is not None and len(rows) <= INLINE_MAX_ROWS:
            result: Prediction | None = inline(rows)
            if result is not None:
                return result
        return await loop.run_in_executor(self._executor, self.model.predict, rows)


def _logged(jobs: list[_Job], asked: list[Asked], rows: np.ndarray, result: Prediction
            ) -> AnsweredBatch:
    """The batch the log takes: every row, or, when some requests are not logged here, the
    rows of those that are."""
    ts, done = time.time(), time.perf_counter()
    if len(asked) == len(jobs):
        return answered_batch(ts, done, rows, result.labels, result.probabilities, asked)
    kept: list[int] = []
    start = 0
    for job in jobs:
        end = start + len(job.rows)
        if job.asked is not None and not job.future.done():  # _answer's test, same turn
            kept += range(start, end)
        start = end
    probabilities = None if result.probabilities is None else result.probabilities[kept]
    return answered_batch(ts, done, rows[kept], [result.labels[i] for i in kept],
                          probabilities, asked)


def _slice(prediction: Prediction, start: int, end: int) -> Prediction:
    probabilities = None if prediction.probabilities is None \
        else prediction.probabilities[start:end]
    return Prediction(prediction.labels[start:end], probabilities)


def _settle(future: asyncio.Future[Prediction], result: Prediction | None = None, *,
            exc: BaseException | None = None) -> None:
    # The awaiting request may have been cancelled (client gone); its future is then done.
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]


class Predictor:
    """One MicroBatcher per loaded model, shared by every request that reaches that model."""

    def __init__(self, executor: Executor, *, max_batch: int, max_wait_ms: float) -> None:
        self._executor = executor
        self._max_batch = max_batch
        self._max_wait_ms = max_wait_ms
        self._batchers: dict[int, MicroBatcher] = {}
        self._turn = asyncio.Lock()
        self._log: BatchSink | None = None

    def log_to(self, log: BatchSink | None) -> None:
        """Where every batcher, present and future, hands its answered calls."""
        self._log = log
        for batcher in self._batchers.values():
            batcher.log = log

    def configure(self, *, max_batch: int, max_wait_ms: float) -> None:
        """New batching limits (after a reload) for every batcher, present and future."""
        self._max_batch, self._max_wait_ms = max_batch, max_wait_ms
        for batcher in self._batchers.values():
            batcher.set_limits(max_batch=max_batch, max_wait_ms=max_wait_ms)

    def batcher(self, model: ServedModel) -> MicroBatcher:
        batcher = self._batchers.get(id(model))
        if batcher is None or batcher.model is not model:
            batcher = MicroBatcher(model, self._executor, max_batch=self._max_batch,
                                   max_wait_ms=self._max_wait_ms, turn=self._turn,
                                   log=self._log)
            self._batchers[id(model)] = batcher
        return batcher

    def predict(self, model: ServedModel, rows: np.ndarray, asked: Asked | None = None
                ) -> Coroutine[Any, Any, Prediction]:
        """The model's batcher's coroutine itself, to await: not one more coroutine around
        it, which every request would create and step through twice."""
        return self.batcher(model).predict(rows, asked)

    def forget_except(self, keep: list[ServedModel]) -> None:
        """Drop batchers of models no longer served (after a reload)."""
        alive = {id(m) for m in keep}
        for key in [k for k in self._batchers if k not in alive]:
            del self._batchers[key]
