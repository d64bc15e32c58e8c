"""Switches with several challengers: each one stepped, stopped or promoted by name, the YAML
keeping its comments and every other challenger's line."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest

from router.config import load_config
from router.live.switch import switch
from router.live.sync import resolve, switchable
from router.live.yamledit import EditRefused, edit_file, promote, rollback, set_challenger_percent
from router.outcomes import MemoryStore
from tests.configs import write_config
from tests.test_yamledit import _changed

MULTI = """\
experiment: churn
mode: ab
champion: {name: old, path: models/old/1}   # in production
challengers:                                # the candidates
  - {name: gb, path: models/gb/1, percent: 20}    # boosted trees
  - {name: lr, path: models/lr/1, percent: 20}    # logistic regression
traffic:
  sticky_key: header:x-user-id
store: memory://
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """MULTI as router.yaml."""
    (tmp_path / "router.yaml").write_text(MULTI)
    return tmp_path / "router.yaml"


def _shares(path: Path) -> dict[str, float]:
    return {arm.variant: arm.percent for arm in load_config(path, base_dir=path.parent).arms}


def test_a_step_moves_one_challengers_share_and_no_other_character(config_file: Path) -> None:
    """Raising gb to 30 % rewrites its percent alone; lr's line and every comment stay."""
    result = edit_file(config_file, set_challenger_percent(30, "gb"), base_dir=config_file.parent)
    assert result == ("gb 20%", "gb 30%")
    assert _changed(MULTI, config_file.read_text()) == [
        ("  - {name: gb, path: models/gb/1, percent: 20}    # boosted trees",
         "  - {name: gb, path: models/gb/1, percent: 30}    # boosted trees")]


def test_rolling_back_one_challenger_stops_its_traffic_only(config_file: Path) -> None:
    """In ab mode a named rollback sets that challenger's share to 0 (its region stays its
    own, so no other user moves); the last one stopped ends the experiment: mode single."""
    stop_lr, stop_gb = partial(rollback, challenger="lr"), partial(rollback, challenger="gb")
    assert edit_file(config_file, stop_lr, base_dir=config_file.parent) == ("lr", "old")
    assert _shares(config_file) == {"gb": 20.0, "lr": 0.0}
    assert load_config(config_file, base_dir=config_file.parent).mode == "ab"
    assert edit_file(config_file, stop_gb, base_dir=config_file.parent) == ("gb", "old")
    config = load_config(config_file, base_dir=config_file.parent)
    assert config.mode == "single" and _shares(config_file) == {"gb": 0.0, "lr": 0.0}
    assert "# logistic regression" in config_file.read_text()


def test_rollback_without_a_name_stops_every_challenger(config_file: Path) -> None:
    """An unnamed rollback stops the whole experiment, as with one challenger."""
    assert edit_file(config_file, rollback, base_dir=config_file.parent) == ("gb, lr", "old")
    config = load_config(config_file, base_dir=config_file.parent)
    assert config.mode == "single" and set(_shares(config_file).values()) == {0.0}


def test_promoting_one_challenger_keeps_the_others_listed(config_file: Path) -> None:
    """Promote gb: it serves as champion, the old champion is kept as previous, lr stays in
    the list (serving nothing in mode single); a rollback then restores the old champion and
    keeps gb loaded as the challenger."""
    promote_gb = partial(promote, challenger="gb")
    assert edit_file(config_file, promote_gb, base_dir=config_file.parent) == ("old", "gb")
    text = config_file.read_text()
    config = load_config(config_file, base_dir=config_file.parent)
    assert config.mode == "single" and config.champion.name == "gb"
    assert config.previous is not None and config.previous.name == "old"
    assert [c.name for c in config.challengers] == ["lr"]
    assert "  - {name: lr, path: models/lr/1, percent: 20}    # logistic regression\n" in text
    assert "# boosted trees" not in text and "# the candidates" in text
    assert edit_file(config_file, rollback, base_dir=config_file.parent) == ("gb", "old")
    config = load_config(config_file, base_dir=config_file.parent)
    assert config.champion.name == "old" and config.previous is None
    assert config.challenger is not None and config.challenger.name == "gb"
    assert [c.name for c in config.challengers] == ["lr"] and config.mode == "single"


def test_a_challenger_must_be_named_when_there_are_several(config_file: Path) -> None:
    """Promote without a name, or with a name no challenger has, is refused; nothing is
    written."""
    with pytest.raises(EditRefused, match="name the challenger to promote: gb, lr"):
        edit_file(config_file, promote, base_dir=config_file.parent)
    with pytest.raises(EditRefused, match="no challenger named 'xgb' \\(gb, lr\\)"):
        edit_file(config_file, partial(rollback, challenger="xgb"), base_dir=config_file.parent)
    with pytest.raises(EditRefused, match="no challenger named"):
        edit_file(config_file, set_challenger_percent(30, "xgb"), base_dir=config_file.parent)
    assert config_file.read_text() == MULTI


