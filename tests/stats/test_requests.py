"""Which rows of the log are one request: the rows the gateway logs for calls that answered
several requests, some of them batches, with and without unit ids."""

from __future__ import annotations

import numpy as np

from router.stats.requests import count_distinct, distinct_requests, request_starts

T = 1_700_000_000.25


def columns(ts: list[float], latency: list[float], units: list[int] | None = None
            ) -> dict[str, np.ndarray]:
    out = {"ts": np.array(ts), "latency_ms": np.array(latency)}
    if units is not None:
        out["unit_key"] = np.array(units, dtype=np.int64)
    return out


# One model call at T answered three requests: a batch of three rows (latency 2.5 ms), a single
# row (2.25 ms) and a batch of two (2.0 ms); then a call at T + 1 answered one (2.5 ms again).
CALLS = columns([T] * 6 + [T + 1], [2.5, 2.5, 2.5, 2.25, 2.0, 2.0, 2.5])


def test_requests_of_one_call_are_told_apart_by_latency_and_a_batch_is_one() -> None:
    every = np.ones(7, dtype=bool)
    assert distinct_requests(CALLS, every) == 4
    assert np.flatnonzero(request_starts(CALLS)).tolist() == [0, 3, 4, 6]
    some = np.array([False, False, False, True, True, True, True])  # one variant's rows
    assert distinct_requests(CALLS, some) == 3
    assert distinct_requests(CALLS, np.zeros(7, dtype=bool)) == 0
    assert request_starts(columns([], [])).size == 0


def test_a_requests_rows_counted_once_wherever_they_are_in_the_log() -> None:
    """Two gateways writing at once may interleave rows: the count sorts, so it holds."""
    shuffled = columns([T, T + 1, T, T], [2.5, 2.5, 2.5, 2.0])
    assert distinct_requests(shuffled, np.ones(4, dtype=bool)) == 3


def test_rows_with_a_unit_id_have_no_time_stamp_and_their_unit_stands_in() -> None:
    """Under a sticky key the columns leave out the time stamps of rows with a unit id (NaN):
    a user's batch is one request, two users with the same latency are two."""
    nan = float("nan")
    logged = columns([nan, nan, nan, T, T], [3.0, 3.0, 3.0, 3.0, 3.0], units=[7, 7, 8, 0, 0])
    assert np.flatnonzero(request_starts(logged)).tolist() == [0, 2, 3]


def test_an_exported_log_without_latencies_tells_requests_apart_by_time_stamp() -> None:
    nan = float("nan")
    exported = columns([T, T, T + 1], [nan, nan, nan])
    assert distinct_requests(exported, np.ones(3, dtype=bool)) == 2
    assert np.flatnonzero(request_starts(exported)).tolist() == [0, 2]


def test_count_distinct_is_numpys_unique() -> None:
    values = np.random.default_rng(0).integers(0, 50, 400)
    assert count_distinct(values) == np.unique(values).size
    assert count_distinct(np.array([])) == 0
