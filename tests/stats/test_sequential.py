"""The always-valid (mSPRT) p-values: the formula, their shape, and their error rate under A/A."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import norm

from router.stats import (
    always_valid_p_values,
    always_valid_p_values_means,
    paired_always_valid_p_values,
)
from router.stats.sequential import MIN_OUTCOMES

ALPHA = 0.05
EXPERIMENTS = 500
Counts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Bound = Callable[[float, int], float]


def _by_hand(x_a: list[int], n_a: list[int], x_b: list[int], n_b: list[int], tau2: float):
    """The spec's formula written out element by element, as the reference."""
    out, running = [], 1.0
    for xa, na, xb, nb in zip(x_a, n_a, x_b, n_b, strict=True):
        lam = 1.0
        if na > 0 and nb > 0:
            pa, pb = xa / na, xb / nb
            v = pa * (1 - pa) / na + pb * (1 - pb) / nb
            if v > 0:
                theta = pb - pa
                lam = math.sqrt(v / (v + tau2)) * math.exp(theta**2 * tau2 / (2 * v * (v + tau2)))
        running = min(running, min(1.0, 1.0 / lam))
        out.append(running)
    return out


SERIES = {
    "close": ([30, 61, 88, 120], [60, 120, 180, 240], [35, 70, 104, 139], [60, 120, 180, 240]),
    "apart": ([50, 100, 150], [100, 200, 300], [70, 140, 215], [100, 200, 300]),
    "uneven": ([4, 9, 45, 460], [10, 20, 100, 1000], [1, 3, 14, 130], [2, 5, 20, 200]),
}


@pytest.mark.parametrize("tau2", [1e-4, 1e-2])
@pytest.mark.parametrize("name", sorted(SERIES))
def test_p_values_follow_the_msprt_formula(name: str, tau2: float) -> None:
    """Each p-value is the running minimum of min(1, 1/Λ) with the plug-in Bernoulli variance."""
    x_a, n_a, x_b, n_b = SERIES[name]
    got = always_valid_p_values(x_a, n_a, x_b, n_b, tau2=tau2)
    assert got == pytest.approx(_by_hand(x_a, n_a, x_b, n_b, tau2), rel=1e-12)


def test_lambda_is_one_while_the_variance_is_zero() -> None:
    """No trials, or all-alike outcomes in both arms, give Λ = 1 and so p = 1."""
    x_a, n_a = [0, 0, 3, 5, 5], [0, 2, 3, 5, 9]
    x_b, n_b = [0, 1, 1, 1, 9], [0, 1, 1, 1, 9]
    got = always_valid_p_values(x_a, n_a, x_b, n_b, tau2=1e-2)
    assert list(got[:4]) == [1.0, 1.0, 1.0, 1.0]
    assert got[4] < 1.0


def test_p_values_never_rise() -> None:
    """The p-value is non-increasing even when the evidence later fades."""
    x_a, n_a = [10, 20, 60, 300], [100, 200, 400, 2000]
    x_b, n_b = [25, 40, 70, 300], [100, 200, 400, 2000]
    got = always_valid_p_values(x_a, n_a, x_b, n_b, tau2=1e-2)
    assert np.all(np.diff(got) <= 0)
    assert got[-1] == got[1] < 1.0


def test_overwhelming_evidence_gives_zero_without_overflow() -> None:
    """A huge Λ is handled in logs: p = 0, and no overflow warning (warnings are errors)."""
    got = always_valid_p_values([1000], [100000], [90000], [100000], tau2=0.5)
    assert got[0] == 0.0


def test_many_series_at_once_equal_one_at_a_time(aa_looks: Counts) -> None:
    """A 2-D input is independent series along the last axis, as if passed one by one."""
    args = tuple(a[:5] for a in aa_looks)
    together = always_valid_p_values(*args)
    for i in range(5):
        alone = always_valid_p_values(*(a[i] for a in args))
        assert together[i] == pytest.approx(alone, rel=1e-12)


@pytest.mark.parametrize(
    ("args", "tau2"),
    [
        (([1, 2], [2, 2], [3, 1], [2, 2]), 1e-4),
        (([1, 2], [2, 2], [1], [2]), 1e-4),
        ((1, 2, 1, 2), 1e-4),
        (([1], [2], [1], [2]), 0.0),
    ],
)
def test_rejects_impossible_inputs(args: tuple, tau2: float) -> None:
    """Successes over trials, mismatched shapes, scalars and tau2 <= 0 raise ValueError."""
    with pytest.raises(ValueError):
        always_valid_p_values(*args, tau2=tau2)


@pytest.mark.parametrize("tau2", [1e-4, 1e-2])
def test_aa_false_positive_rate_stays_at_alpha_while_peeking_inflates_it(
    aa_looks: Counts, false_positive_bound: Bound, tau2: float
) -> None:
    """A/A: the always-valid p is ever below alpha in <= alpha (+ margin), peeking in > 2 alpha."""
    x_a, n, x_b, _ = aa_looks
    p_seq = always_valid_p_values(*aa_looks, tau2=tau2)
    sequential_rate = float(np.mean(p_seq.min(axis=1) < ALPHA))

    # The pooled two-proportion z-test, recomputed at every look as a naive dashboard would.
    pooled = (x_a + x_b) / (2 * n)
    z = (x_b - x_a) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    fixed_rate = float(np.mean((2 * norm.sf(np.abs(z))).min(axis=1) < ALPHA))

    assert sequential_rate <= false_positive_bound(ALPHA, EXPERIMENTS)
    assert fixed_rate > 2 * ALPHA


