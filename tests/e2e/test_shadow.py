"""End to end, shadow mode: `router serve` in its own process, real HTTP, a real SQLite file."""

from __future__ import annotations

import re
import sqlite3
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import orjson
import pytest
from sklearn.datasets import load_iris

from router.serving.registry import ModelRegistry
from tests.configs import write_config
from tests.e2e.server import Server, serve
from tests.fixture_models import SLEEP_ENV
from tests.polling import eventually

pytestmark = pytest.mark.e2e

SUMMARY = re.compile(r"shadow: (\d+) offered, (\d+) done, (\d+) failed, (\d+) timed out, "
                     r"(\d+) dropped")


def iris_rows() -> list[list[float]]:
    return np.asarray(load_iris().data, dtype=np.float64).tolist()


def stored(db: Path, *, shadow: bool) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(
            "SELECT request_id, ts, variant, model, features, prediction, error "
            "FROM predictions WHERE shadow = ?", (int(shadow),)).fetchall()
    return [dict(row) for row in rows]


def summary(server: Server) -> dict[str, int]:
    """The counts the mirror logs at shutdown (a warning whenever a row was not scored)."""
    found = SUMMARY.findall(server.output())
    assert found, server.output()
    return dict(zip(("offered", "done", "failed", "timed_out", "dropped"),
                    map(int, found[-1]), strict=True))


def post_all(server: Server, bodies: list[Any], threads: int = 8) -> list[httpx.Response]:
    """POST each body from ``threads`` threads at once, sharing one client's connections."""
    with httpx.Client(base_url=server.url, timeout=30,
                      limits=httpx.Limits(max_connections=threads)) as client:
        def send(item: tuple[int, Any]) -> httpx.Response:
            i, body = item
            return client.post("/predict", json=body, headers={"x-request-id": f"req-{i}"})

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(send, enumerate(bodies)))


