"""Rewrite the YAML file in place, keeping its comments and key order, atomically.

ruamel.yaml's round-trip mode keeps comments, key order and flow style. Every edit is checked
by the same validation a reload uses before anything is written, and the file is replaced with
a rename, so a gateway watching it never reads a half-written or invalid file.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from router.config import parse_config
from router.errors import ConfigError, ConfigProblem

T = TypeVar("T")


class EditRefused(ConfigError):
    """The edit makes no sense for this file (nothing to promote, nothing to roll back)."""

    code = "switch_refused"


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a user's long lines
    return yaml


@contextlib.contextmanager
def _edit_lock(path: Path) -> Iterator[None]:
    # Two switches at once (two workers, or the CLI and the API) must not interleave their
    # read-modify-write; an advisory lock on a file beside the config serializes them.
    lock_path = path.parent / f".{path.name}.lock"
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def edit_file(path: Path, edit: Callable[[CommentedMap], T], *, base_dir: Path) -> T:
    """Apply ``edit`` to the file's document, validate the result, and replace the file."""
    with _edit_lock(path):
        return _edit_locked(path, edit, base_dir)


def _edit_locked(path: Path, edit: Callable[[CommentedMap], T], base_dir: Path) -> T:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem("(file)", None, f"cannot read: {exc}")]
                          ) from None
    new_text, result = edit_text(text, edit, source=str(path), base_dir=base_dir)
    write_atomically(path, new_text)
    return result


def edit_text(text: str, edit: Callable[[CommentedMap], T], *, source: str,
              base_dir: Path) -> tuple[str, T]:
    """Apply ``edit`` to a YAML text; the new text is validated before it is returned."""
    yaml = _yaml()
    document = yaml.load(text)
    if not isinstance(document, CommentedMap):
        raise ConfigError(source, [ConfigProblem("(file)", 1, "must be a YAML mapping")])
    result = edit(document)
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    new_text = buffer.getvalue()
    parse_config(new_text, source=source, base_dir=base_dir)  # never write an invalid file
    return new_text, result


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _refuse(path: str, message: str) -> EditRefused:
    return EditRefused(path, [ConfigProblem("(file)", None, message)])


def _name(node: object) -> str:
    return str(node.get("name", "?")) if isinstance(node, CommentedMap) else "?"


def _insert_after(document: CommentedMap, after: str, key: str, value: object) -> None:
    keys = list(document.keys())
    position = keys.index(after) + 1 if after in keys else len(keys)
    document.insert(position, key, value)


def promote(document: CommentedMap) -> tuple[str, str]:
    """Challenger becomes champion, ``mode: single``, the old champion kept as ``previous``.

    Returns (from, to): the model names that served before and serve now.
    """
    if not isinstance(document.get("challenger"), CommentedMap):
        raise _refuse("challenger", "nothing to promote: the file names no challenger")
    old_champion = document["champion"]
    new_champion = document.pop("challenger")
    document["champion"] = new_champion
    document.pop("previous", None)
    _insert_after(document, "champion", "previous", old_champion)
    document["mode"] = "single"
    return _name(old_champion), _name(new_champion)


def rollback(document: CommentedMap) -> tuple[str, str]:
    """Undo a promotion (``previous`` serves again), or stop sending traffic to the challenger.

    After a promotion: ``previous`` becomes the champion again and the demoted model is kept as
    the challenger with ``mode: single`` (loaded, serving nothing). During an experiment:
    ``mode: single`` and ``challenger_percent: 0``. Returns (from, to).
    """
    if isinstance(document.get("previous"), CommentedMap):
        demoted = document["champion"]
        document["champion"] = document.pop("previous")
        document.pop("challenger", None)
        _insert_after(document, "champion", "challenger", demoted)
        document["mode"] = "single"
        return _name(demoted), _name(document["champion"])
    if document.get("mode") in ("ab", "shadow") and isinstance(document.get("challenger"),
                                                                 CommentedMap):
        document["mode"] = "single"
        traffic = document.get("traffic")
        if isinstance(traffic, CommentedMap):
            traffic["challenger_percent"] = 0
        return _name(document["challenger"]), _name(document["champion"])
    raise _refuse("previous", "nothing to roll back: no previous champion and no experiment "
                              "running")


def set_challenger_percent(percent: float) -> Callable[[CommentedMap], tuple[float, float]]:
    """An edit that moves ``traffic.challenger_percent``; returns (before, after)."""
    def edit(document: CommentedMap) -> tuple[float, float]:
        traffic = document.get("traffic")
        if not isinstance(traffic, CommentedMap):
            traffic = CommentedMap()
            _insert_after(document, "challenger", "traffic", traffic)
        before = float(traffic.get("challenger_percent", 0) or 0)
        traffic["challenger_percent"] = int(percent) if float(percent).is_integer() else percent
        return before, float(percent)
    return edit
