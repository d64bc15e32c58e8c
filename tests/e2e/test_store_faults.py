"""End to end: the SQLite store under faults; a record it cannot take, a vanished directory."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import httpx2 as httpx
import pytest

from router.outcomes import FeedbackRecord, PredictionRecord
from router.outcomes.dead_letters import DEAD_LETTERS_FILE
from router.outcomes.spill import SpillDirectory
from tests.configs import write_config
from tests.e2e.server import serve
from tests.e2e.test_store_outage import gauge, wait_for

pytestmark = pytest.mark.e2e

STORE = "sqlite:///var/outcomes.db"


def rows(database: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(database) as conn:
        return conn.execute(sql).fetchall()


def test_a_record_the_store_cannot_take_is_set_aside_and_the_rest_written(
        tmp_path: Path, champion_dir: Path) -> None:
    """A poison feedback record, whether it arrives over HTTP or in a spill file an earlier
    run left, is a dead letter counted in /metrics; every label around it is written."""
    config = write_config(tmp_path, champion=champion_dir, mode="single", store=STORE)
    spill_dir = tmp_path / "var" / "spill"
    left = PredictionRecord("left-1", 1.0, "exp", 1, "champion", "champ", "1", (5.1, 3.5, 1.4, 0.2),
                            "setosa", 0.9, 0.5)
    SpillDirectory(spill_dir).append("predictions", (left,))
    SpillDirectory(spill_dir).append("feedback", (FeedbackRecord("left-1", 2.0, "setosa"),
                                                  FeedbackRecord("\udc00left", 2.0, "setosa"),
                                                  FeedbackRecord("left-2", 2.0, "setosa")))
    with serve(config, tmp_path) as server:
        poison = httpx.post(f"{server.url}/feedback", headers={"content-type": "application/json"},
                            content=b'{"request_id": "\\udc00x", "label": "benign"}')
        # Refused at the edge (4xx) or accepted and then set aside by the writer: never a 5xx.
        assert poison.status_code < 500, poison.text
        expected = 2 if poison.status_code == 202 else 1
        for i in range(50):
            answer = httpx.post(f"{server.url}/feedback", json={"request_id": f"r{i}",
                                                                "label": "setosa"})
            assert answer.status_code == 202, answer.text
        wait_for(lambda: gauge(server.url, "router_outcome_log_backlog") == 0, 10,
                 "feedback stuck behind a record the store cannot take")
        assert gauge(server.url, "router_outcome_log_dead_letters_total") == expected
        assert gauge(server.url, "router_outcome_store_failing") == 0
        assert httpx.get(f"{server.url}/ready").status_code == 200
    database = tmp_path / "var" / "outcomes.db"
    ids = {r for (r,) in rows(database, "SELECT request_id FROM feedback")}
    assert ids == {"left-1", "left-2", *(f"r{i}" for i in range(50))}
    assert rows(database, "SELECT request_id FROM predictions") == [("left-1",)]
    letters = (spill_dir / DEAD_LETTERS_FILE).read_text().splitlines()
    assert len(letters) == 1 + expected and "\\udc00left" in letters[1]
    assert not list(spill_dir.glob("spill-*")) and not list(spill_dir.glob("replay-*"))


def predict(server_url: str, request_id: str) -> None:
    answer = httpx.post(f"{server_url}/predict", json={"features": [5.1, 3.5, 1.4, 0.2]},
                        headers={"x-request-id": request_id}, timeout=30)
    assert answer.status_code == 200, answer.text


def not_ready_because(server_url: str, words: str) -> bool:
    answer = httpx.get(f"{server_url}/ready")
    return answer.status_code == 503 and words in answer.json()["message"]


def test_removing_the_store_directory_while_serving_loses_nothing_unreported(
        tmp_path: Path, champion_dir: Path) -> None:
    """Found by probing: the directory removed under a serving gateway is seen, /ready says
    503 naming it, answers go on and wait in memory; once the directory is back a fresh file
    takes them, and the records the removed file held are counted in /metrics as orphaned."""
    config = write_config(tmp_path, champion=champion_dir, mode="single", store=STORE)
    var = tmp_path / "var"
    with serve(config, tmp_path) as server:
        for i in range(40):
            predict(server.url, f"before-{i}")
        wait_for(lambda: gauge(server.url, "router_outcome_log_backlog") == 0, 10, "written")
        shutil.rmtree(var)
        wait_for(lambda: not_ready_because(server.url, f"store directory {var} is missing"), 10,
                 "/ready still says ready with the store's directory gone")
        for i in range(60):
            predict(server.url, f"during-{i}")
        wait_for(lambda: gauge(server.url, "router_outcome_store_failing") == 1, 10,
                 "/metrics does not say the store is failing")
        assert gauge(server.url, "router_outcome_log_backlog") == 60
        var.mkdir()
        wait_for(lambda: httpx.get(f"{server.url}/ready").status_code == 200, 10,
                 "not ready again once the directory is back")
        for i in range(20):
            predict(server.url, f"after-{i}")
        wait_for(lambda: gauge(server.url, "router_outcome_log_backlog") == 0, 10, "written")
        assert gauge(server.url, "router_outcome_log_orphaned_total") == 40
        assert gauge(server.url, "router_outcome_store_reopened_total") == 1
        assert gauge(server.url, "router_outcome_store_failing") == 0
    stored = sorted(r for (r,) in rows(var / "outcomes.db", "SELECT request_id FROM predictions"))
    assert stored == sorted([*(f"during-{i}" for i in range(60)),
                             *(f"after-{i}" for i in range(20))])


def test_a_directory_moved_away_and_back_keeps_every_answer(tmp_path: Path,
                                                            champion_dir: Path) -> None:
    """Moved aside (an unmounted volume) and restored: the same file, all answers in it."""
    config = write_config(tmp_path, champion=champion_dir, mode="single", store=STORE)
    var, aside = tmp_path / "var", tmp_path / "var-aside"
    with serve(config, tmp_path) as server:
        for i in range(30):
            predict(server.url, f"before-{i}")
        var.rename(aside)
        for i in range(30):
            predict(server.url, f"during-{i}")
        wait_for(lambda: not_ready_because(server.url, "missing"), 10, "/ready still 200")
        aside.rename(var)
        wait_for(lambda: httpx.get(f"{server.url}/ready").status_code == 200, 10, "not ready")
        wait_for(lambda: gauge(server.url, "router_outcome_log_backlog") == 0, 10, "written")
        assert gauge(server.url, "router_outcome_log_orphaned_total") == 0
    stored = {r for (r,) in rows(var / "outcomes.db", "SELECT request_id FROM predictions")}
    assert stored == {f"{when}-{i}" for when in ("before", "during") for i in range(30)}


def test_an_immutable_shm_file_while_serving_is_reported_not_fatal(
        tmp_path: Path, champion_dir: Path) -> None:
    """Found by probing, with a real server: chattr +i on outcomes.db-shm used to kill it
    with SIGBUS; now /ready names the file, answers go on, and once the flag is cleared
    every answer is written and the server stops cleanly."""
    config = write_config(tmp_path, champion=champion_dir, mode="single", store=STORE)
    shm = tmp_path / "var" / "outcomes.db-shm"
    with serve(config, tmp_path) as server:
        for i in range(20):
            predict(server.url, f"before-{i}")
        wait_for(lambda: gauge(server.url, "router_outcome_log_backlog") == 0, 10, "written")
        flagged = subprocess.run(["chattr", "+i", str(shm)], capture_output=True, text=True)
        if flagged.returncode != 0:
            pytest.skip(f"chattr +i refused here: {flagged.stderr.strip()}")
        try:
            for i in range(20):
                predict(server.url, f"during-{i}")
            wait_for(lambda: not_ready_because(server.url, f"{shm} is read-only"), 10,
                     "/ready does not name the read-only -shm file")
            history = httpx.get(f"{server.url}/history")
            assert history.status_code == 503, history.text
            assert history.json()["error"] == "store_unavailable"
            assert "read-only" in history.json()["message"]
            assert server.process.poll() is None
        finally:
            subprocess.run(["chattr", "-i", str(shm)], check=True)
        wait_for(lambda: httpx.get(f"{server.url}/ready").status_code == 200, 10, "not ready")
        wait_for(lambda: gauge(server.url, "router_outcome_log_backlog") == 0, 10, "written")
    stored = {r for (r,) in rows(tmp_path / "var" / "outcomes.db",
                                 "SELECT request_id FROM predictions")}
    assert stored == {f"{when}-{i}" for when in ("before", "during") for i in range(20)}


def writer_processes(server_pid: int) -> list[int]:
    """The outcome writer processes the gateway ``server_pid`` started."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == server_pid and b"router.outcomes.writer_child" in command:
            found.append(int(entry.name))
    return found


