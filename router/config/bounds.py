"""The size and nesting bounds a YAML file must keep before the parser is given it."""

from __future__ import annotations

import re

from router.errors import ConfigError, ConfigProblem

__all__ = ["MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH", "check_yaml_bounds"]

# ruamel.yaml parses in pure Python and recursively: a 1,000-deep flow sequence took it
# seconds and then failed on Python's recursion limit, and a 280 KB file took over 20 s on a
# busy machine. Configs are a few KB; these bounds keep a bad file from occupying the watcher.
MAX_CONFIG_BYTES = 65_536
MAX_CONFIG_DEPTH = 32


# Brackets and braces, skipping quoted strings and comments, which may hold them as text.
_FLOW_TOKEN = re.compile(
    r"""[\[\]{}]|"(?:[^"\\\n]|\\.)*"|'(?:[^'\n]|'')*'|(?:^|(?<=\s))#[^\n]*""", re.MULTILINE)


def check_yaml_bounds(text: str, source: str) -> None:
    """Refuse a file too large or too deeply nested before the YAML parser sees it."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(source, [ConfigProblem(
            "", None, f"is {size:,} bytes, over the limit of {MAX_CONFIG_BYTES:,}")])
    flow = 0
    indents: list[int] = []
    for match in _FLOW_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            flow += 1
            if flow > MAX_CONFIG_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                raise ConfigError(source, [ConfigProblem(
                    "", line, f"nested deeper than {MAX_CONFIG_DEPTH} levels")])
        elif token in "]}":
            flow = max(0, flow - 1)
    # Block nesting: each line indented deeper than the one it belongs to opens a level.
    for number, text_line in enumerate(text.splitlines(), 1):
        stripped = text_line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(text_line) - len(stripped)
        while indents and indents[-1] >= indent:
            indents.pop()
        indents.append(indent)
        if len(indents) > MAX_CONFIG_DEPTH:
            raise ConfigError(source, [ConfigProblem(
                "", number, f"nested deeper than {MAX_CONFIG_DEPTH} levels")])
