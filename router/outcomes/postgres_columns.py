"""``analysis_columns`` on PostgreSQL: the join runs in the server and the rows come back packed
in one binary value (see ``router.outcomes.columns`` for what the columns are)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from router.outcomes.columns import (
    FLAG_CHALLENGER,
    FLAG_ERROR,
    FLAG_FALLBACK,
    FLAG_FORCED,
    FLAG_SHADOW,
    Columns,
    features_array,
    flags_columns,
    latest_feedback,
    revision_filter,
)

__all__ = ["postgres_columns", "postgres_unknown_ids"]

def _packed_columns(conn: Any, select: Sequence[tuple[str, str, str]], source: str,
                    params: Sequence[Any]) -> Columns:
    """The ``(name, kind, expression)`` columns of ``SELECT ... source`` as numpy arrays.

    The server packs every row into bytes (each value big-endian, 8 bytes: ``int8send`` for
    kind ``i``, ``float8send`` for ``f``) and all rows into one ``bytea``, which numpy reads
    in one call. A million rows as Python tuples, or as COPY messages read one per row, cost
    the client several times what the query itself costs.
    """
    send = {"i": "int8send", "f": "float8send"}
    row = " || ".join(f"{send[kind]}({expression})" for _, kind, expression in select)
    (packed,) = conn.execute(f"SELECT string_agg({row}, ''::bytea) {source}",
                             params).fetchone()
    dtype = np.dtype([(name, f">{kind}8") for name, kind, _ in select])
    rows = np.frombuffer(packed or b"", dtype=dtype)
    return {name: rows[name].astype(rows[name].dtype.newbyteorder("=")) for name in dtype.names}


def postgres_columns(
    conn: Any,
    experiment: str,
    revisions: Sequence[int] | None = None,
    *,
    classes: Sequence[str] | None = None,
    units: bool = False,
    true_probability: bool = False,
    feature_rows: int = 0,
    unknown_ids: Callable[[], int] | None = None,
) -> Columns:
    """The columns from PostgreSQL over the psycopg connection ``conn``: the join and the class
    lookups run in the server and the rows come back packed in one binary value.

    As on SQLite, the join keeps every feedback record of a request id (a hash join, where the
    latest per id would need a sort of the whole feedback table) and numpy keeps the latest.
    ``unknown_ids`` counts feedback naming no prediction, on another connection meanwhile
    (it is the slower half); without it, it runs on ``conn`` after the rest.
    """
    revision_sql, revision_params = revision_filter(revisions, "%s")
    select = [
        ("pid", "i", "p.id"),
        ("ts", "f", "p.ts"),
        ("revision", "i", "p.revision::int8"),
        ("flags", "i", f"((p.variant = 'challenger')::int * {FLAG_CHALLENGER} "
                       f"+ p.shadow * {FLAG_SHADOW} + p.fallback * {FLAG_FALLBACK} "
                       f"+ (p.error IS NOT NULL)::int * {FLAG_ERROR} "
                       f"+ p.forced * {FLAG_FORCED})::int8"),
        ("latency_ms", "f", "p.latency_ms"),
        ("feedback_id", "i", "coalesce(f.id, -1)"),
    ]
    params: list[Any] = []
    if classes is not None:
        select += [("predicted", "i",
                    "coalesce(array_position(%s::text[], p.label) - 1, -1)::int8"),
                   ("label", "i", "(CASE WHEN f.label IS NULL THEN -1 "
                    "ELSE coalesce(array_position(%s::text[], f.label) - 1, -2) END)::int8")]
        params += [list(classes), list(classes)]
        if true_probability:
            select.append((
                "true_probability", "f",
                "CASE WHEN f.label IS NULL OR p.probabilities IS NULL THEN 'NaN'::float8 "
                "WHEN p.label = f.label THEN p.probability "
                "ELSE coalesce((p.probabilities::jsonb ->> f.label)::float8, 0.0) END"))
    else:
        select += [("value", "f", "coalesce(p.value, 'NaN')"),
                   ("label_value", "f", "coalesce(f.value, 'NaN')")]
    if units:
        # A 64-bit hash of the id in the server: the statistics only count distinct units.
        select.append(("unit_key", "i", "coalesce(hashtextextended(p.unit_id, 0), 0)"))
    source = ("FROM predictions AS p LEFT JOIN feedback AS f ON f.request_id = p.request_id "
              f"WHERE p.experiment = %s{revision_sql}")
    with conn.transaction():
        # The join hashes the feedback table: in memory, not in batches on disk.
        conn.execute("SET LOCAL work_mem = '256MB'")
        raw = _packed_columns(conn, select, source, [*params, experiment, *revision_params])
    order = np.argsort(raw["pid"], kind="stable")  # the rows of a prediction together
    raw = latest_feedback({name: values[order] for name, values in raw.items()})
    raw.pop("pid")
    columns = {"ts": raw.pop("ts"), "revision": raw.pop("revision"),
               **flags_columns(raw.pop("flags")), **raw}
    if units and columns["ts"].size:
        columns["ts"][columns["unit_key"] != 0] = math.nan
    if feature_rows:
        found = conn.execute(
            f"SELECT p.features FROM predictions AS p WHERE p.experiment = %s{revision_sql} "
            "AND p.shadow = 0 AND p.fallback = 0 AND p.forced = 0 ORDER BY p.id DESC LIMIT %s",
            [experiment, *revision_params, int(feature_rows)]).fetchall()
        columns["features"] = features_array([orjson.loads(r[0]) for r in found])
    columns["unknown_feedback_ids"] = np.array(
        unknown_ids() if unknown_ids is not None else postgres_unknown_ids(conn))
    return columns


def postgres_unknown_ids(conn: Any) -> int:
    """The request ids that feedback names and no prediction of any experiment has."""
    with conn.transaction():
        conn.execute("SET LOCAL work_mem = '256MB'")
        (unknown,) = conn.execute(
            "SELECT count(*) FROM (SELECT DISTINCT request_id FROM feedback) AS g "
            "WHERE NOT EXISTS (SELECT 1 FROM predictions AS p "
            "WHERE p.request_id = g.request_id)").fetchone()
    return int(unknown)
