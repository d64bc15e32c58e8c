"""``analysis_columns`` on PostgreSQL: the join runs in the server and the rows come back packed
in one binary value; the latest read is kept and extended by what is logged after it (see
``router.outcomes.columns`` for what the columns are).

Unlike SQLite's single writer, many sessions write one PostgreSQL log at once, so every read
runs in one repeatable-read snapshot, notes the ids below its newest that it did not see, and
the next reads look for those ids again (``router.outcomes.postgres_pending``,
:class:`PostgresColumnCache`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from router.outcomes.columns import (
    FLAG_BITS,
    FLAG_CHALLENGER,
    FLAG_ERROR,
    FLAG_FALLBACK,
    FLAG_FORCED,
    FLAG_MASK,
    FLAG_SHADOW,
    ColumnQuestion,
    Columns,
    arm_case,
    flags_columns,
    latest_feedback,
    revision_filter,
)
from router.outcomes.postgres_packing import packed_columns
from router.outcomes.postgres_probabilities import TRUE_PROBABILITY_SQL, wrong_probabilities
from router.sorting import stable_argsort

# Above this much new feedback since the kept read, reading everything again is cheaper.
_MAX_UPDATES = 100_000
# At most this many missing ids are looked for again, and this many unknown request ids kept;
# past either bound the next read is a full one.
_MAX_PENDING_IDS = 100_000
_MAX_KEPT_UNKNOWN = 100_000
Connect = Callable[[], AbstractContextManager[Any]]

def _class_index_sql(column: str, classes: int, otherwise: str) -> str:
    """SQL giving ``column``'s place among the ``classes`` bound parameters (from 0), else
    ``otherwise``: a CASE of equalities, which costs the server about half what
    ``array_position`` does on every row of a full read."""
    whens = " ".join(f"WHEN %s THEN {i}" for i in range(classes))
    return f"(CASE {column} {whens} ELSE {otherwise} END)::int8" if classes \
        else f"({otherwise})::int8"


def _ascending(values: np.ndarray) -> bool:
    return values.size < 2 or bool((values[1:] > values[:-1]).all())


class _PostgresQuery(ColumnQuestion):
    """The statement behind the columns, for the rows of any id range, and the one that
    brings rows read earlier up to date with feedback logged since."""

    def __init__(self, experiment: str, revisions: Sequence[int] | None,
                 classes: Sequence[str] | None, units: bool, true_probability: bool,
                 segments: Sequence[str] = (), arms: Sequence[str] = ()) -> None:
        super().__init__(experiment, revisions, classes, units, true_probability, segments,
                         arms)
        revision_sql, revision_params = revision_filter(revisions, "%s")
        self.where = f"p.experiment = %s{revision_sql}"
        self.where_params: list[Any] = [experiment, *revision_params]
        # The columns that the row's latest feedback decides, apart from the others: they
        # are what an update of a row read earlier brings.
        self.feedback_select: list[tuple[str, str, str]] = [
            ("feedback_id", "i", "coalesce(f.id, -1)")]
        self.feedback_params: list[Any] = []
        self.select: list[tuple[str, str, str]] = [
            ("pid", "i", "p.id"),
            ("ts", "f", "p.ts"),
            ("revision", "i", "p.revision::int8"),
            ("flags", "i", f"((p.variant = 'challenger')::int * {FLAG_CHALLENGER} "
                           f"+ p.shadow * {FLAG_SHADOW} + p.fallback * {FLAG_FALLBACK} "
                           f"+ (p.error IS NOT NULL)::int * {FLAG_ERROR} "
                           f"+ p.forced * {FLAG_FORCED})::int8"),
            ("latency_ms", "f", "p.latency_ms"),
            *([("arm", "i", f"{arm_case(arms)}::int8")] if arms else []),
        ]
        self.params: list[Any] = []
        if self.classes is not None:
            self.select.append(("predicted", "i", _class_index_sql("p.label", len(self.classes),
                                                                   "-1")))
            self.params.extend(self.classes)
            self.feedback_select.append(("label", "i", _class_index_sql(
                "f.label", len(self.classes), "CASE WHEN f.label IS NULL THEN -1 ELSE -2 END")))
            self.feedback_params.extend(self.classes)
            if self.true_probability:
                self.feedback_select.append(("true_probability", "f", TRUE_PROBABILITY_SQL))
        else:
            self.select.append(("value", "f", "coalesce(p.value, 'NaN')"))
            self.feedback_select.append(("label_value", "f", "coalesce(f.value, 'NaN')"))
        if units:
            # A 64-bit hash of the id in the server: the statistics only count distinct units.
            self.select.append(
                ("unit_key", "i", "coalesce(hashtextextended(p.unit_id, 0), 0)"))

    def rows(self, conn: Any, low: int, high: int, pending: Sequence[int] = ()) -> Columns:
        """The raw columns (sorted by ``pid``, each row with its latest feedback) of the rows
        with ``low <= id <= high`` or an id in ``pending``; from 1 and with nothing pending,
        every row."""
        ids_sql, ids_params = "", []
        if low > 1 or len(pending):
            ids_sql = " AND (p.id BETWEEN %s AND %s OR p.id = ANY(%s))"
            ids_params = [low, high, list(pending)]
        # A plain join, one row per feedback record of the request id, and numpy keeps the
        # latest: the latest per id in SQL would sort the whole feedback table.
        raw = packed_columns(
            conn, [*self.select, *self.feedback_select],
            "FROM predictions AS p LEFT JOIN feedback AS f ON f.request_id = p.request_id "
            f"WHERE {self.where}{ids_sql}",
            [*self.params, *self.feedback_params, *self.where_params, *ids_params],
            segments=self.segments)
        order = np.argsort(raw["pid"], kind="stable")  # the rows of a prediction together
        return latest_feedback({name: values[order] for name, values in raw.items()})

    def every_row(self, conn: Any, high: int) -> Columns:
        """Every row of the question up to id ``high``, without its feedback: the columns of
        :meth:`rows` less the feedback's, and ``key``, the request id's hash (and with true
        probabilities, ``probability``, NaN without probabilities), for :meth:`join`.

        Over the whole log the server's join costs more than reading both tables apart: its
        hash of the feedback table, and the packing of the joined rows. So the tables are read
        apart (on two connections at once) and joined in numpy on a 64-bit hash of the
        request id (``hashtextextended``: among a million ids a clash has a chance near 1e-7,
        and would give one prediction another's feedback). The true label's probability of
        a wrong prediction needs the prediction's JSON: those few rows are asked for by id.
        """
        # Fewer values per row cost the server less: the predicted class travels in the flags'
        # integer, and a phase of one revision leaves the revision out.
        sql = {name: expression for name, _, expression in self.select}
        fixed = self.revisions is not None and len(set(self.revisions)) == 1
        select = [column for column in self.select if column[0] not in ("flags", "predicted")
                  and not (fixed and column[0] == "revision")]
        code_sql = sql["flags"]
        if self.classes is not None:
            code_sql = f"({code_sql} + (({sql['predicted']}) + 1) * {1 << FLAG_BITS})"
        select += [("code", "i", code_sql), ("key", "i", "hashtextextended(p.request_id, 0)")]
        if self.true_probability:
            select.append(("probability", "f", "CASE WHEN p.probabilities IS NULL "
                           "THEN 'NaN'::float8 ELSE coalesce(p.probability, 'NaN') END"))
        raw = packed_columns(conn, select,
                             f"FROM predictions AS p WHERE {self.where} AND p.id <= %s",
                             [*self.params, *self.where_params, high], segments=self.segments)
        if not _ascending(raw["pid"]):  # a table's scan mostly comes in id order already
            order = np.argsort(raw["pid"], kind="stable")
            raw = {name: values[order] for name, values in raw.items()}
        code = raw.pop("code")
        raw["flags"] = code & FLAG_MASK
        if self.classes is not None:
            raw["predicted"] = (code >> FLAG_BITS) - 1
        if fixed:
            assert self.revisions is not None
            raw["revision"] = np.full(code.size, int(self.revisions[0]), dtype=np.int64)
        return raw

    def join(self, conn: Any, raw: Columns, feedback: Columns) -> tuple[Columns, np.ndarray]:
        """:meth:`every_row`'s ``raw`` with each row's latest feedback from ``feedback`` (as
        :meth:`latest_feedback` gives it), in the columns of :meth:`rows`; and the ids of the
        latest feedback of each request id that no row has."""
        # Sorts and binary searches of sorted values throughout: np.isin and np.unique hash,
        # many times slower on a million values, and searching unsorted values misses the
        # cache at every step.
        raw = dict(raw)
        key = raw.pop("key")
        keys = feedback["key"]
        key_order = np.argsort(key)
        sorted_key = key[key_order]
        if keys.size:
            at = np.empty(key.size, np.int64)
            at[key_order] = np.minimum(np.searchsorted(keys, sorted_key), keys.size - 1)
            joined = keys[at] == key
        else:
            joined, at = np.zeros(key.size, bool), np.zeros(0, np.int64)

        def joined_or(name: str, missing: float) -> np.ndarray:
            values = feedback[name][at] if keys.size else np.zeros(key.size, np.int64)
            return np.where(joined, values, missing)

        raw["feedback_id"] = joined_or("feedback_id", -1)
        if self.classes is not None:
            raw["label"] = joined_or("label", -1)
        else:
            raw["label_value"] = joined_or("label_value", np.nan)
        if self.true_probability:
            probability = raw.pop("probability")
            right = joined & (raw["predicted"] == raw["label"]) & (raw["label"] >= 0)
            raw["true_probability"] = np.where(right, probability, np.nan)
            # Feedback without a label (-1) leaves NaN; other rows need the JSON.
            wrong = np.flatnonzero(joined & ~right & (raw["label"] != -1))
            if wrong.size:
                assert self.classes is not None
                raw["true_probability"][wrong] = wrong_probabilities(conn, raw, wrong,
                                                                     self.classes)
        found_at = np.minimum(np.searchsorted(sorted_key, keys), max(key.size - 1, 0))
        unmatched = sorted_key[found_at] != keys if key.size else np.ones(keys.size, bool)
        return raw, feedback["feedback_id"][unmatched]

    def feedback_rows(self, conn: Any) -> Columns:
        """Every feedback record: ``feedback_id``, ``key`` (the request id's hash) and the
        true label's index or value."""
        select = [("feedback_id", "i", "f.id"), ("key", "i", "hashtextextended(f.request_id, 0)"),
                  *[column for column in self.feedback_select
                    if column[0] in ("label", "label_value")]]
        return packed_columns(conn, select, "FROM feedback AS f", self.feedback_params)

    @staticmethod
    def latest_feedback(feedback: Columns) -> Columns:
        """Of :meth:`feedback_rows`, the latest record of each request id, sorted by ``key``
        (what :meth:`join` takes: on a second connection, sorted while the predictions are
        still being read)."""
        # The last of each key's run, sorted by id within: the table mostly comes in id order,
        # which a stable sort by key keeps.
        fid = feedback["feedback_id"]
        by_id = None if _ascending(fid) else np.argsort(fid)
        by_key = stable_argsort(feedback["key"] if by_id is None else feedback["key"][by_id])
        if by_id is not None:
            by_key = by_id[by_key]
        keys = feedback["key"][by_key]
        latest = by_key[np.r_[keys[1:] != keys[:-1], True]] if keys.size else by_key
        return {name: values[latest] for name, values in feedback.items()}

    def updates(self, conn: Any, after_feedback_id: int, max_feedback_id: int,
                pending: np.ndarray, max_prediction_id: int) -> Columns:
        """What the feedback of id in ``(after_feedback_id, max_feedback_id]`` or in
        ``pending`` says of the rows of id up to ``max_prediction_id``: per matched row its
        ``pid`` and the feedback columns, in no order."""
        # The new feedback drives: each of its few rows finds its predictions by request id.
        return packed_columns(
            conn, [("pid", "i", "p.id"), *self.feedback_select],
            "FROM feedback AS f JOIN predictions AS p ON p.request_id = f.request_id "
            "WHERE (f.id > %s AND f.id <= %s OR f.id = ANY(%s)) AND p.id <= %s "
            f"AND {self.where}",
            [*self.feedback_params, after_feedback_id, max_feedback_id, pending.tolist(),
             max_prediction_id, *self.where_params])

    def finish(self, raw: Columns, unknown: int) -> Columns:
        """The columns of ``raw``, which stays as it is (it may be kept for the next read)."""
        rest = {name: values for name, values in raw.items()
                if name not in ("pid", "ts", "revision", "flags")}
        columns = {"ts": raw["ts"].copy(), "revision": raw["revision"],
                   **flags_columns(raw["flags"]), **rest}
        if self.units and columns["ts"].size:
            columns["ts"][columns["unit_key"] != 0] = math.nan
        columns["unknown_feedback_ids"] = np.array(unknown)
        return columns


def _apply(raw: Columns, updates: Columns) -> Columns:
    """``raw`` (sorted by ``pid``) with each of its rows that an update names given the
    update's feedback where that is later than the row's own (updates of rows ``raw`` does
    not hold are left out: they were read whole)."""
    if not updates["pid"].size or not raw["pid"].size:
        return raw
    order = np.lexsort((updates["feedback_id"], updates["pid"]))
    pid = updates["pid"][order]
    last = order[np.r_[pid[1:] != pid[:-1], True]]  # the latest feedback of each row
    at = np.minimum(np.searchsorted(raw["pid"], updates["pid"][last]), raw["pid"].size - 1)
    newer = (raw["pid"][at] == updates["pid"][last]) & (
        updates["feedback_id"][last] > raw["feedback_id"][at])
    at, last = at[newer], last[newer]
    out = dict(raw)
    for name in updates:
        if name != "pid":
            out[name] = raw[name].copy()
            out[name][at] = updates[name][last]
    return out


def _by_pid(parts: list[Columns]) -> Columns:
    raw = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    if _ascending(raw["pid"]):  # new rows after the kept ones, as they mostly come
        return raw
    order = np.argsort(raw["pid"], kind="stable")
    return {name: values[order] for name, values in raw.items()}


_UNKNOWN_SQL = ("SELECT DISTINCT g.request_id FROM ({}) AS g(request_id) WHERE NOT EXISTS "
                "(SELECT 1 FROM predictions AS p WHERE p.request_id = g.request_id)")


def _unknown_ids(conn: Any) -> tuple[int, list[str] | None]:
    """The request ids that feedback names and no prediction of any experiment has: their
    count, and themselves unless there are too many to keep."""
    ids = [r[0] for r in conn.execute(
        _UNKNOWN_SQL.format("SELECT request_id FROM feedback") + " LIMIT %s",
        [_MAX_KEPT_UNKNOWN + 1]).fetchall()]
    if len(ids) <= _MAX_KEPT_UNKNOWN:
        return len(ids), ids
    (count,) = conn.execute(
        f"SELECT count(*) FROM ({_UNKNOWN_SQL.format('SELECT request_id FROM feedback')}) "
        "AS u").fetchone()
    return int(count), None


