"""PSI over saved reference histograms, re-binning live values, the KS p-value, and whether
a PSI is more than the noise of its sample sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2_contingency, ks_2samp
from statsmodels.stats.multitest import multipletests

from router.stats import bin_counts, ks_p_value, psi, sample_from_histogram
from router.stats.drift import (
    PSI_MODERATE,
    adjusted_p_values,
    drift_status,
    expected_psi,
    shift_test,
)


def test_psi_by_hand() -> None:
    """PSI = Σ (a - e) ln(a / e): uniform reference vs shares 0.1..0.4 gives 0.228217."""
    expected = sum((a - 0.25) * math.log(a / 0.25) for a in (0.1, 0.2, 0.3, 0.4))
    assert psi([25, 25, 25, 25], [10, 20, 30, 40]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.2282174, abs=1e-7)


def test_psi_of_identical_shares_is_zero_whatever_the_totals() -> None:
    """Only shares count: the same distribution at another scale has PSI 0."""
    assert psi([10, 30, 60], [100, 300, 600]) == pytest.approx(0.0, abs=1e-15)


def test_psi_is_symmetric() -> None:
    """Each term (a - e) ln(a / e) is symmetric, so swapping the sides keeps the index."""
    assert psi([5, 10, 85], [20, 30, 50]) == pytest.approx(psi([20, 30, 50], [5, 10, 85]))


def test_psi_floors_empty_bins_at_epsilon() -> None:
    """An empty bin contributes as a share of epsilon, giving a large but finite index."""
    got = psi([50, 50, 0], [50, 40, 10], epsilon=1e-4)
    e = [0.5, 0.5, 1e-4]
    a = [0.5, 0.4, 0.1]
    assert got == pytest.approx(sum((x - y) * math.log(x / y) for x, y in zip(a, e, strict=True)))
    assert math.isfinite(got)


@pytest.mark.parametrize(
    ("reference", "current"),
    [([1, 2], [1, 2, 3]), ([0, 0], [1, 2]), ([1, 2], [0, 0]), ([1, -1], [1, 1])],
)
def test_psi_rejects_undefined_inputs(reference: list[int], current: list[int]) -> None:
    """Mismatched bins, an empty side or a negative count raise ValueError."""
    with pytest.raises(ValueError):
        psi(reference, current)


def test_bin_counts_matches_numpy_histogram_inside_the_range() -> None:
    """With the saved edges, in-range values land where numpy.histogram puts them."""
    rng = np.random.default_rng(1)
    training = rng.normal(size=5000)
    counts, edges = np.histogram(training, bins=10)
    assert list(bin_counts(training, edges.tolist())) == list(counts)


def test_bin_counts_puts_outside_values_in_the_end_bins() -> None:
    """Values below the first edge count in the first bin, above the last edge in the last."""
    edges = [0.0, 1.0, 2.0, 3.0]
    got = bin_counts([-5.0, 0.0, 0.99, 1.0, 2.5, 3.0, 42.0], edges)
    assert list(got) == [3, 1, 3]


@pytest.mark.parametrize("edges", [[1.0], [0.0, 0.0, 1.0], [2.0, 1.0], [0.0, math.inf]])
def test_bin_counts_rejects_bad_edges(edges: list[float]) -> None:
    """Edges must be at least two finite, strictly increasing numbers."""
    with pytest.raises(ValueError):
        bin_counts([0.5], edges)


def test_psi_from_a_saved_reference_detects_a_shift() -> None:
    """Re-binned live data: the same distribution gives PSI < 0.1, a 1-sd shift gives > 0.25."""
    rng = np.random.default_rng(2)
    reference, edges = np.histogram(rng.normal(size=20_000), bins=10)
    same = bin_counts(rng.normal(size=2000), edges.tolist())
    shifted = bin_counts(rng.normal(1.0, 1.0, size=2000), edges.tolist())
    assert psi(reference, same) < 0.1
    assert psi(reference, shifted) > 0.25


@pytest.mark.parametrize(("n_ref", "n_cur", "shift", "method"), [
    (50, 40, 0.0, "auto"), (1000, 1000, 0.1, "auto"), (3000, 500, 0.2, "asymp"),
    (1000, 10_000, 0.05, "asymp")])
def test_ks_p_value_matches_scipy(n_ref: int, n_cur: int, shift: float, method: str) -> None:
    """ks_p_value equals scipy's ks_2samp p-value: its default (exact) method up to a million
    pairs, the asymptotic one beyond, within 5 % of the exact one there."""
    rng = np.random.default_rng(n_ref + n_cur)
    ref, cur = rng.normal(size=n_ref), rng.normal(shift, 1.0, size=n_cur)
    got = ks_p_value(ref, cur)
    assert got == pytest.approx(ks_2samp(ref, cur, method=method).pvalue, rel=1e-12)
    assert got == pytest.approx(ks_2samp(ref, cur, method="exact").pvalue, rel=0.05)


def test_ks_p_value_rejects_an_empty_sample() -> None:
    """An empty sample has no distribution to compare and raises ValueError."""
    with pytest.raises(ValueError):
        ks_p_value([], [1.0, 2.0])


def test_sample_from_histogram_rebins_to_the_saved_counts() -> None:
    """The stand-in sample has the histogram's counts, spread evenly inside each bin."""
    edges = [0.0, 1.0, 3.0, 4.0]
    sample = sample_from_histogram(edges, [2, 0, 4])
    assert list(sample) == pytest.approx([0.25, 0.75, 3.125, 3.375, 3.625, 3.875])
    assert list(bin_counts(sample, edges)) == [2, 0, 4]


