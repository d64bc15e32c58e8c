"""Spill files: versioned JSON lines that any later release reads; the pickle files of the
earlier format are read once; cut or foreign lines become dead letters, never a stop."""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from router.outcomes import (
    FeedbackRecord,
    MemoryStore,
    OutcomeWriter,
    PredictionRecord,
    open_store,
)
from router.outcomes.dead_letters import DEAD_LETTERS_FILE
from router.outcomes.spill import SpillDirectory
from router.outcomes.spill_format import FORMAT, VERSION, encode_line, encode_record
from tests.outcomes.test_dead_letters import dead_letter_lines
from tests.outcomes.test_writer import (
    DEADLINE_S,
    DownStore,
    KeptStore,
    eventually,
    make_writer,
    prediction,
)

__all__ = ["make_writer"]


def replayed(directory: Path) -> list[tuple[str, tuple]]:
    spill = SpillDirectory(directory)
    return [entry for path in spill.claim() for entry in spill.read(path)]


def spilled_size(kind: str, records: list[Any]) -> int:
    """Bytes a first append of ``records`` takes: the header and one line each."""
    return len(encode_line({"format": FORMAT, "version": VERSION})) + sum(
        len(encode_line(encode_record(kind, record))) for record in records)


class FullDisk:
    """``room`` bytes for the files of ``directory``, as they are written through
    ``Path.open``: a write takes what still fits and then fails with ENOSPC, as on a full
    disk; truncating or removing a file gives its room back. No root, no tmpfs."""

    def __init__(self, directory: Path, room: int) -> None:
        self.directory = directory
        self.room = room
        self.refusals = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_open = Path.open
        disk = self

        def open_on_disk(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = real_open(path, mode, *args, **kwargs)
            if path.parent == disk.directory and any(c in mode for c in "wax+"):
                return _OnFullDisk(handle, disk)
            return handle

        monkeypatch.setattr(Path, "open", open_on_disk)

    def free(self) -> int:
        used = sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())
        return max(0, self.room - used)


class _OnFullDisk:
    """A file opened on a ``FullDisk``; everything but ``write`` is the real file's."""

    def __init__(self, handle: Any, disk: FullDisk) -> None:
        self._handle = handle
        self._disk = disk

    def write(self, data: bytes) -> int:
        self._handle.flush()  # what a buffered file holds is not on the disk yet
        free = self._disk.free()
        if len(data) <= free:
            return int(self._handle.write(data))
        if free:
            self._handle.write(bytes(data[:free]))
            self._handle.flush()
        self._disk.refusals += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _OnFullDisk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._handle.close()


def test_a_spill_file_is_json_lines_with_a_version_header(tmp_path: Path) -> None:
    """Header first, then one self-describing line per record, fields by name."""
    spill = SpillDirectory(tmp_path)
    spill.append("predictions", (prediction("p1"),))
    spill.append("feedback", (FeedbackRecord("p1", 2.0, label="a"),))
    header, first, second = spill.file.read_text(encoding="ascii").splitlines()
    assert json.loads(header) == {"format": FORMAT, "version": 1}
    assert json.loads(first)["kind"] == "prediction"
    assert json.loads(first)["record"]["request_id"] == "p1"
    assert json.loads(second) == {"kind": "feedback", "record": {
        "request_id": "p1", "ts": 2.0, "label": "a", "value": None}}


def test_records_come_back_equal_whatever_their_strings_and_floats(tmp_path: Path) -> None:
    """Lone surrogates, non-ASCII text, int and str labels and NaN survive the round trip."""
    records = (
        prediction("\udc00x")._replace(prediction=1, unit_id="日本"),
        prediction("b")._replace(prediction="1", probabilities={"1": 0.5, "2": 0.5}),
        prediction("c")._replace(prediction=None, error="boom", probability=None),
    )
    feedback = (FeedbackRecord("\ud800", 1.0, value=2.5),)
    spill = SpillDirectory(tmp_path)
    spill.append("predictions", records)
    spill.append("feedback", feedback)
    spill.append("predictions", (prediction("d")._replace(latency_ms=math.nan),))
    entries = replayed(tmp_path)
    assert [kind for kind, _ in entries] == ["predictions", "feedback", "predictions"]
    assert entries[0][1] == records and entries[1][1] == feedback
    assert math.isnan(entries[2][1][0].latency_ms)


