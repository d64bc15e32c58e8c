"""The analysis columns of a PostgreSQL log read once, then extended: the kept read, the ids
it did not see yet, and :func:`postgres_columns`, the store's ``analysis_columns``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.outcomes.columns import (
    Columns,
    KeptRead,
    features_from_json,
    latest_features_query,
)
from router.outcomes.postgres_columns import (
    _MAX_KEPT_UNKNOWN,
    _MAX_PENDING_IDS,
    _MAX_UPDATES,
    _UNKNOWN_SQL,
    Connect,
    _apply,
    _by_pid,
    _PostgresQuery,
    _unknown_ids,
)
from router.outcomes.postgres_pending import (
    ELSEWHERE_SQL,
    Missing,
    Snapshot,
    pending_ids,
    present_ids,
    still_missing,
)

__all__ = ["PostgresColumnCache", "postgres_columns"]

# The kept read's bound, so that its memory stays bounded per gateway process, as on SQLite.
MAX_KEPT_ROWS = 5_000_000


class PostgresColumnCache(KeptRead):
    """The raw columns of the latest question asked of one PostgreSQL log, kept so that the
    next read of the same question reads only what was logged since.

    Predictions and feedback are only ever appended: rows read before keep their values except
    for the feedback joined to them. A read takes what has an id above the kept read's newest,
    and what has an id the kept read looked for and did not find (a write under way then, see
    the module doc), until whoever took those ids has ended. The unknown feedback ids are kept
    as a set, which new feedback grows and new predictions shrink. One question is kept (what
    ``/stats`` asks), up to :data:`MAX_KEPT_ROWS` rows: past that, each read is a full one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.missing_predictions: list[Missing] = []
        self.missing_feedback: list[Missing] = []
        self.unknown: list[str] | None = None

    @property
    def pending_predictions(self) -> np.ndarray:
        """The prediction ids the next read looks for again."""
        return pending_ids(self.missing_predictions)

    @property
    def pending_feedback(self) -> np.ndarray:
        """The feedback ids the next read looks for again."""
        return pending_ids(self.missing_feedback)

    def forget(self) -> None:
        self.raw = None

    def answers(self, question: tuple[Any, ...], max_prediction_id: int,
                max_feedback_id: int) -> bool:
        """True when the kept read is of ``question``, the log has only grown since, and not
        by so much that reading it all again would cost less."""
        return (self.raw is not None and self.question == question
                and self.unknown is not None
                and self.max_prediction_id <= max_prediction_id
                and self.max_feedback_id <= max_feedback_id
                and max_feedback_id - self.max_feedback_id <= _MAX_UPDATES)

    def keep(self, question: tuple[Any, ...], raw: Columns, max_prediction_id: int,
             max_feedback_id: int, missing_predictions: list[Missing],
             missing_feedback: list[Missing], unknown: list[str] | None) -> None:
        too_many = sum(g.ids.size for g in (*missing_predictions, *missing_feedback)) \
            > _MAX_PENDING_IDS
        # Past a bound nothing is kept, so memory stays bounded: the next read is a full one.
        self.raw = None if too_many or raw["pid"].size > MAX_KEPT_ROWS else raw
        self.question = question
        self.max_prediction_id, self.max_feedback_id = max_prediction_id, max_feedback_id
        self.missing_predictions, self.missing_feedback = missing_predictions, missing_feedback
        self.unknown = unknown


@dataclass
class _Read:
    """One read's outcome, before it is kept."""

    raw: Columns
    missing_predictions: list[Missing]
    missing_feedback: list[Missing]
    unknown_count: int
    unknown: list[str] | None
    features: np.ndarray | None = None  # when read with the rest


