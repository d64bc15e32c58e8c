"""The documentation: the MkDocs site builds strictly and the README stays one page whose links
land on real files."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_LIMIT_BYTES = 12 * 1024


def test_the_site_builds_with_no_warning(tmp_path: Path) -> None:
    """`mkdocs build --strict`: every page in the nav, no link to a missing page or anchor."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is missing: `make install` (or pip install -e '.[docs]') installs it")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed (a new page under docs/ " \
        f"belongs in mkdocs.yml's nav):\n{report}"
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "architecture" / "index.html").is_file()


def test_readme_is_one_page() -> None:
    """The README stays under 12 KB: the manual lives in docs/."""
    size = len(README.read_bytes())
    assert size < README_LIMIT_BYTES, f"README.md is {size} bytes; move detail to docs/"


def test_readme_links_point_at_files_that_exist() -> None:
    """Every relative link and image in the README names a file of the repository."""
    targets = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    relative = [t.split("#", 1)[0] for t in targets if "://" not in t and not t.startswith("#")]
    assert relative
    missing = [t for t in relative if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_paths_the_docs_name_exist() -> None:
    """A file or directory of the repository named in the docs (`router/…`, `tests/…`,
    `bench/…`, `deploy/…`, `configs/…`, `docs/…`) is there, or is one the project generates."""
    named = set()
    for page in [README, ROOT / "models" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in re.findall(r"`((?:router|tests|bench|deploy|configs|docs)/[^`\s]*)`",
                               page.read_text()):
            if not any(ch in path for ch in "*{}<>…"):
                named.add((page.name, path))
    missing = [(page, path) for page, path in sorted(named) if not (ROOT / path).exists()]
    generated = set()
    if missing:
        ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT,
                                 input="\n".join(p for _, p in missing), capture_output=True,
                                 text=True)
        generated = set(ignored.stdout.split())
    stale = [(page, path) for page, path in missing if path not in generated]
    assert not stale, f"the docs name paths that are not in the repository: {stale}"


def test_the_home_page_and_the_readme_list_every_page() -> None:
    """Each page of the site's nav has a row on the home page and in the README's table."""
    nav = YAML(typ="safe").load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = [page for entry in nav for page in entry.values() if page != "index.md"]
    home = (ROOT / "docs" / "index.md").read_text()
    readme = README.read_text()
    assert [p for p in pages if f"]({p})" not in home] == [], "missing from docs/index.md"
    assert [p for p in pages if f"](docs/{p})" not in readme] == [], "missing from README.md"


def test_the_docs_say_how_to_move_the_demo_off_port_8000() -> None:
    """Getting started (and the README) give a `make demo PORT=…` that hands that port to
    `router demo`: `make -n` prints the command it would run, and runs nothing."""
    for page in (ROOT / "docs" / "getting-started.md", README):
        found = re.search(r"`make demo PORT=(\d+)`", page.read_text())
        assert found, f"{page.name} does not say how to change the demo's port"
        dry = subprocess.run(["make", "-n", "demo", f"PORT={found.group(1)}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=True)
        assert f"router demo --host 127.0.0.1 --port {found.group(1)} " in dry.stdout
