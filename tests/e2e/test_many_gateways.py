"""End to end: several gateways, each with its own YAML file, share one experiment."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx2 as httpx
import numpy as np
import psycopg
import pytest

from tests.e2e.server import Server, serve

pytestmark = pytest.mark.e2e

YAML = """\
# gateway {index}: its own copy of the experiment's file
experiment: shared
mode: ab                          # split traffic
champion: {{name: champ, path: {champion}}}
challenger: {{name: chall, path: {challenger}}}
traffic:
  challenger_percent: 30          # share of users
  sticky_key: header:x-user-id
store: {store}
"""


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'shared.db'}"


def write_files(tmp_path: Path, champion: Path, challenger: Path, store: str) -> list[Path]:
    paths = []
    for index in (1, 2):
        directory = tmp_path / f"gateway{index}"
        directory.mkdir(exist_ok=True)
        path = directory / "router.yaml"
        path.write_text(YAML.format(index=index, champion=champion, challenger=challenger,
                                    store=store))
        paths.append(path)
    return paths


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def champion_of(server: Server) -> str:
    return str(httpx.get(f"{server.url}/config").json()["config"]["champion"]["name"])


def test_gateways_agree_and_switches_reach_all(tmp_path: Path, champion_dir: Path,
                                               challenger_dir: Path, store_url: str) -> None:
    """Same variant for every user on both; a promotion through one reaches the other
    within 5 s, rewrites its file, and survives a restart of both."""
    paths = write_files(tmp_path, champion_dir, challenger_dir, store_url)
    env = {"ROUTER_ADMIN_TOKEN": "t"}
    with ExitStack() as stack:
        servers = [stack.enter_context(serve(p, p.parent, extra_env=env)) for p in paths]

        def variants_of(user: str) -> set[str]:
            return {httpx.post(f"{s.url}/predict", json={"features": [5.1, 3.5, 1.4, 0.2]},
                               headers={"x-user-id": user}).headers["x-variant"]
                    for s in servers}

        with ThreadPoolExecutor(8) as pool:
            seen = dict(zip(range(300), pool.map(variants_of, [f"u{i}" for i in range(300)]),
                            strict=True))
        assert all(len(v) == 1 for v in seen.values()), "a user got different variants"

        def total_requests(server: Server) -> int:
            variants = httpx.get(f"{server.url}/stats").json()["variants"]
            return sum(v["requests"] for v in variants.values())

        for server in servers:  # the log is at most about a second behind
            assert wait_until(lambda s=server: total_requests(s) == 600, 10), \
                f"{server.url}/stats does not count all 600 requests"
        started = time.monotonic()
        promoted = httpx.post(f"{servers[0].url}/admin/promote",
                              headers={"Authorization": "Bearer t"})
        assert promoted.status_code == 200, promoted.text
        assert wait_until(lambda: champion_of(servers[1]) == "chall", 5), \
            "the second gateway did not follow the promotion"
        assert time.monotonic() - started < 5
    second_file = paths[1].read_text()
    assert "name: chall" in second_file.split("previous")[0] and "gateway 2" in second_file
    with ExitStack() as stack:
        servers = [stack.enter_context(serve(p, p.parent)) for p in paths]
        assert [champion_of(s) for s in servers] == ["chall", "chall"]


def test_the_rollout_moves_on_when_its_leader_dies(tmp_path: Path, champion_dir: Path,
                                                   challenger_dir: Path,
                                                   iris_data: tuple[np.ndarray, np.ndarray],
                                                   postgres_url: str) -> None:
    """One gateway drives the rollout; killed, it hands the rollout to the other."""
    paths = write_files(tmp_path, champion_dir, challenger_dir, postgres_url)
    for path in paths:
        path.write_text(path.read_text().replace("challenger_percent: 30", "challenger_percent: 0")
                        + "analysis: {min_samples: 5}\n"
                        + "rollout: {steps: [5, 25, 50, 75], interval_s: 1}\n")
    X, y = iris_data
    stop = threading.Event()

    def traffic(urls: list[str], start: int) -> None:
        i = start
        while not stop.is_set():
            url = urls[i % len(urls)]
            try:
                answer = httpx.post(f"{url}/predict", json={"features": X[i % len(X)].tolist()},
                                    headers={"x-user-id": f"u{i}"}, timeout=5)
                httpx.post(f"{url}/feedback", timeout=5, json={
                    "request_id": answer.json()["request_id"], "label": str(y[i % len(X)])})
            except httpx.TransportError:
                pass  # the killed gateway
            i += 4

    def steps() -> list[tuple[str, str]]:
        with psycopg.connect(postgres_url) as conn:
            return [(row[0], row[1]) for row in conn.execute(
                "SELECT to_model, actor FROM history WHERE action = 'step' ORDER BY id")]

    with ExitStack() as stack:
        servers = [stack.enter_context(serve(p, p.parent)) for p in paths]
        live = [s.url for s in servers]
        for start in range(4):
            sender = threading.Thread(target=traffic, args=(live, start), daemon=True)
            sender.start()
            stack.callback(sender.join, 10)
        stack.callback(stop.set)
        assert wait_until(lambda: len(steps()) >= 2, 90), steps()
        leader = steps()[-1][1]
        pids = {str(s.process.pid): s for s in servers}
        victim = pids[leader.rsplit(":", 1)[1]]
        victim.kill()
        live.remove(victim.url)
        assert wait_until(lambda: steps()[-1][1] != leader, 90), steps()
        assert [to for to, _ in steps()][:3] == ["5%", "25%", "50%"]
