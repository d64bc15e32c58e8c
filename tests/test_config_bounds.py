"""Config files a request or the watcher could not live with are refused at parse time."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import parse_config
from router.config.bounds import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH
from router.errors import ConfigError

BASE = """\
experiment: exp
mode: single
champion: {name: champ, path: models/champ/1}
"""


def problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, base_dir=Path("/srv"))
    return [(p.path, p.line, p.message) for p in raised.value.problems]


@pytest.mark.parametrize("nesting", [
    "[" * 5000 + "]" * 5000,
    "{a: " * 40 + "1" + "}" * 40,
    "\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 60)) + " " * 60 + "v",
])
def test_deep_nesting_is_refused_quickly_with_its_line(nesting: str) -> None:
    """Flow or block nesting past the limit is one problem on the file, with the line where
    it goes too deep, found before the YAML parser recurses."""
    found = problems(BASE + "extra: " + nesting + "\n")
    assert len(found) == 1 and found[0][0] == ""
    assert found[0][1] == (4 if nesting.startswith(("[", "{")) else 4 + MAX_CONFIG_DEPTH)
    assert f"nested deeper than {MAX_CONFIG_DEPTH} levels" in found[0][2]


def test_brackets_in_quoted_text_and_comments_are_not_nesting() -> None:
    """Only structure counts: brackets inside strings and comments do not."""
    text = BASE.replace("exp\n", "'" + "[" * 100 + "'   # " + "{" * 100 + "\n")
    assert parse_config(text, base_dir=Path("/srv")).experiment == "[" * 100


def test_a_file_over_the_size_limit_is_refused() -> None:
    """64 KB is far above any real config and keeps the pure-Python parser's time bounded."""
    found = problems(BASE + "# " + "x" * MAX_CONFIG_BYTES + "\n")
    assert found[0][0] == "" and "over the limit of 65,536" in found[0][2]


@pytest.mark.parametrize(("line", "key"), [
    ('champion: {name: champ, path: "models/ch\\0amp/1"}', "champion.path"),
    ('experiment: "exp\\udc00"', "experiment"),
    ('champion: {name: "ch\\eamp", path: models/champ/1}', "champion.name"),
])
def test_names_and_paths_must_be_storable_text(line: str, key: str) -> None:
    """A NUL in a model path, a lone surrogate or an escape in a name: the key and its line."""
    lines = BASE.splitlines()
    index = 0 if key == "experiment" else 2
    lines[index] = line
    found = problems("\n".join(lines) + "\n")
    assert [(path, number) for path, number, _ in found] == [(key, index + 1)]
    assert "character" in found[0][2] or "surrogate" in found[0][2]


@pytest.mark.parametrize("name", ["日", "x user", "x:y", "x@y"])
def test_sticky_header_names_are_http_tokens(name: str) -> None:
    """A header name no request can carry is refused where it is written."""
    found = problems(BASE + f"traffic: {{sticky_key: 'header:{name}'}}\n")
    assert found == [("traffic.sticky_key", 4, found[0][2])]
    assert "not an HTTP token" in found[0][2]


def test_sticky_header_token_with_punctuation_is_accepted() -> None:
    """RFC 9110's token characters pass, lower-cased."""
    config = parse_config(BASE + "traffic: {sticky_key: header:X-User_Id.v2}\n",
                          base_dir=Path("/srv"))
    assert config.traffic.sticky_key is not None
    assert config.traffic.sticky_key.name == "x-user_id.v2"
