"""Records kept on local disk while the store is unreachable, written back when it returns.

A spill file is JSON lines: a header ``{"format": "router-outcome-spill", "version": 1}``,
then one ``{"kind": "prediction" | "feedback", "record": {field: value}}`` per record, fields
by name so that a later release can read what an earlier one wrote. Strings are written with
ASCII escapes, so any Python string survives the trip, lone surrogates included (the store may
refuse such a record; the spill must not). Each process appends to its own file; a process
that replays first claims a file by renaming it, so several workers starting together never
replay one file twice. A line cut short by a crash is set aside as a dead letter, the others
are read. Files of the earlier pickle format (``spill-*.pkl``) are read once, through an
unpickler that admits only the two record classes, and their records written like the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from router.outcomes.dead_letters import DeadLetters
from router.outcomes.records import FeedbackRecord, PredictionRecord
from router.outcomes.spill_format import (
    FORMAT,
    VERSION,
    decode_record,
    encode_line,
    encode_record,
    known_kind,
)

__all__ = ["SpillDirectory"]

log = logging.getLogger(__name__)

_PENDING = "spill-"
_CLAIMED = "replay-"
_UNREADABLE = "unreadable-"
_SUFFIX = ".jsonl"
_LEGACY_SUFFIX = ".pkl"

class _RecordsOnly(pickle.Unpickler):
    """Unpickles the earlier spill format and nothing else: no other class, no function."""

    _ALLOWED: ClassVar[dict[tuple[str, str], type]] = {
        ("router.outcomes.records", "PredictionRecord"): PredictionRecord,
        ("router.outcomes.records", "FeedbackRecord"): FeedbackRecord}

    def find_class(self, module: str, name: str) -> Any:
        allowed = self._ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not an outcome record")
        return allowed


class SpillDirectory:
    """Where one process spills (its own file) and from where any process replays.

    Lines a replay cannot read go to ``dead_letters`` (in the same directory by default).
    """

    def __init__(self, directory: Path, dead_letters: DeadLetters | None = None) -> None:
        self.directory = directory
        self.dead_letters = dead_letters or DeadLetters(directory)
        self._file = directory / f"{_PENDING}{os.getpid()}-{uuid.uuid4().hex[:8]}{_SUFFIX}"

    @property
    def file(self) -> Path:
        """This process's spill file (it exists once something was spilled)."""
        return self._file

    def append(self, kind: str, records: tuple[Any, ...]) -> None:
        """Add records of one kind ("predictions" or "feedback"), fsynced before returning.

        All or nothing: an ``OSError`` (a full disk) leaves the file as it was, so that the
        records the caller still holds are never also on disk, to be written twice.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = b"".join(encode_line(encode_record(kind, r)) for r in records)
        # Unbuffered: a buffer would write what failed once more when the file is closed,
        # after the cut was undone.
        with self._file.open("ab", buffering=0) as handle:
            start = handle.seek(0, os.SEEK_END)
            if start == 0:
                lines = encode_line({"format": FORMAT, "version": VERSION}) + lines
            try:
                rest = memoryview(lines)
                while rest:
                    rest = rest[handle.write(rest):]
                os.fsync(handle.fileno())
            except OSError:
                self._undo_append(handle, start)
                raise

    def _undo_append(self, handle: BinaryIO, start: int) -> None:
        """Cut the file back to ``start`` bytes; remove it if the failed append began it."""
        try:
            if start == 0:
                # Not even a header left: a file without one would be set aside as unreadable.
                self._file.unlink()
            else:
                handle.truncate(start)
        except OSError as exc:
            log.error("%s: cannot undo an append that failed (%s); the records still queued "
                      "in memory may be written twice", self._file.name, exc)

    def claim(self) -> list[Path]:
        """Take every pending spill file (this process's included) for replay."""
        claimed: list[Path] = []
        if not self.directory.is_dir():
            return claimed
        pending = [*self.directory.glob(f"{_PENDING}*{_SUFFIX}"),
                   *self.directory.glob(f"{_PENDING}*{_LEGACY_SUFFIX}")]
        for path in sorted(pending, key=lambda p: p.name):
            target = path.with_name(f"{_CLAIMED}{os.getpid()}-{path.name}")
            with contextlib.suppress(FileNotFoundError):  # another process was first
                path.rename(target)
                claimed.append(target)
        return claimed

    def read(self, path: Path) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """The (kind, records) runs of a claimed file, oldest first.

        A file of a later format version is renamed ``unreadable-…`` and left alone (with an
        error in the log), so that no record of it is lost or half-read.
        """
        if path.name.endswith(_LEGACY_SUFFIX):
            yield from self._read_legacy(path)
            return
        with path.open("rb") as handle:
            header = handle.readline()
            if not self._readable_header(path, header):
                return
            run_kind: str | None = None
            run: list[Any] = []
            for number, raw in enumerate(handle, start=2):
                try:
                    kind, record = decode_record(json.loads(raw))
                except (ValueError, UnicodeDecodeError) as exc:
                    self._unreadable_line(path, number, raw, exc)
                    continue
                if kind != run_kind and run:
                    assert run_kind is not None
                    yield run_kind, tuple(run)
                    run = []
                run_kind = kind
                run.append(record)
            if run:
                assert run_kind is not None
                yield run_kind, tuple(run)

    def _readable_header(self, path: Path, header: bytes) -> bool:
        try:
            meta = json.loads(header)
            version = meta["version"] if meta.get("format") == FORMAT else None
        except (ValueError, TypeError, KeyError, AttributeError):
            version = None
        if version == VERSION:
            return True
        target = path.with_name(f"{_UNREADABLE}{path.name}")
        path.rename(target)
        log.error("%s: not a spill file this release reads (format %s version %s, expected "
                  "version %d); kept as %s", path.name, FORMAT, version, VERSION, target.name)
        return False

    def _unreadable_line(self, path: Path, number: int, raw: bytes, exc: Exception) -> None:
        text = raw.decode("utf-8", errors="backslashreplace").rstrip("\n")
        self.dead_letters.add("unreadable", {"file": path.name, "line": number, "text": text},
                              f"{type(exc).__name__}: {exc}")
        log.error("%s line %d: unreadable (a crash while spilling?), set aside as a dead "
                  "letter: %s", path.name, number, exc)

    def _read_legacy(self, path: Path) -> Iterator[tuple[str, tuple[Any, ...]]]:
        with path.open("rb") as handle:
            while True:
                try:
                    kind, records = _RecordsOnly(handle).load()
                except EOFError:
                    return
                except (pickle.UnpicklingError, ValueError, AttributeError, TypeError) as exc:
                    log.error("%s: entry of the earlier spill format unreadable (cut short by "
                              "a crash?), the rest of the file skipped: %s", path.name, exc)
                    self.dead_letters.add("unreadable", {"file": path.name,
                                                         "offset": handle.tell()},
                                          f"{type(exc).__name__}: {exc}")
                    return
                if known_kind(kind):
                    yield kind, tuple(records)

