"""Write a switch into the YAML text itself, changing only the characters the switch changes.

A switch (promote, rollback, a rollout step, a switch caught up from another gateway) sets the
switchable keys: ``mode``, the ``champion`` / ``challenger`` / ``previous`` models and
``traffic.challenger_percent``. Re-emitting the whole document would move comments and change
spacing, so this module edits the text in place, guided by the node positions a YAML parser
gives:

- a changed value is replaced where it is written; the line's comment keeps its column when
  the new value still ends before it, else the spacing it had after the value;
- a model path is written as the file wrote that model elsewhere (a relative path stays
  relative), else relative to the base directory when it lies under it;
- a role line keeps its comment: a role that the switch empties keeps its key and comment
  (``challenger:  # candidate under test``) when it has one, and is removed when it has none;
  a new role is written as one line after the champion, in the champion's style;
- the ``challengers:`` list is edited entry by entry (``router.live.yamllist``).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from router.config import resolve_model_path
from router.errors import ConfigError, ConfigProblem

ROLES = ("champion", "challenger", "previous")
_PLAIN = re.compile(r"[A-Za-z0-9_./@~+][A-Za-z0-9_./@~+=-]*")
_MARK = re.compile("\x00(\\d+)\x00")


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str
    empties: bool = False  # a removed value: its comment keeps its spacing, not its column


class Text:
    """One YAML text, its top-level entries and each line's comment, and the edits to it."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        root = YAML(typ="rt").compose(text)
        if not isinstance(root, MappingNode):
            raise ConfigError(source, [ConfigProblem("", 1, "must be a YAML mapping of keys")])
        self.root = root
        self.entries: dict[str, tuple[ScalarNode, Node]] = {
            str(key.value): (key, value) for key, value in root.value}
        self.edits: list[_Edit] = []
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        code_end: dict[int, int] = {}
        _code_ends(root, code_end)
        self.comments = {line: col for line in range(len(self.line_starts))
                         if (col := self._comment_column(line, code_end.get(line, 0))) is not None}

    def line(self, number: int) -> str:
        start = self.line_starts[number]
        end = self.text.find("\n", start)
        return self.text[start:] if end < 0 else self.text[start:end]

    def _comment_column(self, number: int, code_end: int) -> int | None:
        line = self.line(number)
        for match in re.finditer("#", line):
            column = match.start()
            if column >= code_end and (column == 0 or line[column - 1] in " \t"):
                return column
        return None

    def line_of(self, index: int) -> int:
        low, high = 0, len(self.line_starts) - 1
        while low < high:  # the last line start at or before index
            middle = (low + high + 1) // 2
            if self.line_starts[middle] <= index:
                low = middle
            else:
                high = middle - 1
        return low

    def next_line_start(self, index: int) -> int:
        newline = self.text.find("\n", index)
        return len(self.text) if newline < 0 else newline + 1

    def edit(self, start: int, end: int, text: str, *, empties: bool = False) -> None:
        self.edits.append(_Edit(start, end, text, empties))

    def result(self) -> str:
        """The text with every edit applied and each touched line's comment put back in place."""
        edits = sorted(self.edits, key=lambda e: (e.start, e.end))
        for before, after in itertools.pairwise(edits):
            if after.start < before.end:
                raise AssertionError(f"overlapping edits {before} and {after}")
        marks: list[tuple[int, int, bool]] = []  # (original column, gap, keep spacing)
        placed: dict[int, int] = {}  # comment index -> mark number
        for e in edits:
            line = self.line_of(e.end)
            column = self.comments.get(line)
            if column is None:
                continue
            index = self.line_starts[line] + column
            if index < e.end or any(x.start < index < x.end for x in edits):
                continue  # the comment is itself removed
            code = self.line(line)[:column]
            gap = len(code) - len(code.rstrip()) or 1
            if index in placed:
                number = placed[index]
                old = marks[number]
                marks[number] = (old[0], old[1], old[2] or e.empties)
            else:
                placed[index] = len(marks)
                marks.append((column, gap, e.empties))
        pieces = [(e.start, e.end, e.text) for e in edits]
        pieces += [(index, index, f"\x00{number}\x00") for index, number in placed.items()]
        # Stable on equal starts: an insertion at a comment's index comes before its mark.
        pieces.sort(key=lambda p: (p[0], p[2].startswith("\x00")))
        out: list[str] = []
        position = 0
        for start, end, text in pieces:
            out.append(self.text[position:start])
            out.append(text)
            position = max(position, end)
        out.append(self.text[position:])
        return _realign("".join(out), marks)


