"""End to end: /stats counts requests, not model calls or rows, when requests share calls.

Under load the gateway answers many requests in one model call, and logs them with the call's
time stamp; a batch request is logged as one row per instance. The sample ratio check counts
assignment units (requests without a sticky key), and the guardrails and latency percentiles
are rates and quantiles of requests: each must see every request once, however the requests
were grouped into calls.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
from scipy import stats as sps

from tests.configs import write_config
from tests.e2e.server import Server, serve
from tests.polling import eventually

pytestmark = pytest.mark.e2e

CONNECTIONS = 48
ROUNDS = 30
READ_TIMEOUT_S = 60.0


def _request(body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (b"POST /predict HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(data)).encode() + b"\r\n\r\n" + data)


def _answer(sock: socket.socket) -> dict[str, Any]:
    """One whole answer from ``sock``: its JSON body (status 200 asserted)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before an answer"
        buffer += chunk
    head, body = buffer.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.split()[1] == "200", buffer
    length = int(dict(line.lower().split(": ", 1) for line in lines)["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside an answer"
        body += chunk
    answer: dict[str, Any] = json.loads(body)
    return answer


def send_together(server: Server, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each round sends one request on every one of :data:`CONNECTIONS` connections before
    reading any answer, so that the gateway reads them in one go and answers many in one
    model call; the answers, in the order of ``bodies``."""
    host, port = server.url.removeprefix("http://").split(":")
    sockets = [socket.create_connection((host, int(port))) for _ in range(CONNECTIONS)]
    answers: list[dict[str, Any]] = []
    try:
        for sock in sockets:
            sock.settimeout(READ_TIMEOUT_S)
        for start in range(0, len(bodies), CONNECTIONS):
            batch = bodies[start:start + CONNECTIONS]
            for sock, body in zip(sockets, batch, strict=False):
                sock.sendall(_request(body))
            answers += [_answer(sock) for sock in sockets[:len(batch)]]
    finally:
        for sock in sockets:
            sock.close()
    return answers


def stats_when(server: Server, rows: int) -> dict[str, Any]:
    """/stats once the log holds ``rows`` predictions."""
    return eventually(lambda: httpx.get(f"{server.url}/stats", timeout=30).json(),
                      lambda b: sum(v["requests"] for v in b["variants"].values()) == rows,
                      timeout=30, interval=0.2, what="/stats with every row logged")


def test_the_sample_ratio_check_counts_requests_answered_in_one_call_apart(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> None:
    """Requests at 10 %, without a sticky key, many answered in each model call: the check
    counts the requests each variant answered, and agrees with scipy on them. Counting the
    calls instead (one time stamp each) made the champion's many-request calls weigh as much
    as the challenger's few: a false mismatch, which freezes the decision."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db", traffic={"challenger_percent": 10})
    bodies = [{"features": [5.1, 3.5, 1.4, 0.2]}] * (CONNECTIONS * ROUNDS)
    with serve(config, tmp_path) as server:
        answers = send_together(server, bodies)
        body = stats_when(server, len(bodies))
    by_variant = {v: sum(a["variant"] == v for a in answers) for v in ("champion", "challenger")}
    with sqlite3.connect(tmp_path / "outcomes.db") as db:
        stamps = db.execute("SELECT COUNT(DISTINCT ts), COUNT(*) FROM predictions").fetchone()
    assert stamps[0] < stamps[1] / 2, "requests were not answered together: nothing is tested"
    srm = body["comparison"]["srm"]
    [revision] = srm["revisions"]
    assert (revision["champion"], revision["challenger"]) == \
        (by_variant["champion"], by_variant["challenger"])
    expected = np.array([0.9, 0.1]) * len(bodies)
    assert srm["p_value"] == pytest.approx(sps.chisquare(
        [by_variant["champion"], by_variant["challenger"]], expected).pvalue)


def test_guardrails_and_latency_percentiles_count_a_batch_request_once(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> None:
    """Batch requests of 1 to 40 rows, every one to the challenger: the latency guardrail and
    the variant's percentiles are over requests, each with the latency its rows were logged
    with, not over rows (a client's large batches would weigh as many requests)."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db", traffic={"challenger_percent": 100},
                          analysis={"guardrails": {"p99_latency_ms": 1_000, "error_rate": 0.5}})
    sizes = np.random.default_rng(3).integers(1, 41, CONNECTIONS * 4).tolist()
    bodies = [{"instances": [[5.1, 3.5, 1.4, 0.2]] * n} for n in sizes]
    with serve(config, tmp_path) as server:
        send_together(server, bodies)
        body = stats_when(server, sum(sizes))
    with sqlite3.connect(tmp_path / "outcomes.db") as db:
        by_request = dict(db.execute(
            "SELECT substr(request_id, 1, instr(request_id, ':') - 1), MIN(latency_ms) "
            "FROM predictions GROUP BY 1").fetchall())
    assert len(by_request) == len(bodies)
    latency = np.array(list(by_request.values()))
    challenger = body["variants"]["challenger"]
    assert challenger["requests"] == sum(sizes)  # rows logged, as before
    assert challenger["latency_ms"] == pytest.approx(
        dict(zip(("p50", "p95", "p99"), np.percentile(latency, [50, 95, 99]), strict=True)))
    guardrails = body["guardrails"]
    assert guardrails["p99_latency_ms"]["requests"] == len(bodies)
    assert guardrails["error_rate"]["requests"] == len(bodies)
    assert guardrails["p99_latency_ms"]["observed_p99_ms"] == \
        pytest.approx(float(np.percentile(latency, 99)))
