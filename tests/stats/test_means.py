"""Welch's t-test and t intervals on per-request values such as losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t as student_t
from scipy.stats import ttest_1samp, ttest_ind
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from router.stats import (
    mean_difference_interval,
    mean_interval,
    one_sample_t_test,
    samples_per_arm_means,
    welch_test,
)

RNG_SEED = 11


def _samples(n_a: int, n_b: int, shift: float, scale_b: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(RNG_SEED + n_a + n_b)
    return rng.normal(1.0, 1.0, size=n_a), rng.normal(1.0 + shift, scale_b, size=n_b)


CASES = [(5, 7, 0.5, 3.0), (30, 30, 0.0, 1.0), (200, 50, -0.3, 0.5), (1000, 1200, 0.05, 2.0)]


@pytest.mark.parametrize(("n_a", "n_b", "shift", "scale_b"), CASES)
def test_welch_matches_scipy_ttest_ind_unequal_var(
    n_a: int, n_b: int, shift: float, scale_b: float
) -> None:
    """(t, p) equal scipy's ttest_ind(b, a, equal_var=False), so t > 0 favours mean(b)."""
    a, b = _samples(n_a, n_b, shift, scale_b)
    expected = ttest_ind(b, a, equal_var=False)
    t, p = welch_test(a, b)
    assert t == pytest.approx(expected.statistic, rel=1e-10)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)


def test_welch_sign_follows_b_minus_a() -> None:
    """A larger challenger mean gives t > 0; swapping the arms negates t and keeps p."""
    a, b = _samples(40, 40, 1.0, 1.0)
    t, p = welch_test(a, b)
    t_swapped, p_swapped = welch_test(b, a)
    assert t > 0
    assert (t_swapped, p_swapped) == pytest.approx((-t, p))


@pytest.mark.parametrize(("a", "b"), [([1.0], [2.0, 3.0]), ([], [1.0, 2.0]), ([1.0, 2.0], [5.0])])
def test_welch_with_fewer_than_two_values_is_no_evidence(a: list[float], b: list[float]) -> None:
    """An arm with fewer than 2 values has no variance estimate: t = 0, p = 1."""
    assert welch_test(a, b) == (0.0, 1.0)


@pytest.mark.parametrize(("n", "mean", "sd"), [(2, 0.3, 1.0), (12, 0.5, 1.0), (300, -0.05, 2.0),
                                               (5000, 1e-3, 0.1)])
def test_one_sample_t_matches_scipy_ttest_1samp(n: int, mean: float, sd: float) -> None:
    """(t, p) equal scipy's ttest_1samp(values, 0)."""
    values = np.random.default_rng(RNG_SEED + n).normal(mean, sd, size=n)
    expected = ttest_1samp(values, 0.0)
    t, p = one_sample_t_test(values)
    assert t == pytest.approx(expected.statistic, rel=1e-10)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)


def test_one_sample_t_on_degenerate_values() -> None:
    """No evidence below two values or when all are zero; a repeated nonzero value, however
    small its spread from rounding, is a certain nonzero mean, without a warning."""
    assert one_sample_t_test([]) == one_sample_t_test([4.0]) == (0.0, 1.0)
    assert one_sample_t_test([0.0] * 5) == (0.0, 1.0)
    assert one_sample_t_test([-0.5] * 5) == (-math.inf, 0.0)
    rounded = np.arange(1.0, 50.0) + 0.1 - np.arange(1.0, 50.0)  # 0.1 give or take 1e-15
    assert np.ptp(rounded) > 0
    t, p = one_sample_t_test(rounded)
    assert t > 1e10 and p == 0.0


def test_welch_on_constant_arms() -> None:
    """Constant equal arms give (0, 1); constant different arms give (±inf, 0)."""
    assert welch_test([0.1] * 3, [0.1] * 4) == (0.0, 1.0)
    assert welch_test([0.1] * 3, [0.3] * 4) == (math.inf, 0.0)
    assert welch_test([0.3] * 3, [0.1] * 4) == (-math.inf, 0.0)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("n", [2, 10, 500])
def test_mean_interval_matches_statsmodels_and_scipy(n: int, confidence: float) -> None:
    """mean_interval is the Student t interval of DescrStatsW.tconfint_mean and t.interval."""
    values = np.random.default_rng(n).exponential(0.4, size=n)
    expected = DescrStatsW(values).tconfint_mean(alpha=1 - confidence)
    sem = values.std(ddof=1) / math.sqrt(n)
    by_scipy = student_t.interval(confidence, n - 1, loc=values.mean(), scale=sem)
    got = mean_interval(values, confidence)
    assert got == pytest.approx(expected, rel=1e-10)
    assert got == pytest.approx(by_scipy, rel=1e-10)


def test_mean_interval_of_constant_values_is_a_point() -> None:
    """No spread gives a zero-width interval at the mean."""
    assert mean_interval([0.25, 0.25, 0.25]) == (0.25, 0.25)


@pytest.mark.parametrize("values", [[], [1.0]])
def test_mean_interval_needs_two_values(values: list[float]) -> None:
    """Fewer than 2 values cannot give a t interval and raise ValueError."""
    with pytest.raises(ValueError):
        mean_interval(values)


@pytest.mark.parametrize(("n_a", "n_b", "shift", "scale_b"), CASES)
def test_mean_difference_interval_matches_statsmodels_welch(
    n_a: int, n_b: int, shift: float, scale_b: float
) -> None:
    """The interval for mean(b) - mean(a) equals CompareMeans.tconfint_diff(usevar='unequal')."""
    a, b = _samples(n_a, n_b, shift, scale_b)
    expected = CompareMeans(DescrStatsW(b), DescrStatsW(a)).tconfint_diff(usevar="unequal")
    assert mean_difference_interval(a, b) == pytest.approx(expected, rel=1e-10)


def test_mean_difference_interval_agrees_with_welch_test() -> None:
    """The 95 % interval excludes 0 exactly when the Welch p-value is below 0.05."""
    rng = np.random.default_rng(5)
    for shift in np.linspace(-0.6, 0.6, 13):
        a, b = rng.normal(0, 1, 40), rng.normal(shift, 1.5, 35)
        low, high = mean_difference_interval(a, b)
        assert (low > 0 or high < 0) == (welch_test(a, b)[1] < 0.05)


@pytest.mark.parametrize(("sd_a", "sd_b", "difference"), [(1.0, 1.0, 0.5), (0.3, 0.6, -0.05)])
def test_samples_per_arm_means_matches_statsmodels(
    sd_a: float, sd_b: float, difference: float
) -> None:
    """The size is NormalIndPower's for effect |d| / sqrt((sd_a² + sd_b²) / 2), rounded up."""
    effect = abs(difference) / math.sqrt((sd_a**2 + sd_b**2) / 2)
    # One-sided at alpha / 2: the formula, like the proportions one, ignores the far tail.
    solved = NormalIndPower().solve_power(
        effect_size=effect, alpha=0.025, power=0.8, ratio=1, alternative="larger"
    )
    assert samples_per_arm_means(sd_a, sd_b, difference) == math.ceil(solved - 1e-6)


def test_samples_per_arm_means_of_no_difference_is_none() -> None:
    """A zero difference is never detectable: the sentinel None."""
    assert samples_per_arm_means(1.0, 1.0, 0.0) is None
