"""Tests and intervals for success proportions (accuracy): Wilson, z-test, Newcombe, sample size."""

from __future__ import annotations

import math

from scipy.stats import norm

from router.stats._checks import check_count, check_level


def _z(confidence: float) -> float:
    """Two-sided standard normal quantile for ``confidence``."""
    check_level(confidence, "confidence")
    return float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion, without continuity correction.

    Args:
        successes: number of successes, ``0 <= successes <= n``.
        n: number of trials.
        confidence: coverage, strictly between 0 and 1.

    Returns:
        ``(low, high)`` within ``[0, 1]``; ``(0.0, 1.0)`` when ``n == 0`` (nothing is known).
    """
    check_count(successes, n)
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At p = 0 or 1 the formula's end point is exact in theory but off by rounding in practice.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def two_proportion_test(x_a: int, n_a: int, x_b: int, n_b: int) -> tuple[float, float]:
    """Pooled two-sided z-test of ``p_b == p_a``.

    Args:
        x_a, n_a: champion successes and trials.
        x_b, n_b: challenger successes and trials.

    Returns:
        ``(z, p_value)``; ``z > 0`` when the challenger's proportion is higher. When the pooled
        variance is 0 (an arm is empty, or every outcome is the same) there is no evidence
        either way and the answer is ``(0.0, 1.0)``.
    """
    check_count(x_a, n_a)
    check_count(x_b, n_b)
    if n_a == 0 or n_b == 0:
        return 0.0, 1.0
    pooled = (x_a + x_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance <= 0.0:
        return 0.0, 1.0
    z = (x_b / n_b - x_a / n_a) / math.sqrt(variance)
    return z, float(2.0 * norm.sf(abs(z)))


def difference_interval(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Interval for ``p_b - p_a`` by Newcombe's hybrid score method (method 10, Newcombe 1998).

    Each arm's Wilson interval ``(l, u)`` around its proportion ``p`` gives the limits
    ``d - sqrt((p_b - l_b)^2 + (u_a - p_a)^2)`` and ``d + sqrt((u_b - p_b)^2 + (p_a - l_a)^2)``.

    Args:
        x_a, n_a: champion successes and trials.
        x_b, n_b: challenger successes and trials.
        confidence: coverage, strictly between 0 and 1.

    Returns:
        ``(low, high)`` within ``[-1, 1]``; ``(-1.0, 1.0)`` when either arm is empty.
    """
    l_a, u_a = wilson_interval(x_a, n_a, confidence)
    l_b, u_b = wilson_interval(x_b, n_b, confidence)
    if n_a == 0 or n_b == 0:
        return -1.0, 1.0
    p_a, p_b = x_a / n_a, x_b / n_b
    d = p_b - p_a
    low = d - math.sqrt((p_b - l_b) ** 2 + (u_a - p_a) ** 2)
    high = d + math.sqrt((u_b - p_b) ** 2 + (p_a - l_a) ** 2)
    return max(-1.0, low), min(1.0, high)


def samples_per_arm(p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Labelled samples per arm for a two-sided test at ``alpha`` to detect ``p_b - p_a``.

    ``ceil((z_{1-alpha/2} + z_{power})^2 (p_a q_a + p_b q_b) / (p_b - p_a)^2)``, the normal
    approximation with unpooled variance. (R's ``power.prop.test`` uses the pooled variance
    under the null instead, so it answers a few samples more: 77 rather than 74 for 0.50 vs
    0.75 at power 0.9.)

    Args:
        p_a: the champion's proportion, in ``[0, 1]``.
        p_b: the proportion to detect for the challenger, in ``[0, 1]``.
        alpha: two-sided significance level.
        power: probability of detecting the difference when it is real.

    Returns:
        The sample size per arm, or ``None`` when ``p_a == p_b``: no finite sample detects a
        zero difference (``/stats`` shows it as ``null``).

    Raises:
        ValueError: a proportion outside ``[0, 1]``, or ``alpha``/``power`` outside ``(0, 1)``.
    """
    for name, value in (("p_a", p_a), ("p_b", p_b)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    check_level(alpha, "alpha")
    check_level(power, "power")
    if p_a == p_b:
        return None
    z_sum = float(norm.ppf(1.0 - alpha / 2.0) + norm.ppf(power))
    n = z_sum**2 * (p_a * (1 - p_a) + p_b * (1 - p_b)) / (p_b - p_a) ** 2
    # Guard the ceiling against rounding noise such as 58.00000000000001.
    return max(1, math.ceil(round(n, 9)))
