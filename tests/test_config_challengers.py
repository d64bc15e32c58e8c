"""``challengers:``: several challengers, each with its own share, beside or instead of
``challenger:``."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import RouterConfig, parse_config
from router.errors import ConfigError

HEAD = "experiment: e\nmode: ab\nchampion: {name: a, path: /m/a}\n"
TWO = HEAD + ("challengers:\n"
              "  - {name: b, path: /m/b, percent: 20}\n"
              "  - {name: c, path: /m/c, percent: 20}\n")


def parse(text: str) -> RouterConfig:
    return parse_config(text, source="test.yaml", base_dir=Path("/srv"))


def problems_of(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return [(p.path, p.line, p.message) for p in info.value.problems]


def test_a_list_of_challengers_becomes_arms_in_list_order() -> None:
    """Each entry is an arm served under its name, with its share; paths resolve as usual."""
    config = parse(TWO)
    assert [(a.variant, a.name, a.path, a.percent) for a in config.arms] == [
        ("b", "b", Path("/m/b"), 20.0), ("c", "c", Path("/m/c"), 20.0)]
    assert config.challenger is None and config.multi_challenger
    assert {role: ref.name for role, ref in config.model_refs().items()} == {
        "champion": "a", "b": "b", "c": "c"}
    assert config.lines["challengers[1].percent"] == 6


def test_challenger_beside_the_list_is_the_first_arm() -> None:
    """``challenger:`` keeps its role and its share (traffic.challenger_percent) and comes
    first; the list's entries follow."""
    config = parse(HEAD + "challenger: {name: b, path: /m/b}\n"
                          "challengers:\n  - {name: c, path: /m/c, percent: 10}\n"
                          "traffic: {challenger_percent: 30}\n")
    assert [(a.variant, a.name, a.percent) for a in config.arms] == [
        ("challenger", "b", 30.0), ("c", "c", 10.0)]


def test_one_challenger_keeps_its_plain_shape() -> None:
    """Without a list nothing changes: one arm, the role challenger, and no new key in
    /config's document."""
    config = parse(HEAD + "challenger: {name: b, path: /m/b}\ntraffic: {challenger_percent: 10}\n")
    assert [(a.variant, a.percent) for a in config.arms] == [("challenger", 10.0)]
    assert not config.multi_challenger
    assert "challengers" not in config.to_dict()


def test_the_list_is_in_the_config_document() -> None:
    """/config shows each entry with its share (percent defaults to 0)."""
    config = parse(HEAD + "challengers:\n  - {name: b, path: /m/b}\n"
                          "  - {name: c, path: /m/c, percent: 5}\n")
    assert config.to_dict()["challengers"] == [
        {"name": "b", "path": "/m/b", "percent": 0.0},
        {"name": "c", "path": "/m/c", "percent": 5.0}]


def listing(*entries: str, before: str = "", after: str = "") -> str:
    """HEAD, then ``before``, a ``challengers:`` list of these flow entries, then ``after``."""
    return HEAD + before + "challengers:\n" + "".join(f"  - {e}\n" for e in entries) + after


B, C = "{name: b, path: /m/b, percent: 10}", "{name: c, path: /m/c, percent: 10}"


@pytest.mark.parametrize(("text", "path", "line", "words"), [
    (listing("{name: b, path: /m/b}", "{name: b, path: /m/c}"), "challengers[1].name", 6,
     "already names"),
    (listing("{name: a, path: /m/b}"), "challengers[0].name", 5, "already names the champion"),
    (listing("{name: b, path: /m/c}", before="challenger: {name: b, path: /m/b}\n"),
     "challengers[0].name", 6, "already names the challenger"),
    (listing("{name: Previous, path: /m/b}"), "challengers[0].name", 5, "role"),
    (listing("{name: b c, path: /m/b}"), "challengers[0].name", 5, "X-Variant"),
    (listing("{name: \"b'1\", path: /m/b}"), "challengers[0].name", 5, "letters, digits"),
    (listing("{name: b, path: /m/b, percent: 101}"), "challengers[0].percent", 5,
     "between 0 and 100"),
    (listing("{name: b, path: /m/b, share: 1}"), "challengers[0].share", 5, "unknown key"),
    (listing("{name: b}"), "challengers[0].path", 5, "is required"),
    (listing("b"), "challengers[0]", 5, "must be a mapping"),
    (HEAD + "challengers: {name: b, path: /m/b}\n", "challengers", 4, "must be a list"),
    (HEAD + "challengers: []\n", "challengers", 4, "must be a list"),
    (listing(B.replace("10", "50"), C.replace("10", "50.5")), "challengers[1].percent", 6,
     "at most 50"),
    (listing(*(f"{{name: {n}, path: /m/{n}, percent: 30}}" for n in "bcdf")),
     "challengers[0].percent", 5, "at most 25"),
    (listing(B, after="traffic: {challenger_percent: 10}\n"), "traffic.challenger_percent", 6,
     "challenger:"),
    (listing(B, C, after="rollout: {steps: [10, 60]}\n"), "rollout.steps", 7, "at most 50"),
])
def test_each_fault_names_its_key_and_line(text: str, path: str, line: int,
                                            words: str) -> None:
    """Names unique and distinct from the champion's and the roles, shares within their
    regions (so within 100 % together), keys known: each fault names key, line and why."""
    found = problems_of(text)
    assert any(p == path and n == line and words in m for p, n, m in found), found


def test_shares_over_100_are_refused_on_the_list() -> None:
    """challenger_percent and the list's shares together may not pass 100 %."""
    found = problems_of(HEAD + "challenger: {name: b, path: /m/b}\n"
                               "challengers:\n  - {name: c, path: /m/c, percent: 50}\n"
                               "traffic: {challenger_percent: 50.5}\n")
    assert any(p == "traffic.challenger_percent" and "at most 50" in m for p, _, m in found)


def test_a_list_makes_challenger_optional_in_ab_and_shadow_mode() -> None:
    """ab and shadow mode need a challenger: either key gives one."""
    for mode in ("ab", "shadow"):
        config = parse(TWO.replace("mode: ab", f"mode: {mode}"))
        assert len(config.arms) == 2


def test_challenger_may_still_share_the_champions_name() -> None:
    """A new version of the same model under the same name stays a valid plain challenger."""
    config = parse(HEAD + "challenger: {name: a, path: /m/a2}\n")
    assert config.challenger is not None and config.challenger.name == "a"
