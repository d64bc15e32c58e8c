"""What the writer thread holds and how it writes it: a FIFO of submitted chunks, and a batch
written with the records the store refuses set aside one by one, so that they never block the
records behind them."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from router.errors import RecordError, StoreError
from router.outcomes.dead_letters import DeadLetters
from router.outcomes.store import OutcomeLog

__all__ = ["Chunk", "ChunkQueue", "IsolatingWrites"]

logger = logging.getLogger("router.outcomes.writer")

# A chunk is what one submit call handed over: (time.monotonic() at submit, the records).
Chunk = tuple[float, tuple[Any, ...]]


class ChunkQueue:
    """The writer thread's own FIFO of chunks of one kind; only that thread touches it."""

    def __init__(self) -> None:
        self.chunks: deque[Chunk] = deque()

    def take(self, limit: int) -> list[Any]:
        """The oldest records, at most ``limit`` of them, without removing them."""
        batch: list[Any] = []
        for _, records in self.chunks:
            batch.extend(records[: limit - len(batch)])
            if len(batch) >= limit:
                break
        return batch

    def drop(self, count: int) -> None:
        """Remove the ``count`` oldest records (they were written)."""
        while count:
            submitted_at, records = self.chunks[0]
            if len(records) <= count:
                self.chunks.popleft()
                count -= len(records)
            else:
                self.chunks[0] = (submitted_at, records[count:])
                count = 0

    def oldest(self) -> float | None:
        return self.chunks[0][0] if self.chunks else None

    def __len__(self) -> int:
        """Records queued."""
        return sum(len(records) for _, records in self.chunks)


class IsolatingWrites:
    """Writes batches to ``store``; a call that fails on the records' content (``RecordError``,
    or any error that is not a ``StoreError``) while the store still answers is split in
    halves until the refused records are found alone. Those go to ``dead_letters`` (or, without
    a directory, to the log). ``note_error`` hears of every failed call."""

    def __init__(self, store: OutcomeLog, dead_letters: DeadLetters | None,
                 note_error: Callable[[Exception], None]) -> None:
        self._store = store
        self._dead_letters = dead_letters
        self._note_error = note_error
        self._in_log = 0

    @property
    def set_aside(self) -> int:
        """Records this process set aside (in the dead-letter file, or only in the log)."""
        in_file = self._dead_letters.count if self._dead_letters is not None else 0
        return in_file + self._in_log

    def write(self, kind: str, write: Callable[[Sequence[Any]], None],
              records: Sequence[Any]) -> tuple[int, int]:
        """Write ``records`` in order, setting aside those the store refuses one by one.

        Returns (records handled, of which written): handled short of ``len(records)`` means
        the store failed, and the records from there on are still to be written.
        """
        try:
            write(records)
            return len(records), len(records)
        except Exception as exc:
            # One transaction per call: nothing of this call was written.
            self._note_error(exc)
            if not self._about_records(exc):
                return 0, 0
            if len(records) == 1:
                self._set_aside(kind, records, exc)
                return 1, 0
        middle = len(records) // 2
        first, first_written = self.write(kind, write, records[:middle])
        if first < middle:
            return first, first_written
        second, second_written = self.write(kind, write, records[middle:])
        return middle + second, first_written + second_written

    def _about_records(self, exc: Exception) -> bool:
        """True when a failed call is to be blamed on its records, not on the store.

        A ``StoreError`` other than ``RecordError`` is the store being unavailable (wait and
        retry); anything else is about what was written, provided the store still answers.
        """
        if isinstance(exc, StoreError) and not isinstance(exc, RecordError):
            return False
        return self._store.ping()

    def _set_aside(self, kind: str, records: Sequence[Any], exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if self._dead_letters is not None:
            self._dead_letters.add_records(kind, records, error)
            return
        self._in_log += len(records)
        logger.error("outcome writer: %d record(s) the store cannot take dropped (no dead-letter "
                     "directory): %s: %r", len(records), error, list(records))
