"""Records a store cannot take are set aside as dead letters; they never block the others."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from router.errors import RecordError
from router.outcomes import FeedbackRecord, OutcomeWriter, PredictionRecord, open_store
from router.outcomes.dead_letters import DEAD_LETTERS_FILE, DEAD_LETTERS_FORMAT
from router.outcomes.spill_format import decode_record
from tests.outcomes.test_writer import KeptStore, eventually, make_writer, prediction

__all__ = ["make_writer"]  # the fixture, shared with the writer's tests

POISON_ID = "\udc00x"  # a lone surrogate: valid JSON, not encodable as UTF-8


def dead_letter_lines(directory: Path) -> list[dict]:
    lines = (directory / DEAD_LETTERS_FILE).read_text(encoding="ascii").splitlines()
    assert json.loads(lines[0]) == {"format": DEAD_LETTERS_FORMAT, "version": 1}
    return [json.loads(line) for line in lines[1:]]


def test_a_feedback_record_sqlite_cannot_encode_does_not_block_the_rest(
        tmp_path: Path, make_writer: Callable[..., OutcomeWriter]) -> None:
    """Found by probing: a lone surrogate in a request id is set aside in the dead-letter
    file, counted, and every label queued behind it is written to the SQLite file."""
    store = open_store("sqlite:///outcomes.db", tmp_path)
    writer = make_writer(store, spill_dir=tmp_path / "spill", flush_interval_s=0.01)
    good_before = [FeedbackRecord(f"r{i}", ts=1.0, label="a") for i in range(10)]
    poison = FeedbackRecord(POISON_ID, ts=2.0, label="benign")
    good_after = [FeedbackRecord(f"s{i}", ts=3.0, label="b") for i in range(500)]
    writer.submit_feedback(good_before)
    writer.submit_feedback([poison])
    writer.submit_feedback(good_after)
    writer.start()
    assert writer.flush(10), f"feedback stuck behind the poison record: {writer.last_error}"

    ids = [r.request_id for r in store.feedback_records()]
    assert ids == [r.request_id for r in good_before + good_after]
    assert writer.dead_letters == 1 and not writer.failing
    (letter,) = dead_letter_lines(tmp_path / "spill")
    assert "UnicodeEncodeError" in letter["error"]
    assert decode_record(letter) == ("feedback", poison)


def test_poison_predictions_in_one_batch_are_found_and_the_rest_written_in_order(
        tmp_path: Path, make_writer: Callable[..., OutcomeWriter]) -> None:
    """Three unencodable rows among a thousand, in one store call: the thousand less three
    are written, in their order, and the three are in the dead-letter file."""
    store = open_store("sqlite:///outcomes.db", tmp_path)
    writer = make_writer(store, spill_dir=tmp_path / "spill", flush_interval_s=0.01)
    poison_at = {17, 500, 999}
    records = [prediction(f"bad{i}\ud800" if i in poison_at else f"r{i}") for i in range(1000)]
    writer.submit_predictions(records)
    writer.start()
    assert writer.flush(10), writer.last_error

    assert [r.request_id for r in store.prediction_records()] == \
        [f"r{i}" for i in range(1000) if i not in poison_at]
    letters = dead_letter_lines(tmp_path / "spill")
    assert [decode_record(line)[1] for line in letters] == [records[i] for i in sorted(poison_at)]
    assert writer.dead_letters == 3 and writer.written == 997


class RawErrorStore(KeptStore):
    """Raises whatever the encoding raises, unwrapped, as a third-party store might."""

    def write_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        for record in records:
            record.request_id.encode("utf-8")
        super().write_feedback(records)


def test_any_store_that_raises_on_content_gets_the_same_treatment(
        tmp_path: Path, make_writer: Callable[..., OutcomeWriter]) -> None:
    """An error that is not a StoreError, with the store answering, blames the record."""
    store = RawErrorStore()
    writer = make_writer(store, spill_dir=tmp_path / "spill", flush_interval_s=0.01)
    writer.submit_feedback([FeedbackRecord("a", 1.0, "x"), FeedbackRecord(POISON_ID, 1.0, "y"),
                            FeedbackRecord("b", 1.0, "z")])
    writer.start()
    assert writer.flush(10)
    assert [r.request_id for r in store.feedback_records()] == ["a", "b"]
    assert writer.dead_letters == 1


class UnreachableStore(KeptStore):
    """A store that is down: writes raise StoreError and ping says so."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def write_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        if self.down:
            raise RecordError("store 'x': cannot take a record")  # misclassified on purpose
        super().write_feedback(records)

    def ping(self) -> bool:
        return not self.down


