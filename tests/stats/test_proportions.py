"""Wilson, the pooled z-test, Newcombe's difference interval and the sample size per arm."""

from __future__ import annotations

import math

import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from router.stats import (
    difference_interval,
    samples_per_arm,
    two_proportion_test,
    wilson_interval,
)

# (x_a, n_a, x_b, n_b): ordinary, lopsided, boundary and tiny cases.
PAIRS = [
    (48, 80, 56, 70),
    (3, 10, 9, 10),
    (500, 1000, 520, 1000),
    (951, 1000, 940, 990),
    (0, 20, 5, 56),
    (20, 20, 0, 10),
    (1, 3, 2, 2),
    (7000, 9000, 800, 1000),
]


@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
    ],
)
def test_wilson_reproduces_newcombe_1998_single_proportion_table(
    x: int, n: int, low: float, high: float
) -> None:
    """Wilson intervals match Newcombe (1998, single proportion, method 3) to 4 decimals."""
    got = wilson_interval(x, n)
    assert got == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize(("x", "n"), [(0, 1), (1, 1), (3, 7), (50, 100), (999, 1000), (0, 5000)])
def test_wilson_matches_statsmodels(x: int, n: int, confidence: float) -> None:
    """wilson_interval equals statsmodels' proportion_confint(method='wilson')."""
    expected = proportion_confint(x, n, alpha=1 - confidence, method="wilson")
    assert wilson_interval(x, n, confidence) == pytest.approx(expected, abs=1e-12)


def test_wilson_of_no_trials_is_the_whole_range() -> None:
    """With n = 0 nothing is known: the interval is (0, 1)."""
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_ends_are_exact_at_the_boundaries() -> None:
    """0 successes gives a low end of exactly 0, all successes a high end of exactly 1."""
    assert wilson_interval(0, 37)[0] == 0.0
    assert wilson_interval(37, 37)[1] == 1.0


@pytest.mark.parametrize(
    "args", [(-1, 10), (11, 10), (1, -1), (5, 10, 1.0), (5, 10, 0.0), (5, 10, float("nan"))]
)
def test_wilson_rejects_impossible_arguments(args: tuple[float, ...]) -> None:
    """Counts out of range and confidence outside (0, 1) raise ValueError."""
    with pytest.raises(ValueError):
        wilson_interval(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("x_a", "n_a", "x_b", "n_b"), PAIRS)
def test_two_proportion_test_matches_statsmodels(x_a: int, n_a: int, x_b: int, n_b: int) -> None:
    """z and p equal statsmodels' pooled proportions_ztest with the challenger first (b - a)."""
    z_exp, p_exp = proportions_ztest([x_b, x_a], [n_b, n_a])
    z, p = two_proportion_test(x_a, n_a, x_b, n_b)
    assert z == pytest.approx(z_exp, rel=1e-10)
    assert p == pytest.approx(p_exp, rel=1e-9)


def test_two_proportion_test_sign_favours_the_challenger() -> None:
    """A higher challenger proportion gives z > 0; swapping the arms flips the sign only."""
    z, p = two_proportion_test(400, 1000, 450, 1000)
    z_swapped, p_swapped = two_proportion_test(450, 1000, 400, 1000)
    assert z > 0
    assert z_swapped == pytest.approx(-z)
    assert p_swapped == pytest.approx(p)


@pytest.mark.parametrize(
    ("x_a", "n_a", "x_b", "n_b"), [(0, 50, 0, 70), (50, 50, 70, 70), (0, 0, 3, 5), (3, 5, 0, 0)]
)
def test_two_proportion_test_without_variance_is_no_evidence(
    x_a: int, n_a: int, x_b: int, n_b: int
) -> None:
    """Zero pooled variance (all alike, or an empty arm) gives z = 0 and p = 1."""
    assert two_proportion_test(x_a, n_a, x_b, n_b) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("first", "second", "low", "high"),
    [
        ((56, 70), (48, 80), 0.0524, 0.3339),
        ((9, 10), (3, 10), 0.1705, 0.8090),
        ((6, 7), (2, 7), 0.0582, 0.8062),
        ((5, 56), (0, 29), -0.0381, 0.1926),
        ((0, 10), (0, 20), -0.1611, 0.2775),
        ((0, 10), (0, 10), -0.2775, 0.2775),
        ((10, 10), (0, 20), 0.6791, 1.0),
        ((10, 10), (0, 10), 0.6075, 1.0),
    ],
)
def test_difference_interval_reproduces_newcombe_1998_table_ii(
    first: tuple[int, int], second: tuple[int, int], low: float, high: float
) -> None:
    """Method 10 of Newcombe (1998) Table II; the paper's first proportion is our challenger."""
    (x_b, n_b), (x_a, n_a) = first, second
    assert difference_interval(x_a, n_a, x_b, n_b) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize(("x_a", "n_a", "x_b", "n_b"), PAIRS)
