"""Guardrails as always-valid tests: the mixture against numerical integration, the error rate
at the limit, and a breach found."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from router.stats.guardrails import _prior, guardrail_test, rate_lower_bound, rate_p_values


@pytest.mark.parametrize(("bad", "n", "limit"), [(3, 200, 0.01), (12, 400, 0.01), (40, 100, 0.2)])
def test_mixture_is_the_integral_of_the_likelihood_ratio(bad: int, n: int, limit: float) -> None:
    """1/p is the likelihood ratio mixed over the Beta prior truncated above the limit,
    integrated numerically with scipy."""
    a, b = _prior(limit)
    prior = stats.beta(a, b)

    def ratio(p: float) -> float:
        return math.exp(bad * math.log(p / limit) + (n - bad) * math.log((1 - p) / (1 - limit)))

    value, _ = integrate.quad(lambda p: ratio(p) * prior.pdf(p), limit, 1, limit=200)
    mixture = value / prior.sf(limit)
    flags = np.r_[np.ones(bad), np.zeros(n - bad)]
    p = rate_p_values(flags, limit)[-1]  # the running minimum: check against the last value
    last = min(1.0, 1.0 / mixture)
    assert p <= last + 1e-12
    ordered = rate_p_values(np.r_[np.zeros(n - bad), np.ones(bad)], limit)
    assert ordered[-1] == pytest.approx(last, rel=1e-6)


def test_at_the_limit_it_breaches_at_most_alpha_of_the_time() -> None:
    """The true rate equal to the limit, 4,000 requests, checked after every one: at most
    alpha of 400 runs ever breach (within a 99 % binomial margin)."""
    rng = np.random.default_rng(0)
    breaches = sum(bool(rate_p_values(rng.random(4000) < 0.01, 0.01).min() <= 0.05)
                   for _ in range(400))
    assert breaches <= stats.binom.ppf(0.99, 400, 0.05)


def test_a_rate_three_times_the_limit_is_breached() -> None:
    """An error rate of 3 % against a 1 % limit is breached within 2,000 requests, with a
    lower bound above the limit; a 0.5 % rate is held."""
    rng = np.random.default_rng(1)
    bad = rng.random(2000) < 0.03
    result = guardrail_test(bad, 0.01, 0.05, min_samples=200)
    assert result.state == "breached" and result.bound > 0.01
    assert guardrail_test(rng.random(2000) < 0.005, 0.01, 0.05, 200).state == "held"
    assert guardrail_test(np.zeros(50, dtype=bool), 0.01, 0.05, 200).state == "not enough data"
    assert rate_lower_bound(0, 100, 0.05) == 0.0
