"""Which text the router keeps: client strings that reach the log, the YAML or a header.

A request id, a label, a user id or a switch's reason is written to the outcome store and shown
by the CLI and the dashboard. A lone surrogate cannot be encoded as UTF-8 (SQLite and
PostgreSQL both refuse it), PostgreSQL refuses NUL, and other control characters (escape
sequences, carriage returns) would rewrite a terminal or a log line; so each is refused where
the text arrives, with the field named, rather than failing later where no client can be told.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls and the surrogate range (a lone one is all JSON can carry).
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The same, less tab and line feed: free text (a reason) may hold several lines.
_UNSTORABLE_IN_PROSE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

MAX_ID_LENGTH = 200  # request ids and user ids
MAX_SEGMENT_LENGTH = 100  # a segment's value: a category (a country, a plan), not an id
MAX_LABEL_LENGTH = 1_000
MAX_REASON_LENGTH = 2_000


def text_problem(value: str, *, max_length: int, prose: bool = False) -> str | None:
    """Why ``value`` cannot be kept, or None; ``prose`` lets tabs and line breaks through."""
    if not value:
        return "must not be empty"
    if len(value) > max_length:
        return f"must be at most {max_length} characters, got {len(value)}"
    if value.isascii() and value.isprintable():
        return None  # nearly every id: no control character, no surrogate, without a search
    found = (_UNSTORABLE_IN_PROSE if prose else _UNSTORABLE).search(value)
    if found is not None:
        char = found.group()
        kind = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
        return f"holds {kind} (U+{ord(char):04X}) at position {found.start()}"
    return None


def not_utf8(raw: bytes, error: UnicodeDecodeError) -> str:
    """Why ``raw`` is not text, naming its first byte that UTF-8 refuses: a body, and an
    X-Request-Id that feedback's JSON will name, must be UTF-8."""
    return f"is not UTF-8: byte 0x{raw[error.start]:02X} at position {error.start}"


def header_text(raw: bytes) -> str:
    """A header value a client chose (a user id, a segment, a variant's name) as text: UTF-8,
    as a JSON body's text is, else latin-1, which Python's ``http.client`` and ``requests``
    write a ``str`` value in. Either way a client's text arrives as the text it is: "Zoë"
    sent as a header, either way, or in a body, is one unit with one variant."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # every byte is a character: this cannot fail


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode written as escapes, for error messages and logs."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
