"""Assignment: stable, salted by experiment, monotone in the challenger's share."""

from __future__ import annotations

import hashlib
import random

from router.serving.assignment import (
    BUCKETS,
    Split,
    arm_of_bucket,
    arm_regions,
    assign,
    assign_arm,
    bucket_of,
    challenger_buckets,
    region_capacity,
)


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


# -- several challengers -----------------------------------------------------------------------

USERS = [f"user-{i}" for i in range(10_000)]


def _variants(percents: list[float]) -> dict[str, int | None]:
    return {u: assign_arm("exp", u, percents) for u in USERS}


def test_each_challenger_owns_a_fixed_region_that_it_fills_from_its_start() -> None:
    """Two challengers: the first fills [0, 5000) from 0, the second [5000, 10000) from 5000;
    the champion has the rest of each region."""
    assert arm_regions(2) == [(0, 5_000), (5_000, 10_000)]
    assert arm_regions(3) == [(0, 3_333), (3_333, 6_666), (6_666, 10_000)]
    shares = [20, 20]
    assert arm_of_bucket(0, shares) == 0 and arm_of_bucket(1_999, shares) == 0
    assert arm_of_bucket(2_000, shares) is None and arm_of_bucket(4_999, shares) is None
    assert arm_of_bucket(5_000, shares) == 1 and arm_of_bucket(6_999, shares) == 1
    assert arm_of_bucket(7_000, shares) is None and arm_of_bucket(9_999, shares) is None
    # Three challengers at full capacity: each bucket belongs to the region that holds it.
    regions = arm_regions(3)
    full = [region_capacity(i, 3) for i in range(3)]
    for bucket in range(BUCKETS):
        owner = next(i for i, (start, end) in enumerate(regions) if start <= bucket < end)
        assert arm_of_bucket(bucket, full) == owner


def test_one_challenger_has_the_single_layout_of_the_lowest_buckets() -> None:
    """With one arm the layout is the plain case's: the challenger owns the lowest buckets."""
    for percent in (0, 7.5, 30, 100):
        assert all((assign_arm("exp", u, [percent]) == 0) == (assign("exp", u, percent)
                                                                == "challenger")
                   for u in USERS[:2_000])


def test_raising_one_share_keeps_every_users_variant_but_the_newcomers() -> None:
    """Two challengers at 20 % each; the first rises to 30 %: every user of either challenger
    keeps it, and only champion users move, all of them to the first challenger."""
    before, after = _variants([20, 20]), _variants([30, 20])
    moved = [u for u in USERS if before[u] != after[u]]
    assert all(before[u] is None and after[u] == 0 for u in moved)
    assert all(after[u] == before[u] for u in USERS if before[u] is not None)
    shares = [sum(v == arm for v in after.values()) / len(USERS) for arm in (0, 1)]
    assert abs(shares[0] - 0.30) < 0.015 and abs(shares[1] - 0.20) < 0.015
    assert 0.07 < len(moved) / len(USERS) < 0.13


def test_lowering_a_share_moves_its_users_only_to_the_champion() -> None:
    """The monotone layout the other way: a share that falls gives users back to the
    champion, never to another challenger."""
    before, after = _variants([25, 10, 30]), _variants([25, 5, 30])
    moved = [u for u in USERS if before[u] != after[u]]
    assert moved and all(before[u] == 1 and after[u] is None for u in moved)


def test_random_draws_follow_every_share() -> None:
    """Without a unit id each request draws a bucket: the shares still hold."""
    rng = random.Random(11)
    draws = [assign_arm("e", None, [10, 25, 5], rng) for _ in range(40_000)]
    for arm, share in ((0, 0.10), (1, 0.25), (2, 0.05), (None, 0.60)):
        assert abs(draws.count(arm) / len(draws) - share) < 0.01


def test_region_capacity_is_the_most_a_share_can_be() -> None:
    """A share fits its region: 50 % each for two, 33.33 % (33.34 % for the last) for three."""
    assert [region_capacity(i, 2) for i in range(2)] == [50.0, 50.0]
    assert [region_capacity(i, 3) for i in range(3)] == [33.33, 33.33, 33.34]
    assert region_capacity(0, 1) == 100.0


def _documented_bucket(experiment: str, unit_id: str) -> int:
    """The hash the module's docstring promises, written out independently: a unit keeps its
    bucket across versions of the router as well as across processes and machines."""
    digest = hashlib.blake2b(f"{experiment}\x1f{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def test_a_split_worked_out_once_assigns_as_the_documented_hash_and_regions() -> None:
    """``Split`` (what the gateway builds once a snapshot) gives every unit the arm of its
    documented bucket, under one to three arms and shares at their ends and in between."""
    units = [f"user-{i}" for i in range(3_000)] + ["é", "用户", "a\x1fb", "7"]
    for percents in ([], [0], [100], [12.34], [20, 20], [50, 50], [25, 10, 30],
                     [33.33, 33.33, 33.34]):
        split = Split("exp-1", percents)
        for unit in units:
            bucket = _documented_bucket("exp-1", unit)
            assert split.bucket(unit) == bucket == bucket_of("exp-1", unit)
            assert split.arm(unit) == arm_of_bucket(bucket, percents)
            owner = next((i for i, (start, _) in enumerate(arm_regions(len(percents)))
                          if start <= bucket < start + challenger_buckets(percents[i])), None)
            assert split.arm(unit) == owner
    assert bucket_of("exp", "user-1") == _documented_bucket("exp", "user-1")


def test_a_split_draws_at_random_without_a_unit_id() -> None:
    rng = random.Random(3)
    split = Split("e", [30])
    draws = [split.arm(None, rng) for _ in range(20_000)]
    assert abs(draws.count(0) / len(draws) - 0.30) < 0.015