def test_a_line_cut_by_a_crash_is_a_dead_letter_and_the_rest_is_read(tmp_path: Path) -> None:
    """A torn line anywhere loses nothing else; it is kept, verbatim, among the dead letters."""
    spill = SpillDirectory(tmp_path)
    spill.append("predictions", (prediction("a"), prediction("b")))
    lines = spill.file.read_bytes().splitlines(keepends=True)
    spill.file.write_bytes(lines[0] + lines[1] + lines[2][:25] + b"\n" + lines[2])
    entries = replayed(tmp_path)
    assert [r.request_id for _, records in entries for r in records] == ["a", "b"]
    (letter,) = dead_letter_lines(tmp_path)
    assert letter["kind"] == "unreadable" and letter["record"]["line"] == 3
    assert letter["record"]["text"] == lines[2][:25].decode()


def test_a_file_of_a_later_version_is_kept_aside_unread(tmp_path: Path) -> None:
    """A file this release does not know is renamed and left whole, not half-read."""
    path = tmp_path / "spill-1-abcd.jsonl"
    path.write_text(json.dumps({"format": FORMAT, "version": 2}) + "\n{\"kind\": \"x\"}\n")
    assert replayed(tmp_path) == []
    assert (tmp_path / f"unreadable-replay-{os.getpid()}-spill-1-abcd.jsonl").exists()


def test_pickle_spills_of_the_earlier_format_are_written_once_and_removed(
        tmp_path: Path, make_writer: Callable[..., OutcomeWriter]) -> None:
    """Files an earlier release left behind are read (record classes only) and replayed."""
    legacy = tmp_path / "spill-99-0000.pkl"
    with legacy.open("wb") as handle:
        pickle.dump(("predictions", (prediction("old1"), prediction("old2"))), handle)
        pickle.dump(("feedback", (FeedbackRecord("old1", 2.0, label="a"),)), handle)
    store = KeptStore()
    writer = make_writer(store, spill_dir=tmp_path, flush_interval_s=0.01)
    writer.start()
    eventually(lambda: len(store.feedback_records()) == 1, "the old file's records written")
    assert [r.request_id for r in store.prediction_records()] == ["old1", "old2"]
    assert not list(tmp_path.glob("*.pkl"))


def test_a_pickle_that_names_any_other_class_is_refused(tmp_path: Path) -> None:
    """The earlier format is read through an unpickler that admits the record classes only."""
    legacy = tmp_path / "spill-99-0001.pkl"

    class Sneaky:
        def __reduce__(self) -> tuple:
            return (print, ("ran code",))

    legacy.write_bytes(pickle.dumps(("predictions", (Sneaky(),))))
    assert replayed(tmp_path) == []
    (letter,) = dead_letter_lines(tmp_path)
    assert "is not an outcome record" in letter["error"]


def test_a_poison_record_that_was_spilled_is_set_aside_at_replay(
        tmp_path: Path, make_writer: Callable[..., OutcomeWriter]) -> None:
    """Spilled during an outage and refused once the store is back: a dead letter, and the
    records around it are written."""
    class SurrogateRefusingStore(MemoryStore):
        def write_predictions(self, records: tuple[PredictionRecord, ...]) -> None:
            for record in records:
                record.request_id.encode()
            super().write_predictions(records)

    SpillDirectory(tmp_path).append("predictions", (prediction("a"), prediction("\udc00"),
                                                    prediction("c")))
    store = SurrogateRefusingStore()
    writer = make_writer(store, spill_dir=tmp_path, flush_interval_s=0.01)
    writer.start()
    eventually(lambda: len(store.prediction_records()) == 2, "the good spilled records written")
    assert [r.request_id for r in store.prediction_records()] == ["a", "c"]
    assert writer.dead_letters == 1


