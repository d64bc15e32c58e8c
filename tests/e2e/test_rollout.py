"""End to end: the automated rollout steps up a healthy challenger and rolls back a bad one."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest

from tests.configs import write_config
from tests.e2e.server import serve

pytestmark = pytest.mark.e2e


def traffic(url: str, X: np.ndarray, y: np.ndarray, stop: threading.Event) -> None:
    """Requests from many users, each followed by its true label."""
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while not stop.is_set():
            row = i % len(X)
            answer = client.post("/predict", json={"features": X[row].tolist()},
                                 headers={"x-user-id": f"user-{i}"})
            client.post("/feedback", json={"request_id": answer.json()["request_id"],
                                           "label": str(y[row])})
            i += 1


def drive(config: Path, tmp_path: Path, iris_data: tuple[np.ndarray, np.ndarray],
          until: Any, timeout: float) -> dict[str, Any]:
    """Serve ``config`` under traffic until ``until(/config)`` holds or time runs out; the last
    /config, with what /stats decided last under ``decision`` (for failure messages)."""
    X, y = iris_data
    stop = threading.Event()
    with serve(config, tmp_path) as server:
        sender = threading.Thread(target=traffic, args=(server.url, X, y, stop), daemon=True)
        sender.start()
        try:
            deadline = time.monotonic() + timeout
            while True:
                current = httpx.get(f"{server.url}/config").json()
                if until(current) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            current["decision"] = httpx.get(f"{server.url}/stats", timeout=30).json()["decision"]
        finally:
            stop.set()
            sender.join(15)
    return current


def history_of(database: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT action, from_model, to_model, reason, actor FROM history "
                          "ORDER BY id").fetchall()
    return [dict(zip(("action", "from", "to", "reason", "actor"), row, strict=True))
            for row in rows]


def run_rollout(tmp_path: Path, champion: Path, challenger: Path,
                iris_data: tuple[np.ndarray, np.ndarray], until: Any,
                timeout: float = 90) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    config = write_config(
        tmp_path, champion=champion, challenger=challenger, store="sqlite:///outcomes.db",
        traffic={"challenger_percent": 0, "sticky_key": "header:x-user-id"},
        analysis={"min_samples": 30, "guardrails": {"error_rate": 0.05}},
        rollout={"steps": [5, 25, 50], "interval_s": 1, "auto_rollback": True})
    current = drive(config, tmp_path, iris_data, until, timeout)
    return current, history_of(tmp_path / "outcomes.db")


def test_healthy_challenger_steps_through_5_25_50(tmp_path: Path, champion_dir: Path,
                                                  challenger_dir: Path,
                                                  iris_data: tuple[np.ndarray, np.ndarray]
                                                  ) -> None:
    """Each step waits for min_samples labelled per variant, then moves on; all recorded."""
    config, history = run_rollout(
        tmp_path, champion_dir, challenger_dir, iris_data,
        until=lambda c: c["config"]["traffic"]["challenger_percent"] == 50)
    assert config["config"]["traffic"]["challenger_percent"] == 50, history
    steps = [(h["from"], h["to"]) for h in history if h["action"] == "step"]
    assert steps == [("0%", "5%"), ("5%", "25%"), ("25%", "50%")]
    assert all(h["actor"].startswith("rollout@") for h in history)


def test_failing_challenger_is_rolled_back_with_the_reason(
        tmp_path: Path, champion_dir: Path, failing_dir: Path,
        iris_data: tuple[np.ndarray, np.ndarray]) -> None:
    """A challenger that fails every call breaches the error-rate guardrail: rolled back."""
    config, history = run_rollout(tmp_path, champion_dir, failing_dir, iris_data,
                                  until=lambda c: c["config"]["mode"] == "single")
    assert config["config"]["mode"] == "single", history
    assert config["config"]["traffic"]["challenger_percent"] == 0
    rollback = [h for h in history if h["action"] == "rollback"]
    assert len(rollback) == 1 and rollback[0]["actor"].startswith("rollout@")
    assert "error rate" in rollback[0]["reason"]
