"""End to end: the gateway's writer process stopped (SIGSTOP) under traffic, as a probe found
it: the cap, /ready and /metrics, a SIGTERM that ends, and every answer found again."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.configs import write_config
from tests.e2e.server import serve
from tests.e2e.test_store_faults import not_ready_because, rows, writer_processes
from tests.e2e.test_store_outage import gauge, wait_for

pytestmark = pytest.mark.e2e

STORE = "sqlite:///var/outcomes.db"
ROWS = 1_000  # a request's rows, as the probe sent them
CAP = 100_000  # records waiting when requests are turned away (docs/operations.md)
DRAIN_S = 10  # shadow.drain_s by default: a stop ends within drain_s + 15 s


def predict_rows(server_url: str, batch: int) -> tuple[int, list[str]]:
    """One request of ROWS rows; its status and the ids of the rows answered."""
    answer = httpx.post(f"{server_url}/predict", timeout=30,
                        json={"instances": [[5.1, 3.5, 1.4, 0.2]] * ROWS},
                        headers={"x-request-id": f"batch-{batch}"})
    if answer.status_code != 200:
        return answer.status_code, []
    return 200, [p["id"] for p in answer.json()["predictions"]]


def gone(pid: int) -> bool:
    """The process ended (a zombie waiting to be reaped has no command line)."""
    try:
        return not Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def test_a_stopped_writer_process_is_reported_and_stopping_the_gateway_ends(
        tmp_path: Path, champion_dir: Path) -> None:
    """Found by probing: with its writer process stopped, a gateway took 150,000 rows
    and more with /ready 200, then hung on SIGTERM until killed, losing them all, uncounted.
    Now requests are refused at the cap, /ready and /metrics name the stall, SIGTERM ends
    within drain_s + 15 s, and every answered row is found in the store once the writer
    process runs again (what it held) and the gateway starts again (what it spilled)."""
    config = write_config(tmp_path, champion=champion_dir, mode="single", store=STORE)
    answered: list[str] = []
    with serve(config, tmp_path) as server:
        [writer] = writer_processes(server.process.pid)
        os.kill(writer, signal.SIGSTOP)
        try:
            codes: dict[int, int] = {}
            for batch in range(2 * CAP // ROWS):
                code, ids = predict_rows(server.url, batch)
                codes[code] = codes.get(code, 0) + 1
                answered += ids
                if code == 503:
                    break
            assert codes.get(503) == 1, codes
            assert CAP <= len(answered) < CAP + 10 * ROWS
            wait_for(lambda: not_ready_because(server.url, f"writer process {writer}"), 20,
                     "/ready does not name the stopped writer process")
            assert gauge(server.url, "router_outcome_store_failing") == 1
            assert gauge(server.url, "router_outcome_log_backlog") == len(answered)
            began = time.monotonic()
            code = server.stop(timeout=DRAIN_S + 15 + 30)
            took = time.monotonic() - began
            server.killed = True  # stopped here: not the clean exit serve() checks for
        finally:
            os.kill(writer, signal.SIGCONT)
        assert took < DRAIN_S + 15, f"SIGTERM took {took:.1f} s"
        output = server.output()
        assert f"outcome writer process {writer} did not read" in output, output
        assert "kept in" in output and "for the next start" in output, output
    wait_for(lambda: gone(writer), 60, "the writer process, let go, does not exit")
    with serve(config, tmp_path) as server:
        wait_for(lambda: gauge(server.url, "router_outcome_log_backlog") == 0
                 and gauge(server.url, "router_outcome_log_spilled") == 0, 60,
                 "the spilled records are not written")
    stored = [r for (r,) in rows(tmp_path / "var" / "outcomes.db",
                                 "SELECT request_id FROM predictions")]
    assert sorted(stored) == sorted(answered)
