"""Which ids a PostgreSQL read may have missed, and when to stop looking for them.

Many sessions write one log at once, and a row's id is handed out before its transaction
commits: a write that commits after a later one brings rows of ids lower than some already
read. A read notes the ids below its newest that it did not see (:class:`Missing`), with the
transactions under way in its snapshot (:class:`Snapshot`); later reads look for them again
until whoever took them has ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.outcomes.postgres_packing import packed_columns

__all__ = ["COUNT_FIRST", "ELSEWHERE_SQL", "PENDING_GRACE_S", "Missing", "Snapshot",
           "pending_ids", "present_ids", "still_missing"]

# How long a missing id is looked for at least. A writer takes ids for the rows of a COPY as
# it buffers them, before its transaction has an id of its own that a snapshot would list as
# running: for that moment only time tells a write about to commit from one rolled back.
PENDING_GRACE_S = 60.0
# Below this many ids a range's present ids are fetched outright; above it, a count first
# says whether any is missing at all (rarely: ids go missing only with a rollback or a delete).
COUNT_FIRST = 10_000

# The transactions of other databases on the same server, where the session may see them: a
# snapshot lists every transaction of the server, and one that runs long elsewhere would
# otherwise keep missing ids looked for here.
ELSEWHERE_SQL = ("SELECT coalesce(array_agg(backend_xid::text::int8), '{}') "
                 "FROM pg_stat_activity WHERE datname IS DISTINCT FROM current_database() "
                 "AND backend_xid IS NOT NULL")


@dataclass(frozen=True)
class Snapshot:
    """What a PostgreSQL snapshot says of transactions: every one below ``xmin`` had ended,
    none from ``xmax`` on had begun, and ``running`` were under way."""

    xmin: int
    xmax: int
    running: frozenset[int]

    @classmethod
    def parse(cls, text: str, elsewhere: Sequence[int] = ()) -> Snapshot:
        """``pg_current_snapshot()``'s text, less the transactions known to run in other
        databases of the server (``elsewhere``, 32-bit ids), which cannot write this log."""
        xmin, xmax, running = text.split(":")
        others = set(elsewhere)
        return cls(int(xmin), int(xmax), frozenset(
            int(x) for x in running.split(",") if x and int(x) & 0xFFFFFFFF not in others))

    def ended(self, xids: frozenset[int]) -> bool:
        """True when every transaction of ``xids`` had ended (committed or not) here."""
        return all(x < self.xmin or (x < self.xmax and x not in self.running) for x in xids)


@dataclass(frozen=True)
class Missing:
    """Ids below a read's newest that the read did not see, and the transactions under way
    then: one of them may still commit rows of these ids."""

    ids: np.ndarray
    running: frozenset[int]
    since: float  # time.monotonic() of the read that first missed them

    def settled(self, snapshot: Snapshot, now: float) -> bool:
        """True when no write can bring these ids any more: whoever took them has ended."""
        return snapshot.ended(self.running) and now - self.since >= PENDING_GRACE_S


def pending_ids(groups: list[Missing]) -> np.ndarray:
    """Every id of the groups: those the next read looks for again."""
    return np.concatenate([g.ids for g in groups]) if groups else np.zeros(0, np.int64)


def still_missing(groups: list[Missing], found: np.ndarray, new: np.ndarray,
                  snapshot: Snapshot, now: float) -> list[Missing]:
    """The groups less the ids now found and those settled, and ``new`` as a group."""
    kept = []
    for group in groups:
        ids = group.ids[~np.isin(group.ids, found)]
        if ids.size and not group.settled(snapshot, now):
            kept.append(Missing(ids, group.running, group.since))
    if new.size:
        kept.append(Missing(new, snapshot.running, now))
    return kept


def present_ids(conn: Any, table: str, low: int, high: int, pending: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Of ``table``'s ids in ``(low, high]`` and of ``pending``: the ones missing from the
    range and the pending ones present."""
    if high - low > COUNT_FIRST and not pending.size:
        (count,) = conn.execute(f"SELECT count(*) FROM {table} WHERE id > %s AND id <= %s",
                                [low, high]).fetchone()
        if count == high - low:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # Two index scans: one condition with OR would scan the whole table.
    present = packed_columns(conn, [("id", "i", "id")],
                             f"FROM (SELECT id FROM {table} WHERE id > %s AND id <= %s "
                             f"UNION ALL SELECT id FROM {table} WHERE id = ANY(%s)) AS present",
                             [low, high, pending.tolist()])["id"]
    in_range = present[(present > low) & (present <= high)]
    missing = np.setdiff1d(np.arange(low + 1, high + 1, dtype=np.int64), in_range,
                           assume_unique=True)
    return missing, present[np.isin(present, pending)]
