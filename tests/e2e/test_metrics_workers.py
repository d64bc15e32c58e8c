"""GET /metrics of `router serve --workers 2`: any worker answering a scrape counts all."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.configs import write_config
from tests.e2e.server import serve
from tests.polling import eventually

pytestmark = pytest.mark.e2e

ROW = [5.1, 3.5, 1.4, 0.2]
ROUND = 40
MAX_REQUESTS = 2000  # fresh connections land on either worker; this only bounds a bad luck run


def totals(text: str) -> dict[str, float]:
    """Sample values summed over labels, by sample name, as the official parser reads them."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def requests_in(path: Path) -> float:
    """router_requests_total in one worker's file alone."""
    return sum(sample.value for metric in MultiProcessCollector.merge([str(path)])
               for sample in metric.samples if sample.name == "router_requests_total")


def test_two_workers_share_their_counters(tmp_path: Path, champion_dir: Path,
                                          challenger_dir: Path) -> None:
    """Requests spread over two workers are all counted in every scrape once each worker has
    published its count (every second); the directory goes."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///var/outcomes.db",
                          traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id"})
    with serve(config, tmp_path, workers=2) as server:
        found = re.search(r"metrics: 2 workers share (\S+)", server.output())
        assert found, server.output()
        directory = Path(found.group(1))
        assert directory.is_dir()

        def send(i: int) -> None:
            # A new connection each time: whichever worker accepts it answers it.
            response = httpx.post(f"{server.url}/predict", json={"features": ROW},
                                  headers={"x-user-id": f"u{i}"}, timeout=30)
            assert response.status_code == 200, response.text

        def published() -> list[float]:
            return [requests_in(p) for p in sorted(directory.glob("counter_*.db"))]

        sent = 0
        with ThreadPoolExecutor(4) as pool:
            while sent < MAX_REQUESTS:
                list(pool.map(send, range(sent, sent + ROUND)))
                sent += ROUND
                per_worker = eventually(published, lambda found, n=sent: sum(found) == n,
                                        what=f"both workers' files to count {sent} requests")
                if len(per_worker) == 2 and all(per_worker):
                    break
        # Both workers answered some: a scrape by either must merge the other's file.
        assert len(per_worker) == 2 and all(per_worker), per_worker
        for _ in range(6):
            # A new connection each time: any worker may answer the scrape.
            response = httpx.get(f"{server.url}/metrics", timeout=10)
            assert response.status_code == 200
            sums = totals(response.text)
            assert sums["router_requests_total"] == sent
            assert sums["router_request_duration_seconds_count"] == sent
            assert sums["router_config_revision"] == 1
            assert sums["router_model_info"] == 2
            assert "router_outcome_log_backlog" in sums
            assert "router_shadow_queue_depth" in sums
    assert not directory.exists()
