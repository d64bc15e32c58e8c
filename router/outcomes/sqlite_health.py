"""The SQLite file's health, checked before the store touches it.

SQLite keeps writing through its open descriptors to a file that was removed or replaced (the
rows then go nowhere anyone can read), and a write fault on its memory-mapped ``-shm`` file
(made immutable, say) kills the process with SIGBUS. So the store looks at the path first:
a few ``stat``/``access`` calls, microseconds, before each use.
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileFault", "FileIdentity", "abandon", "file_fault", "identity", "shm_writable"]

FileIdentity = tuple[int, int]  # (st_dev, st_ino): the same path may name another file later

# Below this much free space the store is reported full before SQLite fails mid-transaction.
DEFAULT_MIN_FREE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class FileFault:
    """What is wrong with the store's file; ``reopenable`` when opening the path again (a new
    file there, or a fresh one in its directory) is the remedy."""

    message: str
    reopenable: bool = False


def identity(path: Path) -> FileIdentity:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def file_fault(path: Path, expected: FileIdentity | None,
               min_free_bytes: int = DEFAULT_MIN_FREE_BYTES) -> FileFault | None:
    """None when ``path`` is the file the store opened, writable, with room to grow."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not path.parent.is_dir():
            return FileFault(f"store directory {path.parent} is missing")
        return FileFault(f"store file {path} is missing (removed while in use)", reopenable=True)
    except OSError as exc:
        return FileFault(f"store file {path}: {exc.strerror or exc}")
    if expected is not None and (st.st_dev, st.st_ino) != expected:
        return FileFault(f"store file {path} was replaced (inode changed)", reopenable=True)
    # access(2) also says no for an immutable file (chattr +i), even to root.
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if not os.access(candidate, os.W_OK) and candidate.exists():
            return FileFault(f"store file {candidate} is read-only")
    try:
        fs = os.statvfs(path.parent)
    except OSError as exc:
        return FileFault(f"store directory {path.parent}: {exc.strerror or exc}")
    free = fs.f_bavail * fs.f_frsize
    if free < min_free_bytes:
        return FileFault(f"disk full: {free} bytes free for {path.parent} "
                         f"(the store needs {min_free_bytes})")
    return None


def shm_writable(path: Path) -> bool:
    """False while the ``-shm`` file exists and cannot be written (read-only, immutable)."""
    shm = path.with_name(path.name + "-shm")
    return os.access(shm, os.W_OK) or not shm.exists()


def abandon(conn: sqlite3.Connection) -> None:
    """Keep ``conn`` open for the life of the process, never closed, not even at exit.

    Closing the last connection of a WAL database checkpoints through the ``-shm`` mapping;
    with that file read-only the write faults and the process dies of SIGBUS. One extra
    reference the collector never sees keeps the connection from being finalized; the
    operating system releases its descriptors when the process ends.
    """
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))
