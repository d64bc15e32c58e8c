"""The gateway's lifespan: background tasks end before the store closes, which its opener does."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from router.gateway import create_app
from router.gateway.state import GatewayState
from router.outcomes import OutcomeWriter, open_store
from router.outcomes.log_writer import WRITER_ENV
from router.outcomes.writer_process import WriterProcess
from tests.configs import write_config


def test_cancelled_background_tasks_finish_before_the_store_closes(
        tmp_path: Path, champion_dir: Path) -> None:
    """A task that still reads the store while it unwinds from cancellation gets to: the
    lifespan awaits every cancelled task before stopping the writer and closing the store."""
    config = write_config(tmp_path, champion=champion_dir, mode="single",
                          store="sqlite:///outcomes.db")
    events: list[str] = []
    with TestClient(create_app(config, base_dir=tmp_path)) as client:
        state: GatewayState = client.app.state.gateway  # type: ignore[attr-defined]
        store_close = state.store.close

        def close() -> None:
            events.append("store closed")
            store_close()

        state.store.close = close  # type: ignore[method-assign]

        async def unwinds_slowly() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.sleep(0.3)  # e.g. a rollout step finishing its history entry
                events.append(f"task read {state.store.count_predictions()} predictions")
                raise

        async def add_task() -> None:
            state.background.append(asyncio.create_task(unwinds_slowly()))

        client.portal.call(add_task)  # type: ignore[union-attr]
        assert client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}).status_code == 200
    assert events == ["task read 1 predictions", "store closed"]


def test_the_writer_leaves_the_store_to_the_gateway_that_opened_it(
        tmp_path: Path, champion_dir: Path) -> None:
    """Stopping closes the store once, after the writer drained into it."""
    config = write_config(tmp_path, champion=champion_dir, mode="single",
                          store="sqlite:///outcomes.db")
    state = GatewayState.start(config, tmp_path)
    closes: list[int] = []
    store_close = state.store.close

    def close() -> None:
        closes.append(state.writer.backlog)
        store_close()

    state.store.close = close  # type: ignore[method-assign]
    state.writer.close(timeout=10)
    assert closes == [] and state.store.ping()
    state.stop()
    assert closes == [0] and not state.store.ping()


def test_the_log_of_a_database_is_written_by_a_process_of_its_own(
        tmp_path: Path, champion_dir: Path) -> None:
    """With a SQLite (or PostgreSQL) store, a writer process encodes and writes the records:
    the gateway's process only hands them over, and every answer is in the file once the
    gateway stopped."""
    config = write_config(tmp_path, champion=champion_dir, mode="single",
                          store="sqlite:///outcomes.db")
    with TestClient(create_app(config, base_dir=tmp_path)) as client:
        state: GatewayState = client.app.state.gateway  # type: ignore[attr-defined]
        assert isinstance(state.writer, WriterProcess)
        assert state.writer.pid not in (None, os.getpid())
        for _ in range(20):
            assert client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}
                               ).status_code == 200
    store = open_store("sqlite:///outcomes.db", tmp_path)
    try:
        assert store.count_predictions() == 20
    finally:
        store.close()


@pytest.mark.parametrize(("store", "choice"), [("memory://", ""),
                                               ("sqlite:///outcomes.db", "thread")])
def test_a_thread_writes_the_log_of_memory_or_when_asked(
        tmp_path: Path, champion_dir: Path, monkeypatch: pytest.MonkeyPatch, store: str,
        choice: str) -> None:
    """An in-memory store lives in the gateway's process, so a thread there writes it; so it
    does for any store with ROUTER_LOG_WRITER=thread."""
    if choice:
        monkeypatch.setenv(WRITER_ENV, choice)
    config = write_config(tmp_path, champion=champion_dir, mode="single", store=store)
    state = GatewayState.start(config, tmp_path)
    try:
        assert isinstance(state.writer, OutcomeWriter)
    finally:
        state.stop()


def test_an_unknown_writer_choice_is_refused(tmp_path: Path, champion_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WRITER_ENV, "fork")
    config = write_config(tmp_path, champion=champion_dir, mode="single",
                          store="sqlite:///outcomes.db")
    with pytest.raises(ValueError, match="ROUTER_LOG_WRITER must be 'process' or 'thread'"):
        GatewayState.start(config, tmp_path)
