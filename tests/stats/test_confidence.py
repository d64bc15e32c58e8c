"""The confidence sequence behind ``significant``: its formula by hand, the delta method against
statsmodels' cluster-robust regression, and its guarantee under A/A by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm

from router.stats.confidence import (
    MIN_UNITS,
    mixture_half_width,
    ratio_variance,
    running_arm,
    running_difference,
    running_paired,
)

ALPHA = 0.05


def by_hand(y: list[float], is_b: list[bool], tau2: float, alpha: float = ALPHA,
            min_units: int = MIN_UNITS) -> tuple[list[float], list[float], list[float]]:
    """p-values and the running intersection, element by element, one request a unit: the
    floored per-arm variance, the pooled one, the larger of the two, the mixture boundary."""
    p_values, lows, highs = [], [], []
    running_p, low_run, high_run = 1.0, -math.inf, math.inf
    arms: dict[bool, list[float]] = {False: [], True: []}
    for value, arm in zip(y, is_b, strict=True):
        arms[arm].append(value)
        a, b = arms[False], arms[True]
        if len(a) >= min_units and len(b) >= min_units:
            own = []
            for values in (a, b):
                n, s = len(values), sum(values)
                mean = s / n
                plug = sum((v - mean) ** 2 for v in values) / n / n
                shrunk = (s + 1) / (n + 2)
                own.append(max(plug, shrunk * (1 - shrunk) / n))
            n_a, n_b = len(a), len(b)
            pooled = (n_a * n_a * own[0] + n_b * n_b * own[1]) / (n_a + n_b) * (1 / n_a + 1 / n_b)
            v = max(own[0] + own[1], pooled)
            theta = sum(b) / n_b - sum(a) / n_a
            lam = math.sqrt(v / (v + tau2)) * math.exp(theta**2 * tau2 / (2 * v * (v + tau2)))
            running_p = min(running_p, 1 / lam)
            half = math.sqrt(2 * v * (v + tau2) / tau2
                             * (math.log(1 / alpha) + 0.5 * math.log((v + tau2) / v)))
            low_run, high_run = max(low_run, theta - half), min(high_run, theta + half)
        p_values.append(min(running_p, 1.0))
        lows.append(low_run)
        highs.append(high_run)
    return p_values, lows, highs


def sequence_of(y: np.ndarray, is_b: np.ndarray, tau2: float, units: np.ndarray | None = None):
    return running_difference(running_arm(y, ~is_b, units, bounded=True),
                              running_arm(y, is_b, units, bounded=True), tau2, ALPHA)


@pytest.mark.parametrize("tau2", [1e-4, 1e-2])
def test_sequence_follows_its_formula(tau2: float) -> None:
    """p-values and bounds match the element-by-element formula, for unequal arms too."""
    rng = np.random.default_rng(3)
    is_b = rng.random(600) < 0.3
    y = (rng.random(600) < np.where(is_b, 0.8, 0.7)).astype(float)
    got = sequence_of(y, is_b, tau2)
    p, low, high = by_hand(y.tolist(), is_b.tolist(), tau2)
    assert got.p_value == pytest.approx(p, rel=1e-9)
    assert got.low == pytest.approx(low, rel=1e-9)
    assert got.high == pytest.approx(high, rel=1e-9)


def test_significance_is_the_sequence_leaving_zero_and_never_flips() -> None:
    """p <= alpha exactly when the intersection excludes 0, and its side is kept for good."""
    rng = np.random.default_rng(8)
    for _ in range(20):
        is_b = rng.random(3000) < 0.5
        y = (rng.random(3000) < np.where(is_b, 0.75, 0.7)).astype(float)
        s = sequence_of(y, is_b, 0.01**2)
        left = (s.low > 0) | (s.high < 0)
        assert np.array_equal(left, s.p_value <= ALPHA + 1e-12) or \
            np.array_equal(left[s.p_value != ALPHA], (s.p_value <= ALPHA)[s.p_value != ALPHA])
        if left.any():
            first = int(np.flatnonzero(left)[0])
            side = s.low[first] > 0
            assert np.all((s.low[first:] > 0) == side) and np.all(left[first:])


def test_early_all_alike_outcomes_are_no_evidence() -> None:
    """Found by probing: champion 8/8 right, challenger 2/8, then 2,000 more outcomes each at
    exactly 50 %: no decision is possible early, and none is left at the end."""
    y = [1.0] * 8 + [1.0, 1.0] + [0.0] * 6
    is_b = [False] * 8 + [True] * 8
    for _ in range(1000):
        y += [1.0, 0.0, 1.0, 0.0]
        is_b += [False, False, True, True]
    s = sequence_of(np.array(y), np.array(is_b), 0.1**2)
    assert s.p_value[15] == 1.0
    assert not (s.low[-1] > 0 or s.high[-1] < 0)


def test_delta_method_is_statsmodels_cluster_robust_variance() -> None:
    """The delta-method variance of a difference of per-user ratios equals the CR0
    cluster-robust variance of the treatment coefficient in OLS (statsmodels)."""
    rng = np.random.default_rng(11)
    users = 300
    per_user = rng.integers(1, 40, users)
    unit = np.repeat(np.arange(users), per_user)
    arm = (rng.random(users) < 0.4)[unit]
    p_user = rng.beta(9 * 0.2 / 0.8, 9 * 0.2 / 0.8 * 0.25, users)
    y = (rng.random(unit.size) < p_user[unit]).astype(float)
    ours = ratio_variance(y[~arm], unit[~arm]) + ratio_variance(y[arm], unit[arm])
    x = sm.add_constant(arm.astype(float))
    fit = sm.OLS(y, x).fit(cov_type="cluster",
                           cov_kwds={"groups": unit, "use_correction": False,
                                     "df_correction": False})
    assert ours == pytest.approx(fit.cov_params()[1, 1], rel=1e-9)
    # The running arm's last variance is the same delta-method one (above its floor here).
    arm_b = running_arm(y, arm, unit, bounded=True)
    assert arm_b.variance[-1] == pytest.approx(ratio_variance(y[arm], unit[arm]), rel=1e-9)
    assert arm_b.units[-1] == len(np.unique(unit[arm]))
    # One request a unit: the plug-in Bernoulli variance p(1 - p)/n.
    p = y[arm].mean()
    assert ratio_variance(y[arm]) == pytest.approx(p * (1 - p) / arm.sum(), rel=1e-12)


def test_a_few_heavy_users_are_a_few_effective_units() -> None:
    """Two users with 500 outcomes each beside 40 with one: 42 distinct units, worth about
    two (Kish), so no evidence counts however far apart the arms look."""
    unit = np.r_[np.zeros(500), np.ones(500), np.arange(2, 42)].astype(np.int64)
    counts = np.bincount(unit)
    arm = running_arm(np.ones(unit.size), np.ones(unit.size, dtype=bool), unit, bounded=True)
    assert arm.units[-1] == 42
    assert arm.effective_units[-1] == pytest.approx(unit.size**2 / (counts**2).sum())
    # The other arm: 1,040 users of one outcome each, all wrong; the heavy arm all right.
    y = np.r_[np.ones(unit.size), np.zeros(unit.size)]
    is_b = np.r_[np.ones(unit.size, dtype=bool), np.zeros(unit.size, dtype=bool)]
    units = np.r_[unit, np.arange(1_000, 1_000 + unit.size)]
    order = np.random.default_rng(0).permutation(y.size)
    a = running_arm(y[order], ~is_b[order], units[order], bounded=True)
    b = running_arm(y[order], is_b[order], units[order], bounded=True)
    s = running_difference(a, b, tau2=1e-4, alpha=ALPHA)
    assert np.all(s.p_value == 1.0) and not (s.low[-1] > 0 or s.high[-1] < 0)


def test_running_arm_after_each_element_is_the_arm_so_far() -> None:
    """At every element, the arm's own or not (and before its first outcome), the running
    figures are those of the arm's outcomes up to it."""
    rng = np.random.default_rng(5)
    y = (rng.random(400) < 0.7).astype(float)
    unit = rng.integers(0, 60, y.size)
    arm = rng.random(y.size) < 0.3
    arm[:5] = False
    run = running_arm(y, arm, unit, bounded=True)
    for at in (0, 4, 5, 17, 123, 250, 399):
        mine = np.flatnonzero(arm[:at + 1])
        assert run.n[at] == mine.size and run.units[at] == len(np.unique(unit[mine]))
        if not mine.size:
            assert run.mean[at] == 0.0 and run.variance[at] == 0.0
            continue
        p = (y[mine].sum() + 1) / (mine.size + 2)
        floor = p * (1 - p) / mine.size
        assert run.mean[at] == pytest.approx(y[mine].mean(), rel=1e-12)
        assert run.variance[at] == pytest.approx(
            max(ratio_variance(y[mine], unit[mine]), floor), rel=1e-9)


def test_half_width_inverts_the_msprt() -> None:
    """At the half-width the normal-mixture likelihood ratio is exactly 1/alpha."""
    for v, tau2 in ((1e-4, 1e-4), (3e-3, 1e-2), (0.02, 0.04)):
        w = float(mixture_half_width(v, tau2, ALPHA))
        lam = math.sqrt(v / (v + tau2)) * math.exp(w**2 * tau2 / (2 * v * (v + tau2)))
        assert lam == pytest.approx(1 / ALPHA, rel=1e-9)


def test_paired_sequence_waits_and_floors() -> None:
    """Pairs that all agree are no evidence; the first discordant ones cannot decide alone."""
    d = np.zeros(200)
    d[40:46] = 1.0
    s = running_paired(d, 0.1**2, ALPHA, bounded=True)
    assert np.all(s.p_value > ALPHA)
