"""/metrics of `router serve` counts what the connection protocol answers itself (a whole
``POST /predict``, router.gateway.direct_predict) as the ASGI path counts it: by variant and
status, failures included."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.configs import write_config
from tests.e2e.server import serve

pytestmark = pytest.mark.e2e

ROW = [5.1, 3.5, 1.4, 0.2]


def post_whole(url: str, body: object) -> tuple[int, dict[str, object]]:
    """``POST /predict`` with its head and body in one write, so that the server has the
    whole request in one read and answers it directly; the answer is read to its end (the
    connection closes after it)."""
    address = urlsplit(url)
    data = json.dumps(body).encode()
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(data), data))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def request_counts(text: str) -> dict[tuple[str, str], float]:
    """router_requests_total by (variant, code), as the official parser reads it."""
    return {(s.labels["variant"], s.labels["code"]): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "router_requests_total"}


def latency_count(text: str, variant: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "router_request_duration_seconds_count"
               and s.labels["variant"] == variant)


def test_answers_refusals_and_model_failures_are_counted(tmp_path: Path,
                                                         failing_dir: Path) -> None:
    """A champion whose model fails: each prediction is a champion 500, a body without
    features a 422 of no variant, each timed; nothing else is counted."""
    config = write_config(tmp_path, champion=failing_dir, mode="single",
                          store="sqlite:///var/outcomes.db")
    with serve(config, tmp_path) as server:
        for _ in range(3):
            status, answer = post_whole(server.url, {"features": ROW})
            assert (status, answer["error"]) == (500, "model_failed"), answer
        for _ in range(2):
            status, answer = post_whole(server.url, {"rows": ROW})
            assert (status, answer["error"]) == (422, "invalid_input"), answer
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    counts = {key: value for key, value in request_counts(metrics).items() if value}
    assert counts == {("champion", "500"): 3.0, ("none", "422"): 2.0}, counts
    assert latency_count(metrics, "champion") == 3.0
    assert latency_count(metrics, "none") == 2.0
