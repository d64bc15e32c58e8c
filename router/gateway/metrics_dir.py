"""Prometheus's multiprocess directory, which ``router serve`` owns.

prometheus_client picks where its values live from ``PROMETHEUS_MULTIPROC_DIR`` when it is
first imported. One worker keeps them in memory; several share a fresh directory that each
worker's client writes, and that is removed at exit: files left from an earlier run would be
added to this run's counters. Light on purpose: the CLI calls it before importing the client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def forget_inherited() -> None:
    """Drop a directory named by the environment ``router serve`` was started from."""
    for name in (MULTIPROC_ENV, MULTIPROC_ENV.lower()):  # lower: the deprecated spelling
        os.environ.pop(name, None)


def current() -> str | None:
    """The directory of multiprocess mode, or None in a single process."""
    return os.environ.get(MULTIPROC_ENV) or None


@contextlib.contextmanager
def shared_by_workers(workers: int) -> Iterator[None]:
    """Multiprocess mode for several workers: a fresh directory, removed after."""
    if workers == 1:
        yield
        return
    directory = tempfile.mkdtemp(prefix="router-metrics-")
    # Set before uvicorn spawns the workers: each imports the client, which reads it then.
    os.environ[MULTIPROC_ENV] = directory
    print(f"metrics: {workers} workers share {directory} (removed at exit)", file=sys.stderr)
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
