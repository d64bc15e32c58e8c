"""The probability a wrong prediction gave its true label, for the log loss of a full
PostgreSQL read: only wrong predictions need it from their logged probabilities (a right one's
is its own ``probability``), and the read knows their rows and true labels already."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from router.outcomes.columns import Columns
from router.outcomes.postgres_packing import packed_columns

__all__ = ["TRUE_PROBABILITY_SQL", "wrong_probabilities"]

# The same in SQL, for a prediction ``p`` joined to its latest feedback ``f``: at hand when the
# prediction was right; only wrong ones need the JSON.
TRUE_PROBABILITY_SQL = (
    "coalesce(CASE WHEN f.label IS NULL OR p.probabilities IS NULL THEN 'NaN'::float8 "
    "WHEN p.label = f.label THEN p.probability "
    "ELSE coalesce((p.probabilities::jsonb ->> f.label)::float8, 0.0) END, 'NaN')")


def _from_json(probabilities: dict[str, Any] | None, label: str) -> float:
    """What :data:`TRUE_PROBABILITY_SQL` says of a wrong prediction whose logged
    probabilities are ``probabilities`` and whose true label, ``label``, is another."""
    if probabilities is None:
        return math.nan
    value = probabilities.get(label)
    return 0.0 if value is None else float(value)


def wrong_probabilities(conn: Any, raw: Columns, rows: np.ndarray,
                        classes: Sequence[str]) -> np.ndarray:
    """The probability each of ``rows`` (indices into ``raw``, sorted by ``pid``, of wrong
    predictions with a true label) gave its true label, as :data:`TRUE_PROBABILITY_SQL`.

    A true label among ``classes`` is known here: the rows' logged probabilities are fetched by
    id alone (an index scan, no join) and read in one JSON parse. A label outside them (code
    -2) has no name here; those rare rows are joined to their feedback in the server."""
    out = np.full(rows.size, np.nan)
    labels = raw["label"][rows]
    known = np.flatnonzero(labels >= 0)
    if known.size:
        pid = raw["pid"][rows[known]]
        # One scan feeds both aggregates, so the ids and the JSON texts come in one order.
        # The ids go as one array literal: as a list, psycopg would dump them one by one.
        ids, text = conn.execute(
            "SELECT string_agg(int8send(id), ''::bytea), "
            "'[' || string_agg(coalesce(probabilities, 'null'), ',') || ']' "
            "FROM predictions WHERE id = ANY(%s::int8[])",
            ["{" + ",".join(map(str, pid.tolist())) + "}"], binary=True).fetchone()
        found = np.frombuffer(ids or b"", dtype=">i8").astype(np.int64)
        at = np.searchsorted(pid, found)
        names = [classes[i] for i in labels[known][at].tolist()]
        out[known[at]] = [_from_json(p, name)
                          for p, name in zip(orjson.loads(text or "[]"), names, strict=True)]
    other = np.flatnonzero(labels < 0)
    if other.size:
        found_other = packed_columns(
            conn, [("pid", "i", "p.id"), ("true_probability", "f", TRUE_PROBABILITY_SQL)],
            "FROM predictions AS p JOIN feedback AS f ON f.request_id = p.request_id "
            "WHERE p.id = ANY(%s) AND f.id = ANY(%s)",
            [raw["pid"][rows[other]].tolist(), raw["feedback_id"][rows[other]].tolist()])
        at = np.searchsorted(raw["pid"][rows[other]], found_other["pid"])
        out[other[at]] = found_other["true_probability"]
    return out
