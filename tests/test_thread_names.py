"""The router's threads carry their names where the OS shows them (``/proc/PID/task``)."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.outcomes.writer_process import WriterProcess
from router.thread_names import NAME_BYTES, name_native_thread
from tests.polling import eventually

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="native thread names are read from /proc")


def native_names() -> set[str]:
    """The native names of this process's threads other than the main one."""
    names = set()
    for task in Path("/proc/self/task").iterdir():
        if int(task.name) != os.getpid():
            names.add((task / "comm").read_text().strip())
    return names


def test_a_thread_takes_its_python_name_cut_to_what_the_kernel_keeps() -> None:
    seen: list[str] = []

    def run() -> None:
        name_native_thread()
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text())

    thread = threading.Thread(target=run, name="a-thread-named-at-length")
    thread.start()
    thread.join()
    assert seen == ["a-thread-named-at-length"[:NAME_BYTES] + "\n"]


def test_the_main_thread_keeps_the_process_name() -> None:
    comm = Path(f"/proc/self/task/{os.getpid()}/comm")
    before = comm.read_text()
    name_native_thread("renamed")
    assert comm.read_text() == before


def test_the_outcome_writers_threads_are_named(tmp_path: Path) -> None:
    writer = WriterProcess("sqlite:///var/outcomes.db", tmp_path)
    writer.start()
    try:
        # A started thread names itself when it first runs, which may be after start() returns.
        wanted = {"outcome-handoff", "outcome-status"}
        assert wanted <= eventually(native_names, lambda names: wanted <= names,
                                    what="the writer's threads named in /proc")
    finally:
        writer.close(timeout=60)


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """``tune_gc`` freezes the heap and raises the collector's thresholds for the process:
    undone after the test, so that the tests after it run with the collector they expect."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector_restored")
def test_a_served_gateway_names_its_model_and_background_threads(
        tmp_path: Path, champion_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model pool's threads and, under ``router serve`` (``tune_gc``), the default
    executor's, which refreshes the monitoring gauges."""
    from router.gateway.app import create_app
    from router.serving.engines import ENGINE_ENV

    # scikit-learn's calls go to the pool; ONNX Runtime's run on the event loop, and it may be
    # chosen at once when an earlier test checked the same model.
    monkeypatch.setenv(ENGINE_ENV, "sklearn")

    (tmp_path / "router.yaml").write_text(
        f"experiment: names\nmode: single\nchampion: {{name: iris, path: {champion_dir}}}\n"
        "store: sqlite:///var/outcomes.db\n")
    app = create_app(tmp_path / "router.yaml", base_dir=tmp_path, tune_gc=True)

    async def serve_one() -> set[str]:
        async with app.router.lifespan_context(app):
            body = b'{"features": [5.1, 3.5, 1.4, 0.2]}'
            scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [
                (b"content-type", b"application/json")], "query_string": b""}
            status, _, answer = await app.answer_predict(scope, body)
            assert status == 200, answer
            await asyncio.to_thread(lambda: None)
            return native_names()

    names = asyncio.run(serve_one())
    assert any(name.startswith("router-model") for name in names), names
    assert any(name.startswith("router-io") for name in names), names
