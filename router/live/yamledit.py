"""Switch edits (promote, rollback, a rollout step) written into the YAML file, atomically.

An edit is a function over the file's *switch state* (``router.live.sync.switchable``: mode, the
three model roles, the challenger's share). The new state is written into the text by
``router.live.yamltext``, which changes only the characters the switch changes, so comments, key
order, spacing and relative paths stay as their author wrote them. Every new text is checked
by the same validation a reload uses before anything is written, and the file is replaced with
a rename, so a gateway watching it never reads a half-written or invalid file.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from router.config import parse_config
from router.config.bounds import check_yaml_bounds
from router.errors import ConfigError, ConfigProblem
from router.live.sync import switchable
from router.live.yamltext import write_state

SwitchKeys = dict[str, Any]
T = TypeVar("T")


class EditRefused(ConfigError):
    """The edit makes no sense for this file (nothing to promote, nothing to roll back)."""

    code = "switch_refused"


@contextlib.contextmanager
def edit_lock(path: Path) -> Iterator[None]:
    # Two switches at once (two workers, or the CLI and the API) must not interleave their
    # read-modify-write; an advisory lock on a file beside the config serializes them.
    lock_path = path.parent / f".{path.name}.lock"
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def edit_file(path: Path, edit: Callable[[SwitchKeys], T], *, base_dir: Path,
              start: SwitchKeys | None = None) -> T:
    """Apply ``edit`` to the file's switch state (or to ``start``), validate, replace the file."""
    with edit_lock(path):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(str(path), [ConfigProblem("", None, f"cannot read: {exc}")]
                              ) from None
        new_text, result = edit_text(text, edit, source=str(path), base_dir=base_dir,
                                     start=start)
        if new_text != text:
            write_atomically(path, new_text)
        return result


def edit_text(text: str, edit: Callable[[SwitchKeys], T], *, source: str, base_dir: Path,
              start: SwitchKeys | None = None) -> tuple[str, T]:
    """Apply ``edit`` to a YAML text's switch state; the new text is validated first.

    ``start`` is the state to edit when it is not the text's own (a switch made on another
    gateway that this file has not caught up with yet): the text then takes it as well.
    """
    check_yaml_bounds(text, source)
    state = copy.deepcopy(start) if start is not None else switchable(
        parse_config(text, source=source, base_dir=base_dir))
    try:
        result = edit(state)
    except EditRefused as exc:
        raise EditRefused(source, exc.problems) from None
    new_text = write_state(text, state, source=source, base_dir=base_dir)
    written = switchable(parse_config(new_text, source=source, base_dir=base_dir))
    if written != state:
        # The text editor missed a shape of YAML it does not know: write nothing.
        raise ConfigError(source, [ConfigProblem("", None, (
            "the switch could not be written into this file's layout; edit the file by hand "
            f"to {state}"))])
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


def _refuse(key: str, message: str) -> EditRefused:
    return EditRefused("", [ConfigProblem(key, None, message)])


def promote(state: SwitchKeys) -> tuple[str, str]:
    """Challenger becomes champion, ``mode: single``, the old champion kept as ``previous``.

    Returns (from, to): the model names that served before and serve now.
    """
    if state["challenger"] is None:
        raise _refuse("challenger", "nothing to promote: the file names no challenger")
    old, new = state["champion"], state["challenger"]
    state.update(mode="single", champion=new, challenger=None, previous=old)
    return old["name"], new["name"]


def rollback(state: SwitchKeys) -> tuple[str, str]:
    """Stop the challenger under test, or else undo a promotion.

    During an experiment (``mode`` ab or shadow with a challenger): ``mode: single`` and
    ``challenger_percent: 0``, whatever ``previous`` names, since the challenger is what is
    being judged. Otherwise, after a promotion: ``previous`` serves again and the demoted
    model is kept as the challenger with ``mode: single`` (loaded, serving nothing).
    Returns (from, to).
    """
    if state["mode"] in ("ab", "shadow") and state["challenger"] is not None:
        state.update(mode="single", challenger_percent=0.0)
        return state["challenger"]["name"], state["champion"]["name"]
    if state["previous"] is not None:
        demoted = state["champion"]
        state.update(mode="single", champion=state["previous"], challenger=demoted,
                     previous=None)
        return demoted["name"], state["champion"]["name"]
    raise _refuse("previous", "nothing to roll back: no previous champion and no experiment "
                              "running")


def set_challenger_percent(percent: float) -> Callable[[SwitchKeys], tuple[str, str]]:
    """An edit that moves ``traffic.challenger_percent``; from shadow mode it also sets
    ``mode: ab``, the challenger's first users. Returns (before, after) as labels: ``5%``,
    or ``shadow``."""
    def edit(state: SwitchKeys) -> tuple[str, str]:
        before = "shadow" if state["mode"] == "shadow" else \
            f"{float(state['challenger_percent']):g}%"
        if state["mode"] == "shadow":
            state["mode"] = "ab"
        state["challenger_percent"] = float(percent)
        return before, f"{float(percent):g}%"
    return edit
