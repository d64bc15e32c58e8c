"""Live reload and the admin switches, in-process: the file is the one source of truth."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from router.gateway.state import GatewayState
from tests.polling import eventually

TEMPLATE = """\
# the experiment under test
experiment: exp
mode: ab                       # split traffic
champion: {{name: champ, path: {champion}}}
challenger: {{name: chall, path: {challenger}}}
traffic:
  challenger_percent: {percent}   # share of users
  sticky_key: header:x-user-id
store: memory://
"""


@pytest.fixture
def config_file(tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(TEMPLATE.format(champion=champion_dir, challenger=challenger_dir,
                                    percent=10))
    return path


def wait_for(client: TestClient, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
    return eventually(lambda: client.get("/config").json(), predicate, timeout=timeout,
                      interval=0.05, what="/config in the expected state")


def rewrite(path: Path, text: str) -> None:
    # A new inode, as editors and the atomic rewrites do; also guarantees a new mtime.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def test_saved_change_applies_within_two_seconds(client: TestClient, config_file: Path,
                                                 champion_dir: Path,
                                                 challenger_dir: Path) -> None:
    """Raising the percent in the file gives revision 2 with the new split, quickly."""
    assert client.get("/config").json()["revision"] == 1
    started = time.monotonic()
    rewrite(config_file, TEMPLATE.format(champion=champion_dir, challenger=challenger_dir,
                                         percent=30))
    config = wait_for(client, lambda c: c["revision"] == 2)
    assert time.monotonic() - started < 2.0
    assert config["config"]["traffic"]["challenger_percent"] == 30
    assert config["last_reload_error"] is None


@pytest.mark.parametrize(("broken", "key", "line"), [
    ("percent: [", "not valid YAML", None),
    ("percent", "traffic.challenger_percent", 7),
])
def test_bad_file_keeps_the_running_config_and_shows_why(
        client: TestClient, config_file: Path, champion_dir: Path, challenger_dir: Path,
        broken: str, key: str, line: int | None) -> None:
    """A file that fails leaves revision and traffic as they were, with key and line shown."""
    text = TEMPLATE.format(champion=champion_dir, challenger=challenger_dir, percent=10)
    bad = text.replace("challenger_percent: 10", "challenger_percent: 130") \
        if broken == "percent" else text.replace("mode: ab", "mode: [ab")
    rewrite(config_file, bad)
    config = wait_for(client, lambda c: c["last_reload_error"] is not None)
    assert config["revision"] == 1
    assert config["config"]["traffic"]["challenger_percent"] == 10
    assert key in config["last_reload_error"]
    if line is not None:
        assert f"line {line}" in config["last_reload_error"]
    response = client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
    assert response.status_code == 200
    rewrite(config_file, text.replace("challenger_percent: 10", "challenger_percent: 20"))
    config = wait_for(client, lambda c: c["last_reload_error"] is None)
    assert config["revision"] == 2 and config["config"]["traffic"]["challenger_percent"] == 20


def test_touching_the_file_without_a_change_keeps_the_revision(client: TestClient,
                                                               config_file: Path) -> None:
    """Saving the same content is not a new revision."""
    rewrite(config_file, config_file.read_text())
    state: GatewayState = client.app.state.gateway  # type: ignore[attr-defined]
    eventually(state.reloader.file_changed, lambda changed: not changed, interval=0.05,
               what="the watcher reading the new file")
    assert client.get("/config").json()["revision"] == 1
    assert state.reloader.last_error is None


def test_admin_routes_need_the_token(client: TestClient, monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    """No ROUTER_ADMIN_TOKEN: 403; a wrong or missing bearer token: 401."""
    monkeypatch.delenv("ROUTER_ADMIN_TOKEN", raising=False)
    response = client.post("/admin/promote")
    assert response.status_code == 403 and response.json()["error"] == "admin_disabled"
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", "s3cret")
    assert client.post("/admin/promote").status_code == 401
    wrong = client.post("/admin/promote", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    assert client.get("/config").json()["revision"] == 1


def test_admin_promote_then_rollback(client: TestClient, config_file: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Promote applies at once and is recorded; rollback restores the old champion."""
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", "s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    promoted = client.post("/admin/promote", headers=auth, json={"reason": "better accuracy"})
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert (body["from"], body["to"], body["revision"]) == ("champ", "chall", 2)
    assert body["config"]["mode"] == "single"
    assert body["config"]["previous"]["name"] == "champ"
    assert "# share of users" in config_file.read_text()
    answer = client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}).json()
    assert answer["model"] == "chall" and answer["variant"] == "champion"

    rolled = client.post("/admin/rollback", headers=auth)
    assert rolled.status_code == 200 and rolled.json()["to"] == "champ"
    assert client.get("/config").json()["config"]["champion"]["name"] == "champ"

    state: GatewayState = client.app.state.gateway  # type: ignore[attr-defined]
    history = state.store.history()
    assert [(h.action, h.from_model, h.to_model) for h in history] == [
        ("promote", "champ", "chall"), ("rollback", "chall", "champ")]
    assert history[0].reason == "better accuracy" and history[0].actor == \
        f"api@{socket.gethostname()}:{os.getpid()} from testclient"
    # Recorded with the figures it was made on, as the rollout's moves are.
    assert history[0].details["decision"] == "continue"
    assert {"p_value", "champion_requests", "reasons"} <= set(history[0].details)
    refused = client.post("/admin/rollback", headers=auth)  # nothing left to undo
    assert refused.status_code == 409 and refused.json()["error"] == "switch_refused"
    assert "nothing to roll back" in refused.json()["message"]
