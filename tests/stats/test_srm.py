"""The sample ratio mismatch test against the configured traffic split."""

from __future__ import annotations

import pytest
from scipy.stats import chisquare

from router.stats import SRM_ALPHA, srm_test


def test_srm_reproduces_kohavis_worked_example() -> None:
    """Kohavi et al. (2020, ch. 21): 821,588 vs 815,482 users on a 50/50 design gives p ≈ 1.8e-6."""
    p = srm_test([821_588, 815_482], [50, 50])
    assert p == pytest.approx(1.8e-6, rel=0.02)
    assert p < SRM_ALPHA


@pytest.mark.parametrize(
    ("counts", "percents"),
    [
        ([9000, 1000], [90, 10]),
        ([8900, 1100], [90, 10]),
        ([4800, 5200], [50, 50]),
        ([9120, 880], [90.5, 9.5]),
        ([300, 350, 350], [30, 35, 35]),
        ([3, 1], [75, 25]),
    ],
)
def test_srm_matches_scipy_chisquare(counts: list[int], percents: list[float]) -> None:
    """The p-value equals scipy's chisquare of the counts against total * share."""
    total = sum(counts)
    expected = chisquare(counts, [total * p / 100 for p in percents]).pvalue
    assert srm_test(counts, percents) == pytest.approx(expected, rel=1e-10)


def test_srm_leaves_out_an_unused_zero_share_arm() -> None:
    """An arm configured at 0 % that saw no unit drops out; the rest are tested as before."""
    assert srm_test([880, 120, 0], [90, 10, 0]) == pytest.approx(srm_test([880, 120], [90, 10]))


def test_srm_traffic_to_a_zero_share_arm_is_a_mismatch() -> None:
    """Any unit in an arm configured at 0 % is a certain mismatch: p = 0."""
    assert srm_test([999, 1], [100, 0]) == 0.0


@pytest.mark.parametrize(("counts", "percents"), [([500, 0], [100, 0]), ([0, 0], [90, 10])])
def test_srm_without_two_arms_to_compare_is_no_evidence(
    counts: list[int], percents: list[float]
) -> None:
    """A 100/0 split or no units at all leaves nothing to test: p = 1."""
    assert srm_test(counts, percents) == 1.0


@pytest.mark.parametrize(
    ("counts", "percents"),
    [([1, 2], [50, 40]), ([1, 2, 3], [50, 50]), ([-1, 2], [50, 50]), ([1, 2], [110, -10])],
)
def test_srm_rejects_impossible_arguments(counts: list[int], percents: list[float]) -> None:
    """Percents not summing to 100, unequal lengths and negative values raise ValueError."""
    with pytest.raises(ValueError):
        srm_test(counts, percents)
