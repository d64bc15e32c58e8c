"""Shadow mode: the bounded mirror queue, its dispatcher thread, and where the challenger runs.

The request path calls :meth:`ShadowMirror.offer` after the champion answered: it samples,
takes a lock for an append and returns; a full queue drops the work and counts the drop. One
dispatcher thread takes batches off the queue (rows of consecutive offers for the same
challenger, up to ``batching.max_batch``; after a lull it lets the first offer wait up to 50 ms
for company), has a :class:`Scorer` run the challenger with the per-call timeout, and hands
``shadow=True`` records to the outcome writer.

By default the challenger runs in a separate process at low priority (:class:`ProcessScorer`,
see :mod:`router.shadow.worker`): a CPU-heavy challenger then competes with the gateway only
for a core, at a tenth of its weight, never for its GIL, and a call that overruns its timeout
is ended by killing that process. :class:`ThreadScorer` runs it in the dispatcher thread; it
exists to measure the difference (``ROUTER_SHADOW_RUNNER=thread``) and cannot interrupt a call.

Counts are in rows (one row is one shadow prediction). At any moment
``offered == done + failed + timed_out + dropped + queue_depth``, where ``queue_depth`` is the
rows accepted and not yet settled (queued or being scored).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

import numpy as np

from router.errors import StoreError
from router.outcomes.records import PredictionRecord
from router.serving.assignment import CHALLENGER
from router.serving.registry import Prediction, ServedModel
from router.serving.service import PredictionService, RecordSink
from router.serving.snapshot import Snapshot
from router.shadow.worker import describe

__all__ = ["Outcome", "ProcessScorer", "Scorer", "ShadowMirror", "ThreadScorer", "scorer_from_env"]

log = logging.getLogger("router.shadow.mirror")

RUNNER_ENV = "ROUTER_SHADOW_RUNNER"
PRIORITY_ENV = "ROUTER_SHADOW_PRIORITY"
IDLE = "idle"
PROCESS, THREAD = "process", "thread"

# The worker's priority: a niceness, 0 to 19, or "idle" for Linux's SCHED_IDLE. At niceness 10
# the worker weighs 110 against the gateway's 1024: the champion's figures stayed within the
# noise of single mode, while the shadow still got work done on a busy machine, where under
# SCHED_IDLE it got next to no CPU at all. docs/shadow-mode.md has the figures.
WORKER_PRIORITY = "10"
# Spawning Python, importing scikit-learn (about 0.8 s) and loading a pipeline (with the ONNX
# engine, converting and checking it: seconds for a large forest, more at low priority on a
# busy machine). Not the challenger's per-call time, so not held to shadow.timeout_ms; offers
# meanwhile queue up to shadow.queue_size and the rest are counted as dropped.
START_TIMEOUT_S = 300.0
# How long the first offer after a lull waits for company before it is scored. A forest pays
# most of its cost per call, not per row (docs/performance.md), and every call costs this process a
# wake-up, a pipe round trip and a GIL hand-off: fewer, fuller calls cost both sides far less,
# and nobody waits for a shadow answer.
_LINGER_S = 0.05
# Waits are sliced this fine so that a drain deadline set by another thread cuts them short.
_POLL_SLICE_S = 0.05
# After the drain deadline, time for the dispatcher to kill a cut call and settle its counts.
_CLOSE_GRACE_S = 2.0
_ROUTER_ROOT = str(Path(__file__).resolve().parent.parent)
# One challenger call uses one core: the other is the gateway's.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one challenger call ended.

    ``kind`` is ``ok`` (``prediction`` set), ``error`` (the call raised, or the worker could not
    start, load the model or survive), ``timeout`` (over ``shadow.timeout_ms``) or ``cut`` (the
    drain deadline came first: the rows count as dropped). ``per_row`` marks an exception the
    model itself raised, which a retry of fewer rows may avoid.
    """

    kind: str
    seconds: float
    prediction: Prediction | None = None
    error: str | None = None
    per_row: bool = False


