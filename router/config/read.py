"""The building blocks of ``router.config``: a typed walker over ruamel.yaml's round-trip nodes,
which know each key's line, and the converters it applies.

:class:`_Reader` collects every problem with its key path and line instead of stopping at the
first; each converter turns a YAML value into a typed one or raises :class:`_Invalid` saying
why. The names keep their leading underscore: they are the configuration reader's own, shared
only by the modules that read parts of the YAML file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from router.errors import ConfigProblem
from router.strings import text_problem

MAX_TEXT_LENGTH = 4_096  # a name, a path or a URL

T = TypeVar("T")


class _Reader:
    """Collects every problem instead of stopping at the first, so one run shows them all."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[ConfigProblem] = []
        self.lines: dict[str, int] = {}

    def fail(self, path: str, line: int | None, message: str) -> None:
        self.problems.append(ConfigProblem(path, line, message))

    def section(self, parent: CommentedMap, path: str, key: str,
                allowed: tuple[str, ...], *, required: bool = False) -> CommentedMap | None:
        where = _join(path, key)
        if key not in parent or parent[key] is None:
            if required:
                self.fail(where, _map_line(parent), "is required")
            return None
        node = parent[key]
        if not isinstance(node, CommentedMap):
            self.fail(where, _value_line(parent, key), f"must be a mapping, got {_kind(node)}")
            return None
        self.lines[where] = _key_line(parent, key) or 0
        for unknown in (k for k in node if k not in allowed):
            self.fail(_join(where, str(unknown)), _key_line(node, unknown),
                      f"unknown key (allowed: {', '.join(allowed)})")
        return node

    def value(self, node: CommentedMap, path: str, key: str, convert: Callable[[Any], Any],
              default: Any = None, *, required: bool = False) -> Any:
        where = _join(path, key)
        if key not in node or node[key] is None:
            if required:
                self.fail(where, _map_line(node), "is required")
            return default
        self.lines[where] = _key_line(node, key) or 0
        try:
            return convert(node[key])
        except _Invalid as exc:
            self.fail(where, _value_line(node, key), str(exc))
            return default


    def record(self, parent: CommentedMap, path: str, key: str, kind: type[T],
               converters: Mapping[str, Callable[[Any], Any]], **given: Any) -> T:
        """The section ``key`` as a ``kind`` (a dataclass): each key in ``converters`` read
        with its converter, ``given`` fields passed as they are, and every default taken from
        ``kind`` itself, so that a default is written once, on the dataclass."""
        node = self.section(parent, path, key, (*converters, *given))
        if node is None:
            return kind(**given)
        where = _join(path, key)
        defaults = {f.name: f.default for f in fields(kind)}  # type: ignore[arg-type]
        return kind(**given, **{name: self.value(node, where, name, convert, defaults[name])
                                for name, convert in converters.items()})


class _Invalid(ValueError):
    """A value of the wrong type or out of range; the message says which."""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _line(pos: Any) -> int | None:
    return pos[0] + 1 if pos else None


def _key_line(node: CommentedMap, key: Any) -> int | None:
    return _line(node.lc.key(key))


def _value_line(node: CommentedMap, key: Any) -> int | None:
    return _line(node.lc.value(key)) or _key_line(node, key)


def _map_line(node: CommentedMap) -> int | None:
    return node.lc.line + 1 if node.lc.line is not None else None


def _kind(value: Any) -> str:
    if isinstance(value, CommentedMap):
        return "a mapping"
    if isinstance(value, CommentedSeq):
        return "a list"
    # The YAML reader hands numbers over as its own subclasses (ScalarFloat): name the plain
    # type a person wrote.
    kind = next((t for t in (bool, int, float, str) if isinstance(value, t)), type(value))
    return f"{kind.__name__} {value!r}"


def _number(low: float | None = None, high: float | None = None, *,
            above: float | None = None, below: float | None = None) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"must be a number, got {_kind(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise _Invalid(f"must be a finite number, got {value!r}")
        if low is not None and high is not None and not low <= number <= high:
            raise _Invalid(f"must be between {low:g} and {high:g}, got {value!r}")
        if above is not None and number <= above:
            raise _Invalid(f"must be greater than {above:g}, got {value!r}")
        if below is not None and number >= below:
            raise _Invalid(f"must be less than {below:g}, got {value!r}")
        return number
    return convert


def _integer(low: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be a whole number, got {_kind(value)}")
        if value < low:
            raise _Invalid(f"must be at least {low}, got {value}")
        return int(value)
    return convert


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be a non-empty string, got {_kind(value)}")
    # Names, paths and URLs reach the log, headers and the file system: a NUL byte in a path
    # or a lone surrogate in a name would fail there, on every request, instead of here.
    problem = text_problem(value, max_length=MAX_TEXT_LENGTH)
    if problem is not None:
        raise _Invalid(problem)
    return value


# An HTTP header name (RFC 9110 "token"): what a request can carry and uvicorn can match.
_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {_kind(value)}")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)
    return convert
