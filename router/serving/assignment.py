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
    return Split(experiment, ()).bucket(unit_id)


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
    return Split("", percents).arm_of_bucket(bucket)


def assign_arm(experiment: str, unit_id: str | None, percents: Sequence[float],
               rng: random.Random | None = None) -> int | None:
    """The arm (index into ``percents``) serving a unit, or None for the champion; a random
    draw at the same odds when there is no unit id."""
    return Split(experiment, percents).arm(unit_id, rng)


def assign(experiment: str, unit_id: str | None, challenger_percent: float,
           rng: random.Random | None = None) -> str:
    """The variant for a unit of a one-challenger experiment, or a random draw at the same
    odds when there is no unit id."""
    return CHALLENGER if assign_arm(experiment, unit_id, (challenger_percent,), rng) == 0 \
        else CHAMPION


class Split:
    """One experiment's shares, worked out once: the functions above build one per call, the
    gateway one per snapshot (``Snapshot.split``), so that a request's assignment is a hash and
    two divisions rather than seven calls of Python."""

    __slots__ = ("_arms", "_salt", "_sizes", "_starts")

    def __init__(self, experiment: str, percents: Sequence[float]) -> None:
        # The UTF-8 of "experiment\x1funit" is the salt's bytes then the unit's.
        self._salt = f"{experiment}\x1f".encode()
        self._arms = len(percents)
        self._starts = tuple(start for start, _ in arm_regions(len(percents)))
        self._sizes = tuple(challenger_buckets(percent) for percent in percents)

    def bucket(self, unit_id: str) -> int:
        digest = hashlib.blake2b(self._salt + unit_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % BUCKETS

    def arm_of_bucket(self, bucket: int) -> int | None:
        arms = self._arms
        if not arms:
            return None
        # The region holding the bucket: the last i with i * BUCKETS // arms <= bucket.
        index = ((bucket + 1) * arms - 1) // BUCKETS
        return index if bucket - self._starts[index] < self._sizes[index] else None

    def arm(self, unit_id: str | None, rng: random.Random | None = None) -> int | None:
        """The arm serving a unit, or None for the champion; without a unit id, a random
        draw at the same odds."""
        bucket = (rng or random).randrange(BUCKETS) if unit_id is None else self.bucket(unit_id)
        return self.arm_of_bucket(bucket)
