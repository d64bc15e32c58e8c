"""The example configurations in configs/ and the YAML shown in the docs validate against the
demo models, trained in a temporary directory by the project's own train-demo code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from router.cli import main
from router.demo.training import CONFIG_PATH, train_demo

ROOT = Path(__file__).resolve().parent.parent


def examples(root: Path) -> list[Path]:
    """The example configurations in ``root/configs``: not the demo's own config, which
    `make demo` (train-demo) writes there as git-ignored build output."""
    return sorted(p for p in (root / "configs").glob("*.yaml") if p != root / CONFIG_PATH)


EXAMPLES = examples(ROOT)
# Whole configurations shown to readers (not fragments of one): each must validate as shown.
DOCUMENTED = (ROOT / "README.md", ROOT / "docs" / "configuration.md")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project directory holding the demo's trained models, as `router train-demo` writes it."""
    root = tmp_path_factory.mktemp("project")
    train_demo(root)
    # The several-challengers example names three models of its own: copies of the demo's,
    # which take the same features, stand in for them.
    for name, source in (("churn-rf/3", "breast-cancer-rf/1"), ("churn-gb/1", "breast-cancer-rf/1"),
                         ("churn-lr/1", "breast-cancer-lr/1")):
        shutil.copytree(root / "models" / source, root / "models" / name)
    return root


def validate(root: Path, name: str, text: str, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`router validate configs/NAME` run from ``root``, as a reader would: (exit code, output)."""
    (root / "configs" / name).write_text(text)
    monkeypatch.chdir(root)
    code = main(["validate", f"configs/{name}"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_demo_config_is_no_example(demo_root: Path) -> None:
    """The config `make demo` writes beside the examples is left out of them."""
    assert (demo_root / CONFIG_PATH).is_file()
    assert demo_root / CONFIG_PATH not in examples(demo_root)


def test_the_four_documented_examples_are_there() -> None:
    """configs/ holds the examples the docs point at, each opening with a comment."""
    assert [p.name for p in EXAMPLES] == ["ab.yaml", "postgres.yaml", "rollout.yaml",
                                          "shadow.yaml"]
    for path in EXAMPLES:
        assert path.read_text().startswith("# "), f"{path.name} has no opening comment"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_validates_against_the_demo_models(
        path: Path, demo_root: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`router validate configs/X.yaml` exits 0 and names the mode and both demo models."""
    code, output = validate(demo_root, path.name, path.read_text(), monkeypatch, capsys)
    assert code == 0, output
    assert f"configs/{path.name}: ok" in output
    assert "champion breast-cancer-lr:1" in output and "challenger breast-cancer-rf:1" in output


def test_an_example_with_a_missing_model_fails_by_name(
        demo_root: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The check can fail: the ab example pointed at a model that is not there is refused."""
    text = (ROOT / "configs" / "ab.yaml").read_text().replace("breast-cancer-rf/1",
                                                              "breast-cancer-rf/9")
    code, output = validate(demo_root, "broken.yaml", text, monkeypatch, capsys)
    assert code == 1
    assert "challenger" in output and "breast-cancer-rf/9" in output


@pytest.mark.parametrize("document", DOCUMENTED, ids=lambda p: p.name)
def test_the_yaml_shown_in_the_docs_validates(
        document: Path, demo_root: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The README's minimal file and the configuration page's full one are valid as shown."""
    blocks = re.findall(r"```yaml\n(.*?)```", document.read_text(), flags=re.S)
    assert blocks, f"{document.name} shows no YAML"
    for i, block in enumerate(blocks):
        code, output = validate(demo_root, f"shown-{i}.yaml", block, monkeypatch, capsys)
        assert code == 0, f"{document.name}, YAML block {i + 1}:\n{output}"


@pytest.mark.parametrize(("path", "ignored"), [
    ("models/breast-cancer-lr/1/model.joblib", True),
    ("models/demo-holdout.npz", True),
    ("models/README.md", False),
    ("configs/router.yaml", True),
    ("configs/ab.yaml", False),
    # Beside any YAML promote or rollback rewrites (its edit lock) or a rollout runs (its lease).
    ("configs/.ab.yaml.lock", True),
    ("configs/.router.yaml.lock", True),
    ("configs/.rollout.yaml.rollout", True),
    ("configs/.router.yaml.rollout", True),
])
def test_trained_models_and_the_demo_config_stay_out_of_git(path: str, ignored: bool) -> None:
    """models/ keeps only its README under version control, configs/ only the examples: not
    the demo's config, nor the lock and lease files the router keeps beside a YAML."""
    result = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT)
    assert result.returncode == (0 if ignored else 1), f"{path}: ignored should be {ignored}"
