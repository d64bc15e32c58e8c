"""Packaging: the Dockerfile copies files that exist, installs what deploy/ needs, pinned, and
serves like the CLI does; the Makefile installs what each entry point needs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from ruamel.yaml import YAML

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


# The extra each store scheme needs (router/outcomes/store.py opens postgresql:// through the
# postgres extra's psycopg; SQLite and memory stores need nothing more).
STORE_EXTRAS = {"postgresql": {"postgres"}, "postgres": {"postgres"}, "sqlite": set(),
                "memory": set()}
# The image serves with the ONNX Runtime engine where it matches scikit-learn.
IMAGE_ENGINE_EXTRAS = {"fast"}
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"


def image_install() -> tuple[set[str], list[str]]:
    """The extras the image's `pip install .[...]` names, and the constraint files it passes."""
    [install] = [args for args in instructions("RUN") if "pip install" in args]
    words = shlex.split(install.split("&&")[0])
    targets = [w for w in words if w.startswith(".[")]
    assert len(targets) == 1, f"the image installs the package once, with extras: {install}"
    extras = set(targets[0][2:-1].split(","))
    constraints = [words[i + 1] for i, w in enumerate(words) if w in ("-c", "--constraint")]
    return extras, constraints


def manifest_store_scheme() -> str:
    configmap = YAML(typ="safe").load(
        (ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())
    config = YAML(typ="safe").load(configmap["data"]["router.yaml"])
    return urlsplit(config["store"]).scheme


def test_the_image_installs_the_extras_the_manifests_need() -> None:
    """The Deployment runs this image against the ConfigMap's store: the image must install
    that store's extra (and the fast engine), or every pod exits at start."""
    extras, _ = image_install()
    scheme = manifest_store_scheme()
    assert scheme in STORE_EXTRAS, f"unknown store scheme {scheme!r} in the ConfigMap"
    needed = STORE_EXTRAS[scheme] | IMAGE_ENGINE_EXTRAS
    assert needed <= extras, f"the image lacks the {sorted(needed - extras)} extra(s)"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert extras <= set(declared)


def test_the_image_pins_every_package_it_installs() -> None:
    """The image installs through deploy/constraints.txt, which pins each requirement of the
    package and of the image's extras to a version their specifiers allow."""
    extras, constraints = image_install()
    copied = [src for args in instructions("COPY") for src in shlex.split(args)[:-1]]
    assert "deploy/constraints.txt" in copied and constraints == ["constraints.txt"]
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)
            [spec] = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = spec.version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [r for extra in sorted(extras)
                                        for r in project["optional-dependencies"][extra]]
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}: make constraints"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{name}=={pins[name]} does not satisfy {requirement}: make constraints"


def dockerignored(path: str) -> bool:
    """Whether `docker build` leaves ``path`` out of the context, by .dockerignore's rules:
    the last pattern matching the path or one of its parent directories decides."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_the_build_context_holds_what_the_image_copies_and_nothing_local() -> None:
    """What COPY needs is sent; the virtualenv, logs, models and the git history are not."""
    for source in [src for args in instructions("COPY") for src in shlex.split(args)[:-1]]:
        inside = [str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")] \
            if (ROOT / source).is_dir() else [source]
        for path in inside or [source]:
            assert not dockerignored(path), f".dockerignore leaves out {path}, which COPY needs"
    for local in (".venv/bin/python", "var/outcomes.db", "models/breast-cancer-lr/1/model.joblib",
                  ".git/HEAD", "tests/test_packaging.py", "router/__pycache__/cli.cpython-311.pyc",
                  "var/site/index.html"):
        assert dockerignored(local), f"{local} would be sent to docker build"
