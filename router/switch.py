"""Blue-green switches: promote, rollback and rollout steps, each a file edit plus history.

The YAML file stays the one source of truth: a switch rewrites it (a running gateway follows
within its poll interval, or at once when the gateway made the switch itself), and the
store's history records when, what, why and who, with the figures behind automatic moves.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from router.outcomes import HistoryEntry, OutcomeStore
from router.yamledit import edit_file, promote, rollback, set_challenger_percent

ACTIONS = ("promote", "rollback")


def switch(action: str, config_path: Path, base_dir: Path, store: OutcomeStore, *,
           reason: str, actor: str, details: dict[str, Any] | None = None) -> HistoryEntry:
    """Promote or roll back by rewriting the file, then record it in the store's history."""
    edit = {"promote": promote, "rollback": rollback}[action]
    from_model, to_model = edit_file(config_path, edit, base_dir=base_dir)
    entry = HistoryEntry(ts=time.time(), action=action, from_model=from_model,
                         to_model=to_model, reason=reason, actor=actor, details=details or {})
    store.append_history(entry)
    return entry


def move_traffic(percent: float, config_path: Path, base_dir: Path, store: OutcomeStore, *,
                 reason: str, actor: str, details: dict[str, Any] | None = None
                 ) -> HistoryEntry:
    """Set the challenger's share (a rollout step), recorded like any switch."""
    before, after = edit_file(config_path, set_challenger_percent(percent), base_dir=base_dir)
    entry = HistoryEntry(ts=time.time(), action="step", from_model=f"{before:g}%",
                         to_model=f"{after:g}%", reason=reason, actor=actor,
                         details=details or {})
    store.append_history(entry)
    return entry
