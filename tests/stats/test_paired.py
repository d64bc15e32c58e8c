"""McNemar's exact test and the Wilcoxon signed-rank test for paired (shadow) comparisons."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wilcoxon
from statsmodels.stats.contingency_tables import mcnemar

from router.stats import mcnemar_test, wilcoxon_test


def test_mcnemar_on_agrestis_presidential_approval_table() -> None:
    """Agresti's approval table (794, 150, 86, 570): exact p for 150 vs 86 is 3.716e-05."""
    # Agresti (2007, §8.1) gives z = (86 - 150) / sqrt(236) = -4.17 for the large-sample test;
    # the exact binomial p-value is 2 * P(X <= 86 | n = 236, 1/2).
    expected = mcnemar([[794, 150], [86, 570]], exact=True).pvalue
    assert mcnemar_test(150, 86) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_test(150, 86) == pytest.approx(3.7159e-05, rel=1e-4)


@pytest.mark.parametrize(
    ("b", "c"), [(0, 1), (1, 0), (3, 3), (5, 0), (10, 2), (2, 10), (40, 55), (400, 460)]
)
def test_mcnemar_matches_statsmodels_exact(b: int, c: int) -> None:
    """mcnemar_test(b, c) equals statsmodels' mcnemar(exact=True) on [[·, b], [c, ·]]."""
    expected = mcnemar([[17, b], [c, 23]], exact=True).pvalue
    assert mcnemar_test(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_without_discordant_pairs_is_one() -> None:
    """No pair on which the models disagree gives no evidence: p = 1."""
    assert mcnemar_test(0, 0) == 1.0


def test_mcnemar_is_symmetric_and_capped_at_one() -> None:
    """Swapping b and c keeps the two-sided p-value; b == c gives exactly 1."""
    assert mcnemar_test(12, 30) == mcnemar_test(30, 12)
    assert mcnemar_test(7, 7) == 1.0


def test_mcnemar_rejects_negative_counts() -> None:
    """A negative discordant count is a caller's bug and raises ValueError."""
    with pytest.raises(ValueError):
        mcnemar_test(-1, 3)


def _pairs(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "small_exact":
        a = rng.normal(size=12)
        return a, a + rng.normal(0.5, 1, size=12)
    if kind == "zeros_and_ties":
        a = rng.integers(0, 5, size=30).astype(float)
        return a, a + rng.integers(-2, 4, size=30)
    if kind == "large":
        a = rng.exponential(size=400)
        return a, a * rng.uniform(0.8, 1.25, size=400)
    if kind == "tiny_with_zeros":
        return np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.5, 3.0, 3.0])
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["small_exact", "zeros_and_ties", "large", "tiny_with_zeros"])
def test_wilcoxon_matches_scipy_default_on_b_minus_a(kind: str) -> None:
    """wilcoxon_test(a, b) is scipy.stats.wilcoxon(b - a).pvalue with scipy's defaults."""
    a, b = _pairs(kind, np.random.default_rng(7))
    assert wilcoxon_test(a, b) == pytest.approx(wilcoxon(b - a).pvalue, rel=1e-12)


def test_wilcoxon_is_symmetric_in_the_arms() -> None:
    """The two-sided p-value does not depend on which arm is subtracted."""
    a, b = _pairs("large", np.random.default_rng(3))
    assert wilcoxon_test(a, b) == pytest.approx(wilcoxon_test(b, a))


@pytest.mark.parametrize("n", [0, 1, 25])
def test_wilcoxon_with_all_differences_zero_is_one(n: int) -> None:
    """Identical paired values (or none) give p = 1 instead of scipy's division by zero."""
    values = np.arange(n, dtype=float)
    assert wilcoxon_test(values, values.copy()) == 1.0


def test_wilcoxon_rejects_unpaired_input() -> None:
    """Arrays of different lengths cannot be paired and raise ValueError."""
    with pytest.raises(ValueError):
        wilcoxon_test([1.0, 2.0], [1.0, 2.0, 3.0])
