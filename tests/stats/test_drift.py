"""PSI over saved reference histograms, re-binning live values, and the KS p-value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from router.stats import bin_counts, ks_p_value, psi, sample_from_histogram


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


@pytest.mark.parametrize(("n_ref", "n_cur", "shift"), [(50, 40, 0.0), (3000, 500, 0.2)])
def test_ks_p_value_matches_scipy(n_ref: int, n_cur: int, shift: float) -> None:
    """ks_p_value equals scipy's ks_2samp p-value."""
    rng = np.random.default_rng(n_ref)
    ref, cur = rng.normal(size=n_ref), rng.normal(shift, 1.0, size=n_cur)
    assert ks_p_value(ref, cur) == pytest.approx(ks_2samp(ref, cur).pvalue, rel=1e-12)


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
