"""End to end: the YAML changes under continuous traffic, and switches survive a restart."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.e2e.server import REPO_ROOT, serve
from tests.polling import eventually

pytestmark = pytest.mark.e2e

YAML = """\
# live changes under traffic
experiment: live
mode: ab                          # split traffic
champion: {{name: champ, path: {champion}}}
challenger: {{name: chall, path: {challenger}}}
traffic:
  challenger_percent: {percent}   # share of users
  sticky_key: header:x-user-id
store: sqlite:///outcomes.db
"""


@dataclass
class Traffic:
    """Requests sent from a background thread: (time sent, user, status, variant)."""

    url: str
    seen: list[tuple[float, str, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            i = 0
            while not self.stop.is_set():
                user = f"user-{i % 300}"
                sent = time.monotonic()
                response = client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]},
                                       headers={"x-user-id": user})
                self.seen.append((sent, user, response.status_code,
                                  response.headers.get("x-variant", "")))
                i += 1


@contextmanager
def background_traffic(url: str) -> Iterator[Traffic]:
    traffic = Traffic(url)
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    try:
        yield traffic
    finally:
        traffic.stop.set()
        thread.join(10)


def write(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def wait_config(url: str, predicate: Callable[[Any], object], timeout: float = 30
                ) -> dict[str, Any]:
    return eventually(lambda: httpx.get(f"{url}/config").json(), predicate, timeout=timeout,
                      interval=0.05, what="/config in the expected state")


def test_changes_under_traffic(tmp_path: Path, champion_dir: Path, challenger_dir: Path,
                               no_proba_dir: Path) -> None:
    """10 -> 30 % within 3 s moving no unit back; bad files change nothing; a model swap
    under traffic fails no request."""
    path = tmp_path / "router.yaml"
    text = YAML.format(champion=champion_dir, challenger=challenger_dir, percent=10)
    path.write_text(text)
    with serve(path, tmp_path) as server, background_traffic(server.url) as traffic:
        eventually(lambda: len(traffic.seen), lambda n: n >= 100, what="traffic before")
        changed_at = time.monotonic()
        write(path, text.replace("challenger_percent: 10", "challenger_percent: 30"))
        config = wait_config(server.url, lambda c: c["revision"] == 2)
        applied_at = time.monotonic()
        assert config["revision"] == 2 and applied_at - changed_at < 3
        eventually(lambda: sum(t > applied_at for t, *_ in traffic.seen), lambda n: n >= 100,
                   what="traffic after the change")

        before = {u: v for t, u, _, v in traffic.seen if t < changed_at}
        after = [(u, v) for t, u, _, v in traffic.seen if t > applied_at]
        assert after, "no traffic after the change"
        assert not [u for u, v in after if before.get(u) == "challenger" and v == "champion"]
        share_after = sum(v == "challenger" for _, v in after) / len(after)
        assert share_after > 0.2

        for bad in (text.replace("mode: ab", "mode: [ab"),
                    text.replace("challenger_percent: 10", "challenger_percent: 130")):
            write(path, bad)
            shown = wait_config(server.url, lambda c: c["last_reload_error"] is not None)
            assert shown["revision"] == 2 and shown["last_reload_error"]
            assert shown["config"]["traffic"]["challenger_percent"] == 30  # type: ignore[index]

        swapped = text.replace(str(challenger_dir), str(no_proba_dir)) \
            .replace("challenger_percent: 10", "challenger_percent: 50")
        write(path, swapped)
        config = wait_config(server.url, lambda c: c["revision"] == 3)
        assert config["revision"] == 3 and config["last_reload_error"] is None
        # Each applied change is one info line in the server's log.
        applied = [f"INFO:     config {path} applied as revision {r}" for r in (2, 3)]
        eventually(server.output, lambda out: all(line in out for line in applied),
                   what="an info line per applied revision")
    statuses = {status for _, _, status, _ in traffic.seen}
    assert statuses == {200}, f"failed requests during reloads: {statuses}"
    assert len(traffic.seen) > 200


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=60,
                          env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})


def test_switches_by_api_and_cli_survive_a_restart(tmp_path: Path, champion_dir: Path,
                                                   challenger_dir: Path) -> None:
    """API promote and CLI rollback rewrite the file (comments kept), survive a restart,
    and are listed by `router history`."""
    path = tmp_path / "router.yaml"
    path.write_text(YAML.format(champion=champion_dir, challenger=challenger_dir, percent=10))
    token = {"ROUTER_ADMIN_TOKEN": "t0ken"}
    with serve(path, tmp_path, extra_env=token) as server:
        assert httpx.post(f"{server.url}/admin/promote").status_code == 401
        response = httpx.post(f"{server.url}/admin/promote",
                              headers={"Authorization": "Bearer t0ken"},
                              json={"reason": "challenger wins"})
        assert response.status_code == 200 and response.json()["to"] == "chall"
    assert "# share of users" in path.read_text()
    with serve(path, tmp_path) as server:
        config = httpx.get(f"{server.url}/config").json()["config"]
        assert config["champion"]["name"] == "chall" and config["mode"] == "single"
        assert httpx.post(f"{server.url}/admin/rollback").status_code == 403  # no token set
        result = run_cli("rollback", "--config", str(path), "--reason", "pager went off",
                         cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        follows = wait_config(server.url, lambda c: c["config"]["champion"]["name"] == "champ")
        assert follows["config"]["champion"]["name"] == "champ"  # type: ignore[index]
    with serve(path, tmp_path) as server:
        config = httpx.get(f"{server.url}/config").json()["config"]
        assert config["champion"]["name"] == "champ"
    history = run_cli("history", "--config", str(path), cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert "promote" in lines[0] and "champ -> chall" in lines[0]
    assert f"(api@{socket.gethostname()}:" in lines[0] and "from 127.0.0.1)" in lines[0]
    assert "challenger wins" in lines[1]
    assert "decision=" in lines[2]  # the figures each switch was made on
    assert "rollback" in lines[3] and "chall -> champ" in lines[3] and "cli:" in lines[3]
    assert "pager went off" in lines[4] and "decision=" in lines[5]


def test_every_worker_applies_the_same_revision(tmp_path: Path, champion_dir: Path,
                                                challenger_dir: Path) -> None:
    """With --workers 2, a change reaches both processes under one revision number."""
    path = tmp_path / "router.yaml"
    text = YAML.format(champion=champion_dir, challenger=challenger_dir, percent=10)
    path.write_text(text)
    with serve(path, tmp_path, workers=2) as server:
        write(path, text.replace("challenger_percent: 10", "challenger_percent: 40"))

        def revisions_seen() -> set[tuple[int, float]]:
            seen = set()
            for _ in range(40):  # a new connection each time reaches either worker
                with httpx.Client() as client:
                    config = client.get(f"{server.url}/config").json()
                seen.add((config["revision"],
                          config["config"]["traffic"]["challenger_percent"]))
            return seen

        # Until both workers have applied it; they never disagree on the number it got.
        seen = eventually(revisions_seen, lambda s: s == {(2, 40)} or len(s) > 2 or any(
            r == 2 and p != 40 for r, p in s), what="both workers on revision 2")
        assert seen == {(2, 40)}