def test_a_killed_writer_process_is_replaced_and_counted(tmp_path: Path,
                                                         champion_dir: Path) -> None:
    """The log is written by a process of the gateway's own; killed, it is replaced, answers
    go on and are written, and /metrics counts what the dead one may have held."""
    config = write_config(tmp_path, champion=champion_dir, mode="single", store=STORE)
    with serve(config, tmp_path) as server:
        [writer] = writer_processes(server.process.pid)
        for i in range(10):
            predict(server.url, f"before-{i}")
        wait_for(lambda: gauge(server.url, "router_outcome_log_backlog") == 0, 10, "written")
        os.kill(writer, signal.SIGKILL)
        wait_for(lambda: writer_processes(server.process.pid) not in ([], [writer]), 60,
                 "no new writer process")
        for i in range(10):
            predict(server.url, f"after-{i}")
        wait_for(lambda: gauge(server.url, "router_outcome_log_backlog") == 0, 10, "written")
        assert gauge(server.url, "router_outcome_log_lost_total") == 0
        assert gauge(server.url, "router_outcome_log_written_total") == 20
    stored = {r for (r,) in rows(tmp_path / "var" / "outcomes.db",
                                 "SELECT request_id FROM predictions")}
    assert stored == {f"{when}-{i}" for when in ("before", "after") for i in range(10)}
