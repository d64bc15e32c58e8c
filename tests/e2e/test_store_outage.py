"""End to end: PostgreSQL stops and starts again; no answered prediction is lost."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.configs import write_config
from tests.e2e.private_postgres import PrivatePostgres
from tests.e2e.server import serve
from tests.polling import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def private_postgres(postgres_server: str) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        server.remove()


def gauge(server_url: str, name: str) -> float:
    """A gauge's value as /metrics exposes it, through the Prometheus client's parser."""
    for family in text_string_to_metric_families(httpx.get(f"{server_url}/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} is not in /metrics")


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    eventually(condition, timeout=seconds, interval=0.2, what=what)


def stored_ids(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT request_id FROM predictions")}


def test_outage_loses_no_answered_prediction(tmp_path: Path, champion_dir: Path,
                                             private_postgres: PrivatePostgres) -> None:
    """Answers go on while PostgreSQL is down, /ready and /metrics say so, and every answered
    request is in the store once it is back, also when the gateway was stopped during the
    outage."""
    config = write_config(tmp_path, champion=champion_dir, mode="single",
                          store=private_postgres.url)
    answered: list[str] = []

    def send(server_url: str, prefix: str, count: int) -> None:
        def one(i: int) -> str:
            response = httpx.post(f"{server_url}/predict", timeout=30,
                                  json={"features": [5.1, 3.5, 1.4, 0.2]},
                                  headers={"x-request-id": f"{prefix}-{i}"})
            assert response.status_code == 200, response.text
            return response.headers["x-request-id"]

        with ThreadPoolExecutor(4) as pool:
            answered.extend(pool.map(one, range(count)))

    with serve(config, tmp_path) as server:
        send(server.url, "before", 100)
        assert gauge(server.url, "router_outcome_store_failing") == 0
        private_postgres.stop()
        send(server.url, "during", 200)
        wait_for(lambda: httpx.get(f"{server.url}/ready").status_code != 200, 10,
                 "/ready still says ready with the store down")
        ready = httpx.get(f"{server.url}/ready").json()
        assert "store" in ready["message"]
        wait_for(lambda: gauge(server.url, "router_outcome_store_failing") == 1, 10,
                 "/metrics does not say the store is failing")
        assert gauge(server.url, "router_outcome_log_backlog") > 0
        # The requests' own ids were checked against memory alone once the store failed a
        # lookup, not against a store that makes each lookup wait for the pool (3 s): said
        # once for the outage, not once a request.
        assert server.output().count("checked against this process's memory alone") == 1, \
            server.output()
    # Stopped during the outage: what was not written waits on disk for the next start.
    private_postgres.start()
    with serve(config, tmp_path) as server:
        send(server.url, "after", 100)
        wait_for(lambda: stored_ids(private_postgres.url) == set(answered), 30,
                 "answered predictions missing after the outage")
        wait_for(lambda: gauge(server.url, "router_outcome_store_failing") == 0
                 and gauge(server.url, "router_outcome_log_spilled") == 0, 10,
                 "/metrics still says the store is failing after it came back")
    assert len(answered) == 400 and len(stored_ids(private_postgres.url)) == 400
