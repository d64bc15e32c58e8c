"""Spill files: versioned JSON lines that any later release reads; the pickle files of the
earlier format are read once; cut or foreign lines become dead letters, never a stop."""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path

from router.outcomes import FeedbackRecord, MemoryStore, OutcomeWriter, PredictionRecord
from router.outcomes.spill import SpillDirectory
from router.outcomes.spill_format import FORMAT
from tests.outcomes.test_dead_letters import dead_letter_lines
from tests.outcomes.test_writer import KeptStore, eventually, make_writer, prediction

__all__ = ["make_writer"]


def replayed(directory: Path) -> list[tuple[str, tuple]]:
    spill = SpillDirectory(directory)
    return [entry for path in spill.claim() for entry in spill.read(path)]


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
