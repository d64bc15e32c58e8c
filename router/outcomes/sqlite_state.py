"""The experiment's state on the SQLite file: config revisions, the switch state every gateway
follows, and the history of switches (the store's ``ExperimentState`` role)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import orjson

from router.outcomes.history_sql import entries_of, history_query
from router.outcomes.records import HistoryEntry, RevisionRecord, SwitchState
from router.outcomes.rows import to_json

__all__ = ["SQLiteExperimentState", "SQLiteFile"]


class SQLiteFile(Protocol):
    """What the experiment's state needs of the store that holds the file."""

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def _errors(self, *, write: bool = False) -> AbstractContextManager[None]: ...


class SQLiteExperimentState:
    """Revisions, switch state and history, written in ``BEGIN IMMEDIATE`` transactions so
    that processes sharing the file agree; :class:`~router.outcomes.sqlite.SQLiteStore` gives
    the connection, the transaction and the error mapping (:class:`SQLiteFile`)."""

    def append_history(self: SQLiteFile, entry: HistoryEntry) -> None:
        """Record one switch of the experiment."""
        row = (
            float(entry.ts),
            entry.action,
            entry.from_model,
            entry.to_model,
            entry.reason,
            entry.actor,
            to_json(entry.details),
            entry.experiment,
        )
        with self._errors(write=True), self._transaction() as conn:
            conn.execute(
                "INSERT INTO history (ts, action, from_model, to_model, reason, actor, details, "
                "experiment) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def history(self: SQLiteFile, limit: int | None = None, experiment: str | None = None
                ) -> list[HistoryEntry]:
        """The switches oldest first (``experiment``'s, and those that name none); with
        ``limit``, only the latest ``limit`` of them."""
        return entries_of(self._query(*history_query("?", limit, experiment)), limit)

    def register_revision(self: SQLiteFile, experiment: str, digest: str, config: dict[str, Any],
                          ts: float) -> int:
        """The latest revision if its digest matches, else a new one numbered one higher.

        One ``BEGIN IMMEDIATE`` transaction, so processes applying the same file at once agree.
        """
        with self._errors(write=True), self._transaction() as conn:
            row = conn.execute(
                "SELECT revision, digest FROM revisions WHERE experiment = ? "
                "ORDER BY revision DESC LIMIT 1", (experiment,)).fetchone()
            if row is not None and row[1] == digest:
                return int(row[0])
            revision = int(row[0]) + 1 if row is not None else 1
            conn.execute(
                "INSERT INTO revisions (experiment, revision, ts, digest, config) "
                "VALUES (?, ?, ?, ?, ?)",
                (experiment, revision, float(ts), digest, to_json(config)))
            return revision

    def revisions(self: SQLiteFile, experiment: str) -> list[RevisionRecord]:
        """Every revision of an experiment, oldest first."""
        rows = self._query(
            "SELECT revision, ts, digest, config FROM revisions WHERE experiment = ? "
            "ORDER BY revision", (experiment,))
        return [RevisionRecord(experiment, int(rev), ts, digest, orjson.loads(config))
                for rev, ts, digest, config in rows]

    def publish_switch_state(self: SQLiteFile, experiment: str, state: dict[str, Any],
                             ts: float) -> int:
        """Replace the experiment's switch state, one generation up, in one transaction."""
        with self._errors(write=True), self._transaction() as conn:
            row = conn.execute("SELECT generation FROM switch_state WHERE experiment = ?",
                               (experiment,)).fetchone()
            generation = int(row[0]) + 1 if row else 1
            conn.execute(
                "INSERT INTO switch_state (experiment, generation, ts, state) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (experiment) DO UPDATE SET "
                "generation = excluded.generation, ts = excluded.ts, state = excluded.state",
                (experiment, generation, float(ts), to_json(state)))
            return generation

    def switch_state(self: SQLiteFile, experiment: str) -> SwitchState | None:
        """The newest switch state of an experiment, if any."""
        rows = self._query("SELECT generation, ts, state FROM switch_state WHERE experiment = ?",
                           (experiment,))
        if not rows:
            return None
        generation, ts, state = rows[0]
        return SwitchState(experiment, int(generation), ts, orjson.loads(state))
