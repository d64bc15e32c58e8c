"""Where a shadow challenger runs: the :class:`Scorer` the mirror's dispatcher calls.

By default the challenger runs in a separate process at low priority (:class:`ProcessScorer`,
see :mod:`router.shadow.worker`): a CPU-heavy challenger then competes with the gateway only
for a core, at a tenth of its weight, never for its GIL, and a call that overruns its timeout
is ended by killing that process. :class:`ThreadScorer` runs it in the dispatcher thread; it
exists to measure the difference (``ROUTER_SHADOW_RUNNER=thread``) and cannot interrupt a call.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Protocol

import numpy as np

from router.serving.model import Prediction, ServedModel
from router.shadow.worker import describe
from router.subprocesses import child_environment

__all__ = ["Outcome", "ProcessScorer", "Scorer", "ThreadScorer", "scorer_from_env"]

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
# Waits are sliced this fine so that a drain deadline set by another thread cuts them short.
_POLL_SLICE_S = 0.05
# One challenger call uses one core: the other is the gateway's.
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


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
        env = child_environment(**_ONE_THREAD)
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
