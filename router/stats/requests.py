"""Which rows of the outcome log are one request.

The log has a row per prediction: a batch request's instances are rows of their own. The
gateway answers many requests in one model call, and stamps every row of the call with the
call's time (``ts``); each request's rows carry its own latency, measured from when that
request was asked, to the nanosecond. So the rows of one request share their time stamp and
their latency, and two requests of one call differ in latency. Where a row has a sticky unit
id the columns leave its time stamp out (``router.outcomes.columns``), and its unit key stands
in for it.

What counts requests: the sample ratio check without a sticky key (a request is the unit of
assignment), the guardrails (a failure or a slow answer is a property of the call a client
made) and the latency percentiles. Counting time stamps would count model calls (the
champion's calls of many requests weigh as much as the challenger's of few: a false sample
ratio mismatch under load); counting rows would let one client's large batches weigh as many
requests.
"""

from __future__ import annotations

import numpy as np

from router.outcomes.columns import AnalysisColumns

__all__ = ["count_distinct", "distinct_requests", "request_starts", "with_request_units"]


def _latency(columns: AnalysisColumns, rows: np.ndarray | slice) -> np.ndarray:
    # An exported log may have no latency (NaN): its time stamps alone tell requests apart.
    latency: np.ndarray = np.nan_to_num(columns["latency_ms"][rows], nan=0.0)
    return latency


def distinct_requests(columns: AnalysisColumns, rows: np.ndarray) -> int:
    """How many requests the ``rows`` mask holds, for rows with a time stamp (no unit id):
    distinct (time stamp, latency) pairs, by sorting them as complex numbers (real part
    first), wherever in the log each request's rows are."""
    return count_distinct(columns["ts"][rows] + 1j * _latency(columns, rows))


def count_distinct(values: np.ndarray) -> int:
    """How many distinct values (by sorting: ``np.unique`` hashes, far slower at this size)."""
    if values.size == 0:
        return 0
    ordered = np.sort(values)
    return int(np.count_nonzero(ordered[1:] != ordered[:-1])) + 1


def request_starts(columns: AnalysisColumns) -> np.ndarray:
    """A flag per row of the log, set where a request's rows begin: a row continues the request
    of the row before it when both have the same latency and the same time stamp (or, without
    one, the same unit). A request's rows are logged one after the other, as the gateway
    answered them, and all go to one variant; so the first rows of the requests a mask of rows
    holds are ``np.flatnonzero(mask & request_starts(columns))``, in logged order."""
    latency, ts = _latency(columns, slice(None)), columns["ts"]
    if latency.size == 0:
        return np.zeros(0, dtype=bool)
    same_source = ts[1:] == ts[:-1]  # NaN (a row with a unit id) equals nothing
    units = columns.get("unit_key")
    if units is not None:
        same_source |= (units[1:] == units[:-1]) & (units[1:] != 0)
    continues = (latency[1:] == latency[:-1]) & same_source
    return np.concatenate(([True], ~continues))


def with_request_units(columns: AnalysisColumns, starts: np.ndarray | None = None
                       ) -> AnalysisColumns:
    """``columns`` with every row's assignment unit as its ``unit_key``: its user's key where
    it has a unit id, else its request (a code ``-1 - n`` for the log's ``n``-th request, as
    a row without an id was once coded by its own place). A request is assigned as a whole,
    so the rows of a batch request are one unit's outcomes, correlated as a user's are; the
    comparison then groups them as it groups a user's, and with one row a request nothing
    changes. Applying it twice changes nothing. ``starts``: :func:`request_starts` of
    ``columns``, when the caller has it."""
    keys = columns.get("unit_key")
    requests = np.cumsum(request_starts(columns) if starts is None else starts) - 1
    units = -1 - requests if keys is None else np.where(keys != 0, keys, -1 - requests)
    out = AnalysisColumns(**columns)  # a shallow copy: the caller's columns stay as read
    out["unit_key"] = units.astype(np.int64)
    return out
