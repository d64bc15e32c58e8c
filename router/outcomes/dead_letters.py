"""Dead letters: records the store refused one by one, set aside so the others get written.

One JSON-lines file per directory, ``dead-letters.jsonl``, shared by the processes that spill
there (each append holds an exclusive ``flock``). Its header names the format; each line is a
spill line (``kind`` and ``record``) plus ``error`` (why it was set aside) and ``ts``, so a
fixed record can be written back with the same reader as a spill file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router.outcomes.spill_format import VERSION, encode_line, encode_record

__all__ = ["DEAD_LETTERS_FILE", "DEAD_LETTERS_FORMAT", "DeadLetters"]

log = logging.getLogger(__name__)

DEAD_LETTERS_FILE = "dead-letters.jsonl"
DEAD_LETTERS_FORMAT = "router-dead-letters"


class DeadLetters:
    """Appends set-aside records to ``directory/dead-letters.jsonl`` and counts them."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / DEAD_LETTERS_FILE
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        """Records (or unreadable spill lines) this process set aside."""
        return self._count

    def add_records(self, kind: str, records: Sequence[Any], error: str) -> None:
        """Set aside records of the writer's ``kind`` that the store refused with ``error``."""
        now = time.time()
        lines = [encode_line({**encode_record(kind, r), "error": error, "ts": now})
                 for r in records]
        self._append(lines, len(records), error)

    def add(self, kind: str, payload: dict[str, Any], error: str) -> None:
        """Set aside something that is not a record (an unreadable line of a spill file)."""
        line = encode_line({"kind": kind, "record": payload, "error": error, "ts": time.time()})
        self._append([line], 1, error)

    def _append(self, lines: list[bytes], count: int, error: str) -> None:
        with self._lock:
            self._count += count
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("ab") as handle:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                    if handle.seek(0, os.SEEK_END) == 0:
                        handle.write(encode_line({"format": DEAD_LETTERS_FORMAT,
                                                  "version": VERSION}))
                    handle.write(b"".join(lines))
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                # The log then holds the only copy: say so, with the records themselves.
                log.error("dead letters: cannot write %s (%s); %d set aside here instead: %s",
                          self.path, exc, count, b"".join(lines).decode("ascii"))
                return
        log.error("outcome writer: %d record(s) the store cannot take set aside in %s: %s",
                  count, self.path, error)