class Scorer(Protocol):
    """Runs the challenger for the dispatcher thread (the only caller)."""

    def prepare(self, model: ServedModel, until: Callable[[], float]) -> None:
        """Get ready to score ``model`` (start a worker, load the model); may raise."""

    def score(self, model: ServedModel, rows: np.ndarray, timeout_s: float,
              until: Callable[[], float]) -> Outcome:
        """One call; ``until()`` is the monotonic time past which to give up (``cut``)."""

    def close(self) -> None:
        """Release what :meth:`prepare` and :meth:`score` started."""


def _timeout_text(timeout_s: float) -> str:
    return f"timeout: over {timeout_s * 1000:g} ms"


class ThreadScorer:
    """Calls the challenger in the dispatcher thread, sharing the gateway's GIL and cores.

    A timeout cannot interrupt a running scikit-learn call: a late answer is discarded and
    counted as timed out, but the thread stays busy until the call returns.
    """

    def prepare(self, model: ServedModel, until: Callable[[], float]) -> None:
        """Nothing to do: the gateway's snapshot already loaded the model."""

    def score(self, model: ServedModel, rows: np.ndarray, timeout_s: float,
              until: Callable[[], float]) -> Outcome:
        started = time.perf_counter()
        try:
            prediction = model.predict(rows)
        except Exception as exc:
            return Outcome("error", time.perf_counter() - started, error=describe(exc),
                           per_row=True)
        seconds = time.perf_counter() - started
        if seconds > timeout_s:
            return Outcome("timeout", seconds, error=_timeout_text(timeout_s))
        return Outcome("ok", seconds, prediction)

    def close(self) -> None:
        """Nothing to release."""