def test_an_append_cut_short_by_a_full_disk_leaves_the_file_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by probing: ENOSPC partway through an append leaves none of it behind (the
    caller still holds those records), so a replay reads only what earlier appends wrote,
    and no cut line is set aside as a dead letter."""
    spill = SpillDirectory(tmp_path)
    spill.append("predictions", (prediction("a"), prediction("b")))
    before = spill.file.read_bytes()
    more = [prediction(f"c{i}") for i in range(20)]
    disk = FullDisk(tmp_path, room=len(before) + spilled_size("predictions", more) // 2)
    disk.install(monkeypatch)
    with pytest.raises(OSError) as refused:
        spill.append("predictions", tuple(more))
    assert refused.value.errno == errno.ENOSPC and disk.refusals == 1
    assert spill.file.read_bytes() == before
    monkeypatch.undo()
    assert [r.request_id for _, records in replayed(tmp_path) for r in records] == ["a", "b"]
    assert not (tmp_path / DEAD_LETTERS_FILE).exists()


def test_a_first_append_cut_short_by_a_full_disk_leaves_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spill file that a full disk cut short in its first append is removed: neither
    records nor a bare header are left to replay."""
    records = [prediction(f"c{i}") for i in range(20)]
    FullDisk(tmp_path, room=spilled_size("predictions", records) // 2).install(monkeypatch)
    spill = SpillDirectory(tmp_path)
    with pytest.raises(OSError):
        spill.append("predictions", tuple(records))
    assert not spill.file.exists()


def test_a_spill_cut_short_by_a_full_disk_writes_each_record_once(
        tmp_path: Path, make_writer: Callable[..., OutcomeWriter],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by probing: the store's directory gone, the spill's disk full partway through a
    spill. The records stay in memory, the cut spill leaves nothing behind, and once the
    store is back each record is in it exactly once, after the next start's replay too,
    with no dead letter."""
    store_dir, away, spill_dir = tmp_path / "db", tmp_path / "db.away", tmp_path / "spill"
    store_dir.mkdir()
    spill_dir.mkdir()
    url = "sqlite:///db/outcomes.db"
    ids = [f"r{i}" for i in range(300)]
    disk = FullDisk(spill_dir, room=spilled_size(
        "predictions", [prediction(i) for i in ids]) // 3)
    disk.install(monkeypatch)
    writer = make_writer(open_store(url, tmp_path), spill_dir=spill_dir, spill_after=100,
                         flush_interval_s=0.01)
    store_dir.rename(away)
    writer.start()
    writer.submit_predictions([prediction(i) for i in ids])
    eventually(lambda: disk.refusals >= 2, "spills cut short by the full disk")
    assert writer.spilled == 0
    away.rename(store_dir)
    eventually(lambda: writer.backlog == 0, "every record written once the store is back")
    writer.close(timeout=DEADLINE_S)

    # The next start replays what spill files there are.
    again = make_writer(open_store(url, tmp_path), spill_dir=spill_dir, flush_interval_s=0.01)
    again.close(timeout=DEADLINE_S)
    written = [r.request_id for r in again._store.prediction_records()]
    assert sorted(written) == sorted(ids)
    assert writer.dead_letters == again.dead_letters == 0
    assert not (spill_dir / DEAD_LETTERS_FILE).exists()


def test_a_feedback_spill_that_fails_after_the_predictions_spilled_keeps_the_counts(
        tmp_path: Path, make_writer: Callable[..., OutcomeWriter],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Predictions moved to disk are counted as spilled and leave the backlog even when the
    feedback behind them finds the disk full; the feedback stays queued, and all of it is
    written once the store answers."""
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    predictions = [prediction(f"r{i}") for i in range(200)]
    feedback = [FeedbackRecord(f"r{i}", 2.0, label="a") for i in range(50)]
    disk = FullDisk(spill_dir, room=spilled_size("predictions", predictions))
    disk.install(monkeypatch)
    store = DownStore()
    writer = make_writer(store, spill_dir=spill_dir, spill_after=100, flush_interval_s=0.01)
    writer.submit_predictions(predictions)
    writer.submit_feedback(feedback)
    writer.start()
    eventually(lambda: disk.refusals >= 1 and writer.spilled == 200 and writer.backlog == 50,
               "the predictions counted as spilled, the feedback as waiting")
    store.down = False
    eventually(lambda: writer.backlog == 0 and writer.spilled == 0, "everything written")
    assert store.count_predictions() == 200 and len(store.feedback_records()) == 50
