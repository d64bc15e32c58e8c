"""The ``challengers:`` list written into the YAML text, entry by entry.

A switch with several challengers changes one entry's ``percent``, removes an entry (promoted,
or stopped in shadow mode), or appends one (a demoted champion when ``challenger:`` is
taken). As with the roles (``router.live.yamltext``), only those characters change: an entry
keeps its line, its style (a flow mapping ``- {name: gb, path: …, percent: 20}`` or a block
mapping) and its comment; a removed entry goes with its lines; a new one is written in the
style of the last. Entries are matched by name, and a switch never reorders them.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from router.config import resolve_model_path
from router.live.yamltext import Writer, _child, _is_null, _last_index, _number, _scalar

__all__ = ["set_challengers"]


def _entry(w: Writer, model: dict[str, Any], flow: bool, indent: str) -> str:
    """A new entry: ``{name, path, percent}`` on one line, or a block mapping under ``- ``."""
    name = _scalar(model["name"], False)
    path = _scalar(w._path_text(model["name"], model["path"]), False)
    percent = _number(float(model.get("percent") or 0.0))
    if flow:
        return f"{{name: {name}, path: {path}, percent: {percent}}}"
    return f"name: {name}\n{indent}path: {path}\n{indent}percent: {percent}"


def _dash_column(w: Writer, item: Node) -> int:
    """The column of the ``-`` that opens a block sequence's ``item``."""
    line = w.t.line(item.start_mark.line)
    return line.rindex("-", 0, item.start_mark.column)


def _update(w: Writer, item: MappingNode, model: dict[str, Any]) -> None:
    path = _child(item, "path")
    if path is not None and \
            str(resolve_model_path(str(path.value), w.base_dir)) != model["path"]:
        w._set_scalar(path, _scalar(w._path_text(model["name"], model["path"]),
                                    path.style in ('"', "'")))
    wanted = float(model.get("percent") or 0.0)
    percent = _child(item, "percent")
    if percent is not None:
        if float(percent.value or 0) != wanted:
            w._set_scalar(percent, _number(wanted))
        return
    if not wanted:
        return
    if item.flow_style:
        closing = item.end_mark.index - 1  # the "}"
        w.t.edit(closing, closing, f", percent: {_number(wanted)}")
    else:
        at = w.t.next_line_start(_last_index(item))
        indent = " " * item.value[0][0].start_mark.column
        w.t.edit(at, at, f"{indent}percent: {_number(wanted)}\n")


def _remove(w: Writer, node: SequenceNode, index: int) -> None:
    item = node.value[index]
    if not node.flow_style:
        start = w.t.line_starts[item.start_mark.line]
        w.t.edit(start, w.t.next_line_start(_last_index(item)), "")
    elif index + 1 < len(node.value):
        w.t.edit(item.start_mark.index, node.value[index + 1].start_mark.index, "")
    else:
        w.t.edit(_last_index(node.value[index - 1]), _last_index(item), "")


def _append(w: Writer, node: SequenceNode, models: list[dict[str, Any]]) -> None:
    last = node.value[-1]
    flow_entries = not isinstance(last, MappingNode) or bool(last.flow_style)
    if node.flow_style:
        end = _last_index(last)
        w.t.edit(end, end, "".join(f", {_entry(w, m, True, '')}" for m in models))
        return
    dash = " " * _dash_column(w, last)
    indent = " " * (last.start_mark.column if isinstance(last, MappingNode) else 0)
    at = w.t.next_line_start(_last_index(last))
    w.t.edit(at, at, "".join(f"{dash}- {_entry(w, m, flow_entries, indent)}\n"
                             for m in models))


def _new_key(w: Writer, models: list[dict[str, Any]], key: Any | None) -> None:
    """Write a ``challengers:`` list where the file has none (or an empty key)."""
    if w.block:
        text = "".join(f"\n  - {_entry(w, m, True, '')}" for m in models)
    else:
        text = " [" + ", ".join(_entry(w, m, True, "") for m in models) + "]"
    if key is not None:  # ``challengers:`` with nothing after it (a comment, perhaps)
        start = w._after_colon(key)
        w.t.edit(start, start, text)
        return
    anchor = max((r for r in ("champion", "challenger", "previous") if r in w.t.entries),
                 key=lambda r: w.t.entries[r][0].start_mark.index)
    w._insert_after(anchor, "challengers:" + text)


def set_challengers(w: Writer, models: list[dict[str, Any]]) -> None:
    """Make the text's ``challengers:`` list hold ``models`` (``{name, path, percent}``)."""
    entry = w.t.entries.get("challengers")
    if entry is None or _is_null(entry[1]):
        if models:
            _new_key(w, models, None if entry is None else entry[0])
        return
    key, node = entry
    if not models:
        w._remove("challengers", key, node)
        return
    if not isinstance(node, SequenceNode):
        return  # not a list the parser took: the validation after the edit says so
    wanted = {m["name"]: m for m in models}
    names = [None if (name_node := _child(item, "name")) is None else str(name_node.value)
             for item in node.value]
    for index, (item, name) in enumerate(zip(node.value, names, strict=True)):
        if name in wanted and isinstance(item, MappingNode):
            _update(w, item, wanted[name])
        else:
            _remove(w, node, index)
    new = [m for m in models if m["name"] not in names]
    if new:
        _append(w, node, new)