def test_difference_interval_matches_statsmodels(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float
) -> None:
    """The interval equals statsmodels' confint_proportions_2indep(method='newcomb') for b - a."""
    expected = confint_proportions_2indep(
        x_b, n_b, x_a, n_a, method="newcomb", compare="diff", alpha=1 - confidence
    )
    got = difference_interval(x_a, n_a, x_b, n_b, confidence)
    assert got == pytest.approx(tuple(float(v) for v in expected), abs=1e-12)


@pytest.mark.parametrize(("x_a", "n_a", "x_b", "n_b"), PAIRS)
def test_difference_interval_contains_the_estimate_and_mirrors(
    x_a: int, n_a: int, x_b: int, n_b: int
) -> None:
    """The interval holds p_b - p_a, stays in [-1, 1], and swapping the arms mirrors it."""
    low, high = difference_interval(x_a, n_a, x_b, n_b)
    assert -1.0 <= low <= x_b / n_b - x_a / n_a <= high <= 1.0
    assert difference_interval(x_b, n_b, x_a, n_a) == pytest.approx((-high, -low))


def test_difference_interval_with_an_empty_arm_is_the_whole_range() -> None:
    """Without trials in an arm nothing is known about the difference: (-1, 1)."""
    assert difference_interval(0, 0, 5, 10) == (-1.0, 1.0)


@pytest.mark.parametrize(
    ("p_a", "p_b", "power", "expected"),
    [
        # Unpooled normal formula: (1.95996 + 1.28155)^2 * 0.4375 / 0.0625 = 73.55 -> 74.
        # R's power.prop.test answers 76.65 (-> 77) here, and 57.67 (-> 58) at power 0.8,
        # because it uses the pooled variance 2 * p̄q̄ under the null; SPEC fixes the formula.
        (0.50, 0.75, 0.9, 74),
        (0.50, 0.75, 0.8, 55),
        (0.10, 0.12, 0.8, 3839),
        (0.95, 0.96, 0.8, 6743),
    ],
)
def test_samples_per_arm_follows_the_spec_formula(
    p_a: float, p_b: float, power: float, expected: int
) -> None:
    """samples_per_arm = ceil((z_{1-alpha/2} + z_power)^2 (p_a q_a + p_b q_b) / (p_b - p_a)^2)."""
    assert samples_per_arm(p_a, p_b, power=power) == expected
    z = 1.959963984540054 + {0.8: 0.8416212335729143, 0.9: 1.2815515655446004}[power]
    exact = z**2 * (p_a * (1 - p_a) + p_b * (1 - p_b)) / (p_b - p_a) ** 2
    assert expected == math.ceil(exact)


@pytest.mark.parametrize(
    ("p_a", "p_b", "alpha", "power"),
    [
        (0.5, 0.75, 0.05, 0.9),
        (0.3, 0.25, 0.05, 0.8),
        (0.9, 0.92, 0.01, 0.95),
        (0.5, 0.51, 0.1, 0.8),
    ],
)
def test_samples_per_arm_reaches_the_power_by_statsmodels(
    p_a: float, p_b: float, alpha: float, power: float
) -> None:
    """The size is statsmodels' NormalIndPower solution, rounded up, for the same variance."""
    n = samples_per_arm(p_a, p_b, alpha, power)
    assert n is not None
    effect = abs(p_b - p_a) / math.sqrt((p_a * (1 - p_a) + p_b * (1 - p_b)) / 2)
    # The formula ignores the far tail's power, as a one-sided test at alpha / 2 does; the
    # two-sided solution counts it and needs a sample or two fewer when n is in the tens of
    # thousands.
    solved = NormalIndPower().solve_power(
        effect_size=effect, alpha=alpha / 2, power=power, ratio=1, alternative="larger"
    )
    assert n == math.ceil(solved - 1e-6)


def test_samples_per_arm_of_no_difference_is_none() -> None:
    """p_a == p_b cannot be detected at any size: the documented sentinel None."""
    assert samples_per_arm(0.3, 0.3) is None


@pytest.mark.parametrize("args", [(-0.1, 0.5), (0.5, 1.1), (0.5, 0.6, 0.0), (0.5, 0.6, 0.05, 1.0)])
def test_samples_per_arm_rejects_impossible_arguments(args: tuple[float, ...]) -> None:
    """Proportions outside [0, 1] and alpha or power outside (0, 1) raise ValueError."""
    with pytest.raises(ValueError):
        samples_per_arm(*args)
