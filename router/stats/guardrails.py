"""Guardrails as always-valid one-sided tests: is a rate of bad requests above its limit?

A guardrail is a rate: the share of the challenger's requests that failed (``error_rate``), or
that were slower than ``p99_latency_ms`` (which should be at most 1 %). Comparing the raw rate
with the limit at every look is no test: at 200 requests and a true error rate of 0.5 %, the
observed rate is over 1 % one time in twelve. Instead each guardrail is a test of
``H0: rate <= limit`` that stays valid however often it is looked at:

    M_t = ∫ Π_i (p / p0)^{x_i} ((1 - p) / (1 - p0))^{1 - x_i} dπ(p)

the likelihood ratio of the first ``t`` requests mixed over a Beta prior ``π`` truncated to
``p > p0``. Under any rate at most ``p0`` it is a nonnegative supermartingale, so by Ville's
inequality ``P(sup_t M_t >= 1/alpha) <= alpha``: the guardrail is ``breached`` once ``M_t`` reaches
``1/alpha``, and stays breached. The prior's mean is twice the limit, which spends the power on
rates a person would call a breach; its closed form uses the incomplete Beta function.

The states: ``breached`` (the test rejected), ``held`` (not breached, and the challenger has
served at least ``min_samples`` requests), ``not enough data`` (fewer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq
from scipy.special import betaincc, betaln

from router.stats.decision import GuardrailState

__all__ = ["GuardrailResult", "GuardrailState", "guardrail_test", "rate_lower_bound",
           "rate_p_values"]

# The prior's concentration a + b around its mean of twice the limit: wide enough to cover
# rates from the limit to several times it.
_CONCENTRATION = 20.0


def _prior(p0: float) -> tuple[float, float]:
    mean = min(2.0 * p0, (1.0 + p0) / 2.0)
    concentration = max(_CONCENTRATION, 2.0 / mean)  # keeps a >= 2: mass away from p0 itself
    return mean * concentration, (1.0 - mean) * concentration


def _log_mixture(x: np.ndarray, n: np.ndarray, p0: float) -> np.ndarray:
    """``log M`` after ``x`` bad of ``n`` requests (vectorised)."""
    a, b = _prior(p0)
    with np.errstate(divide="ignore"):
        tail = np.log(betaincc(x + a, n - x + b, p0))
    log_m: np.ndarray = (betaln(x + a, n - x + b) + tail - betaln(a, b)
                         - math.log(betaincc(a, b, p0)) - x * math.log(p0)
                         - (n - x) * math.log1p(-p0))
    return log_m


def _check_limit(limit: float) -> None:
    if not 0.0 < limit < 1.0:
        raise ValueError(f"a rate limit must lie strictly between 0 and 1, got {limit}")


def rate_p_values(bad: ArrayLike, limit: float) -> np.ndarray:
    """Always-valid p-values of ``rate <= limit`` after each request of ``bad`` (0/1 flags
    in the order the requests were logged): the running minimum of ``min(1, 1/M_t)``."""
    _check_limit(limit)
    flags = np.asarray(bad, dtype=float)
    if flags.size == 0:
        return np.zeros(0)
    x = np.cumsum(flags)
    n = np.arange(1, flags.size + 1, dtype=float)
    log_m = _log_mixture(x, n, limit)
    return np.minimum.accumulate(np.exp(-np.maximum(np.nan_to_num(log_m, nan=0.0), 0.0)))


def rate_lower_bound(bad: int, n: int, alpha: float) -> float:
    """The smallest rate the test would not reject now: an always-valid lower confidence bound
    of the rate at ``1 - alpha``, after ``bad`` of ``n`` requests (0 when nothing is rejected)."""
    if n == 0 or bad == 0:
        return 0.0
    x, total = np.array([float(bad)]), np.array([float(n)])
    target = math.log(1.0 / alpha)

    def excess(p0: float) -> float:
        return float(_log_mixture(x, total, p0)[0]) - target

    low, high = 1e-9, min(bad / n, 1.0 - 1e-9)
    if excess(low) <= 0 or excess(high) > 0:
        return 0.0 if excess(low) <= 0 else high
    return float(brentq(excess, low, high, xtol=1e-9))


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail's figures for ``/stats``."""

    estimate: float | None  # the observed rate
    bound: float  # always-valid lower confidence bound of the rate
    limit: float
    p_value: float  # always-valid p-value of rate <= limit
    state: GuardrailState


def guardrail_test(bad: ArrayLike, limit: float, alpha: float, min_samples: int
                   ) -> GuardrailResult:
    """The guardrail's state after the requests ``bad`` flags (in logged order)."""
    flags = np.asarray(bad, dtype=bool)
    p_values = rate_p_values(flags, limit)
    p_value = float(p_values[-1]) if p_values.size else 1.0
    n, x = int(flags.size), int(flags.sum())
    state: GuardrailState
    if p_value <= alpha:
        state = "breached"
    elif n >= min_samples:
        state = "held"
    else:
        state = "not enough data"
    return GuardrailResult(estimate=x / n if n else None, bound=rate_lower_bound(x, n, alpha),
                           limit=limit, p_value=p_value, state=state)
