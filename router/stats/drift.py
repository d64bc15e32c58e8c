"""Drift of live inputs and predictions from a model's saved training reference: PSI and KS."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import ks_2samp


def _edges(edges: Sequence[float] | ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(edges, dtype=float)
    if arr.ndim != 1 or arr.size < 2 or not np.all(np.isfinite(arr)):
        raise ValueError("bin edges must be a list of at least 2 finite numbers")
    if np.any(np.diff(arr) <= 0):
        raise ValueError("bin edges must be strictly increasing")
    return arr


def bin_counts(values: ArrayLike, edges: Sequence[float] | ArrayLike) -> NDArray[np.int64]:
    """Count ``values`` in the bins of a saved reference histogram.

    Bins are ``[e_i, e_{i+1})`` and the last one is closed, as in ``numpy.histogram``, so
    training data re-binned with its own edges gives back the saved counts. Values below the
    first edge go to the first bin and values above the last edge to the last bin: live data
    outside the training range still counts, in the bin nearest to it.

    Args:
        values: the live values of one feature (or predictions).
        edges: the saved bin edges, ``len(counts) + 1`` strictly increasing numbers.

    Returns:
        An integer array of ``len(edges) - 1`` counts.
    """
    e = _edges(edges)
    v = np.asarray(values, dtype=float).ravel()
    if np.any(np.isnan(v)):
        raise ValueError("values must not contain NaN")
    index = np.clip(np.searchsorted(e, v, side="right") - 1, 0, e.size - 2)
    return np.bincount(index, minlength=e.size - 1).astype(np.int64)


def psi(reference_counts: ArrayLike, current_counts: ArrayLike, epsilon: float = 1e-4) -> float:
    """Population stability index ``Σ (a_i - e_i) ln(a_i / e_i)`` over the bins.

    ``e_i`` is the reference share and ``a_i`` the current share of bin ``i``, each floored at
    ``epsilon`` so that an empty bin on one side gives a large but finite term. Rules of thumb:
    below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a major one.

    Raises:
        ValueError: the two histograms differ in length, a count is negative, or either side
            has no observation at all (the index is then undefined).
    """
    ref = np.asarray(reference_counts, dtype=float)
    cur = np.asarray(current_counts, dtype=float)
    if ref.ndim != 1 or ref.shape != cur.shape:
        raise ValueError(f"histograms must be 1-D and alike, got {ref.shape} and {cur.shape}")
    if np.any(ref < 0) or np.any(cur < 0):
        raise ValueError("counts must be non-negative")
    if ref.sum() == 0 or cur.sum() == 0:
        raise ValueError("both histograms need at least one observation")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    e = np.maximum(ref / ref.sum(), epsilon)
    a = np.maximum(cur / cur.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_p_value(reference_sample: ArrayLike, current: ArrayLike) -> float:
    """Two-sided two-sample Kolmogorov-Smirnov p-value, as ``scipy.stats.ks_2samp``.

    Raises:
        ValueError: either sample is empty.
    """
    ref = np.asarray(reference_sample, dtype=float).ravel()
    cur = np.asarray(current, dtype=float).ravel()
    if ref.size == 0 or cur.size == 0:
        raise ValueError("both samples need at least one value")
    return float(ks_2samp(ref, cur).pvalue)


def sample_from_histogram(
    edges: Sequence[float] | ArrayLike, counts: ArrayLike
) -> NDArray[np.float64]:
    """A deterministic stand-in sample for a saved histogram, for ``ks_p_value``.

    Bin ``i`` contributes ``counts[i]`` points spread evenly inside it (at the midpoints of
    ``counts[i]`` equal slices), which is the sample whose empirical distribution is closest
    to the histogram's piecewise-uniform one. The KS p-value against it is an approximation
    whose resolution is the bin width.
    """
    e = _edges(edges)
    c = np.asarray(counts)
    if c.shape != (e.size - 1,) or np.any(c < 0) or not np.all(c == np.round(c)):
        raise ValueError(f"counts must be {e.size - 1} non-negative whole numbers")
    c = c.astype(np.int64)
    bin_index = np.repeat(np.arange(c.size), c)
    # Position of each point within its bin: (j + 0.5) / count for j = 0 .. count - 1.
    starts = np.repeat(np.cumsum(c) - c, c)
    within = (np.arange(bin_index.size) - starts + 0.5) / np.repeat(c, c)
    left = e[bin_index]
    return left + within * (e[bin_index + 1] - left)