def test_in_shadow_mode_a_rolled_back_challenger_leaves_the_list(config_file: Path) -> None:
    """Shadow mode has no shares to zero: the challenger is no longer mirrored, its entry
    removed; the last one left keeps its entry, with mode single."""
    config_file.write_text(MULTI.replace("mode: ab", "mode: shadow"))
    edit_file(config_file, partial(rollback, challenger="gb"), base_dir=config_file.parent)
    config = load_config(config_file, base_dir=config_file.parent)
    assert config.mode == "shadow" and [c.name for c in config.challengers] == ["lr"]
    assert "# boosted trees" not in config_file.read_text()
    edit_file(config_file, partial(rollback, challenger="lr"), base_dir=config_file.parent)
    config = load_config(config_file, base_dir=config_file.parent)
    assert config.mode == "single" and [c.name for c in config.challengers] == ["lr"]


def test_from_shadow_every_challenger_gets_the_first_share(config_file: Path) -> None:
    """A rollout's first step out of shadow mode serves each challenger the first share."""
    config_file.write_text(MULTI.replace("mode: ab", "mode: shadow").replace("percent: 20",
                                                                             "percent: 0"))
    result = edit_file(config_file, set_challenger_percent(5), base_dir=config_file.parent)
    assert result == ("shadow", "5% each")
    config = load_config(config_file, base_dir=config_file.parent)
    assert config.mode == "ab" and _shares(config_file) == {"gb": 5.0, "lr": 5.0}


def test_block_style_entries_are_edited_in_place(tmp_path: Path) -> None:
    """Entries written as block mappings: a share changed, an entry removed, the rest kept."""
    text = ("experiment: e\nmode: ab\nchampion:\n  name: old\n  path: models/old/1\n"
            "challengers:\n  - name: gb\n    path: models/gb/1\n    percent: 10\n"
            "  - name: lr   # the simple one\n    path: models/lr/1\nstore: memory://\n")
    path = tmp_path / "router.yaml"
    path.write_text(text)
    edit_file(path, set_challenger_percent(15, "lr"), base_dir=tmp_path)
    assert _shares(path) == {"gb": 10.0, "lr": 15.0}
    assert "  - name: lr   # the simple one\n    path: models/lr/1\n    percent: 15\n" \
        in path.read_text()
    edit_file(path, partial(promote, challenger="lr"), base_dir=tmp_path)
    assert path.read_text() == (
        "experiment: e\nmode: single\nchampion:\n  name: lr\n  path: models/lr/1\n"
        "previous:\n  name: old\n  path: models/old/1\n"
        "challengers:\n  - name: gb\n    path: models/gb/1\n    percent: 10\nstore: memory://\n")


def test_a_json_file_with_challengers_is_switched(tmp_path: Path, champion_dir: Path,
                                                  challenger_dir: Path,
                                                  no_proba_dir: Path) -> None:
    """A flow-style (JSON) file: a share stepped, then a challenger promoted, still valid."""
    path = write_config(tmp_path, champion=champion_dir, challengers=[
        {"name": "gb", "path": str(challenger_dir), "percent": 20},
        {"name": "svc", "path": str(no_proba_dir), "percent": 20}])
    edit_file(path, set_challenger_percent(30, "gb"), base_dir=tmp_path)
    assert _shares(path) == {"gb": 30.0, "svc": 20.0}
    store = MemoryStore()
    entry = switch("promote", path, tmp_path, store, reason="better", actor="test",
                   challenger="svc")
    assert (entry.from_model, entry.to_model) == ("champ", "svc")
    config = load_config(path, base_dir=tmp_path)
    assert config.champion.path == no_proba_dir and [c.name for c in config.challengers] == [
        "gb"]
    assert store.history(10)[-1].details == {"challenger": "svc"}


def test_the_list_travels_through_the_store_to_other_gateways(config_file: Path) -> None:
    """The published switch state carries the list; a gateway whose file is older serves the
    store's shares, and writes them into its own file."""
    store = MemoryStore()
    config = load_config(config_file, base_dir=config_file.parent)
    state = switchable(config)
    assert [c["name"] for c in state["challengers"]] == ["gb", "lr"]
    state["challengers"][0]["percent"] = 35.0
    store.publish_switch_state("churn", state, time.time() + 60)
    resolved = resolve(config, config_file.stat().st_mtime, store)
    assert resolved.from_store and [a.percent for a in resolved.config.arms] == [35.0, 20.0]
    edit_file(config_file, lambda s: None, base_dir=config_file.parent, start=resolved.state.state)
    assert _shares(config_file) == {"gb": 35.0, "lr": 20.0}
    assert "challengers" not in switchable(load_config(
        write_config(config_file.parent, champion=Path("/m/a"), challenger=Path("/m/b")),
        base_dir=config_file.parent))