def _unknown_among(conn: Any, feedback_ids: np.ndarray) -> tuple[int, list[str] | None]:
    """The unknown request ids, from the feedback rows (``feedback_ids``) that no prediction
    of the question has: those no prediction of any other has either."""
    if feedback_ids.size > _MAX_KEPT_UNKNOWN:  # many experiments in one log: the anti-join
        return _unknown_ids(conn)
    (unknown,) = conn.execute(
        "SELECT coalesce(array_agg(request_id), '{}') FROM ("
        + _UNKNOWN_SQL.format("SELECT request_id FROM feedback WHERE id = ANY(%s)") + ") AS u",
        [feedback_ids.tolist()]).fetchone()
    return len(unknown), list(unknown)


def latest_features(conn: Any, experiment: str, revisions: Sequence[int] | None,
                    rows: int) -> np.ndarray:
    """The features of the question's ``rows`` latest served requests (for drift), newest
    first, as one JSON array text that one parse reads."""
    latest, params = latest_features_query(experiment, revisions, rows, "%s")
    (text,) = conn.execute("SELECT '[' || string_agg(features, ',' ORDER BY id DESC) || ']' "
                           f"FROM ({latest}) AS latest", params).fetchone()
    return features_from_json(text)


def _absent_ids(ids: np.ndarray, high: int) -> np.ndarray:
    """The ids in ``[1, high]`` that ``ids`` (all of a table's ids up to ``high``, as a read
    saw them) does not hold."""
    seen = np.zeros(high + 1, dtype=bool)
    seen[ids[ids <= high]] = True
    seen[0] = True
    return np.flatnonzero(~seen).astype(np.int64)


def _full_read(conn: Any, query: _PostgresQuery, high: int, feedback_high: int,
               snapshot: Snapshot, side: Connect | None,
               features: Callable[[Any], np.ndarray | None]) -> _Read:
    """Every row of the question. The feedback table and the latest features are read
    meanwhile on ``side`` (a second connection, in this transaction's snapshot), or after on
    ``conn``; the two tables are joined here (see :meth:`_PostgresQuery.every_row`).

    The ids this snapshot does not see come from what was read: the whole feedback table was,
    and the question's rows are every prediction up to ``high`` unless the log holds others
    (other experiments or phases), which only then are asked for."""

    def others(c: Any) -> tuple[Columns, np.ndarray, np.ndarray | None]:
        feedback = query.feedback_rows(c)
        return (query.latest_feedback(feedback),
                _absent_ids(feedback["feedback_id"], feedback_high), features(c))

    if side is None:
        rows = query.every_row(conn, high)
        feedback, missing_f, latest = others(conn)
    else:
        (exported,) = conn.execute("SELECT pg_export_snapshot()").fetchone()

        def in_snapshot() -> tuple[Columns, np.ndarray, np.ndarray | None]:
            with side() as c, c.transaction():
                c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                c.execute(f"SET TRANSACTION SNAPSHOT '{exported}'")
                return others(c)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stats") as pool:
            future = pool.submit(in_snapshot)
            rows = query.every_row(conn, high)
            feedback, missing_f, latest = future.result()
    missing_p = np.zeros(0, np.int64) if rows["pid"].size == high else \
        present_ids(conn, "predictions", 0, high, np.zeros(0, np.int64))[0]
    raw, unmatched = query.join(conn, rows, feedback)
    count, unknown = _unknown_among(conn, unmatched)
    now, none = time.monotonic(), np.zeros(0, np.int64)
    return _Read(raw, still_missing([], none, missing_p, snapshot, now),
                 still_missing([], none, missing_f, snapshot, now), count, unknown, latest)


