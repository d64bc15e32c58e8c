"""Comment-keeping, validated, atomic rewrites of the YAML for promote, rollback and steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import load_config
from router.errors import ConfigError
from router.yamledit import (
    EditRefused,
    edit_file,
    promote,
    rollback,
    set_challenger_percent,
)

ORIGINAL = """\
# Production experiment for the churn model.
experiment: churn                 # salts assignment
mode: ab                          # split traffic
champion:  {name: old, path: models/old/1}    # in production since March
challenger: {name: new, path: models/new/1}   # the candidate
traffic:
  challenger_percent: 10          # start small
  sticky_key: header:x-user-id
store: memory://
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(ORIGINAL)
    return path


def test_promote_keeps_comments_and_moves_models(config_file: Path) -> None:
    """Promote: challenger -> champion, old champion -> previous, mode single; comments kept."""
    assert edit_file(config_file, promote, base_dir=config_file.parent) == ("old", "new")
    text = config_file.read_text()
    for comment in ("# Production experiment", "# salts assignment", "# start small"):
        assert comment in text
    config = load_config(config_file, base_dir=config_file.parent)
    assert config.mode == "single" and config.champion.name == "new"
    assert config.previous is not None and config.previous.name == "old"
    assert config.challenger is None
    keys = [line.split(":")[0] for line in text.splitlines() if line and line[0].isalpha()]
    assert keys[:4] == ["experiment", "mode", "champion", "previous"]


def test_rollback_after_promote_restores_the_old_champion(config_file: Path) -> None:
    """Rollback after a promotion: previous serves again, the demoted model is kept loaded."""
    edit_file(config_file, promote, base_dir=config_file.parent)
    assert edit_file(config_file, rollback, base_dir=config_file.parent) == ("new", "old")
    config = load_config(config_file, base_dir=config_file.parent)
    assert config.champion.name == "old" and config.previous is None
    assert config.challenger is not None and config.challenger.name == "new"
    assert config.mode == "single"
    assert "# start small" in config_file.read_text()


def test_rollback_during_an_experiment_stops_the_challengers_traffic(config_file: Path) -> None:
    """Rollback with no previous: mode single and challenger_percent 0."""
    assert edit_file(config_file, rollback, base_dir=config_file.parent) == ("new", "old")
    config = load_config(config_file, base_dir=config_file.parent)
    assert config.mode == "single" and config.traffic.challenger_percent == 0


def test_nothing_to_switch_is_refused_and_the_file_untouched(config_file: Path) -> None:
    """Promote without a challenger, or rollback with nothing to undo, changes nothing."""
    edit_file(config_file, rollback, base_dir=config_file.parent)
    edit_file(config_file, promote, base_dir=config_file.parent)
    edit_file(config_file, rollback, base_dir=config_file.parent)
    before = config_file.read_text()
    with pytest.raises(EditRefused, match="nothing to roll back"):
        edit_file(config_file, rollback, base_dir=config_file.parent)
    single = config_file.parent / "single.yaml"
    single.write_text("experiment: e\nmode: single\nchampion: {name: a, path: /m}\n")
    with pytest.raises(EditRefused, match="nothing to promote"):
        edit_file(single, promote, base_dir=config_file.parent)
    assert config_file.read_text() == before


def test_step_changes_only_the_percent(config_file: Path) -> None:
    """A rollout step rewrites challenger_percent and nothing else (spacing aside)."""
    result = edit_file(config_file, set_challenger_percent(25), base_dir=config_file.parent)
    assert result == (10.0, 25.0)

    def words(text: str) -> list[str]:
        return [" ".join(line.split()) for line in text.splitlines()]

    expected = ORIGINAL.replace("challenger_percent: 10", "challenger_percent: 25")
    assert words(config_file.read_text()) == words(expected)


def test_an_edit_that_would_not_validate_is_not_written(config_file: Path) -> None:
    """The new text is validated before the rename: an invalid result leaves the file."""
    with pytest.raises(ConfigError, match="challenger_percent"):
        edit_file(config_file, set_challenger_percent(150), base_dir=config_file.parent)
    assert config_file.read_text() == ORIGINAL
    assert [p.name for p in config_file.parent.iterdir() if p.name.startswith(".router")] == [
        ".router.yaml.lock"]
