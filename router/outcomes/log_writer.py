"""What a gateway asks of its outcome writer, and which one it runs: a writer process for a
database, a thread for the in-memory store (or when ``ROUTER_LOG_WRITER=thread`` asks)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from router.outcomes.answered import AnsweredBatch, AnsweredRows
from router.outcomes.records import FeedbackRecord, PredictionRecord
from router.outcomes.store import OutcomeLog
from router.outcomes.writer import OutcomeWriter
from router.outcomes.writer_process import WriterProcess

__all__ = ["PROCESS", "THREAD", "WRITER_ENV", "LogWriter", "start_writer"]

WRITER_ENV = "ROUTER_LOG_WRITER"
PROCESS, THREAD = "process", "thread"
MEMORY_URL = "memory://"


class LogWriter(Protocol):
    """Takes records from the request path without waiting; reports how the writing goes.

    ``OutcomeWriter`` (a thread) and ``WriterProcess`` (a child process) both are one.
    """

    def submit_predictions(self, records: Sequence[PredictionRecord]) -> None: ...

    def submit_answered(self, answered: AnsweredRows) -> None: ...

    def submit_batch(self, batch: AnsweredBatch) -> None: ...

    def submit_feedback(self, records: Sequence[FeedbackRecord]) -> None: ...

    @property
    def accepting(self) -> bool: ...

    @property
    def backlog(self) -> int: ...

    @property
    def lag_seconds(self) -> float: ...

    @property
    def spilled(self) -> int: ...

    @property
    def failing(self) -> bool: ...

    @property
    def stall(self) -> str | None: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def written(self) -> int: ...

    @property
    def write_errors(self) -> int: ...

    @property
    def dead_letters(self) -> int: ...

    @property
    def store_reopened(self) -> int: ...

    @property
    def orphaned(self) -> int: ...

    @property
    def lost(self) -> int: ...

    def flush(self, timeout: float = 30.0) -> bool: ...

    def close(self, timeout: float | None = None) -> None: ...


def start_writer(store: OutcomeLog, url: str, base_dir: Path, spill_dir: Path) -> LogWriter:
    """A started writer for ``store``, opened from ``url``: a process of its own unless the
    store lives in this process or ``ROUTER_LOG_WRITER`` is ``thread``.

    Raises ``ValueError`` for another value of the variable, ``StoreError`` when the writer
    process cannot open the store.
    """
    choice = os.environ.get(WRITER_ENV, PROCESS)
    if choice not in (PROCESS, THREAD):
        raise ValueError(f"{WRITER_ENV} must be {PROCESS!r} or {THREAD!r}, got {choice!r}")
    writer: OutcomeWriter | WriterProcess
    if choice == THREAD or url == MEMORY_URL:
        writer = OutcomeWriter(store, spill_dir=spill_dir)
    else:
        writer = WriterProcess(url, base_dir, spill_dir=spill_dir)
    writer.start()
    return writer
