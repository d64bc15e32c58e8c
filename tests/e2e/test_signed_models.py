"""End to end: a gateway given a public key serves signed models only, at start and on reload."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import pytest

from router.artifacts import sign_directory
from tests.e2e.server import REPO_ROOT, free_port, serve
from tests.e2e.test_live_changes import wait_config

pytestmark = pytest.mark.e2e
pytest.importorskip("cryptography")

YAML = """\
experiment: signed
mode: {mode}
model_roots: [models]
champion: {{name: champ, path: models/champ/1}}
{challenger}store: sqlite:///outcomes.db
"""


def _keys(directory: Path) -> tuple[Path, Path]:
    private, public = directory / "key.pem", directory / "key.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)],
                   check=True, capture_output=True)
    return private, public


@pytest.fixture
def project(tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the keys the documentation shows")
    shutil.copytree(champion_dir, tmp_path / "models" / "champ" / "1")
    shutil.copytree(challenger_dir, tmp_path / "models" / "chall" / "1")
    return tmp_path


def test_serve_refuses_an_unsigned_champion_with_one_line(project: Path) -> None:
    """`router serve --public-key` with an unsigned model: exit 1, one line naming the path."""
    _, public = _keys(project)
    (project / "router.yaml").write_text(YAML.format(mode="single", challenger=""))
    result = subprocess.run(
        [sys.executable, "-m", "router.cli", "serve", "--config", "router.yaml",
         "--port", str(free_port()), "--public-key", str(public)],
        cwd=project, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("router: error: ") and "champion.path" in line
    assert f"{project / 'models' / 'champ' / '1'}: unsigned" in line


def test_reload_to_an_unsigned_challenger_is_refused_and_reported(project: Path) -> None:
    """Signed champion served; an edit naming an unsigned challenger leaves the running
    configuration and says why in /config; once signed, the same edit applies."""
    private, public = _keys(project)
    sign_directory(project / "models" / "champ" / "1", private)
    path = project / "router.yaml"
    path.write_text(YAML.format(mode="single", challenger=""))
    with serve(path, project, extra_env={"ROUTER_MODEL_PUBLIC_KEY": str(public)}) as server:
        body = {"features": [5.1, 3.5, 1.4, 0.2]}
        assert httpx.post(f"{server.url}/predict", json=body).status_code == 200
        edited = YAML.format(mode="ab", challenger="challenger: {name: chall, "
                                                   "path: models/chall/1}\n")
        path.write_text(edited)
        config = wait_config(server.url, lambda c: c["last_reload_error"] is not None, 60)
        assert "unsigned" in config["last_reload_error"]
        assert str(project / "models" / "chall" / "1") in config["last_reload_error"]
        assert config["config"]["mode"] == "single"

        sign_directory(project / "models" / "chall" / "1", private)
        path.write_text(edited + "\n")  # touch the file: the watcher reloads
        config = wait_config(server.url, lambda c: c["config"]["mode"] == "ab", 60)
        assert config["config"]["mode"] == "ab" and config["last_reload_error"] is None
