"""Sample ratio mismatch: do the observed per-variant counts fit the configured traffic split?"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import chi2

# An SRM check runs at every look on large counts, so it uses a far stricter level than the
# experiment's alpha: a false alarm would freeze a healthy experiment.
SRM_ALPHA = 0.001


def srm_test(counts: Sequence[int], percents: Sequence[float]) -> float:
    """Chi-square goodness-of-fit p-value of ``counts`` against the configured ``percents``.

    Arms configured with a share of 0 are left out of the test when they saw no unit, since
    they cannot be tested against zero expected; if such an arm did see units, traffic reached
    a variant it never should, which is a mismatch beyond doubt and the answer is 0.0. With
    fewer than two arms of positive share (a 0/100 split), or no units at all, there is
    nothing to compare and the answer is 1.0.

    Args:
        counts: observed units (or requests) per variant, for example ``[champion, challenger]``.
        percents: configured share of each variant, summing to 100 (decimals allowed).

    Returns:
        The p-value; below ``SRM_ALPHA`` signals a sample ratio mismatch.
    """
    if len(counts) != len(percents):
        raise ValueError(f"{len(counts)} counts for {len(percents)} percents")
    if any(c < 0 for c in counts) or any(p < 0 for p in percents):
        raise ValueError("counts and percents must be non-negative")
    total_share = float(sum(percents))
    if not math.isclose(total_share, 100.0, rel_tol=1e-6):
        raise ValueError(f"percents must sum to 100, got {total_share}")
    if any(c > 0 and p == 0 for c, p in zip(counts, percents, strict=True)):
        return 0.0
    pairs = [(c, p) for c, p in zip(counts, percents, strict=True) if p > 0]
    total = sum(c for c, _ in pairs)
    if len(pairs) < 2 or total == 0:
        return 1.0
    statistic = 0.0
    for observed, share in pairs:
        expected = total * share / total_share
        statistic += (observed - expected) ** 2 / expected
    return float(chi2.sf(statistic, len(pairs) - 1))
