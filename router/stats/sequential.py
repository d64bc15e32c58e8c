"""Always-valid p-values (mSPRT) that stay valid however often the results are looked at."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Floats = NDArray[np.float64]

# Outcomes per arm (pairs in the paired test) before the tests on per-request values count any
# evidence. Their plug-in variance comes from the data: after two or three losses that happen
# to be alike it is near zero, and the mixture ratio would call any difference decisive, and
# the running minimum keeps that p-value for good. Thirty is the usual floor for a normal
# approximation of a mean; counts of successes need no floor, their variance is p(1 - p)/n.
MIN_OUTCOMES = 30


def _msprt(estimate: Floats, variance: Floats, tau2: float) -> Floats:
    """Running minimum of ``min(1, 1/Λ)`` along the last axis.

    ``Λ = sqrt(V / (V + τ²)) · exp(θ² τ² / (2 V (V + τ²)))`` is the normal-mixture likelihood
    ratio (Johari et al. 2017) of the estimate ``θ`` with variance ``V``. It is computed in
    logs, so an overwhelming effect gives p = 0 rather than an overflow, and ``Λ = 1`` where
    ``V`` is 0: the data cannot yet tell an effect from noise.
    """
    valid = variance > 0
    v = np.where(valid, variance, 1.0)
    theta = np.where(valid, estimate, 0.0)
    log_lambda = 0.5 * np.log(v / (v + tau2)) + theta**2 * tau2 / (2.0 * v * (v + tau2))
    log_lambda = np.where(valid, log_lambda, 0.0)
    p = np.exp(-np.maximum(log_lambda, 0.0))
    return np.minimum.accumulate(p, axis=-1)


def _check_tau2(tau2: float) -> None:
    if not tau2 > 0:
        raise ValueError(f"tau2 must be positive, got {tau2}")


def _arrays(*arrays: ArrayLike) -> list[Floats]:
    """Equal-shape float arrays of at least one dimension (time runs along the last axis)."""
    out = [np.asarray(a, dtype=float) for a in arrays]
    shape = out[0].shape
    if out[0].ndim == 0 or any(a.shape != shape for a in out):
        raise ValueError(
            "inputs must be arrays of one shape with time on the last axis, got shapes "
            + ", ".join(str(a.shape) for a in out)
        )
    return out


def _ratio(num: Floats, den: Floats) -> Floats:
    """``num / den``, and 0 where ``den`` is 0 (an empty arm has no estimate yet)."""
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def always_valid_p_values(
    x_a: ArrayLike, n_a: ArrayLike, x_b: ArrayLike, n_b: ArrayLike, tau2: float = 1e-4
) -> Floats:
    """Always-valid p-values for ``p_b - p_a`` from cumulative success counts (mSPRT).

    At each element ``θ = p̂_b - p̂_a`` and ``V = p̂_a(1 - p̂_a)/n_a + p̂_b(1 - p̂_b)/n_b``;
    ``Λ = 1`` while ``V`` is 0 or an arm has no trial yet. The p-value is the running minimum
    of ``min(1, 1/Λ)``, so it never rises and the chance that it *ever* falls below ``alpha``
    under no difference is at most ``alpha`` up to the plug-in variance approximation. That
    approximation fails in a small arm: after a few lucky outcomes its variance is near 0 and
    any difference looks decisive (at a 5 % split, A/A runs fall below 0.05 in more than half
    of them). ``/stats`` guards the same mixture against it (``router.stats.confidence``).

    Args:
        x_a, n_a: the champion's cumulative successes and trials, in time order.
        x_b, n_b: the challenger's, aligned element by element with the champion's.
        tau2: variance of the normal mixing distribution over effects; the config sets it to
            ``min_effect ** 2``, the squared size of the smallest effect worth detecting.

    Returns:
        A float array of the inputs' shape. Inputs of more than one dimension are treated as
        independent series with time along the last axis (handy for simulations).
    """
    _check_tau2(tau2)
    xa, na, xb, nb = _arrays(x_a, n_a, x_b, n_b)
    if np.any(xa < 0) or np.any(xb < 0) or np.any(xa > na) or np.any(xb > nb):
        raise ValueError("successes must lie between 0 and the number of trials")
    pa, pb = _ratio(xa, na), _ratio(xb, nb)
    variance = _ratio(pa * (1 - pa), na) + _ratio(pb * (1 - pb), nb)
    # An arm without trials has no variance estimate at all: keep Λ = 1 there.
    variance = np.where((na > 0) & (nb > 0), variance, 0.0)
    return _msprt(pb - pa, variance, tau2)


def always_valid_p_values_means(
    sum_a: ArrayLike,
    sumsq_a: ArrayLike,
    n_a: ArrayLike,
    sum_b: ArrayLike,
    sumsq_b: ArrayLike,
    n_b: ArrayLike,
    tau2: float = 1e-4,
    min_outcomes: int = MIN_OUTCOMES,
) -> Floats:
    """Always-valid p-values for ``mean(b) - mean(a)`` of per-request values (losses).

    The same mSPRT as ``always_valid_p_values`` with the plug-in variance
    ``V = s_a²/n_a + s_b²/n_b``, where ``s²`` is the running variance with divisor ``n``
    (``sumsq/n - mean²``): for 0/1 values it is exactly the Bernoulli case. ``Λ = 1`` until
    both arms have ``min_outcomes`` values (see :data:`MIN_OUTCOMES`).

    Args:
        sum_a, sumsq_a, n_a: the champion's cumulative sum, sum of squares and count.
        sum_b, sumsq_b, n_b: the challenger's, aligned element by element.
        tau2: variance of the mixing distribution, ``min_effect ** 2`` on the loss's scale.
        min_outcomes: values each arm needs before the test counts any evidence.
    """
    _check_tau2(tau2)
    sa, qa, na, sb, qb, nb = _arrays(sum_a, sumsq_a, n_a, sum_b, sumsq_b, n_b)
    ma, mb = _ratio(sa, na), _ratio(sb, nb)
    # Rounding can leave sumsq/n - mean² a hair below zero for constant values.
    var_a = np.maximum(_ratio(qa, na) - ma**2, 0.0)
    var_b = np.maximum(_ratio(qb, nb) - mb**2, 0.0)
    enough = (na >= max(1, min_outcomes)) & (nb >= max(1, min_outcomes))
    variance = np.where(enough, _ratio(var_a, na) + _ratio(var_b, nb), 0.0)
    return _msprt(mb - ma, variance, tau2)


def paired_always_valid_p_values(differences: ArrayLike, tau2: float = 1e-4,
                                 min_outcomes: int = MIN_OUTCOMES) -> Floats:
    """Always-valid p-values for the mean of paired differences ``b - a`` (shadow mode).

    Element ``i`` uses the first ``i + 1`` differences: ``θ`` is their mean and ``V`` their
    running variance (divisor ``n``) over ``n``, and ``Λ = 1`` for the first
    ``min_outcomes - 1`` elements (see :data:`MIN_OUTCOMES`). For accuracy the differences are
    ``correct_b - correct_a`` in ``{-1, 0, 1}``; for losses, ``loss_b - loss_a``.

    Args:
        differences: per-request differences in time order (time along the last axis).
        tau2: variance of the mixing distribution, ``min_effect ** 2``.
        min_outcomes: pairs needed before the test counts any evidence.
    """
    _check_tau2(tau2)
    (d,) = _arrays(differences)
    n = np.arange(1, d.shape[-1] + 1, dtype=float)
    mean = np.cumsum(d, axis=-1) / n
    var = np.maximum(np.cumsum(d * d, axis=-1) / n - mean**2, 0.0)
    var = np.where(n >= min_outcomes, var, 0.0)
    return _msprt(mean, var / n, tau2)
