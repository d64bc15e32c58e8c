"""End to end: the SQLite store under faults; a record it cannot take, a vanished directory."""

from __future__ import annotations

import sqlite3
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
