"""model_roots: model directories and their files must resolve inside the roots, checked when a
config is validated and again when a model is loaded."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from router.artifacts import MODEL_FILE, load_model
from router.cli import main
from router.config import load_config
from router.errors import ConfigError, UntrustedModelError
from router.serving.registry import ModelRegistry
from router.serving.snapshot import load_models


@pytest.fixture
def layout(tmp_path: Path, champion_dir: Path) -> tuple[Path, Path, Path]:
    """``roots/models`` (the root) holding ``iris/1``; ``elsewhere/iris/1`` outside it."""
    root = tmp_path / "roots" / "models"
    inside = Path(shutil.copytree(champion_dir, root / "iris" / "1"))
    outside = Path(shutil.copytree(champion_dir, tmp_path / "elsewhere" / "iris" / "1"))
    return root, inside, outside


def test_directory_inside_the_root_loads(layout: tuple[Path, Path, Path]) -> None:
    root, inside, _ = layout
    assert load_model(inside, model_roots=[root]).metadata["name"] == "iris-rf"


def test_directory_outside_the_root_is_refused(layout: tuple[Path, Path, Path]) -> None:
    root, _, outside = layout
    with pytest.raises(UntrustedModelError, match="outside model_roots") as caught:
        load_model(outside, model_roots=[root])
    assert str(outside) in caught.value.message


def test_dot_dot_out_of_the_root_is_refused(layout: tuple[Path, Path, Path]) -> None:
    root, _, _ = layout
    escaping = root / ".." / ".." / "elsewhere" / "iris" / "1"
    with pytest.raises(UntrustedModelError, match="outside model_roots"):
        load_model(escaping, model_roots=[root])


def test_symlink_out_of_the_root_is_refused(layout: tuple[Path, Path, Path]) -> None:
    """A link inside the root to a directory outside it names where it leads."""
    root, _, outside = layout
    link = root / "linked" / "1"
    link.parent.mkdir()
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(UntrustedModelError, match=re.escape(f"resolves to {outside}")):
        load_model(link, model_roots=[root])


def test_model_file_linked_out_of_the_root_is_refused(layout: tuple[Path, Path, Path]) -> None:
    """The directory is inside, but its model.joblib is a link to a file outside."""
    root, inside, outside = layout
    (inside / MODEL_FILE).unlink()
    (inside / MODEL_FILE).symlink_to(outside / MODEL_FILE)
    escaped = re.escape(f"{MODEL_FILE} is outside model_roots")
    with pytest.raises(UntrustedModelError, match=escaped):
        load_model(inside, model_roots=[root])
    # Without roots the same directory loads: the link itself is not the fault.
    load_model(inside)


def test_symlink_within_the_root_is_allowed(layout: tuple[Path, Path, Path]) -> None:
    root, inside, _ = layout
    (root / "current").symlink_to(inside, target_is_directory=True)
    assert load_model(root / "current", model_roots=[root]).metadata["version"] == "1"


def _write(path: Path, champion: str, roots: str = "[models]") -> Path:
    path.write_text(f"experiment: e\nmode: single\nmodel_roots: {roots}\n"
                    f"champion: {{name: iris, path: {champion}}}\nstore: 'memory://'\n")
    return path


def test_validate_refuses_a_path_out_of_the_roots_with_key_and_line(
    layout: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """`router validate` names champion.path, its line and the root, for `..` and links."""
    root, _, _ = layout
    monkeypatch.chdir(root.parent)
    (root / "escape").symlink_to(root.parent.parent / "elsewhere", target_is_directory=True)
    for written in ("../elsewhere/iris/1", "models/../../elsewhere/iris/1",
                    "models/escape/iris/1"):
        path = _write(root.parent / "router.yaml", written)
        assert main(["validate", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"{path}:4: champion.path: "), err
        assert f"outside model_roots ({root})" in err
    path = _write(root.parent / "router.yaml", "models/iris/1")
    assert main(["validate", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


def test_a_root_that_is_not_a_directory_is_a_config_error(
    layout: tuple[Path, Path, Path]
) -> None:
    root, inside, _ = layout
    path = _write(root.parent / "router.yaml", str(inside), roots="[models, missing]")
    with pytest.raises(ConfigError) as caught:
        load_config(path, base_dir=root.parent)
    [problem] = caught.value.problems
    assert (problem.path, problem.line) == ("model_roots", 3)
    assert "'missing' is not a directory" in problem.message


def test_a_link_swapped_after_validation_is_refused_at_load(
    layout: tuple[Path, Path, Path]
) -> None:
    """The config validated; then the model directory became a link out: loading refuses it."""
    root, inside, outside = layout
    config = load_config(_write(root.parent / "router.yaml", "models/iris/1"),
                         base_dir=root.parent)
    shutil.rmtree(inside)
    inside.symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError) as caught:
        load_models(config, ModelRegistry())
    [problem] = caught.value.problems
    assert problem.path == "champion.path" and "outside model_roots" in problem.message


def test_a_cached_model_is_checked_against_the_roots_again(
    layout: tuple[Path, Path, Path]
) -> None:
    """A registry that loaded a directory still refuses it under roots that exclude it."""
    root, _, outside = layout
    registry = ModelRegistry()
    registry.load(outside)
    with pytest.raises(UntrustedModelError):
        registry.load(outside, [root])