def _realign(text: str, marks: list[tuple[int, int, bool]]) -> str:
    lines = text.split("\n")
    for i, line in enumerate(lines):
        match = _MARK.search(line)
        if match is None:
            continue
        column, gap, keep_spacing = marks[int(match.group(1))]
        code, comment = line[:match.start()].rstrip(), line[match.end():]
        if not code.strip():
            lines[i] = line[:match.start()] + comment
        elif not keep_spacing and len(code) < column:
            lines[i] = code.ljust(column) + comment
        else:
            lines[i] = code + " " * gap + comment
    return "\n".join(lines)


def _code_ends(node: Node, ends: dict[int, int]) -> None:
    """Per line, the column where the last node on it ends: a comment starts after it."""
    def note(mark: Any) -> None:
        ends[mark.line] = max(ends.get(mark.line, 0), mark.column)

    if isinstance(node, ScalarNode):
        note(node.end_mark)
        return
    if isinstance(node, MappingNode):
        for key, value in node.value:
            _code_ends(key, ends)
            _code_ends(value, ends)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            _code_ends(item, ends)
    if isinstance(node, CollectionNode) and node.flow_style:
        note(node.end_mark)


def _last_index(node: Node) -> int:
    """Where a value's own text ends (a block mapping's end mark runs on over later comments)."""
    if isinstance(node, MappingNode) and not node.flow_style and node.value:
        key, value = node.value[-1]
        return max(key.end_mark.index, _last_index(value))
    if isinstance(node, SequenceNode) and not node.flow_style and node.value:
        return _last_index(node.value[-1])
    return int(node.end_mark.index)


def _scalar(value: str, quoted: bool) -> str:
    # Plain when YAML reads it back as this very string (not a number, a boolean, a null).
    if not quoted and _PLAIN.fullmatch(value) and YAML(typ="safe").load(value) == value:
        return value
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _child(node: Node, key: str) -> ScalarNode | None:
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if k.value == key and isinstance(v, ScalarNode):
                return v
    return None


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag is not None and node.tag.endswith(":null")


