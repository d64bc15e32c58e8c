"""The challenger's own process in shadow mode: loads models by path and digest, scores batches.

Started by :mod:`router.shadow.mirror` as ``python -m router.shadow.worker FD PRIORITY`` with
one end of a socket pair on ``FD``. It lowers its own priority (``idle``: Linux's SCHED_IDLE, else
niceness 19; or a niceness), then answers requests in order:

- ``("load", path, sha256)`` -> ``("loaded",)`` or ``("error", message)``
- ``("predict", path, sha256, rows)`` -> ``("ok", labels, probabilities, seconds)`` or
  ``("error", message, seconds)``, where ``seconds`` is the call's own duration: wall time less
  the time this low-priority process waited for a CPU (see :func:`own_seconds`)

Its life is tied to the pipe, not to signals: it ignores SIGINT and SIGTERM (a Ctrl-C or a
systemd stop reaches the whole process group, and the gateway still needs the worker to drain
its queue) and exits when the gateway closes the pipe or dies. A call that hangs is ended by
the gateway killing this process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

SCHEDSTAT = "/proc/thread-self/schedstat"

# Models kept loaded: the current challenger and the one before it, so a reload that swaps
# back and forth does not reload each time, and old models do not pile up.
_KEEP_MODELS = 2


def describe(exc: BaseException) -> str:
    """``"Type: message"``, cut to 500 characters: the form the service logs errors in."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def run_queue_seconds(path: str = SCHEDSTAT) -> float | None:
    """Time the thread has spent runnable but waiting for a CPU, from the kernel's schedstat
    (Linux); ``None`` where the kernel does not say."""
    try:
        with open(path, "rb") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def own_seconds(started: float, queued_before: float | None, path: str = SCHEDSTAT) -> float:
    """Seconds since ``started`` (``time.perf_counter()``) less the time spent waiting for a CPU.

    The worker runs at low priority so that it yields to the champion: the time it waits for
    that is the gateway's doing, not the challenger's, and must count neither towards its
    latency nor towards its timeout.
    """
    wall = time.perf_counter() - started
    queued_after = run_queue_seconds(path) if queued_before is not None else None
    if queued_before is None or queued_after is None:
        return wall
    return max(0.0, wall - (queued_after - queued_before))


class _Models:
    """Served models by (path, sha256); a file whose digest changed on disk is refused."""

    def __init__(self) -> None:
        from router.serving.registry import ModelRegistry

        self._registry = ModelRegistry()
        self._loaded: dict[tuple[str, str], Any] = {}

    def get(self, path: str, sha256: str) -> Any:
        key = (path, sha256)
        model = self._loaded.get(key)
        if model is not None:
            return model
        model = self._registry.load(path)
        if model.sha256 != sha256:
            # The gateway's snapshot holds the other file: scoring this one would log the
            # predictions of a model it does not name. The next reload brings them together.
            raise RuntimeError(f"{path}: model.joblib changed on disk (sha256 {model.sha256}, "
                               f"the running configuration has {sha256})")
        self._loaded[key] = model
        while len(self._loaded) > _KEEP_MODELS:
            del self._loaded[next(iter(self._loaded))]
        return model


def serve(connection: Connection) -> None:
    """Answer requests until the gateway closes the pipe."""
    models = _Models()
    connection.send(("ready", os.getpid()))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "load":
            try:
                models.get(message[1], message[2])
                connection.send(("loaded",))
            except Exception as exc:
                connection.send(("error", describe(exc)))
        elif kind == "predict":
            started, queued = time.perf_counter(), run_queue_seconds()
            try:
                prediction = models.get(message[1], message[2]).predict(message[3])
            except Exception as exc:
                connection.send(("error", describe(exc), own_seconds(started, queued)))
                continue
            connection.send(("ok", prediction.labels, prediction.probabilities,
                             own_seconds(started, queued)))
        else:
            connection.send(("error", f"unknown request {kind!r}"))


def lower_priority(priority: str) -> None:
    """``idle``: SCHED_IDLE, so that any task of the gateway that wakes takes the core at once;
    where that policy is missing, the highest niceness. Otherwise a niceness, 0 to 19."""
    if priority == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except (AttributeError, OSError):
            priority = "19"
    if int(priority):
        os.nice(int(priority))


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    connection = Connection(int(argv[1]))
    lower_priority(argv[2])
    # The gateway's import path, so that pickled pipelines load here exactly as they do there
    # (custom estimators in the user's own modules).
    try:
        hello = connection.recv()
    except (EOFError, OSError):
        return 0
    sys.path[:0] = [p for p in hello["sys_path"] if p not in sys.path]
    # OSError: the gateway went away mid-answer, so there is nothing left to answer to.
    with contextlib.suppress(EOFError, OSError), contextlib.closing(connection):
        serve(connection)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