def test_ks_against_a_histogram_stand_in_tells_same_from_shifted() -> None:
    """KS on the stand-in sample: live data like training passes, a 0.5-sd shift is flagged."""
    rng = np.random.default_rng(3)
    counts, edges = np.histogram(rng.normal(size=20_000), bins=50)
    reference = sample_from_histogram(edges, counts)
    assert ks_p_value(reference, rng.normal(size=1000)) > 0.01
    assert ks_p_value(reference, rng.normal(0.5, 1.0, size=1000)) < 1e-6


@pytest.mark.parametrize("counts", [[1, 2], [1, -1, 2], [1.5, 1, 1]])
def test_sample_from_histogram_rejects_bad_counts(counts: list[float]) -> None:
    """Counts must be one whole non-negative number per bin."""
    with pytest.raises(ValueError):
        sample_from_histogram([0.0, 1.0, 2.0, 3.0], counts)


# -- whether a PSI is more than noise -----------------------------------------------------------


def _features(rng: np.random.Generator, n: int) -> np.ndarray:
    """Eight features of unlike shapes: normal, skewed, bounded, heavy-tailed and lumpy."""
    return np.column_stack([
        rng.normal(size=n), rng.normal(3.0, 2.0, size=n), rng.lognormal(size=n),
        rng.exponential(size=n), rng.uniform(size=n), rng.standard_t(4, size=n),
        rng.poisson(3.0, size=n).astype(float), rng.gamma(2.0, size=n),
    ])


def _statuses(training: np.ndarray, live: np.ndarray) -> list[str | None]:
    tests = []
    for j in range(training.shape[1]):
        counts, edges = np.histogram(training[:, j], bins=10)
        tests.append(shift_test(counts, bin_counts(live[:, j], edges)))
    adjusted = adjusted_p_values([t.p_value for t in tests])
    return [drift_status(t.psi, q) for t, q in zip(tests, adjusted, strict=True)]


def test_same_distribution_is_stable_over_twenty_seeds() -> None:
    """300 training rows and 1,000 live rows of the same distribution: over 20 seeds of eight
    features at most one feature is flagged in total (PSI alone flags far more)."""
    flagged = psi_alone = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        training, live = _features(rng, 300), _features(rng, 1000)
        flagged += sum(s != "stable" for s in _statuses(training, live))
        for j in range(training.shape[1]):
            counts, edges = np.histogram(training[:, j], bins=10)
            psi_alone += psi(counts, bin_counts(live[:, j], edges)) >= PSI_MODERATE
    assert flagged <= 1
    assert psi_alone > flagged


