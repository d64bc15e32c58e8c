"""Assignment: stable, salted by experiment, monotone in the challenger's share."""

from __future__ import annotations

import random

from router.assignment import BUCKETS, assign, bucket_of, challenger_buckets


def test_same_unit_same_bucket() -> None:
    """A unit's bucket depends only on (experiment, unit id)."""
    assert bucket_of("exp", "user-1") == bucket_of("exp", "user-1")
    assert 0 <= bucket_of("exp", "user-1") < BUCKETS


def test_experiment_salts_the_hash() -> None:
    """Two experiments split the same users differently."""
    users = [f"u{i}" for i in range(2000)]
    same = sum(bucket_of("a", u) == bucket_of("b", u) for u in users)
    assert same < 20


def test_raising_the_percent_moves_units_only_towards_the_challenger() -> None:
    """From 10 % to 30 %, no unit of 10,000 goes from challenger back to champion."""
    users = [f"user-{i}" for i in range(10_000)]
    before = {u: assign("exp", u, 10) for u in users}
    after = {u: assign("exp", u, 30) for u in users}
    assert not [u for u in users if before[u] == "challenger" and after[u] == "champion"]
    share_before = sum(v == "challenger" for v in before.values()) / len(users)
    share_after = sum(v == "challenger" for v in after.values()) / len(users)
    assert abs(share_before - 0.10) < 0.01 and abs(share_after - 0.30) < 0.015


def test_percent_resolution_is_one_bucket() -> None:
    """Percentages map to buckets at 0.01 resolution; the ends give all or nothing."""
    assert challenger_buckets(12.34) == 1234
    assert challenger_buckets(0) == 0 and challenger_buckets(100) == BUCKETS
    assert all(assign("e", f"u{i}", 0) == "champion" for i in range(500))
    assert all(assign("e", f"u{i}", 100) == "challenger" for i in range(500))


def test_without_unit_id_assignment_is_random_at_the_same_odds() -> None:
    """No unit id: each request draws a bucket, so the share still matches the percent."""
    rng = random.Random(7)
    draws = [assign("e", None, 25, rng) for _ in range(20_000)]
    assert abs(draws.count("challenger") / len(draws) - 0.25) < 0.015
