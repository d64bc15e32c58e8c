"""Tests and intervals for mean per-request values (losses): Welch's t, t intervals, sample size."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm
from scipy.stats import t as student_t

from router.stats._checks import check_level


def _sample(values: ArrayLike, name: str) -> np.ndarray:
    """Values as a 1-D float array."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """``(difference, standard error, Welch-Satterthwaite degrees of freedom)`` of b - a."""
    if a.size < 2 or b.size < 2:
        raise ValueError(f"each sample needs at least 2 values, got {a.size} and {b.size}")
    va = float(np.var(a, ddof=1)) / a.size
    vb = float(np.var(b, ddof=1)) / b.size
    se2 = va + vb
    df = se2**2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se2 > 0 else math.inf
    return float(b.mean() - a.mean()), math.sqrt(se2), df


def welch_test(a: ArrayLike, b: ArrayLike) -> tuple[float, float]:
    """Welch's unequal-variance t-test of ``mean(b) == mean(a)``.

    The same statistic and p-value as ``scipy.stats.ttest_ind(b, a, equal_var=False)``,
    computed directly so that constant samples give a clean answer instead of a warning.

    Args:
        a: the champion's per-request values.
        b: the challenger's per-request values.

    Returns:
        ``(t, p_value)``, ``t > 0`` when ``mean(b) > mean(a)``. With fewer than 2 values in
        an arm there is no variance estimate and the answer is ``(0.0, 1.0)``. When both arms
        are constant: ``(0.0, 1.0)`` if their values agree, else ``(±inf, 0.0)``.
    """
    a_arr, b_arr = _sample(a, "a"), _sample(b, "b")
    if a_arr.size < 2 or b_arr.size < 2:
        return 0.0, 1.0
    if np.ptp(a_arr) == 0 and np.ptp(b_arr) == 0:
        # Exactly constant arms: rounding in np.var would otherwise invent a tiny variance.
        if a_arr[0] == b_arr[0]:
            return 0.0, 1.0
        return math.copysign(math.inf, b_arr[0] - a_arr[0]), 0.0
    diff, se, df = _welch(a_arr, b_arr)
    t = diff / se
    return t, float(2.0 * student_t.sf(abs(t), df))


def one_sample_t_test(values: ArrayLike) -> tuple[float, float]:
    """Student's one-sample t-test of ``mean(values) == 0`` (paired differences, for example).

    The same statistic and p-value as ``scipy.stats.ttest_1samp(values, 0.0)``, computed
    directly so that (nearly) constant values give a clean answer instead of a warning.

    Returns:
        ``(t, p_value)``, two-sided. Below 2 values, or when every value is zero:
        ``(0.0, 1.0)``; one nonzero value repeated: ``(±inf, 0.0)``.
    """
    arr = _sample(values, "values")
    if arr.size < 2 or not np.any(arr != 0):
        return 0.0, 1.0
    if np.ptp(arr) == 0:
        # Exactly constant: rounding in np.std would otherwise invent a tiny variance.
        return math.copysign(math.inf, float(arr[0])), 0.0
    t = float(arr.mean()) / (float(np.std(arr, ddof=1)) / math.sqrt(arr.size))
    return t, float(2.0 * student_t.sf(abs(t), arr.size - 1))


def mean_interval(values: ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Student t interval for the mean of ``values`` (for example a variant's mean loss).

    For RMSE, take the square root of both ends of the interval of the squared errors.

    Raises:
        ValueError: fewer than 2 values (no variance estimate), or a bad ``confidence``.
    """
    check_level(confidence, "confidence")
    arr = _sample(values, "values")
    if arr.size < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {arr.size}")
    mean = float(arr.mean())
    if np.ptp(arr) == 0:
        return mean, mean
    half = (
        float(student_t.ppf(1 - (1 - confidence) / 2, arr.size - 1))
        * float(np.std(arr, ddof=1))
        / math.sqrt(arr.size)
    )
    return mean - half, mean + half


def mean_difference_interval(
    a: ArrayLike, b: ArrayLike, confidence: float = 0.95
) -> tuple[float, float]:
    """Welch t interval for ``mean(b) - mean(a)``, the interval that goes with ``welch_test``.

    Raises:
        ValueError: an arm with fewer than 2 values, or a bad ``confidence``.
    """
    check_level(confidence, "confidence")
    diff, se, df = _welch(_sample(a, "a"), _sample(b, "b"))
    if se == 0:
        return diff, diff
    half = float(student_t.ppf(1 - (1 - confidence) / 2, df)) * se
    return diff - half, diff + half


def samples_per_arm_means(
    sd_a: float, sd_b: float, difference: float, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Samples per arm to detect a mean ``difference`` with a two-sided test at ``alpha``.

    ``ceil((z_{1-alpha/2} + z_{power})^2 (sd_a^2 + sd_b^2) / difference^2)``, the analogue of
    ``samples_per_arm`` for losses.

    Returns:
        The sample size per arm (at least 2, the fewest a t interval can use), or ``None``
        when ``difference == 0`` (never detectable).
    """
    if sd_a < 0 or sd_b < 0:
        raise ValueError(f"standard deviations must be non-negative, got {sd_a} and {sd_b}")
    check_level(alpha, "alpha")
    check_level(power, "power")
    if difference == 0:
        return None
    z_sum = float(norm.ppf(1.0 - alpha / 2.0) + norm.ppf(power))
    n = z_sum**2 * (sd_a**2 + sd_b**2) / difference**2
    return max(2, math.ceil(round(n, 9)))