class _Failed(Exception):
    """Starting the worker or loading the model failed (``kind`` error) or was cut short."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ProcessScorer:
    """Runs the challenger in a child process at lower priority, one call at a time.

    The child loads the model from ``model.path`` itself and refuses a file whose sha256 is not
    the snapshot's, so it always scores the challenger the snapshot names, across reloads. A
    call over its timeout kills the child; the next call starts a new one. Where Linux's
    ``/proc`` tells, the time the child waited for a CPU counts neither towards a call's
    timeout nor its latency: the child yields to the gateway by design.
    """

    def __init__(self, *, priority: str = WORKER_PRIORITY,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self._priority = priority
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._loaded: tuple[str, str] | None = None
        self.starts = 0  # worker processes started: restarts show up here

    @property
    def pid(self) -> int | None:
        """The worker's process id while one runs."""
        return None if self._process is None else self._process.pid

    def prepare(self, model: ServedModel, until: Callable[[], float]) -> None:
        self._ensure(model, until)

    def score(self, model: ServedModel, rows: np.ndarray, timeout_s: float,
              until: Callable[[], float]) -> Outcome:
        try:
            connection = self._ensure(model, until)
        except _Failed as exc:
            return Outcome(exc.kind, 0.0, error=str(exc))
        started = time.perf_counter()
        try:
            connection.send(("predict", str(model.path), model.sha256, rows))
            assert self._process is not None
            waited = self._wait(connection, timeout_s, until, pid=self._process.pid)
            if waited != "ready":
                self._kill()
                if waited == "cut":
                    return Outcome("cut", time.perf_counter() - started)
                log.warning("shadow: challenger call over %g ms; worker restarted",
                            timeout_s * 1000)
                return Outcome("timeout", timeout_s, error=_timeout_text(timeout_s))
            reply = connection.recv()
        except (EOFError, OSError):
            return Outcome("error", time.perf_counter() - started, error=self._died())
        if reply[0] == "ok":
            _, labels, probabilities, seconds = reply
            return Outcome("ok", seconds, Prediction(labels, probabilities))
        return Outcome("error", reply[2], error=reply[1], per_row=True)

    def close(self) -> None:
        """Close the pipe (the worker exits on end of file); kill it if it does not."""
        process, connection = self._process, self._connection
        self._process = self._connection = None
        self._loaded = None
        if connection is not None:
            connection.close()
        if process is not None:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- the worker ------------------------------------------------------------------------

    def _ensure(self, model: ServedModel, until: Callable[[], float]) -> Connection:
        """A worker that has ``model`` loaded; raises :class:`_Failed`."""
        if self._process is None or self._process.poll() is not None:
            self._start(until)
        assert self._connection is not None
        key = (str(model.path), model.sha256)
        if self._loaded != key:
            try:
                self._connection.send(("load", *key))
                waited = self._wait(self._connection, self._start_timeout_s, until)
                if waited != "ready":
                    self._kill()
                    raise _Failed("cut" if waited == "cut" else "error",
                                  f"loading {model.path} took over {self._start_timeout_s:g} s")
                reply = self._connection.recv()
            except (EOFError, OSError) as exc:
                raise _Failed("error", self._died()) from exc
            if reply[0] != "loaded":
                raise _Failed("error", f"loading {model.path}: {reply[1]}")
            self._loaded = key
        return self._connection

    def _start(self, until: Callable[[], float]) -> None:
        self._kill()
        parent, child = multiprocessing.Pipe()
        env = dict(os.environ)
        for name in _THREAD_VARS:
            env.setdefault(name, "1")
        # The worker must run this very copy of the router, whatever else is installed.
        env["PYTHONPATH"] = os.pathsep.join(
            [_ROUTER_ROOT, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "router.shadow.worker", str(child.fileno()),
                 self._priority],
                pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            parent.close()
            raise _Failed("error", f"cannot start the shadow worker: {describe(exc)}") from exc
        finally:
            child.close()
        self._process, self._connection = process, parent
        self.starts += 1
        try:
            parent.send({"sys_path": list(sys.path)})
            waited = self._wait(parent, self._start_timeout_s, until)
            if waited == "ready" and parent.recv()[0] == "ready":
                return
        except (EOFError, OSError) as exc:
            raise _Failed("error", self._died()) from exc
        self._kill()
        raise _Failed("cut" if waited == "cut" else "error",
                      f"the shadow worker did not start within {self._start_timeout_s:g} s")

    @staticmethod
    def _wait(connection: Connection, seconds: float, until: Callable[[], float], *,
              pid: int | None = None) -> str:
        """``ready`` when a reply waits; ``cut`` at ``until()``; ``timeout`` after ``seconds``.

        With the ``pid`` of a worker busy with a call, the seconds are the call's own (see
        :class:`_CallClock`): under load the low-priority worker waits for a CPU, and that is
        not the challenger's slowness. A starved call waits on while the queue fills and
        further offers are counted as dropped; a challenger that hangs, computing or asleep,
        still runs out of its own time.
        """
        clock = _CallClock(pid)
        while True:
            now = time.monotonic()
            stop = until()
            if now >= stop:
                return "cut"
            own = clock.read()
            if own >= seconds:
                return "timeout"
            # Own time never runs faster than wall time: waiting what is left of it is safe.
            if connection.poll(min(stop - now, seconds - own, _POLL_SLICE_S)):
                return "ready"

    def _died(self) -> str:
        code = None if self._process is None else self._process.poll()
        self._kill()
        return f"the shadow worker process ended (exit code {code})"

    def _kill(self) -> None:
        process, connection = self._process, self._connection
        self._process = self._connection = None
        self._loaded = None
        if connection is not None:
            connection.close()
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            process.wait()


class _CallClock:
    """The own time of a call running in the worker: its CPU time, plus the wall time during
    which it was asleep or blocked (the challenger's doing: a sleep, a lock, I/O), but not the
    time it was runnable and waiting for a CPU (the low priority's doing).

    Sampled from ``/proc/<pid>/task/<pid>/`` at each read: the kernel's run-queue delay
    (schedstat) is only brought up to date when a waiting task gets the CPU, so it cannot tell
    an observer that the worker is starved right now; its state and CPU time can. Without a
    ``pid``, or where ``/proc`` does not say, wall time.
    """

    def __init__(self, pid: int | None) -> None:
        self._task = None if pid is None else f"/proc/{pid}/task/{pid}"
        self._at = time.monotonic()
        self._cpu = self._sample()[0] if self._task is not None else None
        self._own = 0.0

    def _sample(self) -> tuple[float | None, str]:
        try:
            with open(f"{self._task}/schedstat", "rb") as schedstat:
                cpu = int(schedstat.read().split()[0]) / 1e9
            with open(f"{self._task}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0].decode()
        except (OSError, ValueError, IndexError):
            return None, ""
        return cpu, state

    def read(self) -> float:
        """Own seconds so far."""
        now = time.monotonic()
        wall, self._at = now - self._at, now
        cpu, state = self._sample() if self._cpu is not None else (None, "")
        if cpu is None or self._cpu is None:
            self._own += wall
            return self._own
        ran, self._cpu = max(0.0, cpu - self._cpu), cpu
        # Asleep or blocked now: the rest of this slice was the challenger's own waiting.
        self._own += ran + (max(0.0, wall - ran) if state in ("S", "D") else 0.0)
        return self._own


def scorer_from_env() -> Scorer:
    """The scorer the environment asks for: ``ROUTER_SHADOW_RUNNER`` is ``process`` (the
    default) or ``thread``; ``ROUTER_SHADOW_PRIORITY`` is the worker's priority, a niceness from
    0 to 19 (default 10) or ``idle``."""
    runner = os.environ.get(RUNNER_ENV, PROCESS)
    if runner == THREAD:
        return ThreadScorer()
    if runner != PROCESS:
        raise ValueError(f"{RUNNER_ENV} must be {PROCESS!r} or {THREAD!r}, got {runner!r}")
    priority = os.environ.get(PRIORITY_ENV, WORKER_PRIORITY)
    if priority != IDLE and not (priority.isdigit() and int(priority) <= 19):
        raise ValueError(f"{PRIORITY_ENV} must be {IDLE!r} or a niceness from 0 to 19, "
                         f"got {priority!r}")
    return ProcessScorer(priority=priority)


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
    """

    def __init__(self, sink: RecordSink, *, scorer: Scorer | None = None,
                 rng: random.Random | None = None) -> None:
        self._sink = sink
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
            self._warm = snapshot.challenger
        self._thread = threading.Thread(target=self._run, name="shadow-dispatcher",
                                        daemon=True)
        self._thread.start()

    # -- request path ----------------------------------------------------------------------

    def offer(self, snapshot: Snapshot, rows: np.ndarray, row_ids: list[str],
              unit_id: str | None, segments: dict[str, str] | None = None) -> None:
        """Queue a copy of an answered request for the challenger, or count it dropped.

        Never waits: a lock held only for appends and counter updates. The sample and the
        bound come from ``snapshot``, so a reload changes them at once.
        """
        if snapshot.challenger is None:
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
        challenger = first.snapshot.challenger
        while self._queue and self._queue[0].snapshot.challenger is challenger \
                and size + _rows_of(self._queue[0]) <= limit:
            work = self._queue.popleft()
            batch.append(work)
            size += _rows_of(work)
        self._inflight = size
        return batch

    def _score(self, batch: list[_Work]) -> None:
        challenger = batch[0].snapshot.challenger
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
                self._sink.submit_predictions(_records(batch, outcome))
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


def _records(batch: list[_Work], outcome: Outcome) -> list[PredictionRecord]:
    """The challenger's records for each offer of the batch, in the service's own format."""
    records: list[PredictionRecord] = []
    # The service measures latency from a perf_counter start: this one is the call's duration.
    started = time.perf_counter() - outcome.seconds
    start = 0
    for work in batch:
        snapshot, n = work.snapshot, _rows_of(work)
        answer = None
        if outcome.prediction is not None:
            prediction = outcome.prediction
            probabilities = None if prediction.probabilities is None \
                else prediction.probabilities[start:start + n]
            answer = PredictionService._answer(
                snapshot, work.row_ids[0], work.row_ids, CHALLENGER,
                Prediction(prediction.labels[start:start + n], probabilities))
        model = snapshot.challenger
        assert model is not None
        records += PredictionService._records(
            snapshot, CHALLENGER, model, work.rows, work.row_ids, answer, started,
            work.unit_id, error=outcome.error, shadow=True, segments=work.segments)
        start += n
    return records
