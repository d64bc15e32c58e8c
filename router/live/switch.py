"""Blue-green switches: promote, rollback and rollout steps, each a file edit plus history.

A switch starts from what is served (the file, or the store's newer switch state: see
``router.live.sync``), checks everything it can first, rewrites the YAML keeping its comments,
records when, what, why and who in the store's history (with the figures behind automatic
moves), and publishes the new switchable keys to the store so that every gateway sharing it
follows. A failure after the write puts the old file back. A read-only file (a Kubernetes
ConfigMap) is left as it is: the published state alone carries the switch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from router.config import RouterConfig, load_config, parse_config
from router.errors import ConfigProblem
from router.live.sync import resolve, switchable
from router.live.yamledit import (
    EditRefused,
    SwitchKeys,
    edit_lock,
    edit_text,
    promote,
    rollback,
    set_challenger_percent,
    write_atomically,
)
from router.outcomes import ExperimentState, HistoryEntry
from router.strings import MAX_REASON_LENGTH, text_problem

log = logging.getLogger("router.live.switch")

ACTIONS = ("promote", "rollback")
T = TypeVar("T")


READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def apply_edit(edit: Callable[[SwitchKeys], T], config_path: Path, base_dir: Path,
               store: ExperimentState, *, entry_for: Callable[[T], HistoryEntry],
               check: Callable[[RouterConfig], object] | None = None) -> HistoryEntry:
    """Apply ``edit`` to what is served, as one transaction: check, write, record, publish.

    Everything that can be checked is checked first: the edit makes sense, the new file
    validates, and ``check`` (which a gateway uses to load the new file's models) passes. Only
    then is the file replaced (an atomic rename; a read-only file is left alone), the history
    entry ``entry_for(result)`` recorded and the switch state published. If recording or
    publishing fails, the old file is put back, so no gateway applies a switch that was not
    recorded; the error propagates to say why.
    """
    config = load_config(config_path, base_dir=base_dir)
    # A stale file first catches up with the store: the edit starts from what is served.
    served = switchable(resolve(config, config_path.stat().st_mtime, store).config)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(edit_lock(config_path))
        except OSError as exc:
            if exc.errno not in READ_ONLY:
                raise
            # A read-only directory (a Kubernetes ConfigMap): no one writes this file.
        old_text = config_path.read_text(encoding="utf-8")
        new_text, result = edit_text(old_text, edit, source=str(config_path),
                                     base_dir=base_dir, start=served)
        new_config = parse_config(new_text, source=str(config_path), base_dir=base_dir)
        if check is not None:
            check(new_config)
        written = new_text != old_text and _write_unless_read_only(config_path, new_text)
        try:
            entry = dataclasses.replace(entry_for(result), experiment=new_config.experiment)
            store.append_history(entry)
            store.publish_switch_state(new_config.experiment, switchable(new_config),
                                       time.time())
        except BaseException:
            if written:
                write_atomically(config_path, old_text)
                log.warning("%s: switch not recorded, the previous file is restored",
                            config_path)
            raise
    return entry


def _write_unless_read_only(path: Path, text: str) -> bool:
    """Replace the file; False (and nothing written) when it cannot be written."""
    try:
        write_atomically(path, text)
    except OSError as exc:
        if exc.errno not in READ_ONLY:
            raise
        log.info("%s is read-only (%s): the switch is published to the store only", path, exc)
        return False
    return True


def history_json(entry: HistoryEntry) -> dict[str, Any]:
    """One switch as JSON."""
    return {"ts": entry.ts, "action": entry.action, "from": entry.from_model,
            "to": entry.to_model, "reason": entry.reason, "actor": entry.actor,
            "details": entry.details, "experiment": entry.experiment}


def history_document(entries: list[HistoryEntry]) -> dict[str, Any]:
    """The switches as ``router history --json`` prints them and ``GET /history`` answers:
    one object, so that either can grow a key without breaking a reader."""
    return {"history": [history_json(e) for e in entries]}


def switch(action: str, config_path: Path, base_dir: Path, store: ExperimentState, *,
           reason: str, actor: str, details: dict[str, Any] | None = None,
           check: Callable[[RouterConfig], object] | None = None,
           challenger: str | None = None) -> HistoryEntry:
    """Promote or roll back, recorded in the store's history (see :func:`apply_edit`).

    ``challenger`` names which of several challengers (see :func:`router.live.yamledit.promote`
    and :func:`~router.live.yamledit.rollback`); the history entry's details name it too.
    """
    _check_reason(config_path, reason)
    edit = functools.partial({"promote": promote, "rollback": rollback}[action],
                             challenger=challenger)
    return apply_edit(edit, config_path, base_dir, store, check=check,
                      entry_for=_entry(action, reason, actor, details, challenger))


def move_traffic(percent: float, config_path: Path, base_dir: Path, store: ExperimentState, *,
                 reason: str, actor: str, details: dict[str, Any] | None = None,
                 challenger: str | None = None) -> HistoryEntry:
    """Set a challenger's share (a rollout step; from shadow mode, its first users; with
    several challengers and none named, every one's), recorded like any switch."""
    _check_reason(config_path, reason)
    return apply_edit(set_challenger_percent(percent, challenger), config_path, base_dir,
                      store, entry_for=_entry("step", reason, actor, details, challenger))


def _entry(action: str, reason: str, actor: str, details: dict[str, Any] | None,
           challenger: str | None) -> Callable[[tuple[str, str]], HistoryEntry]:
    """The history entry of a switch, from what it returned: (from, to)."""
    named = {} if challenger is None else {"challenger": challenger}

    def entry_for(result: tuple[str, str]) -> HistoryEntry:
        return HistoryEntry(ts=time.time(), action=action, from_model=result[0],
                            to_model=result[1], reason=reason, actor=actor,
                            details={**(details or {}), **named})

    return entry_for


def _check_reason(config_path: Path, reason: str) -> None:
    problem = text_problem(reason, max_length=MAX_REASON_LENGTH, prose=True)
    if problem is not None:
        raise EditRefused(str(config_path), [ConfigProblem("reason", None, problem)])
