"""End to end: several gateways, each with its own YAML file, share one experiment."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx2 as httpx
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
