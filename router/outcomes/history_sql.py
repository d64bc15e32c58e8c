"""The switch history's SQL, the same for SQLite and PostgreSQL but for the parameter mark."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from router.outcomes.records import HistoryEntry

__all__ = ["entries_of", "history_query"]

_SELECT = ("SELECT ts, action, from_model, to_model, reason, actor, details, experiment "
           "FROM history")


def history_query(mark: str, limit: int | None, experiment: str | None
                  ) -> tuple[str, tuple[Any, ...]]:
    """The SELECT that ``history(limit, experiment)`` runs and its parameters (``mark``: the
    driver's placeholder). With ``limit``, the rows come newest first: :func:`entries_of`
    puts them back in order."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    sql = _SELECT
    params: tuple[Any, ...] = ()
    if experiment is not None:
        # Its own switches, and those recorded before switches named their experiment.
        sql = f"{sql} WHERE experiment IN ({mark}, '')"
        params = (experiment,)
    if limit is None:
        return f"{sql} ORDER BY ts, id", params
    return f"{sql} ORDER BY ts DESC, id DESC LIMIT {mark}", (*params, limit)


def entries_of(rows: Sequence[Sequence[Any]], limit: int | None) -> list[HistoryEntry]:
    """:func:`history_query`'s rows as entries, oldest first."""
    entries = [HistoryEntry(ts=ts, action=action, from_model=f, to_model=t, reason=reason,
                            actor=actor, details=orjson.loads(details), experiment=name)
               for ts, action, f, t, reason, actor, details, name in rows]
    if limit is not None:
        entries.reverse()
    return entries
