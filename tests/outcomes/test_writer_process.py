"""The writer process: the gateway hands records over, a child process encodes and writes them."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from router.errors import StoreError
from router.outcomes import FeedbackRecord, PredictionRecord, open_store
from router.outcomes.writer_child import (
    Settings,
    open_writer,
    pack_records,
    serve,
)
from router.outcomes.writer_process import WriterProcess
from tests.outcomes.test_writer import eventually, prediction

DEADLINE_S = 60.0  # a child process starts slowly on a loaded machine; this only guards hangs
URL = "sqlite:///var/outcomes.db"


@pytest.fixture
def make_process() -> Iterator[Callable[..., WriterProcess]]:
    """Starts writer processes; after the test, closes each one that is still open."""
    started: list[WriterProcess] = []

    def make(base_dir: Path, url: str = URL, **options: Any) -> WriterProcess:
        writer = WriterProcess(url, base_dir, **options)
        started.append(writer)
        writer.start()
        return writer

    yield make
    for writer in started:
        if not writer.closed:
            writer.close(timeout=DEADLINE_S)


def stored_ids(database: Path, table: str = "predictions") -> list[str]:
    with sqlite3.connect(database) as conn:
        return [r for (r,) in conn.execute(f"SELECT request_id FROM {table} ORDER BY rowid")]


def full_record(request_id: str) -> PredictionRecord:
    """A record with every optional field set, to see each one survive the hand-over."""
    return PredictionRecord(request_id, 1.5, "iris", 3, "challenger", "iris-gb", "2",
                            (5.1, 3.5, 6.25, 0.2), "virginica", 0.75, 2.25,
                            shadow=True, unit_id="user-7",
                            probabilities={"setosa": 0.05, "versicolor": 0.2, "virginica": 0.75},
                            error=None, fallback=True, forced=False)


def test_close_writes_every_record_in_order_as_the_thread_writer_would(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """What the child writes reads back field for field as what was submitted, in order."""
    writer = make_process(tmp_path)
    submitted = [full_record(f"r{i}") for i in range(2_000)]
    for i in range(0, len(submitted), 7):
        writer.submit_predictions(submitted[i:i + 7])
    writer.submit_feedback([FeedbackRecord("r1", 2.0, label="virginica")])
    writer.close(timeout=DEADLINE_S)

    store = open_store(URL, tmp_path)
    try:
        read = store.prediction_records()
        assert [r.request_id for r in read] == [r.request_id for r in submitted]
        assert read == submitted
        assert store.feedback_records() == [FeedbackRecord("r1", 2.0, label="virginica")]
    finally:
        store.close()
    assert writer.written == 2_001 and writer.backlog == 0 and writer.lag_seconds == 0.0


def test_the_child_writes_while_the_gateway_reads_its_counts(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """Records reach the store on their own; backlog, written and lag come back from the
    child; flush() waits for the store; the writing is not done by this process."""
    writer = make_process(tmp_path)
    assert writer.pid is not None and writer.pid != os.getpid()
    writer.submit_predictions([prediction(f"a{i}") for i in range(300)])
    assert writer.flush(DEADLINE_S)
    assert writer.backlog == 0 and writer.written == 300 and not writer.failing
    assert stored_ids(tmp_path / "var" / "outcomes.db") == [f"a{i}" for i in range(300)]
    writer.submit_predictions([prediction("later")])
    eventually(lambda: writer.written == 301, "written without a flush", DEADLINE_S)


def test_submit_after_close_raises(tmp_path: Path,
                                   make_process: Callable[..., WriterProcess]) -> None:
    writer = make_process(tmp_path)
    writer.close(timeout=DEADLINE_S)
    with pytest.raises(StoreError):
        writer.submit_predictions([prediction("late")])
    with pytest.raises(StoreError):
        writer.submit_feedback([FeedbackRecord("late", ts=1.0, label="a")])


def test_a_record_the_store_refuses_is_a_dead_letter_counted_here(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """Encoding happens in the child: a record SQLite cannot take is set aside there, the
    records around it are written, and the dead letter is counted in this process."""
    writer = make_process(tmp_path, spill_dir=tmp_path / "spill")
    writer.submit_feedback([FeedbackRecord("ok-1", 1.0, label="a")])
    writer.submit_feedback([FeedbackRecord("\udc00bad", 1.0, label="a")])
    writer.submit_feedback([FeedbackRecord("ok-2", 1.0, label="a")])
    assert writer.flush(DEADLINE_S)
    assert writer.dead_letters == 1
    assert stored_ids(tmp_path / "var" / "outcomes.db", "feedback") == ["ok-1", "ok-2"]
    assert (tmp_path / "spill" / "dead-letters.jsonl").exists()


def test_a_missing_store_directory_is_reported_and_records_wait(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """The child's store health comes back: failing and the problem while the directory is
    gone, the records waiting; written, with the orphans counted, once it is back."""
    writer = make_process(tmp_path)
    writer.submit_predictions([prediction(f"before-{i}") for i in range(10)])
    assert writer.flush(DEADLINE_S)
    var = tmp_path / "var"
    shutil.rmtree(var)
    writer.submit_predictions([prediction(f"during-{i}") for i in range(5)])
    eventually(lambda: writer.failing and "directory" in (writer.store_problem or ""),
               "the child's store problem reported", DEADLINE_S)
    assert writer.backlog == 5 and not writer.flush(0.3)
    var.mkdir()
    assert writer.flush(DEADLINE_S)
    assert (writer.store_reopened, writer.orphaned, writer.failing) == (1, 10, False)
    assert stored_ids(var / "outcomes.db") == [f"during-{i}" for i in range(5)]


def test_closing_with_the_store_down_spills_for_the_next_start(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """A stop while the store's directory is gone keeps the records in the spill directory;
    the next writer process writes them."""
    spill = tmp_path / "spill"
    writer = make_process(tmp_path, spill_dir=spill)
    writer.submit_predictions([prediction("first")])
    assert writer.flush(DEADLINE_S)
    shutil.rmtree(tmp_path / "var")
    writer.submit_predictions([prediction(f"kept-{i}") for i in range(50)])
    writer.close(timeout=1.0)
    assert list(spill.glob("spill-*.jsonl"))
    (tmp_path / "var").mkdir()
    again = make_process(tmp_path, spill_dir=spill)
    eventually(lambda: again.written == 50, "the spilled records written", DEADLINE_S)
    assert stored_ids(tmp_path / "var" / "outcomes.db") == [f"kept-{i}" for i in range(50)]


def test_signals_to_the_process_group_do_not_stop_the_child(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """Ctrl-C and SIGTERM reach a whole process group; the child outlives them and drains
    only when the gateway closes it, so nothing answered is lost on the way out."""
    writer = make_process(tmp_path)
    assert writer.pid is not None
    writer.submit_predictions([prediction("a")])
    os.kill(writer.pid, signal.SIGTERM)
    os.kill(writer.pid, signal.SIGINT)
    writer.submit_predictions([prediction("b")])
    writer.close(timeout=DEADLINE_S)
    assert stored_ids(tmp_path / "var" / "outcomes.db") == ["a", "b"]
    assert writer.lost == 0


def test_a_killed_child_is_replaced_and_its_loss_counted(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """SIGKILL of the child: a new one takes over, later records are written, and what the
    dead one held (at most) is counted as lost."""
    writer = make_process(tmp_path, flush_interval_s=30.0)  # the child holds what it gets
    first = writer.pid
    assert first is not None
    writer.submit_predictions([prediction(f"held-{i}") for i in range(20)])
    eventually(lambda: writer.received == 20, "the child has the records", DEADLINE_S)
    os.kill(first, signal.SIGKILL)
    eventually(lambda: writer.pid not in (None, first), "a new child", DEADLINE_S)
    writer.submit_predictions([prediction(f"after-{i}") for i in range(5)])
    writer.close(timeout=DEADLINE_S)
    assert stored_ids(tmp_path / "var" / "outcomes.db") == [f"after-{i}" for i in range(5)]
    assert writer.lost == 20


def test_a_killed_gateway_loses_nothing_it_handed_over(tmp_path: Path) -> None:
    """SIGKILL of the gateway's process: the child reads what is left in the pipe, writes it
    and exits; only records not yet handed over (a few milliseconds' worth) can be lost."""
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        from pathlib import Path
        from router.outcomes import PredictionRecord
        from router.outcomes.writer_process import WriterProcess
        writer = WriterProcess({URL!r}, Path({str(tmp_path)!r}), flush_interval_s=30.0)
        writer.start()
        print(writer.pid, flush=True)
        for i in range(1000):
            writer.submit_predictions([PredictionRecord(f"r{{i}}", 1.0, "e", 1, "champion",
                                                        "m", "1", (1.0,), "a", 0.5, 0.1)])
        deadline = time.monotonic() + 60
        while writer.handed_over < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    gateway = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert gateway.returncode == -signal.SIGKILL, gateway.stderr
    child = int(gateway.stdout.split()[0])
    eventually(lambda: not Path(f"/proc/{child}").exists(), "the orphaned child exits",
               DEADLINE_S)
    assert stored_ids(tmp_path / "var" / "outcomes.db") == [f"r{i}" for i in range(1000)]


def test_a_store_the_child_cannot_open_fails_the_start(tmp_path: Path) -> None:
    """Fail fast: a store the child cannot open is a StoreError from start(), naming it."""
    (tmp_path / "var").write_text("a file where the store's directory should be")
    writer = WriterProcess(URL, tmp_path)
    with pytest.raises(StoreError, match="writer process"):
        writer.start()
    assert writer.pid is None


class EncodedWhere:
    """A label that writes down the process that turns it into text for the store."""

    def __init__(self, note: str) -> None:
        self.note = note

    def __str__(self) -> str:
        Path(self.note).write_text(str(os.getpid()))
        return "encoded"


def test_records_are_encoded_in_the_child_not_on_the_serving_thread(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """submit only appends: the child, not this process, turns records into rows, and
    records wait in this process without being touched until they are handed over."""
    writer = make_process(tmp_path, flush_interval_s=30.0, batch_size=100_000)
    note = tmp_path / "encoded-by"
    for i in range(5_000):
        writer.submit_predictions([prediction(f"c{i}")])
    writer.submit_predictions([prediction("traced")._replace(prediction=EncodedWhere(str(note)))])
    assert writer.backlog == 5_001 and writer.written == 0  # the child waits out its interval
    assert writer.flush(DEADLINE_S)
    assert writer.written == 5_001
    assert int(note.read_text()) == writer.pid != os.getpid()


class Unpicklable:
    """A label that cannot cross a pipe as itself."""

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle this label")

    def __str__(self) -> str:
        return "odd-label"


def test_a_label_pickle_cannot_take_is_written_as_its_text(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """The store writes an odd label as its text; so it does when the label cannot be
    pickled, and the records handed over with it are written too."""
    writer = make_process(tmp_path)
    writer.submit_predictions([prediction("before")])
    writer.submit_predictions([prediction("odd")._replace(prediction=Unpicklable())])
    writer.submit_predictions([prediction("after")])
    assert writer.flush(DEADLINE_S)
    store = open_store(URL, tmp_path)
    try:
        assert [(r.request_id, r.prediction) for r in store.prediction_records()] == [
            ("before", "a"), ("odd", "odd-label"), ("after", "a")]
    finally:
        store.close()


class GoneGateway:
    """The child's end of the pipe once the gateway was killed: what it sent is still there to
    read, then the end of file; nothing can be sent back."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages

    def poll(self, timeout: float) -> bool:
        return True

    def recv_bytes(self) -> bytes:
        if self.messages:
            return self.messages.pop(0)
        raise EOFError

    def send_bytes(self, data: bytes) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_child_whose_gateway_is_gone_writes_what_it_was_handed(tmp_path: Path) -> None:
    """The child's report of its counts finds the pipe broken: it still reads what is left in
    the pipe and writes it before it exits, instead of dying with the records."""
    settings = Settings(URL, str(tmp_path), None, None, 1_000, 30.0, 5_000, None, list(sys.path),
                        0.0)
    store, writer = open_writer(settings)
    records = [prediction(f"r{i}") for i in range(3)]
    more = [prediction(f"s{i}") for i in range(2)]
    pipe = GoneGateway([pack_records(records, []), pack_records(more, [])])
    status, error = serve(pipe, writer, settings)  # type: ignore[arg-type]
    store.close()
    assert error is None and status.received == 5
    assert stored_ids(tmp_path / "var" / "outcomes.db") == ["r0", "r1", "r2", "s0", "s1"]


class CountingEvent(threading.Event):
    """An Event that counts its ``set`` calls made from the calling (request) thread."""

    def __init__(self, owner: int) -> None:
        super().__init__()
        self.owner = owner
        self.sets_by_owner = 0

    def set(self) -> None:
        if threading.get_ident() == self.owner:
            self.sets_by_owner += 1
        super().set()


def test_a_steady_stream_does_not_wake_the_hand_over_thread_for_each_pass(
        tmp_path: Path) -> None:
    """Waking the thread costs the event loop a system call and a switch of threads: while
    records keep coming, it hands over every interval without being woken; once idle, the
    next record wakes it again, and nothing is stranded on the way."""
    writer = WriterProcess(URL, tmp_path, handoff_interval_s=0.005)
    event = writer._wake = CountingEvent(threading.get_ident())
    writer.start()
    try:
        stream(writer, event)
    finally:
        writer.close(timeout=DEADLINE_S)


def stream(writer: WriterProcess, event: CountingEvent) -> None:
    writer.submit_predictions([prediction("first")])
    deadline = time.monotonic() + 0.5
    n = 0
    while time.monotonic() < deadline:
        writer.submit_predictions([prediction(f"r{n}")])
        n += 1
        time.sleep(0.0005)
    assert writer.flush(DEADLINE_S)
    assert writer.written == n + 1
    # About a hundred passes, and only the first record woke the thread (a flush wakes it too).
    assert event.sets_by_owner <= 3
    time.sleep(0.1)  # idle now
    writer.submit_predictions([prediction("late")])
    eventually(lambda: writer.written == n + 2, "the late record written")
