"""Which variant serves a unit: a stable hash of (experiment, unit id) into 10,000 buckets.

The challenger owns the lowest buckets, ``[0, challenger_percent * 100)``. So a unit keeps its
variant across requests, processes and machines (the hash is keyed by nothing but the two
strings), and raising ``challenger_percent`` only moves units from champion to challenger.
"""

from __future__ import annotations

import hashlib
import random

BUCKETS = 10_000
CHAMPION = "champion"
CHALLENGER = "challenger"


def bucket_of(experiment: str, unit_id: str) -> int:
    """The unit's bucket in ``[0, 10000)``; the experiment name salts it, so experiments differ."""
    digest = hashlib.blake2b(f"{experiment}\x1f{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def challenger_buckets(challenger_percent: float) -> int:
    """How many of the lowest buckets the challenger owns (percent to 0.01 resolution)."""
    return round(challenger_percent * BUCKETS / 100)


def variant_of_bucket(bucket: int, challenger_percent: float) -> str:
    return CHALLENGER if bucket < challenger_buckets(challenger_percent) else CHAMPION


def assign(experiment: str, unit_id: str | None, challenger_percent: float,
           rng: random.Random | None = None) -> str:
    """The variant for a unit, or a random draw at the same odds when there is no unit id."""
    if unit_id is None:
        bucket = (rng or random).randrange(BUCKETS)
    else:
        bucket = bucket_of(experiment, unit_id)
    return variant_of_bucket(bucket, challenger_percent)