def _incremental_read(conn: Any, query: _PostgresQuery, cache: PostgresColumnCache, high: int,
                      feedback_high: int, snapshot: Snapshot) -> _Read:
    """The kept read brought up to date: new and found rows read, kept rows given newer
    feedback, the unknown ids updated."""
    assert cache.raw is not None and cache.unknown is not None
    pending_p, pending_f = cache.pending_predictions, cache.pending_feedback
    low, feedback_low = cache.max_prediction_id, cache.max_feedback_id
    missing_p, found_p = present_ids(conn, "predictions", low, high, pending_p)
    missing_f, found_f = present_ids(conn, "feedback", feedback_low, feedback_high, pending_f)
    raw = cache.raw
    if found_f.size or feedback_high > feedback_low:
        raw = _apply(raw, query.updates(conn, feedback_low, feedback_high, found_f, low))
    if found_p.size or high > low:
        raw = _by_pid([raw, query.rows(conn, low + 1, high, found_p.tolist())])
    # Unknown ids: those kept, and those new feedback names, that no prediction has now.
    (unknown,) = conn.execute(
        "SELECT coalesce(array_agg(request_id), '{}') FROM ("
        + _UNKNOWN_SQL.format("SELECT unnest(%s::text[]) UNION ALL SELECT request_id "
                              "FROM feedback WHERE id > %s AND id <= %s OR id = ANY(%s)")
        + ") AS u", [cache.unknown, feedback_low, feedback_high, found_f.tolist()]).fetchone()
    now = time.monotonic()
    return _Read(raw, still_missing(cache.missing_predictions, found_p, missing_p, snapshot,
                                     now),
                 still_missing(cache.missing_feedback, found_f, missing_f, snapshot, now),
                 len(unknown), list(unknown) if len(unknown) <= _MAX_KEPT_UNKNOWN else None)


def postgres_columns(
    conn: Any,
    experiment: str,
    revisions: Sequence[int] | None = None,
    *,
    classes: Sequence[str] | None = None,
    units: bool = False,
    true_probability: bool = False,
    feature_rows: int = 0,
    segments: Sequence[str] = (),
    arms: Sequence[str] = (),
    cache: PostgresColumnCache | None = None,
    side: Connect | None = None,
    latest_rows: int = 0,
) -> Columns:
    """The columns from PostgreSQL over the psycopg connection ``conn``, in one snapshot: the
    join and the class lookups run in the server and the rows come back packed in one binary
    value.

    With a ``cache`` that holds an earlier read of the same question, only the rows and the
    feedback logged since are read (see :class:`PostgresColumnCache`). A full read counts
    the unknown feedback ids on ``side`` (a second connection, given as a context manager
    factory) meanwhile, in the same snapshot; without it, on ``conn`` after the rest.
    ``latest_rows`` reads only the question's rows among the log's newest that many, joined
    in the server, leaves the cache alone and counts no unknown feedback ids.
    """
    query = _PostgresQuery(experiment, revisions, classes, units, true_probability, segments,
                           arms)
    with cache.lock if cache is not None else contextlib.nullcontext(), conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # Joins and anti-joins over whole tables hash them: in memory, not in batches on disk.
        conn.execute("SET LOCAL work_mem = '256MB'")
        text, high, feedback_high, elsewhere = conn.execute(
            "SELECT pg_current_snapshot()::text, (SELECT coalesce(max(id), 0) FROM "
            f"predictions), (SELECT coalesce(max(id), 0) FROM feedback), ({ELSEWHERE_SQL})"
        ).fetchone()
        snapshot = Snapshot.parse(text, elsewhere)

        def features(c: Any) -> np.ndarray | None:
            return latest_features(c, experiment, revisions, feature_rows) \
                if feature_rows else None

        if latest_rows:
            raw = query.rows(conn, max(1, high - latest_rows + 1), high)
            latest = features(conn)
            columns = query.finish(raw, 0)
            if latest is not None:
                columns["features"] = latest
            return columns
        if cache is not None and cache.answers(query.question, high, feedback_high):
            read = _incremental_read(conn, query, cache, high, feedback_high, snapshot)
            read.features = features(conn)
        else:
            read = _full_read(conn, query, high, feedback_high, snapshot, side, features)
        features_read = read.features
        if cache is not None:
            cache.keep(query.question, read.raw, high, feedback_high, read.missing_predictions,
                       read.missing_feedback, read.unknown)
    columns = query.finish(read.raw, read.unknown_count)
    if features_read is not None:
        columns["features"] = features_read
    return columns
