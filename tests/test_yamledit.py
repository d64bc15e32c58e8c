"""Comment-keeping, validated, atomic rewrites of the YAML for promote, rollback and steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import load_config
from router.errors import ConfigError
from router.live.switch import switch
from router.live.sync import switchable
from router.live.yamledit import (
    EditRefused,
    edit_file,
    promote,
    rollback,
    set_challenger_percent,
)
from router.outcomes import MemoryStore
from tests.configs import write_config

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
    """A rollout step rewrites challenger_percent and nothing else, spacing included."""
    result = edit_file(config_file, set_challenger_percent(25), base_dir=config_file.parent)
    assert result == ("10%", "25%")
    assert config_file.read_text() == ORIGINAL.replace("challenger_percent: 10",
                                                       "challenger_percent: 25")
    edit_file(config_file, set_challenger_percent(2.5), base_dir=config_file.parent)
    assert "  challenger_percent: 2.5         # start small\n" in config_file.read_text()


def test_an_edit_that_would_not_validate_is_not_written(config_file: Path) -> None:
    """The new text is validated before the rename: an invalid result leaves the file."""
    with pytest.raises(ConfigError, match="challenger_percent"):
        edit_file(config_file, set_challenger_percent(150), base_dir=config_file.parent)
    assert config_file.read_text() == ORIGINAL
    assert [p.name for p in config_file.parent.iterdir() if p.name.startswith(".router")] == [
        ".router.yaml.lock"]


DEMO = """\
# An experiment as a person writes it: relative paths, comments on the role lines.
experiment: churn  # salts assignment
mode: ab  # ab | shadow | single
champion: {name: old, path: models/old/1}  # model serving today
challenger: {name: new, path: models/new/1}   # candidate under test

traffic:                      # aligned comments
  challenger_percent: 10      # start small
  sticky_key: header:x-user-id
store: memory://
"""


def _changed(before: str, after: str) -> list[tuple[str, str]]:
    old, new = before.splitlines(), after.splitlines()
    assert len(old) == len(new), after
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def test_promote_rollback_round_trip_changes_only_the_switched_keys(tmp_path: Path) -> None:
    """Promote then roll back: byte for byte the file it was, but for the mode it switched."""
    path = tmp_path / "router.yaml"
    path.write_text(DEMO)
    store = MemoryStore()
    switch("promote", path, tmp_path, store, reason="better", actor="test")
    promoted = path.read_text()
    assert str(tmp_path) not in promoted  # relative paths stay relative
    assert "champion: {name: new, path: models/new/1}  # model serving today\n" in promoted
    assert "previous: {name: old, path: models/old/1}\n" in promoted
    assert "challenger:   # candidate under test\n" in promoted
    assert "mode: single  # ab | shadow | single\n" in promoted
    for comment in ("# model serving today", "# candidate under test", "# start small"):
        assert promoted.count(comment) == 1
    switch("rollback", path, tmp_path, store, reason="worse", actor="test")
    assert _changed(DEMO, path.read_text()) == [
        ("mode: ab  # ab | shadow | single", "mode: single  # ab | shadow | single")]


def test_block_roles_and_uncommented_lines_round_trip(tmp_path: Path) -> None:
    """Block mappings and lines without comments come back as written, too."""
    text = ("experiment: e\nmode: shadow\nchampion:\n  name: old\n  path: models/old/1\n"
            "challenger:\n    name: new\n    path: models/new/1\nstore: memory://\n")
    path = tmp_path / "router.yaml"
    path.write_text(text)
    assert edit_file(path, promote, base_dir=tmp_path) == ("old", "new")
    assert path.read_text() == ("experiment: e\nmode: single\nchampion:\n  name: new\n"
                                "  path: models/new/1\nprevious:\n  name: old\n"
                                "  path: models/old/1\nstore: memory://\n")
    edit_file(path, rollback, base_dir=tmp_path)
    assert _changed(text.replace("    ", "  "), path.read_text()) == [
        ("mode: shadow", "mode: single")]


def test_a_json_file_is_switched_and_still_valid(tmp_path: Path, champion_dir: Path,
                                                 challenger_dir: Path) -> None:
    """A flow-style (JSON) file gets its entries added and removed in flow style."""
    path = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir)
    assert edit_file(path, promote, base_dir=tmp_path) == ("champ", "chall")
    config = load_config(path, base_dir=tmp_path)
    assert (config.champion.name, config.previous and config.previous.name) == (
        "chall", "champ")
    assert config.challenger is None and config.mode == "single"
    assert edit_file(path, rollback, base_dir=tmp_path) == ("chall", "champ")
    config = load_config(path, base_dir=tmp_path)
    assert config.champion.path == champion_dir and config.challenger is not None
    assert config.challenger.path == challenger_dir and config.previous is None


def test_a_model_new_to_the_file_is_written_relative_to_the_base(tmp_path: Path) -> None:
    """A switch caught up from the store names a model the file does not: relative path."""
    path = tmp_path / "router.yaml"
    path.write_text(DEMO)
    state = switchable(load_config(path, base_dir=tmp_path))
    state["challenger"] = {"name": "newer", "path": str(tmp_path / "models" / "newer" / "2")}
    edit_file(path, lambda s: None, base_dir=tmp_path, start=state)
    assert _changed(DEMO, path.read_text()) == [
        ("challenger: {name: new, path: models/new/1}   # candidate under test",
         "challenger: {name: newer, path: models/newer/2}   # candidate under test")]


def test_rollback_stops_the_challenger_under_test_whatever_previous_says(
        tmp_path: Path) -> None:
    """A rollback during an experiment stops its challenger; previous stays as it was."""
    path = tmp_path / "router.yaml"
    path.write_text(DEMO.replace("mode: ab", "mode: ab\nprevious: {name: older, path: models/o/1}"))
    assert edit_file(path, rollback, base_dir=tmp_path) == ("new", "old")
    config = load_config(path, base_dir=tmp_path)
    assert config.mode == "single" and config.traffic.challenger_percent == 0
    assert config.champion.name == "old"
    assert config.challenger is not None and config.challenger.name == "new"
    assert config.previous is not None and config.previous.name == "older"