class Writer:
    """Works out the edits that make a text's switchable keys equal a switch state."""

    def __init__(self, text: Text, base_dir: Path) -> None:
        self.t = text
        self.base_dir = base_dir
        self.block = not text.root.flow_style
        # How the file already writes each model: (name, resolved path) -> the path as written.
        self.written: dict[tuple[str, str], str] = {}
        listed = self.t.entries.get("challengers")
        nodes = [entry[1] for role in ROLES if (entry := self.t.entries.get(role)) is not None]
        if listed is not None and isinstance(listed[1], SequenceNode):
            nodes += listed[1].value
        for node in nodes:
            model = self._model_of(node)
            if model is not None:
                self.written.setdefault((model[0], model[1]), model[2])

    def _model_of(self, node: Node) -> tuple[str, str, str] | None:
        name, path = _child(node, "name"), _child(node, "path")
        if name is None or path is None:
            return None
        resolved = str(resolve_model_path(str(path.value), self.base_dir))
        return str(name.value), resolved, str(path.value)

    def _path_text(self, name: str, path: str) -> str:
        written = self.written.get((name, path))
        if written is not None:
            return written
        absolute = Path(path)
        try:
            return str(absolute.relative_to(self.base_dir.resolve()))
        except ValueError:
            return path

    def _set_scalar(self, node: ScalarNode, text: str) -> None:
        if self.t.text[node.start_mark.index:node.end_mark.index] != text:
            self.t.edit(node.start_mark.index, node.end_mark.index, text)

    def set_mode(self, mode: str) -> None:
        _, node = self.t.entries["mode"]
        if isinstance(node, ScalarNode) and node.value != mode:
            self._set_scalar(node, _scalar(mode, node.style in ('"', "'")))

    def _flow_model(self, model: dict[str, str]) -> str:
        name = _scalar(model["name"], False)
        path = _scalar(self._path_text(model["name"], model["path"]), False)
        return f"{{name: {name}, path: {path}}}"

    def _new_role(self, role: str, model: dict[str, str]) -> str:
        """A role entry in the champion's style: one flow line, or a block of two keys."""
        champion = self.t.entries["champion"][1]
        if not self.block or not isinstance(champion, MappingNode) or champion.flow_style:
            return f"{role}: {self._flow_model(model)}"
        indent = " " * champion.value[0][0].start_mark.column
        path = self._path_text(model["name"], model["path"])
        return (f"{role}:\n{indent}name: {_scalar(model['name'], False)}\n"
                f"{indent}path: {_scalar(path, False)}")

    def _after_colon(self, key: ScalarNode) -> int:
        return self.t.text.index(":", key.end_mark.index) + 1

    def set_model(self, role: str, model: dict[str, str] | None) -> None:
        entry = self.t.entries.get(role)
        if model is None:
            if entry is not None and not _is_null(entry[1]):
                self._remove(role, *entry)
            return
        if entry is None:
            self._insert_after("champion", self._new_role(role, model))
            return
        key, node = entry
        name, path = _child(node, "name"), _child(node, "path")
        if isinstance(node, MappingNode) and name is not None and path is not None:
            if name.value != model["name"]:
                self._set_scalar(name, _scalar(model["name"], name.style in ('"', "'")))
            if str(resolve_model_path(str(path.value), self.base_dir)) != model["path"]:
                text = self._path_text(model["name"], model["path"])
                self._set_scalar(path, _scalar(text, path.style in ('"', "'")))
            return
        # An empty role (``challenger:  # comment``) or a value of another shape: replace it.
        start = self._after_colon(key)
        end = start if _is_null(node) else _last_index(node)
        self.t.edit(start, end, " " + self._flow_model(model))

    def _has_comment(self, key: ScalarNode) -> bool:
        line = key.start_mark.line
        above = self.t.line(line - 1).strip() if line > 0 else ""
        return line in self.t.comments or above.startswith("#")

    def _remove(self, role: str, key: ScalarNode, node: Node) -> None:
        if not self.block:
            self._remove_flow_entry(role)
            return
        end = _last_index(node)
        if self._has_comment(key):
            # The comment describes the role: keep ``role:  # comment``, emptied.
            start = self._after_colon(key)
            if self.t.line_of(end) == key.start_mark.line:
                self.t.edit(start, end, "", empties=True)
            else:
                self.t.edit(self.t.next_line_start(start), self.t.next_line_start(end), "")
            return
        self.t.edit(self.t.line_starts[key.start_mark.line], self.t.next_line_start(end), "")

    def _remove_flow_entry(self, role: str) -> None:
        keys = [str(k.value) for k, _ in self.t.root.value]
        position = keys.index(role)
        key, node = self.t.root.value[position]
        if position + 1 < len(keys):
            self.t.edit(key.start_mark.index, self.t.root.value[position + 1][0].start_mark.index,
                        "")
        else:
            self.t.edit(_last_index(self.t.root.value[position - 1][1]), _last_index(node), "")

    def _insert_after(self, anchor: str, entry: str) -> None:
        key, node = self.t.entries[anchor]
        end = _last_index(node)
        if not self.block:
            self.t.edit(end, end, f", {entry}")
            return
        start = self.t.next_line_start(end)
        prefix = "" if self.t.text[:start].endswith("\n") else "\n"
        indent = " " * key.start_mark.column
        self.t.edit(start, start, f"{prefix}{indent}{entry}\n")

    def set_percent(self, percent: float) -> None:
        entry = self.t.entries.get("traffic")
        text = _number(percent)
        if entry is None or _is_null(entry[1]):
            if not percent:
                return
            if entry is None:
                last = max((r for r in ROLES if r in self.t.entries),
                           key=lambda r: self.t.entries[r][0].start_mark.index)
                self._insert_after(last, f"traffic: {{challenger_percent: {text}}}")
            else:
                start = self._after_colon(entry[0])
                self.t.edit(start, start, f" {{challenger_percent: {text}}}")
            return
        _, node = entry
        current = _child(node, "challenger_percent")
        if current is not None:
            if float(current.value or 0) != float(percent):
                self._set_scalar(current, text)
            return
        if not percent or not isinstance(node, MappingNode):
            return
        if node.flow_style:
            opening = node.start_mark.index + 1
            self.t.edit(opening, opening,
                        f"challenger_percent: {text}" + (", " if node.value else ""))
        else:
            first = node.value[0][0]
            line_start = self.t.line_starts[first.start_mark.line]
            self.t.edit(line_start, line_start,
                        " " * first.start_mark.column + f"challenger_percent: {text}\n")
