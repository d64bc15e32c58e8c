"""The analysis columns of a SQLite log read once, then extended by what is logged after it:
the kept read and :func:`sqlite_columns`, the store's ``analysis_columns``."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from router.outcomes.columns import (
    Columns,
    KeptRead,
    features_from_json,
    latest_features_query,
)
from router.outcomes.sqlite_columns import (
    _MAX_UPDATES,
    _MMAP_BYTES,
    _PARALLEL_ROWS,
    _WORKERS,
    _ranges,
    _SQLiteQuery,
)

__all__ = ["SQLiteColumnCache", "sqlite_columns"]

# The kept read's bound, so that its memory stays bounded per gateway process (about 300 MB).
MAX_KEPT_ROWS = 5_000_000


class SQLiteColumnCache(KeptRead):
    """The raw columns of the latest question asked of one SQLite file, kept so that the next
    read of the same question reads only what was logged since.

    Predictions and feedback are only ever appended, with growing ids: rows read before keep
    their values except for the feedback joined to them, and feedback newer than the last read
    is matched to them by one small query (``_SQLiteQuery.updates``). Over a million logged
    predictions a read then costs what the new rows and the statistics cost, not the whole
    log again. One question is kept (what ``/stats`` asks), about 60 bytes per row, and only
    up to :data:`MAX_KEPT_ROWS` rows: past that, each read is a full one again.
    """

    def keep(self, question: tuple[Any, ...], raw: Columns, max_prediction_id: int,
             max_feedback_id: int) -> None:
        # Past the bound nothing is kept, so memory stays bounded: the next read is a full one.
        self.raw = raw if raw["pid"].size <= MAX_KEPT_ROWS else None
        self.question = question
        self.max_prediction_id, self.max_feedback_id = max_prediction_id, max_feedback_id

    def answers(self, question: tuple[Any, ...], max_prediction_id: int,
                max_feedback_id: int) -> bool:
        """True when the kept read is of ``question``, the log has only grown since, and not
        by so much that reading it all again would cost less (feedback since then is fetched
        row by row)."""
        return (self.raw is not None and self.question == question
                and self.max_prediction_id <= max_prediction_id
                and self.max_feedback_id <= max_feedback_id
                and max_feedback_id - self.max_feedback_id <= _MAX_UPDATES)


def _by_pid(raw: Columns) -> Columns:
    pid = raw["pid"]
    if pid.size < 2 or bool((pid[1:] > pid[:-1]).all()):
        return raw
    order = np.argsort(pid, kind="stable")
    return {name: values[order] for name, values in raw.items()}


def sqlite_columns(
    conn: sqlite3.Connection,
    path: Path,
    experiment: str,
    revisions: Sequence[int] | None = None,
    *,
    classes: Sequence[str] | None = None,
    units: bool = False,
    true_probability: bool = False,
    feature_rows: int = 0,
    segments: Sequence[str] = (),
    arms: Sequence[str] = (),
    timeout_s: float = 10.0,
    cache: SQLiteColumnCache | None = None,
    latest_rows: int = 0,
) -> Columns:
    """The columns from a SQLite file: one pass joined with the latest feedback per request.

    A large table is read in rowid ranges on several connections of its own at once, while
    another one counts the unknown feedback ids; ``conn`` (the caller's) reads the bounds and
    the latest features. With a ``cache`` that holds an earlier read of the same question, only
    the rows and the feedback logged since are read (see :class:`SQLiteColumnCache`).
    ``latest_rows`` reads only the question's rows among the log's newest that many, leaves
    the cache alone and counts no unknown feedback ids.
    """
    query = _SQLiteQuery(experiment, revisions, classes, units, true_probability, segments,
                         arms)

    def on_own_connection(task: Callable[[sqlite3.Connection], Any]) -> Any:
        side = sqlite3.connect(path, timeout=timeout_s)
        try:
            # Read through a memory map, not a read() per page: a tenth less time over a large
            # log. Only these short-lived reading connections use it.
            side.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
            return task(side)
        finally:
            side.close()

    if latest_rows:
        # The newest rows only: the kept read is neither used nor waited for.
        low, high, max_feedback = _bounds(conn)
        window = (max(low, high - latest_rows + 1), high)
        raw = _by_pid(on_own_connection(lambda c: query.run(c, *window, max_feedback)))
        columns = query.finish([raw], (0, np.zeros(0, np.int64)))
        columns["unknown_feedback_ids"] = np.array(0)  # not counted on a partial read
        return _with_features(columns, conn, experiment, revisions, feature_rows)
    with cache.lock if cache is not None else contextlib.nullcontext():
        # The bounds first: rows and feedback committed later are left to the next read.
        low, high, max_feedback = _bounds(conn)
        if cache is not None and cache.answers(query.question, high, max_feedback):
            assert cache.raw is not None
            before = cache.raw
            raw = query.apply(before, on_own_connection(lambda c: query.updates(
                c, cache.max_feedback_id, max_feedback, cache.max_prediction_id)))
            if high > cache.max_prediction_id:
                new = on_own_connection(
                    lambda c: query.run(c, cache.max_prediction_id + 1, high, max_feedback))
                raw = {name: np.concatenate([raw[name], values])
                       for name, values in _by_pid(new).items()}
            unknown = on_own_connection(query.unknown_ids)
        else:
            ranges = _ranges(low, high, _WORKERS if high - low + 1 >= _PARALLEL_ROWS else 1) \
                or [(low, high)]
            with ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="stats") as pool:
                unknown_future = pool.submit(on_own_connection, query.unknown_ids)
                others = [pool.submit(on_own_connection,
                                      functools.partial(query.run, low=low_id, high=high_id,
                                                        max_feedback_id=max_feedback))
                          for low_id, high_id in ranges[1:]]
                first = on_own_connection(lambda c: query.run(c, *ranges[0], max_feedback))
                parts = [first, *(f.result() for f in others)]
                unknown = unknown_future.result()
            raw = _by_pid({name: np.concatenate([p[name] for p in parts]) for name in parts[0]})
        if cache is not None:
            cache.keep(query.question, raw, high, max_feedback)
    return _with_features(query.finish([raw], unknown), conn, experiment, revisions,
                          feature_rows)


def _bounds(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """The lowest and highest prediction ids and the highest feedback id."""
    # One aggregate a SELECT: SQLite reads a lone min() or max() off the index, but min() and
    # max() side by side from a scan of every row.
    low, high, max_feedback = conn.execute(
        "SELECT (SELECT ifnull(min(id), 1) FROM predictions), "
        "(SELECT ifnull(max(id), 0) FROM predictions), "
        "(SELECT ifnull(max(id), 0) FROM feedback)").fetchone()
    return int(low), int(high), int(max_feedback)


def _with_features(columns: Columns, conn: sqlite3.Connection, experiment: str,
                   revisions: Sequence[int] | None, feature_rows: int) -> Columns:
    if feature_rows:
        columns["features"] = _sqlite_features(conn, experiment, revisions, feature_rows)
    return columns


def _sqlite_features(conn: sqlite3.Connection, experiment: str,
                     revisions: Sequence[int] | None, limit: int) -> np.ndarray:
    # The unary + keeps SQLite on the rowid order (newest first, stopping after ``limit``)
    # rather than the index.
    latest, params = latest_features_query(experiment, revisions, limit, "?",
                                           experiment_sql="+p.experiment")
    (text,) = conn.execute(f"SELECT '[' || group_concat(features) || ']' FROM ({latest})",
                           params).fetchone()
    return features_from_json(text)
