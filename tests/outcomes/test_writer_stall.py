"""A writer process that stops reading its pipe (SIGSTOP, a hang): the gateway turns requests
away at the cap, says so on /ready and /metrics, and a shutdown gives up at its timeout,
keeping what it could not hand over in the spill directory."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from router.errors import StoreError
from router.gateway.state import GatewayState
from router.outcomes.memory import MemoryStore
from router.outcomes.spill import SpillDirectory
from router.outcomes.writer_process import WriterProcess
from tests.outcomes.test_writer import eventually, prediction
from tests.outcomes.test_writer_process import DEADLINE_S, make_process

__all__ = ["make_process"]

CHUNK = 1_000  # rows of one request, as the probe sent them


@contextmanager
def stopped(pid: int | None) -> Iterator[None]:
    """The writer process frozen (SIGSTOP) for the block; always let go again."""
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def submit_while_accepting(writer: WriterProcess, limit: int) -> int:
    """Submit requests of CHUNK rows while the writer says it takes them, as the gateway
    does (it answers 503 otherwise), up to ``limit`` rows; how many were submitted."""
    submitted = 0
    while writer.accepting and submitted < limit:
        writer.submit_predictions([prediction(f"r{submitted + i}") for i in range(CHUNK)])
        submitted += CHUNK
        time.sleep(0.01)  # a request of a thousand rows takes longer than that to answer
    return submitted


def close_within(writer: WriterProcess, timeout: float, bound: float) -> BaseException | None:
    """Close ``writer`` in a thread; what it raised. Fails when it is still closing after
    ``bound`` seconds (a shutdown that hangs) rather than hanging the test."""
    raised: list[BaseException | None] = []

    def close() -> None:
        try:
            writer.close(timeout=timeout)
        except BaseException as exc:
            raised.append(exc)
        else:
            raised.append(None)

    closing = threading.Thread(target=close, daemon=True)
    closing.start()
    closing.join(bound)
    assert raised, f"close(timeout={timeout}) still waiting after {bound} s"
    return raised[0]


def spilled_ids(spill: Path) -> list[str]:
    reader = SpillDirectory(spill)
    return [record.request_id for path in sorted(spill.glob("spill-*.jsonl"))
            for _, records in reader.read(path) for record in records]


def stored_ids(database: Path) -> list[str]:
    with sqlite3.connect(database) as conn:
        return [r for (r,) in conn.execute("SELECT request_id FROM predictions")]


def test_a_stopped_writer_process_turns_requests_away_at_the_cap_and_is_failing(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """Found by probing: with the writer process stopped, the hand-over blocks on the full
    pipe, and the backlog grew to 150,000 records, past the cap, without a 503, while the
    store was said to be fine. Now ``accepting`` turns False at the cap, the writer is
    failing with a reason that names the stall, and once it runs again all is written."""
    cap = 20_000
    writer = make_process(tmp_path, max_pending=cap, stall_after_s=1.0)
    with stopped(writer.pid):
        submitted = submit_while_accepting(writer, limit=5 * cap)
        assert not writer.accepting, f"{submitted} records taken by a stopped writer"
        assert cap <= writer.backlog == submitted < 2 * cap
        eventually(lambda: writer.failing, "a writer that reads nothing is failing", 10)
        assert writer.stall is not None and str(writer.pid) in writer.stall
        assert "read" in writer.stall
    assert writer.flush(DEADLINE_S)
    assert writer.written == submitted and writer.accepting
    assert writer.stall is None and not writer.failing and writer.lost == 0


def test_closing_gives_up_on_a_stopped_writer_and_spills_what_it_could_not_hand_over(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """Found by probing: SIGTERM waited for ever on a stopped writer process. Now close()
    gives up at its timeout: what was not handed over is spilled for the next start, what
    the stopped process holds is counted lost (at most), and nothing is written twice: the
    process, let go, writes what it read and exits; the next one writes the spill."""
    spill = tmp_path / "spill"
    writer = make_process(tmp_path, spill_dir=spill)
    pid = writer.pid
    process = writer._process
    assert process is not None
    with stopped(pid):
        submitted = submit_while_accepting(writer, limit=40 * CHUNK)
        began = time.monotonic()
        error = close_within(writer, timeout=2.0, bound=DEADLINE_S)
        assert time.monotonic() - began < 2.0 + 3.0
        assert isinstance(error, StoreError), error
        assert str(pid) in str(error) and str(spill) in str(error)
        kept = spilled_ids(spill)
        assert kept and writer.lost + len(kept) == submitted
        assert f"{writer.lost} records" in str(error)
    eventually(lambda: process.poll() is not None, "the stopped process, let go, exits",
               DEADLINE_S)
    again = make_process(tmp_path, spill_dir=spill)
    assert again.flush(DEADLINE_S)
    eventually(lambda: len(stored_ids(tmp_path / "var" / "outcomes.db")) >= submitted,
               "every record written", DEADLINE_S)
    assert sorted(stored_ids(tmp_path / "var" / "outcomes.db")) \
        == sorted(f"r{i}" for i in range(submitted))


def test_closing_gives_up_on_a_stopped_writer_whose_pipe_had_room(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """A few records fit in the pipe, so the hand-over never blocks; the stopped process
    never reads them, nor the request to close. close() still returns at its timeout (it
    waited a minute more, then killed the process), counting them as lost at most; let go,
    the process writes them."""
    writer = make_process(tmp_path, spill_dir=tmp_path / "spill")
    process = writer._process
    assert process is not None
    with stopped(writer.pid):
        writer.submit_predictions([prediction(f"r{i}") for i in range(10)])
        began = time.monotonic()
        error = close_within(writer, timeout=1.0, bound=DEADLINE_S)
        assert time.monotonic() - began < 1.0 + 3.0
        assert isinstance(error, StoreError), error
        assert writer.lost == 10
        with pytest.raises(StoreError, match="did not read"):
            writer.close(timeout=1.0)  # said again, not counted again
        assert writer.lost == 10
    eventually(lambda: process.poll() is not None, "the stopped process, let go, exits",
               DEADLINE_S)
    assert sorted(stored_ids(tmp_path / "var" / "outcomes.db")) == [f"r{i}" for i in range(10)]


def test_without_a_spill_directory_what_was_not_handed_over_is_counted_lost(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:
    """No spill directory to keep them in: the records close() could not hand over are
    counted lost with those the stopped process holds, and the error says so."""
    writer = make_process(tmp_path)
    process = writer._process
    assert process is not None
    with stopped(writer.pid):
        submitted = submit_while_accepting(writer, limit=20 * CHUNK)
        error = close_within(writer, timeout=1.0, bound=DEADLINE_S)
        assert isinstance(error, StoreError) and "could not be kept" in str(error), error
        assert writer.lost == submitted and writer.spilled == 0
    eventually(lambda: process.poll() is not None, "the stopped process, let go, exits",
               DEADLINE_S)


def test_readiness_names_a_writer_process_that_reads_nothing() -> None:
    """/ready's reason for a stalled writer process is the stall, not a store that refuses
    writes (the store is fine: the gateway's own connection to it answers)."""
    stall = "outcome writer process 7 has read none of 3000 records handed to it for 6 s"
    writer = SimpleNamespace(stall=stall, failing=True, last_error=None, accepting=True,
                             backlog=3000)
    state = SimpleNamespace(store=MemoryStore(), writer=writer)
    assert asyncio.run(GatewayState.readiness_problems(state)) == [stall]  # type: ignore[arg-type]
    writer.stall, writer.failing = None, False
    assert asyncio.run(GatewayState.readiness_problems(state)) == []  # type: ignore[arg-type]