def test_half_a_standard_deviation_on_one_feature_is_flagged_and_no_other() -> None:
    """A 0.5-sd shift of the first feature is flagged in each of 20 seeds; the others are
    flagged at most once in total."""
    others = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        training, live = _features(rng, 300), _features(rng, 1000)
        live[:, 0] += 0.5
        statuses = _statuses(training, live)
        assert statuses[0] in ("moderate", "major"), seed
        others += sum(s != "stable" for s in statuses[1:])
    assert others <= 1


def test_shift_test_p_value_is_scipys_chi_square_on_the_table() -> None:
    """Without sparse bins the p-value is chi2_contingency's on the 2 x k table as given."""
    reference, current = [40, 60, 80, 70, 50], [100, 150, 260, 240, 250]
    got = shift_test(reference, current)
    expected = chi2_contingency(np.array([reference, current]), correction=False)
    assert got.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert got.bins_tested == 5
    assert got.psi == pytest.approx(psi(reference, current))


def test_shift_test_merges_sparse_bins_before_testing() -> None:
    """Adjacent bins expecting fewer than 5 observations are pooled for the test, never the PSI:
    here the two sparse tail bins join their neighbours."""
    reference, current = [1, 30, 40, 29, 0], [3, 95, 130, 100, 4]
    got = shift_test(reference, current)
    merged = np.array([[31, 40, 29], [98, 130, 104]])
    assert got.bins_tested == 3
    assert got.p_value == pytest.approx(chi2_contingency(merged, correction=False).pvalue)


def test_shift_test_with_too_few_observations_tests_nothing() -> None:
    """Three reference rows cannot fill two bins of five expected each: p-value 1."""
    got = shift_test([1, 1, 1], [300, 300, 300])
    assert (got.bins_tested, got.p_value) == (1, 1.0)


def test_expected_psi_is_the_mean_psi_of_same_distribution_samples() -> None:
    """(k - 1)(1/n + 1/m) against the mean PSI of 4,000 pairs of multinomial draws."""
    rng = np.random.default_rng(7)
    shares = np.array([0.02, 0.05, 0.1, 0.15, 0.18, 0.18, 0.15, 0.1, 0.05, 0.02])
    values = [psi(rng.multinomial(300, shares), rng.multinomial(1000, shares))
              for _ in range(4000)]
    assert expected_psi(10, 300, 1000) == pytest.approx(9 * (1 / 300 + 1 / 1000))
    assert np.mean(values) == pytest.approx(expected_psi(10, 300, 1000), rel=0.1)
    assert shift_test([6, 15, 30, 45, 54, 54, 45, 30, 15, 6],
                      [20, 50, 100, 150, 180, 180, 150, 100, 50, 20]
                      ).expected_psi == pytest.approx(expected_psi(10, 300, 1000))


def test_adjusted_p_values_are_benjamini_hochberg_as_statsmodels_computes_them() -> None:
    """The adjustment equals statsmodels' fdr_bh; untested entries stay None."""
    raw = [0.001, 0.02, None, 0.04, 0.3, 0.0001]
    got = adjusted_p_values(raw)
    tested = [p for p in raw if p is not None]
    expected = iter(multipletests(tested, method="fdr_bh")[1])
    for value, p in zip(got, raw, strict=True):
        if p is None:
            assert value is None
        else:
            assert value == pytest.approx(next(expected), rel=1e-12)


@pytest.mark.parametrize(("value", "adjusted", "status"), [
    (0.3, 0.001, "major"), (0.15, 0.001, "moderate"), (0.05, 0.0, "stable"),
    (0.3, 0.2, "stable"), (0.3, None, "stable"), (None, None, None)])
def test_drift_status_needs_a_large_psi_and_significance(
        value: float | None, adjusted: float | None, status: str | None) -> None:
    """A shift is named only when PSI is over its threshold and the adjusted p under alpha."""
    assert drift_status(value, adjusted) == status