def test_a_store_that_does_not_answer_never_turns_records_into_dead_letters(
        tmp_path: Path, make_writer: Callable[..., OutcomeWriter]) -> None:
    """Blame goes to a record only while the store answers: an outage keeps every record
    waiting, even when the failure looks like a record's fault."""
    store = UnreachableStore()
    writer = make_writer(store, spill_dir=tmp_path / "spill", flush_interval_s=0.01)
    writer.submit_feedback([FeedbackRecord(f"r{i}", 1.0, "x") for i in range(20)])
    writer.start()
    eventually(lambda: writer.write_errors >= 3, "retried writes")
    assert writer.dead_letters == 0 and writer.backlog == 20 and writer.failing
    store.down = False
    assert writer.flush(10)
    assert len(store.feedback_records()) == 20 and writer.dead_letters == 0


def test_nul_bytes_postgres_refuses_are_set_aside(
        postgres_url: str, tmp_path: Path, make_writer: Callable[..., OutcomeWriter]) -> None:
    """PostgreSQL text cannot hold NUL, which SQLite takes: that record alone is set aside."""
    store = open_store(postgres_url, tmp_path)
    writer = make_writer(store, spill_dir=tmp_path / "spill", flush_interval_s=0.01)
    records = [prediction("r0"), prediction("nul\x00id"), prediction("r2")]
    writer.submit_predictions(records)
    writer.start()
    assert writer.flush(10), writer.last_error
    assert [r.request_id for r in store.prediction_records()] == ["r0", "r2"]
    (letter,) = dead_letter_lines(tmp_path / "spill")
    assert decode_record(letter) == ("predictions", records[1])


def test_without_a_dead_letter_directory_the_log_keeps_the_record(
        caplog: pytest.LogCaptureFixture, make_writer: Callable[..., OutcomeWriter]) -> None:
    """No directory given: the record is written to the log at error level, and counted."""
    store = RawErrorStore()
    writer = make_writer(store, flush_interval_s=0.01)
    writer.submit_feedback([FeedbackRecord(POISON_ID, 1.0, "y"), FeedbackRecord("b", 1.0, "z")])
    writer.start()
    assert writer.flush(10)
    assert writer.dead_letters == 1
    assert [r.request_id for r in store.feedback_records()] == ["b"]
    assert any("\\udc00x" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_dead_letter_of_a_prediction_keeps_every_field(tmp_path: Path,
                                                       make_writer: Callable[..., OutcomeWriter]
                                                       ) -> None:
    """Probabilities, a numeric prediction, a unit id and NaN-free features come back equal."""
    store = open_store("sqlite:///outcomes.db", tmp_path)
    writer = make_writer(store, spill_dir=tmp_path / "spill", flush_interval_s=0.01)
    record = PredictionRecord("x\udfff", 5.5, "iris", 3, "challenger", "m", "2", (0.1, 2.5), 7,
                              0.75, 1.25, shadow=True, unit_id="u1",
                              probabilities={"7": 0.75, "8": 0.25}, error=None, fallback=True)
    writer.submit_predictions([record])
    writer.start()
    assert writer.flush(10)
    (letter,) = dead_letter_lines(tmp_path / "spill")
    assert decode_record(letter) == ("predictions", record)
