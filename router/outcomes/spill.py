"""Records kept on local disk while the store is unreachable, written back when it returns.

Files are append-only sequences of pickled record tuples in one directory. A process that
replays them first claims each file by renaming it, so several workers starting together
never replay one file twice. A file cut short by a crash loses at most its last, partial entry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_PENDING = "spill-"
_CLAIMED = "replay-"
_SUFFIX = ".pkl"


class SpillDirectory:
    """Where one process spills (its own file) and from where any process replays."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file = directory / f"{_PENDING}{os.getpid()}-{uuid.uuid4().hex[:8]}{_SUFFIX}"

    def append(self, kind: str, records: tuple[Any, ...]) -> None:
        """Add records of one kind ("predictions" or "feedback"), fsynced before returning."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._file.open("ab") as handle:
            pickle.dump((kind, records), handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())

    def claim(self) -> list[Path]:
        """Take every pending spill file (this process's included) for replay."""
        claimed = []
        if not self.directory.is_dir():
            return claimed
        for path in sorted(self.directory.glob(f"{_PENDING}*{_SUFFIX}")):
            target = path.with_name(f"{_CLAIMED}{os.getpid()}-{path.name}")
            with contextlib.suppress(FileNotFoundError):  # another process was first
                path.rename(target)
                claimed.append(target)
        return claimed

    @staticmethod
    def read(path: Path) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """The (kind, records) entries of a claimed file, oldest first."""
        with path.open("rb") as handle:
            while True:
                try:
                    yield pickle.load(handle)
                except EOFError:
                    return
                except (pickle.UnpicklingError, ValueError, AttributeError) as exc:
                    log.error("%s: entry cut short (a crash while spilling?): %s", path, exc)
                    return
