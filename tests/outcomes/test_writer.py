"""The background writer: drains on close, flushes on its own, retries, pushes back, never waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from router.errors import StoreError
from router.outcomes import (
    FeedbackRecord,
    MemoryStore,
    OutcomeStore,
    OutcomeWriter,
    PredictionRecord,
    open_store,
)

DEADLINE_S = 10.0  # generous: the writer flushes every 0.2 s, so this only guards against hangs


def prediction(request_id: str) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        ts=1.0,
        experiment="iris",
        revision=1,
        variant="champion",
        model="iris-rf",
        version="1",
        features=(1.0, 2.0),
        prediction="a",
        probability=0.9,
        latency_ms=0.3,
    )


def eventually(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


class KeptStore(MemoryStore):
    """A memory store that stays readable after close(), which it only counts."""

    def __init__(self) -> None:
        super().__init__()
        self.close_calls = 0

    def close(self) -> None:
        self.close_calls += 1


class FlakyStore(KeptStore):
    """Fails the next ``failures`` prediction writes as a locked database would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def write_predictions(self, records: Sequence[PredictionRecord]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("store 'sqlite:///x.db': database is locked")
        super().write_predictions(records)


class GatedStore(KeptStore):
    """Blocks every prediction write until ``gate`` is set, like a store stuck on I/O."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write_predictions(self, records: Sequence[PredictionRecord]) -> None:
        self.entered.set()
        self.gate.wait()
        super().write_predictions(records)


@pytest.fixture
def make_writer() -> Iterator[Callable[..., OutcomeWriter]]:
    """Builds writers; after the test, stops each one's thread, then closes its store."""
    writers: list[OutcomeWriter] = []

    def make(store: OutcomeStore, **options: Any) -> OutcomeWriter:
        writer = OutcomeWriter(store, **options)
        writers.append(writer)
        return writer

    yield make
    for writer in writers:
        gate = getattr(writer._store, "gate", None)
        if gate is not None:
            gate.set()
        if hasattr(writer._store, "failures"):
            writer._store.failures = 0  # type: ignore[attr-defined]
        if hasattr(writer._store, "down"):
            writer._store.down = False  # type: ignore[attr-defined]
        writer.close(timeout=DEADLINE_S)
        writer._store.close()


def test_close_writes_everything_submitted_in_order(
    make_writer: Callable[..., OutcomeWriter],
) -> None:
    """After close(), every record submitted from any thread is stored once, in submit order."""
    store = KeptStore()
    writer = make_writer(store, batch_size=50)  # small batches: chunks get split across writes
    writer.start()

    def submit(tag: str) -> None:
        for n in range(300):
            writer.submit_predictions([prediction(f"{tag}-{n}-{i}") for i in range(n % 4 + 1)])
            writer.submit_feedback([FeedbackRecord(f"{tag}-{n}-0", ts=2.0, label="a")])

    threads = [threading.Thread(target=submit, args=(f"t{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()

    ids = [r.request_id for r in store.prediction_records()]
    expected = {f"t{k}-{n}-{i}" for k in range(4) for n in range(300) for i in range(n % 4 + 1)}
    assert len(ids) == len(expected) and set(ids) == expected
    for k in range(4):  # each submitter's records keep their order
        mine = [i for i in ids if i.startswith(f"t{k}-")]
        assert mine == sorted(mine, key=lambda i: tuple(int(x) for x in i.split("-")[1:]))
    assert len(store.feedback_records()) == 4 * 300
    assert writer.written == len(expected) + 4 * 300
    assert writer.backlog == 0 and writer.lag_seconds == 0.0
    assert store.close_calls == 0  # whoever opened the store closes it


def test_close_without_start_still_drains(make_writer: Callable[..., OutcomeWriter]) -> None:
    """Records submitted to a writer that was never started are written by close()."""
    store = KeptStore()
    writer = make_writer(store)
    writer.submit_predictions([prediction("a"), prediction("b")])

    writer.close()

    assert [r.request_id for r in store.prediction_records()] == ["a", "b"]


def test_flushes_within_a_second_without_close(make_writer: Callable[..., OutcomeWriter]) -> None:
    """A running writer writes what waits on its own, every flush interval."""
    store = KeptStore()
    writer = make_writer(store)
    writer.start()

    writer.submit_predictions([prediction("a")])
    writer.submit_feedback([FeedbackRecord("a", ts=1.0, label="a")])

    eventually(
        lambda: store.count_predictions() == 1 and len(store.feedback_records()) == 1,
        "records flushed",
    )
    eventually(lambda: writer.backlog == 0 and writer.lag_seconds == 0.0, "backlog empty")


def test_full_batch_wakes_the_writer_early(make_writer: Callable[..., OutcomeWriter]) -> None:
    """batch_size waiting records are written without waiting for the (long) flush interval."""
    store = KeptStore()
    writer = make_writer(store, flush_interval_s=3600.0, batch_size=10)
    writer.start()

    writer.submit_predictions([prediction(str(i)) for i in range(10)])

    eventually(lambda: store.count_predictions() == 10, "full batch written")


def test_failed_writes_are_retried_until_every_record_is_written(
    make_writer: Callable[..., OutcomeWriter],
) -> None:
    """A store that fails N times ends with every record written once and write_errors == N."""
    store = FlakyStore(failures=3)
    writer = make_writer(store, batch_size=40)
    writer.start()

    writer.submit_predictions([prediction(str(i)) for i in range(100)])
    eventually(lambda: writer.write_errors >= 1, "first failure seen")
    writer.submit_predictions([prediction(str(i)) for i in range(100, 150)])
    writer.close(timeout=DEADLINE_S)

    assert [r.request_id for r in store.prediction_records()] == [str(i) for i in range(150)]
    assert writer.write_errors == 3
    assert writer.written == 150
    assert writer.last_error is not None and "database is locked" in writer.last_error


def test_submit_after_close_raises(make_writer: Callable[..., OutcomeWriter]) -> None:
    """Once closed, the writer refuses records with StoreError instead of losing them."""
    writer = make_writer(KeptStore())
    writer.start()
    writer.close()

    with pytest.raises(StoreError):
        writer.submit_predictions([prediction("late")])
    with pytest.raises(StoreError):
        writer.submit_feedback([FeedbackRecord("late", ts=1.0, label="a")])


def test_accepting_turns_false_past_max_pending_and_back_after_flush(
    make_writer: Callable[..., OutcomeWriter],
) -> None:
    """accepting is False once max_pending records wait; submit still appends; a flush clears it."""
    store = KeptStore()
    writer = make_writer(store, max_pending=10)

    writer.submit_predictions([prediction(str(i)) for i in range(9)])
    assert writer.accepting
    writer.submit_predictions([prediction("9")])
    assert not writer.accepting
    writer.submit_predictions([prediction(str(i)) for i in range(10, 15)])  # soft bound
    assert writer.backlog == 15

    writer.start()

    eventually(lambda: writer.accepting and writer.backlog == 0, "backlog drained")
    assert store.count_predictions() == 15


def test_lag_seconds_measures_the_oldest_waiting_record(
    make_writer: Callable[..., OutcomeWriter],
) -> None:
    """lag_seconds is 0 when nothing waits, grows while a record waits, and is 0 once written."""
    store = KeptStore()
    writer = make_writer(store)
    assert writer.lag_seconds == 0.0

    writer.submit_predictions([prediction("a")])
    eventually(lambda: writer.lag_seconds > 0.0, "lag grows")

    writer.start()
    eventually(lambda: writer.lag_seconds == 0.0, "lag back to 0")


def test_submit_does_not_wait_for_a_stuck_store(make_writer: Callable[..., OutcomeWriter]) -> None:
    """While the store hangs in a write, submit keeps returning at once and nothing is lost."""
    store = GatedStore()
    writer = make_writer(store)
    writer.start()
    writer.submit_predictions([prediction("first")])
    assert store.entered.wait(DEADLINE_S)

    done = threading.Event()

    def submit_many() -> None:
        for i in range(1_000):
            writer.submit_predictions([prediction(f"more-{i}")])
        done.set()

    threading.Thread(target=submit_many).start()
    assert done.wait(DEADLINE_S), "submit blocked behind the stuck store"
    assert writer.backlog == 1_001

    store.gate.set()
    writer.close(timeout=DEADLINE_S)
    assert store.count_predictions() == 1_001


def test_close_timeout_reports_unwritten_records_instead_of_dropping_them(
    make_writer: Callable[..., OutcomeWriter],
) -> None:
    """close(timeout) on a failing store raises StoreError; the records stay and get written."""
    store = FlakyStore(failures=10**9)
    writer = make_writer(store)
    writer.start()
    writer.submit_predictions([prediction(str(i)) for i in range(5)])

    with pytest.raises(StoreError, match="5 records not written"):
        writer.close(timeout=0.3)
    assert store.close_calls == 0

    store.failures = 0
    writer.close(timeout=DEADLINE_S)
    assert store.count_predictions() == 5
    assert store.close_calls == 0


def test_writer_into_sqlite_end_to_end(
    tmp_path: Path,
    make_writer: Callable[..., OutcomeWriter],
) -> None:
    """Records submitted in many small calls all reach a SQLite file, each once."""
    url = "sqlite:///outcomes.db"
    writer = make_writer(open_store(url, tmp_path))
    writer.start()
    for call in range(200):
        writer.submit_predictions([prediction(f"{call}:{i}") for i in range(60)])
        writer.submit_feedback([FeedbackRecord(f"{call}:0", ts=2.0, label="a")])
    writer.close()

    store = open_store(url, tmp_path)
    try:
        ids = [r.request_id for r in store.prediction_records()]
        assert len(ids) == 12_000 and len(set(ids)) == 12_000
        assert len(store.feedback_records()) == 200
    finally:
        store.close()


class DownStore(KeptStore):
    """Refuses every write while ``down`` is set, like an unreachable database."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def write_predictions(self, records: Sequence[PredictionRecord]) -> None:
        if self.down:
            raise StoreError("store 'postgresql://db': connection refused")
        super().write_predictions(records)

    def write_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        if self.down:
            raise StoreError("store 'postgresql://db': connection refused")
        super().write_feedback(records)

    def ping(self) -> bool:
        return not self.down


def test_an_outage_spills_to_disk_and_replays_when_the_store_returns(
        make_writer: Callable[..., OutcomeWriter], tmp_path: Path) -> None:
    """Past spill_after, records go to disk (memory stays bounded, requests still accepted)
    and every one is written once the store answers again."""
    store = DownStore()
    writer = make_writer(store, spill_dir=tmp_path / "spill", spill_after=100,
                         max_pending=1000, flush_interval_s=0.01)
    writer.start()
    for i in range(50):
        writer.submit_predictions([prediction(f"r{i}-{j}") for j in range(10)])
        time.sleep(0.002)
    eventually(lambda: writer.spilled > 0, "records spilled")
    assert writer.accepting
    store.down = False
    eventually(lambda: store.count_predictions() == 500, "all 500 written after the outage")
    assert writer.spilled == 0 and not list((tmp_path / "spill").glob("spill-*"))
    ids = [r.request_id for r in store.prediction_records()]
    assert sorted(ids) == sorted({f"r{i}-{j}" for i in range(50) for j in range(10)})


def test_closing_during_an_outage_leaves_records_for_the_next_start(
        make_writer: Callable[..., OutcomeWriter], tmp_path: Path) -> None:
    """A shutdown while the store is down spills what is left; the next writer replays it."""
    down = DownStore()
    writer = OutcomeWriter(down, spill_dir=tmp_path / "spill", flush_interval_s=0.01)
    writer.start()
    writer.submit_predictions([prediction(f"r{i}") for i in range(300)])
    writer.close(timeout=0.5)
    assert down.count_predictions() == 0 and list((tmp_path / "spill").glob("spill-*.jsonl"))
    up = KeptStore()
    again = make_writer(up, spill_dir=tmp_path / "spill", flush_interval_s=0.01)
    again.start()
    eventually(lambda: up.count_predictions() == 300, "the spilled 300 written at next start")
    assert [r.request_id for r in up.prediction_records()] == [f"r{i}" for i in range(300)]


def holds(condition: Callable[[], bool], what: str, seconds: float) -> None:
    """``condition`` is true at every look for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), f"no longer so within {seconds} s: {what}"
        time.sleep(0.01)


def test_the_store_stays_failing_while_everything_waits_on_disk(
        make_writer: Callable[..., OutcomeWriter], tmp_path: Path) -> None:
    """Found by probing: with every record spilled there is nothing to write, yet the store
    still refuses; failing stays True (an alert waits minutes on it) until the store answers."""
    store = DownStore()
    writer = make_writer(store, spill_dir=tmp_path / "spill", spill_after=100,
                         flush_interval_s=0.01)
    writer.submit_predictions([prediction(f"r{i}") for i in range(500)])
    writer.start()
    eventually(lambda: writer.spilled == 500 and writer.backlog == 0 and writer.failing,
               "everything spilled, the store failing")
    holds(lambda: writer.failing, "the store failing", seconds=1.0)
    store.down = False
    eventually(lambda: store.count_predictions() == 500, "the spilled records written")
    eventually(lambda: not writer.failing, "failing cleared once the store answers")


def test_feedback_counts_towards_the_cap_when_spilling_fails(
        make_writer: Callable[..., OutcomeWriter], tmp_path: Path) -> None:
    """Feedback waits in the one backlog with predictions: with the store down and spilling
    failing, it turns accepting False at max_pending (the gateway then refuses /feedback
    too), stays in memory, and is written once the store answers."""
    not_a_directory = tmp_path / "spill-here"
    not_a_directory.write_text("")
    store = DownStore()
    writer = make_writer(store, spill_dir=not_a_directory, max_pending=1_000,
                         flush_interval_s=0.01)
    writer.start()
    writer.submit_feedback([FeedbackRecord(f"f{i}", 2.0, label="a") for i in range(999)])
    assert writer.accepting
    writer.submit_feedback([FeedbackRecord("f999", 2.0, label="a")])
    assert not writer.accepting
    eventually(lambda: writer.write_errors >= 2, "spills and writes tried")
    assert not writer.accepting and writer.backlog == 1_000 and writer.spilled == 0
    store.down = False
    eventually(lambda: writer.accepting and writer.backlog == 0, "written once the store is back")
    assert len(store.feedback_records()) == 1_000


def test_a_close_that_can_neither_write_nor_spill_says_so_and_keeps_trying(
        make_writer: Callable[..., OutcomeWriter], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The store down and the spill refused at close: close raises StoreError naming the
    records still in memory (they were dropped without a word), and the writer keeps trying
    the store, which takes them when it answers."""
    monkeypatch.setattr("router.outcomes.writer._SPILL_AT_CLOSE_S", 0.5, raising=False)
    not_a_directory = tmp_path / "spill-here"
    not_a_directory.write_text("")
    store = DownStore()
    writer = make_writer(store, spill_dir=not_a_directory, flush_interval_s=0.01)
    writer.start()
    writer.submit_predictions([prediction(f"r{i}") for i in range(10)])
    with pytest.raises(StoreError, match="10 records not written"):
        writer.close(timeout=0.2)
    store.down = False
    eventually(lambda: store.count_predictions() == 10, "written once the store answers")
