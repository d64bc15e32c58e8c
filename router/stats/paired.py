"""Paired tests for shadow mode, where both models scored the same requests: McNemar, Wilcoxon."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import binom, wilcoxon


def mcnemar_test(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pairs.

    The same binomial test as ``statsmodels.stats.contingency_tables.mcnemar(exact=True)``:
    ``min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``.

    Args:
        b: pairs only the champion got right.
        c: pairs only the challenger got right.

    Returns:
        The p-value; 1.0 when ``b + c == 0`` (no discordant pair, no evidence).
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(b, c), b + c, 0.5)))


def wilcoxon_test(a: ArrayLike, b: ArrayLike) -> float:
    """Two-sided Wilcoxon signed-rank p-value on the paired differences ``b - a``.

    Exactly ``scipy.stats.wilcoxon(b - a).pvalue`` with scipy's defaults (zero differences
    dropped, exact distribution for small samples, normal approximation otherwise).

    Args:
        a: the champion's per-request values (for example losses).
        b: the challenger's values on the same requests, in the same order.

    Returns:
        The p-value; 1.0 when every difference is zero (or there are none), where scipy
        itself would divide by zero.
    """
    a_arr = np.asarray(a, dtype=float)
    b_arr = np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(
            f"a and b must be 1-D and of equal length, got {a_arr.shape} and {b_arr.shape}"
        )
    d = b_arr - a_arr
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d).pvalue)
