"""Packaging: the Dockerfile copies files that exist and serves like the CLI does."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

from router.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(keyword: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines()
            if line.strip().upper().startswith(keyword + " ")]


def test_every_copied_file_exists() -> None:
    """Each COPY source is in the repository (Docker cannot run here to find out)."""
    sources = [src for args in instructions("COPY") for src in shlex.split(args)[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_runs_as_non_root_with_a_health_check_on_health() -> None:
    """A non-root USER, a slim base, and HEALTHCHECK probing /health on the served port."""
    assert instructions("FROM")[0].startswith("python:") and "slim" in instructions("FROM")[0]
    assert instructions("USER") and instructions("USER")[-1] not in ("root", "0")
    [healthcheck] = instructions("HEALTHCHECK")
    assert "/health" in healthcheck
    port = re.search(r"127\.0\.0\.1:(\d+)/health", healthcheck)
    assert port and port.group(1) in instructions("EXPOSE")[0].split()


def test_command_is_router_serve_with_valid_flags() -> None:
    """CMD is `router serve` and its flags parse with the real CLI parser."""
    [cmd] = instructions("CMD")
    argv = [str(a) for a in json.loads(cmd)]
    assert argv[:2] == ["router", "serve"]
    args = build_parser().parse_args(argv[1:])
    assert args.host == "0.0.0.0" and str(args.port) in instructions("EXPOSE")[0]


def test_console_script_points_at_the_cli() -> None:
    """pyproject's `router` script is router.cli:main."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["router"] == "router.cli:main"


def make_commands(target: str, venv: Path) -> list[str]:
    """What `make TARGET` would run on a fresh clone (a dry run into an empty venv path)."""
    result = subprocess.run(["make", "--dry-run", "--always-make", target, f"VENV={venv}"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def pip_installs(commands: list[str]) -> list[list[str]]:
    """The arguments of each `pip install` of the project (pip's own upgrade left out)."""
    return [c.split(" install ", 1)[1].split() for c in commands
            if " install " in c and "--upgrade pip" not in c]


def test_make_demo_installs_the_runtime_and_make_test_every_extra(tmp_path: Path) -> None:
    """`make demo` installs the package alone; `make test` adds every extra but the bench."""
    [demo] = pip_installs(make_commands("demo", tmp_path / "venv"))
    assert demo[-2:] == ["-e", "."], demo
    [dev] = pip_installs(make_commands("test", tmp_path / "venv"))
    extras = re.fullmatch(r"'?\.\[([a-z,]+)\]'?", dev[-1])
    assert extras, dev
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(extras.group(1).split(",")) == set(declared) - {"bench"}