def test_a_real_difference_is_detected_eventually() -> None:
    """With 0.5 vs 0.6 the always-valid p-value falls below alpha within 20,000 samples per arm."""
    rng = np.random.default_rng(99)
    n = np.arange(1, 20_001)
    x_a = np.cumsum(rng.random(n.size) < 0.5)
    x_b = np.cumsum(rng.random(n.size) < 0.6)
    p = always_valid_p_values(x_a, n, x_b, n)
    assert p[-1] < ALPHA
    assert p[0] == 1.0


def test_detection_rate_under_a_real_difference_is_high(
    simulate_looks: Callable[[float, float, int], Counts],
) -> None:
    """With 0.5 vs 0.6 and τ² = 0.1², nearly every experiment is significant by 2,000 samples."""
    p = always_valid_p_values(*simulate_looks(0.5, 0.6, 4), tau2=0.01)
    assert np.mean(p[:, -1] < ALPHA) > 0.95


def test_means_version_equals_bernoulli_version_on_zero_one_values(aa_looks: Counts) -> None:
    """For 0/1 values (sum = sum of squares = successes) both versions give the same p-values."""
    a, n_a, b, n_b = (x[:20] for x in aa_looks)
    bernoulli = always_valid_p_values(a, n_a, b, n_b, tau2=1e-2)
    means = always_valid_p_values_means(a, a, n_a, b, b, n_b, tau2=1e-2)
    assert means == pytest.approx(bernoulli, rel=1e-9, abs=1e-15)


def test_means_version_aa_false_positive_rate(false_positive_bound: Bound) -> None:
    """A/A on exponential losses: the means mSPRT is ever below alpha in <= alpha (+ margin)."""
    rng = np.random.default_rng(8)
    take = slice(99, None, 100)
    losses_a = rng.exponential(1.0, size=(EXPERIMENTS, 2000))
    losses_b = rng.exponential(1.0, size=(EXPERIMENTS, 2000))
    n = np.broadcast_to(np.arange(100, 2001, 100), (EXPERIMENTS, 20))
    sums = [np.cumsum(x, axis=1)[:, take] for x in (losses_a, losses_a**2, losses_b, losses_b**2)]
    p = always_valid_p_values_means(sums[0], sums[1], n, sums[2], sums[3], n, tau2=0.01)
    assert np.mean(p.min(axis=1) < ALPHA) <= false_positive_bound(ALPHA, EXPERIMENTS)


def test_paired_version_follows_the_formula() -> None:
    """Element i uses the first i + 1 differences: mean θ and variance (divisor n) over n."""
    d = np.array([0.0, 1.0, 0.0, -1.0, 1.0, 1.0, 0.0, 1.0])
    tau2 = 0.05
    expected, running = [], 1.0
    for i in range(1, d.size + 1):
        head = d[:i]
        v = head.var() / i
        lam = 1.0
        if v > 0:
            theta = head.mean()
            lam = math.sqrt(v / (v + tau2)) * math.exp(theta**2 * tau2 / (2 * v * (v + tau2)))
        running = min(running, 1.0 / lam)
        expected.append(running)
    assert paired_always_valid_p_values(d, tau2, min_outcomes=1) == pytest.approx(
        expected, rel=1e-12)


def test_tests_on_values_count_no_evidence_before_enough_outcomes() -> None:
    """A few alike losses have a plug-in variance near zero: without a floor the mixture ratio
    would call their difference decisive after four outcomes, and keep that p-value for good."""
    tau2 = 4.0  # min_effect 2 on the loss's scale
    d = np.array([2.0, 2.01, 2.0, 2.01] + [0.0] * 40)
    assert paired_always_valid_p_values(d, tau2, min_outcomes=1)[3] < 1e-6
    floored = paired_always_valid_p_values(d, tau2)
    assert (floored[:MIN_OUTCOMES - 1] == 1.0).all()
    assert floored[-1] > ALPHA  # and the zeros after them leave no real evidence
    n = np.arange(1, 41)
    a = np.full(40, 1.0)  # the champion's losses: all 1.0 but the first one 1.01
    a[0] = 1.01
    b = np.full(40, 3.0)
    sums = [np.cumsum(x) for x in (a, a**2, b, b**2)]
    means = always_valid_p_values_means(sums[0], sums[1], n, sums[2], sums[3], n, tau2)
    assert (means[:MIN_OUTCOMES - 1] == 1.0).all()
    unfloored = always_valid_p_values_means(sums[0], sums[1], n, sums[2], sums[3], n, tau2,
                                            min_outcomes=1)
    assert unfloored[1] < 1e-6


def test_paired_version_aa_rate_and_power(false_positive_bound: Bound) -> None:
    """Paired accuracy differences: ≤ alpha (+ margin) false positives; a 5-point gain is found."""
    rng = np.random.default_rng(12)
    shape = (EXPERIMENTS, 2000)
    # Each model is right 80 % of the time, independently: d = correct_b - correct_a.
    same = (rng.random(shape) < 0.8).astype(int) - (rng.random(shape) < 0.8).astype(int)
    p_same = paired_always_valid_p_values(same, tau2=0.01)
    assert np.mean(p_same.min(axis=1) < ALPHA) <= false_positive_bound(ALPHA, EXPERIMENTS)
    better = (rng.random(shape) < 0.85).astype(int) - (rng.random(shape) < 0.8).astype(int)
    p_better = paired_always_valid_p_values(better, tau2=0.01)
    assert np.mean(p_better[:, -1] < ALPHA) > 0.5
