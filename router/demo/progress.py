"""A one-line progress bar for the simulator on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Protocol, TextIO


class Progress(Protocol):
    """What the bar shows of a simulation's running result (read only: a simulation's
    ``Counter`` totals are the mappings it reads)."""

    @property
    def sent(self) -> int: ...

    @property
    def variants(self) -> Mapping[str, int]: ...

    @property
    def failed(self) -> Mapping[str, int]: ...

    @property
    def labels_sent(self) -> int: ...

    @property
    def rate(self) -> float: ...


class ProgressBar:
    """A one-line progress bar on a terminal (``\\r``, redrawn ten times a second at most).

    On anything else (a pipe, a file, CI's log) it writes nothing: the caller prints one plain
    summary line at the end instead.
    """

    WIDTH = 24

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.note = ""
        self._drawn = 0.0

    def line(self, result: Progress) -> str:
        done = min(result.sent, self.total)
        filled = int(self.WIDTH * done / self.total) if self.total else self.WIDTH
        variants = " ".join(f"{k} {v}" for k, v in sorted(result.variants.items()))
        failed = sum(result.failed.values())
        text = (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total} "
                f"{result.rate:4.0f}/s  {variants}  labels {result.labels_sent}"
                + (f"  failed {failed}" if failed else ""))
        return f"{text}  {self.note}" if self.note else text

    def update(self, result: Progress, *, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        # Clear to the end of the line: the previous text may have been longer.
        self.stream.write("\r" + self.line(result) + "\x1b[K")
        self.stream.flush()

    def close(self, result: Progress) -> None:
        """Draw the final state and end the line (on a terminal)."""
        if self.tty:
            self.update(result, force=True)
            self.stream.write("\n")
            self.stream.flush()
