"""End to end: `router serve` in its own process, real HTTP, a real SQLite file."""

from __future__ import annotations

import sqlite3
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from router.serving.registry import ModelRegistry
from tests.configs import write_config
from tests.e2e.server import serve

pytestmark = pytest.mark.e2e


def row_for(model_dir: Path) -> list[float]:
    width = len(ModelRegistry().load(model_dir).feature_names)
    return [5.1, 3.5, 1.4, 0.2][:width] + [1.0] * max(0, width - 4)


def stored_request_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [r[0] for r in connection.execute("SELECT request_id FROM predictions")]


def test_split_is_close_to_the_percent_and_sticky(tmp_path: Path, champion_dir: Path,
                                                  challenger_dir: Path) -> None:
    """20 % over 3,000 distinct users lands within 2.5 points; a user keeps its variant."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db",
                          traffic={"challenger_percent": 20, "sticky_key": "header:x-user-id"})
    body = {"features": row_for(champion_dir)}
    with serve(config, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        variants = {}
        for i in range(3000):
            response = client.post("/predict", json=body, headers={"x-user-id": f"user-{i}"})
            assert response.status_code == 200
            variants[f"user-{i}"] = response.headers["x-variant"]
        share = Counter(variants.values())["challenger"] / len(variants)
        assert abs(share - 0.20) <= 0.025
        for user in list(variants)[:100]:
            again = client.post("/predict", json=body, headers={"x-user-id": user})
            assert again.headers["x-variant"] == variants[user]
        # What the server is stays unsaid; the date is there, as HTTP asks.
        assert "server" not in again.headers and "date" in again.headers


def test_sigterm_loses_no_answered_prediction(tmp_path: Path, champion_dir: Path,
                                              challenger_dir: Path) -> None:
    """600 answered requests, SIGTERM, restart: the store holds all 600."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///var/outcomes.db", traffic={"challenger_percent": 50})
    body = {"features": row_for(champion_dir)}
    answered: list[str] = []
    with serve(config, tmp_path) as server:
        def send(i: int) -> str:
            response = httpx.post(f"{server.url}/predict", json=body,
                                  headers={"x-request-id": f"req-{i}"}, timeout=30)
            assert response.status_code == 200
            return response.headers["x-request-id"]

        with ThreadPoolExecutor(8) as pool:
            answered = list(pool.map(send, range(600)))
    # The server was stopped by SIGTERM and exited 0; a restarted one opens the same store.
    with serve(config, tmp_path):
        stored = stored_request_ids(tmp_path / "var" / "outcomes.db")
    assert sorted(stored) == sorted(answered) and len(set(stored)) == 600


def test_two_workers_write_every_request_once(tmp_path: Path, champion_dir: Path,
                                              challenger_dir: Path) -> None:
    """With --workers 2, both processes write to the one store, each request exactly once."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db", traffic={"challenger_percent": 50})
    body = {"features": row_for(champion_dir)}
    with serve(config, tmp_path, workers=2) as server:
        def send(i: int) -> int:
            with httpx.Client(base_url=server.url) as client:  # new connections spread load
                return client.post("/predict", json=body,
                                   headers={"x-request-id": f"w-{i}"}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(send, range(400))) == {200}
    stored = stored_request_ids(tmp_path / "outcomes.db")
    assert len(stored) == 400 and set(stored) == {f"w-{i}" for i in range(400)}
