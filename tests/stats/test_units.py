"""``router.stats.units``: the coded units give the groupings ``np.unique`` gives."""

from __future__ import annotations

import numpy as np
import pytest

from router.stats.confidence import ratio_variance, running_arm
from router.stats.units import UnitCodes, UnitIndex, factorize, group_sums, stable_order

_RNG = np.random.default_rng(0)
VALUES = [
    np.zeros(0, np.int64),
    np.array([7]),
    np.array([3, -1, 3, -1, 2, 3]),
    np.full(1000, -4),
    _RNG.integers(0, 50, 10_000),
    _RNG.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, 5_000),
    np.repeat(_RNG.integers(-10**12, 10**12, 3_000), 4)[_RNG.permutation(12_000)],
    _RNG.integers(0, 300_000, 400_000),  # codes past one 16-bit digit
]


@pytest.mark.parametrize("values", VALUES)
def test_factorize_equals_numpys_unique(values: np.ndarray) -> None:
    distinct, inverse = np.unique(values, return_inverse=True)
    units = factorize(values)
    assert units.codes.tolist() == inverse.tolist()
    assert units.size == distinct.size
    assert units.distinct() == distinct.size
    assert units.repeats() == (distinct.size < values.size)


@pytest.mark.parametrize("values", VALUES)
def test_stable_order_equals_numpys_stable_argsort(values: np.ndarray) -> None:
    expected = np.argsort(values, kind="stable")
    assert stable_order(factorize(values)).tolist() == expected.tolist()


@pytest.mark.parametrize("values", VALUES)
def test_group_sums_equal_bincount_over_unique(values: np.ndarray) -> None:
    weights = np.random.default_rng(3).normal(size=values.size)
    _, inverse = np.unique(values, return_inverse=True)
    expected = np.bincount(inverse, weights=weights)
    assert group_sums(factorize(values), weights).tolist() == expected.tolist()


def test_a_subset_keeps_the_whole_columns_codes() -> None:
    """A subset's codes skip the units it lacks; its groups are still np.unique's."""
    keys = np.repeat(np.arange(1, 201), 5) * 7919 - 500_000
    keys[::13] = 0  # rows without a unit id: each a unit of its own
    index = UnitIndex(keys)
    rows = np.flatnonzero(np.random.default_rng(4).random(keys.size) < 0.3)
    values = np.where(keys[rows] != 0, keys[rows], -1 - rows)
    weights = np.random.default_rng(5).random(rows.size)
    subset = index.take(rows)
    _, inverse = np.unique(values, return_inverse=True)
    assert group_sums(subset, weights).tolist() == np.bincount(inverse, weights).tolist()
    mask = np.zeros(keys.size, bool)
    mask[rows] = True
    assert index.users(mask) == np.unique(keys[mask & (keys != 0)]).size


def test_the_statistics_are_the_same_from_codes() -> None:
    rng = np.random.default_rng(6)
    units = rng.integers(-10**15, 10**15, 400)[rng.integers(0, 400, 5_000)]
    y = rng.exponential(size=units.size)
    members = rng.random(units.size) < 0.5
    coded = factorize(units)
    assert ratio_variance(y, coded) == ratio_variance(y, units)
    plain, fast = running_arm(y, members, units), running_arm(y, members, coded)
    for name in ("n", "units", "mean", "variance"):
        assert getattr(fast, name).tolist() == getattr(plain, name).tolist()


def test_no_unit_key_no_index() -> None:
    assert UnitIndex.of({"ts": np.zeros(3)}) is None  # type: ignore[arg-type]
    assert UnitCodes(np.zeros(0, np.int64), 0).repeats() is False
