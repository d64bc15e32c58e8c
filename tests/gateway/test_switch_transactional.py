"""Switches are transactional: everything is checked before the file is written, and a failure
after the write puts the old file back; the answer says why."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from router.errors import ConfigError, StoreError
from router.gateway.state import GatewayState
from tests.gateway.test_reload_admin import TEMPLATE

AUTH = {"Authorization": "Bearer s3cret"}


@pytest.fixture
def copied_challenger(tmp_path: Path, challenger_dir: Path) -> Path:
    """The challenger's model directory, copied so a test may damage it."""
    return Path(shutil.copytree(challenger_dir, tmp_path / "models" / "chall" / "1"))


@pytest.fixture
def config_file(tmp_path: Path, champion_dir: Path, copied_challenger: Path) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(TEMPLATE.format(champion=champion_dir, challenger=copied_challenger,
                                    percent=10))
    return path


@pytest.fixture(autouse=True)
def admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", "s3cret")


def gateway(client: TestClient) -> GatewayState:
    return client.app.state.gateway  # type: ignore[attr-defined, no-any-return]


def assert_nothing_switched(client: TestClient, config_file: Path, text: str) -> None:
    assert config_file.read_text() == text
    assert gateway(client).store.history() == []
    # What the watcher would do next: nothing to apply (or, when the running file names a
    # model that broke since, refuse it and keep what runs).
    with contextlib.suppress(ConfigError):
        gateway(client).reloader.reload()
    config = client.get("/config").json()
    assert config["revision"] == 1 and config["config"]["mode"] == "ab"


@pytest.mark.parametrize("reason", ["\ud800", "red\x1b[31m", "x" * 5000])
def test_a_reason_the_store_cannot_keep_switches_nothing(client: TestClient,
                                                         config_file: Path,
                                                         reason: str) -> None:
    """A lone surrogate, an escape sequence or 5,000 characters: 4xx, the file untouched."""
    before = config_file.read_text()
    body = json.dumps({"reason": reason}).encode()  # "\ud800" as JSON writes it
    response = client.post("/admin/promote", content=body,
                           headers={**AUTH, "Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert_nothing_switched(client, config_file, before)


def test_a_history_the_store_refuses_puts_the_old_file_back(
        client: TestClient, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store fails when the switch is recorded: 503 naming it, the old file restored."""
    before = config_file.read_text()

    def refuse(entry: object) -> None:
        raise StoreError("store 'memory://': disk I/O error")

    monkeypatch.setattr(gateway(client).store, "append_history", refuse)
    response = client.post("/admin/promote", headers=AUTH, json={"reason": "better"})
    assert response.status_code == 503, response.text
    assert "disk I/O error" in response.json()["message"]
    monkeypatch.undo()
    assert_nothing_switched(client, config_file, before)


def test_a_model_the_new_file_could_not_load_is_refused_before_writing(
        client: TestClient, config_file: Path, copied_challenger: Path) -> None:
    """The challenger's directory broke after it was loaded: promoting it is a 409 saying
    why, and the file still names the running config."""
    before = config_file.read_text()
    (copied_challenger / "model.joblib").write_bytes(b"not a model")
    response = client.post("/admin/promote", headers=AUTH)
    assert response.status_code == 409, response.text
    assert "champion.path" in response.json()["message"]
    assert_nothing_switched(client, config_file, before)