def test_every_answer_is_the_champions_and_both_are_logged_per_request(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> None:
    """300 requests: champion answers only; the store pairs 300 champion and 300 shadow rows."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          mode="shadow", store="sqlite:///outcomes.db")
    rows = (iris_rows() * 2)[:300]
    db = tmp_path / "outcomes.db"
    with serve(config, tmp_path) as server:
        responses = post_all(server, [{"features": row} for row in rows])
        # The challenger's worker starts at low priority: on a busy machine it may take longer
        # than the shutdown's drain to load, and the mirror would then drop the copies.
        eventually(lambda: len(stored(db, shadow=True)), lambda n: n >= 300, timeout=300,
                   interval=0.5, what="300 shadow rows scored and logged")
    champion = ModelRegistry().load(champion_dir)
    challenger = ModelRegistry().load(challenger_dir)
    expected = champion.predict(np.array(rows)).labels
    for response, label in zip(responses, expected, strict=True):
        assert response.status_code == 200
        assert response.headers["x-variant"] == "champion"
        assert (response.json()["model"], response.json()["prediction"]) == ("champ", label)
    answered = {r["request_id"]: r for r in stored(db, shadow=False)}
    shadow = {r["request_id"]: r for r in stored(db, shadow=True)}
    assert len(answered) == len(shadow) == 300 and answered.keys() == shadow.keys()
    for request_id, record in shadow.items():
        assert (record["variant"], record["model"], record["error"]) == \
            ("challenger", "chall", None)
        features = orjson.loads(record["features"])
        assert features == orjson.loads(answered[request_id]["features"])
        assert orjson.loads(record["prediction"]) == \
            challenger.predict(np.array([features])).labels[0]


def test_a_sleeping_challenger_leaves_the_client_median_within_3_ms_of_single_mode(
        tmp_path: Path, champion_dir: Path, slow_dir: Path) -> None:
    """The same requests, alternated between a single and a shadow gateway: medians within 3 ms."""
    single = write_config(tmp_path, champion=champion_dir, mode="single",
                          store="sqlite:///single.db", name="single.yaml")
    shadow = write_config(tmp_path, champion=champion_dir, challenger=slow_dir, mode="shadow",
                          store="sqlite:///shadow.db", name="shadow.yaml")
    body = {"features": iris_rows()[0]}
    latencies: dict[str, list[float]] = {"single": [], "shadow": []}
    with serve(single, tmp_path, extra_env={SLEEP_ENV: "50"}) as plain, \
            serve(shadow, tmp_path, extra_env={SLEEP_ENV: "50"}) as mirrored, \
            httpx.Client(base_url=plain.url) as plain_client, \
            httpx.Client(base_url=mirrored.url) as mirrored_client:
        clients = {"single": plain_client, "shadow": mirrored_client}
        for round_ in range(400):  # the first 100 rounds warm both up and are not counted
            # Alternating spreads the machine's noise evenly over the two gateways.
            for name, client in clients.items():
                started = time.perf_counter()
                assert client.post("/predict", json=body).status_code == 200
                if round_ >= 100:
                    latencies[name].append((time.perf_counter() - started) * 1000)
        eventually(lambda: len(stored(tmp_path / "shadow.db", shadow=True)),
                   lambda n: n >= 400, timeout=300, interval=0.5,
                   what="400 shadow rows scored and logged")
    assert len(stored(tmp_path / "shadow.db", shadow=True)) == 400  # the shadow did run
    medians = {name: statistics.median(values) for name, values in latencies.items()}
    assert medians["shadow"] - medians["single"] <= 3.0, medians


def test_a_challenger_that_always_raises_leaves_every_answer_200(
        tmp_path: Path, champion_dir: Path, failing_dir: Path) -> None:
    """100 requests to a failing challenger: 100 answers 200, 100 counted and logged errors."""
    config = write_config(tmp_path, champion=champion_dir, challenger=failing_dir,
                          mode="shadow", store="sqlite:///outcomes.db")
    with serve(config, tmp_path) as server:
        responses = post_all(server, [{"features": row} for row in iris_rows()[:100]])
        eventually(lambda: len(stored(tmp_path / "outcomes.db", shadow=True)),
                   lambda n: n >= 100, timeout=300, interval=0.5,
                   what="100 failed shadow calls logged (the worker starts slowly when busy)")
    assert [r.status_code for r in responses] == [200] * 100
    assert {r.headers["x-variant"] for r in responses} == {"champion"}
    assert summary(server) == {"offered": 100, "done": 0, "failed": 100, "timed_out": 0,
                               "dropped": 0}
    errors = [r["error"] for r in stored(tmp_path / "outcomes.db", shadow=True)]
    assert errors == ["RuntimeError: FailingClassifier: deliberate failure"] * 100


def test_a_queue_of_one_under_a_burst_counts_drops(
        tmp_path: Path, champion_dir: Path, slow_dir: Path) -> None:
    """queue_size 1 and a 50 ms challenger: a burst is answered, and the excess is dropped."""
    config = write_config(tmp_path, champion=champion_dir, challenger=slow_dir, mode="shadow",
                          store="sqlite:///outcomes.db", shadow={"queue_size": 1})
    with serve(config, tmp_path, extra_env={SLEEP_ENV: "50"}) as server:
        responses = post_all(server, [{"features": row} for row in iris_rows()[:100]],
                             threads=16)
    assert [r.status_code for r in responses] == [200] * 100
    counts = summary(server)
    assert counts["offered"] == 100 and counts["dropped"] > 0
    scored = counts["done"] + counts["failed"] + counts["timed_out"]
    assert scored + counts["dropped"] == 100
    assert len(stored(tmp_path / "outcomes.db", shadow=True)) == scored


def test_sigterm_right_after_400_requests_leaves_400_shadow_predictions(
        tmp_path: Path, champion_dir: Path, slow_dir: Path) -> None:
    """SIGTERM with shadow work queued: the queue drains, the store holds all 400."""
    config = write_config(tmp_path, champion=champion_dir, challenger=slow_dir, mode="shadow",
                          store="sqlite:///outcomes.db")
    # 300 ms per call and at most 64 rows per call: the shadow needs over 2 s for 400 rows,
    # so work is still queued when the signal comes.
    with serve(config, tmp_path, extra_env={SLEEP_ENV: "300"}) as server:
        responses = post_all(server, [{"features": row} for row in (iris_rows() * 3)[:400]])
        signalled_at = time.time()
    assert [r.status_code for r in responses] == [200] * 400
    answered = {r.headers["x-request-id"] for r in responses}
    shadow = stored(tmp_path / "outcomes.db", shadow=True)
    assert {r["request_id"] for r in shadow} == answered and len(shadow) == 400
    assert all(r["error"] is None for r in shadow)
    assert max(r["ts"] for r in shadow) > signalled_at  # some of it was scored while draining
