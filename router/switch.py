"""Blue-green switches: promote, rollback and rollout steps, each a file edit plus history.

A switch starts from what is served (the file, or the store's newer switch state: see
``router.sync``), rewrites the YAML keeping its comments, publishes the new switchable keys to
the store so that every gateway sharing it follows, and records when, what, why and who in the
store's history, with the figures behind automatic moves. A read-only file (a Kubernetes
ConfigMap) is left as it is: the published state alone carries the switch.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from router.config import load_config, parse_config
from router.outcomes import HistoryEntry, OutcomeStore
from router.sync import resolve, switchable
from router.yamledit import (
    SwitchKeys,
    edit_file,
    edit_text,
    promote,
    rollback,
    set_challenger_percent,
)

log = logging.getLogger("router.switch")

ACTIONS = ("promote", "rollback")
T = TypeVar("T")


def apply_edit(edit: Callable[[SwitchKeys], T], config_path: Path, base_dir: Path,
               store: OutcomeStore) -> T:
    """Apply ``edit`` to what is served, write the file if it can be, publish the result."""
    config = load_config(config_path, base_dir=base_dir)
    # A stale file first catches up with the store: the edit starts from what is served.
    served = switchable(resolve(config, config_path.stat().st_mtime, store).config)
    try:
        result = edit_file(config_path, edit, base_dir=base_dir, start=served)
        new_config = load_config(config_path, base_dir=base_dir)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        log.info("%s is read-only (%s): the switch is published to the store only",
                 config_path, exc)
        text, result = edit_text(config_path.read_text(encoding="utf-8"), edit,
                                 source=str(config_path), base_dir=base_dir, start=served)
        new_config = parse_config(text, source=str(config_path), base_dir=base_dir)
    store.publish_switch_state(new_config.experiment, switchable(new_config), time.time())
    return result


def history_json(entry: HistoryEntry) -> dict[str, Any]:
    """One switch as JSON, as ``router history --json`` prints it and ``GET /history`` answers."""
    return {"ts": entry.ts, "action": entry.action, "from": entry.from_model,
            "to": entry.to_model, "reason": entry.reason, "actor": entry.actor,
            "details": entry.details}


def switch(action: str, config_path: Path, base_dir: Path, store: OutcomeStore, *,
           reason: str, actor: str, details: dict[str, Any] | None = None) -> HistoryEntry:
    """Promote or roll back, then record it in the store's history."""
    edit = {"promote": promote, "rollback": rollback}[action]
    from_model, to_model = apply_edit(edit, config_path, base_dir, store)
    entry = HistoryEntry(ts=time.time(), action=action, from_model=from_model,
                         to_model=to_model, reason=reason, actor=actor, details=details or {})
    store.append_history(entry)
    return entry


def move_traffic(percent: float, config_path: Path, base_dir: Path, store: OutcomeStore, *,
                 reason: str, actor: str, details: dict[str, Any] | None = None
                 ) -> HistoryEntry:
    """Set the challenger's share (a rollout step), recorded like any switch."""
    before, after = apply_edit(set_challenger_percent(percent), config_path, base_dir, store)
    entry = HistoryEntry(ts=time.time(), action="step", from_model=f"{before:g}%",
                         to_model=f"{after:g}%", reason=reason, actor=actor,
                         details=details or {})
    store.append_history(entry)
    return entry
