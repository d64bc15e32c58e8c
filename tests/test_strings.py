"""Which client text the router keeps, and how it shows text it cannot encode."""

from __future__ import annotations

import pytest

from router.strings import MAX_ID_LENGTH, printable, text_problem


@pytest.mark.parametrize("text", ["user-1", "Ünïcödé 日本", "a b", "x" * MAX_ID_LENGTH])
def test_ordinary_text_is_kept(text: str) -> None:
    """Letters of any script, spaces and text up to the length limit pass."""
    assert text_problem(text, max_length=MAX_ID_LENGTH) is None


@pytest.mark.parametrize(("text", "words"), [
    ("", "empty"),
    ("x" * (MAX_ID_LENGTH + 1), "at most 200"),
    ("\udc00x", "lone surrogate (U+DC00) at position 0"),
    ("a\x00b", "control character (U+0000) at position 1"),
    ("red\x1b[31m", "control character (U+001B)"),
    ("line\nbreak", "control character (U+000A)"),
    ("c1\x85", "control character (U+0085)"),
])
def test_unstorable_text_is_named(text: str, words: str) -> None:
    """Each refusal says what is wrong and where."""
    problem = text_problem(text, max_length=MAX_ID_LENGTH)
    assert problem is not None and words in problem


def test_prose_may_hold_line_breaks_but_not_other_controls() -> None:
    """A reason may span lines; an escape sequence is still refused."""
    assert text_problem("first\n\tsecond", max_length=100, prose=True) is None
    assert text_problem("bell\x07", max_length=100, prose=True) is not None


def test_printable_escapes_what_utf8_cannot_encode() -> None:
    """A lone surrogate becomes a visible escape; everything else is unchanged."""
    assert printable("a\udc00b日") == "a\\udc00b日"
    printable("\ud800").encode("utf-8")  # encodable now
