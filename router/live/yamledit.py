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
from router.live.yamllist import set_challengers
from router.live.yamltext import ROLES, Text, Writer

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


def _arms(state: SwitchKeys) -> list[tuple[str, dict[str, Any]]]:
    """The challengers as ``(variant, model)`` in bucket order: ``challenger:``, the list."""
    first = [] if state["challenger"] is None else [("challenger", state["challenger"])]
    return first + [(c["name"], c) for c in state.get("challengers") or ()]


def _arm(state: SwitchKeys, challenger: str) -> tuple[str, dict[str, Any]]:
    """The challenger ``challenger`` names: a listed one's name, ``challenger`` or the name
    ``challenger:`` serves under."""
    arms = _arms(state)
    for variant, model in arms:
        if challenger in (variant, model["name"]):
            return variant, model
    names = ", ".join(variant for variant, _ in arms) or "none"
    raise _refuse("challenger", f"no challenger named {challenger!r} ({names})")


def _share(state: SwitchKeys, variant: str, model: dict[str, Any]) -> float:
    return float(state["challenger_percent"] if variant == "challenger" else model["percent"])


def _set_share(state: SwitchKeys, variant: str, model: dict[str, Any], percent: float) -> None:
    if variant == "challenger":
        state["challenger_percent"] = float(percent)
    else:
        model["percent"] = float(percent)


def _drop(state: SwitchKeys, variant: str) -> None:
    """Take a challenger out of the file's state (its list entry, or ``challenger:``)."""
    if variant == "challenger":
        state["challenger"] = None
        return
    state["challengers"] = [c for c in state["challengers"] if c["name"] != variant]
    if not state["challengers"]:
        del state["challengers"]  # as the file without the key reads


def promote(state: SwitchKeys, challenger: str | None = None) -> tuple[str, str]:
    """A challenger becomes champion, ``mode: single``, the old champion kept as ``previous``.

    With several challengers ``challenger`` names which; the others stay listed (loaded,
    serving nothing). Returns (from, to): the model names that served before and serve now.
    """
    arms = _arms(state)
    if not arms:
        raise _refuse("challenger", "nothing to promote: the file names no challenger")
    if challenger is None and len(arms) > 1:
        names = ", ".join(variant for variant, _ in arms)
        raise _refuse("challenger", f"name the challenger to promote: {names}")
    variant, model = arms[0] if challenger is None else _arm(state, challenger)
    old, new = state["champion"], {"name": model["name"], "path": model["path"]}
    _drop(state, variant)
    state.update(mode="single", champion=new, previous=old)
    return old["name"], new["name"]


def rollback(state: SwitchKeys, challenger: str | None = None) -> tuple[str, str]:
    """Stop a challenger under test, or else undo a promotion.

    During an experiment (``mode`` ab or shadow with a challenger), whatever ``previous``
    names, since the challengers are what is being judged: without ``challenger``, every one
    stops (``mode: single``, every share 0); with it, that one alone: in ab mode its share goes
    to 0 (its buckets stay its own, so no other user moves), in shadow mode it leaves the file;
    when none is left serving, ``mode: single``. Otherwise, after a promotion: ``previous``
    serves again and the demoted model is kept as a challenger with ``mode: single`` (loaded,
    serving nothing). Returns (from, to).
    """
    arms = _arms(state)
    if state["mode"] in ("ab", "shadow") and arms:
        champion = state["champion"]["name"]
        if challenger is None:
            for variant, model in arms:
                _set_share(state, variant, model, 0.0)
            state["mode"] = "single"
            return ", ".join(model["name"] for _, model in arms), champion
        variant, model = _arm(state, challenger)
        if state["mode"] == "ab":
            _set_share(state, variant, model, 0.0)
            if not any(_share(state, v, m) for v, m in _arms(state)):
                state["mode"] = "single"
        elif len(arms) == 1:
            state["mode"] = "single"
        else:
            _drop(state, variant)
        return model["name"], champion
    if state["previous"] is not None:
        demoted = state["champion"]
        if state["challenger"] is None:
            state["challenger"] = demoted
        else:  # challenger: is taken: the demoted model joins the list, serving nothing
            state.setdefault("challengers", []).append({**demoted, "percent": 0.0})
        state.update(mode="single", champion=state["previous"], previous=None)
        return demoted["name"], state["champion"]["name"]
    raise _refuse("previous", "nothing to roll back: no previous champion and no experiment "
                              "running")


def set_challenger_percent(percent: float, challenger: str | None = None
                           ) -> Callable[[SwitchKeys], tuple[str, str]]:
    """An edit that moves a challenger's share: ``traffic.challenger_percent``, or the named
    challenger's; with several and none named, every one's. From shadow mode it also sets
    ``mode: ab``, the challengers' first users. Returns (before, after) as labels: ``5%``,
    ``gb 5%``, ``5% each`` or ``shadow``."""
    def edit(state: SwitchKeys) -> tuple[str, str]:
        shadow = state["mode"] == "shadow"
        if shadow:
            state["mode"] = "ab"
        if challenger is not None:
            variant, model = _arm(state, challenger)
            before = _share(state, variant, model)
            _set_share(state, variant, model, percent)
            return ("shadow" if shadow else f"{challenger} {before:g}%",
                    f"{challenger} {float(percent):g}%")
        if "challengers" in state:
            before_all = ", ".join(f"{v} {_share(state, v, m):g}%" for v, m in _arms(state))
            for variant, model in _arms(state):
                _set_share(state, variant, model, percent)
            return "shadow" if shadow else before_all, f"{float(percent):g}% each"
        before_one = f"{float(state['challenger_percent']):g}%"
        state["challenger_percent"] = float(percent)
        return "shadow" if shadow else before_one, f"{float(percent):g}%"
    return edit


def write_state(text: str, state: dict[str, Any], *, source: str, base_dir: Path) -> str:
    """``text`` with its switchable keys set to ``state`` (``router.live.sync.switchable``).

    Everything the state does not change stays byte for byte as it was.
    """
    document = Text(text, source)
    writer = Writer(document, base_dir)
    writer.set_mode(state["mode"])
    for role in ROLES:
        writer.set_model(role, state[role])
    writer.set_percent(float(state["challenger_percent"]))
    set_challengers(writer, state.get("challengers") or [])
    return document.result()
