"""Which variant serves a unit: a stable hash of (experiment, unit id) into 10,000 buckets.

The hash is keyed by nothing but the two strings, so a unit keeps its variant across requests,
processes and machines. The challengers (the arms) split the buckets into equal fixed regions,
one per arm in the order the YAML lists them, and each arm fills its own region from its start:
arm ``i`` of ``k`` owns ``[start_i, start_i + percent_i * 100)`` with ``start_i = i * 10000 //
k``; the champion serves every other bucket. So raising one arm's share only moves units from
the champion to that arm: no unit of any other arm moves, whatever the other shares are. The
price is a ceiling: an arm's share cannot exceed its region (50 % each for two arms, a third
each for three). With one challenger the region is the whole range and the challenger owns the
lowest buckets, ``[0, challenger_percent * 100)``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

BUCKETS = 10_000
CHAMPION = "champion"
CHALLENGER = "challenger"


def bucket_of(experiment: str, unit_id: str) -> int:
    """The unit's bucket in ``[0, 10000)``; the experiment name salts it, so experiments differ."""
    digest = hashlib.blake2b(f"{experiment}\x1f{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def challenger_buckets(challenger_percent: float) -> int:
    """How many buckets a share is (percent to 0.01 resolution)."""
    return round(challenger_percent * BUCKETS / 100)


def arm_regions(arms: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` bucket range each of ``arms`` challengers owns, in list order."""
    return [(i * BUCKETS // arms, (i + 1) * BUCKETS // arms) for i in range(arms)]


def region_capacity(index: int, arms: int) -> float:
    """The largest share (percent) arm ``index`` of ``arms`` can have: its region's size."""
    start, end = arm_regions(arms)[index]
    return (end - start) * 100 / BUCKETS


def arm_of_bucket(bucket: int, percents: Sequence[float]) -> int | None:
    """The index of the arm that owns ``bucket`` under these shares, or None (the champion)."""
    arms = len(percents)
    if not arms:
        return None
    # The region holding the bucket: the last i with i * BUCKETS // arms <= bucket.
    index = ((bucket + 1) * arms - 1) // BUCKETS
    offset = bucket - index * BUCKETS // arms
    return index if offset < challenger_buckets(percents[index]) else None


def variant_of_bucket(bucket: int, challenger_percent: float) -> str:
    return CHALLENGER if arm_of_bucket(bucket, (challenger_percent,)) == 0 else CHAMPION


def _bucket(experiment: str, unit_id: str | None, rng: random.Random | None) -> int:
    if unit_id is None:
        return (rng or random).randrange(BUCKETS)
    return bucket_of(experiment, unit_id)


def assign_arm(experiment: str, unit_id: str | None, percents: Sequence[float],
               rng: random.Random | None = None) -> int | None:
    """The arm (index into ``percents``) serving a unit, or None for the champion; a random
    draw at the same odds when there is no unit id."""
    return arm_of_bucket(_bucket(experiment, unit_id, rng), percents)


def assign(experiment: str, unit_id: str | None, challenger_percent: float,
           rng: random.Random | None = None) -> str:
    """The variant for a unit of a one-challenger experiment, or a random draw at the same
    odds when there is no unit id."""
    return variant_of_bucket(_bucket(experiment, unit_id, rng), challenger_percent)
