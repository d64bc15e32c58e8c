"""Always-valid confidence sequences for the difference challenger minus champion.

The comparison behind ``significant`` and the decision. Outcomes are taken one at a time in the
order their labels arrived; after each one, every arm has a running estimate of its metric and
of that estimate's variance, and the difference gets the normal-mixture confidence sequence
(Robbins; Howard et al. 2021; the interval the mSPRT of Johari et al. inverts to):

    θ̂ ± sqrt(2 V (V + τ²) / τ² · (log(1/alpha) + ½ log((V + τ²) / V)))

with ``V`` the variance of ``θ̂`` and ``τ² = min_effect²``. Its running intersection holds the
true difference at every look at once with probability about ``1 - alpha``, so looking every
minute costs nothing. ``significant`` means the running intersection has left zero; as it only
shrinks, its side, and so the direction of a decision, can never flip.

Two things keep this valid from the first look, where the textbook plug-in fails:

- **The unit is the unit of assignment.** With a sticky key one user's requests are
  correlated, so an arm's metric is a ratio of per-unit sums, ``Σ S_u / Σ N_u``, whose variance
  is the delta method's ``Σ_u (S_u - r N_u)² / (Σ N_u)²`` (Deng et al. 2018; the CR0
  cluster-robust variance of a difference in means). With one request per unit it is the
  plug-in ``s² / n``.
- **The variance cannot collapse.** A plug-in variance is 0 while an arm's first outcomes are
  all alike, and then any difference looks decisive. For outcomes bounded in ``[0, 1]``
  (correctness) the variance is floored at the Bernoulli variance with one success and one
  failure added (``p̃ = (S + 1) / (n + 2)``); and no evidence counts before each arm has
  outcomes worth :data:`MIN_UNITS` units (per-request losses, which have no natural bound, wait
  for :data:`MIN_UNITS_UNBOUNDED`).
- **A few heavy users are a few units.** The delta method's variance is only as good as the
  number of units it rests on, and with heavy-tailed activity (a few users sending most of the
  traffic) that number is far below the count of distinct users. So the units above are
  effective ones, ``n² / Σ_u N_u²`` (Kish's effective sample size over units), which is the
  count of distinct units when they are alike.

The calibration suite (``bench/calibration.py``, ``docs/calibration.md``) checks the result by
simulation: A/A experiments over accuracies, effects, shares and sticky users.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from router.sorting import stable_argsort
from router.stats.units import UnitCodes, group_sums, stable_order

__all__ = [
    "MIN_UNITS",
    "MIN_UNITS_UNBOUNDED",
    "RunningArm",
    "RunningDifference",
    "mixture_half_width",
    "ratio_variance",
    "running_arm",
    "running_difference",
    "running_paired",
    "samples_to_significance",
]

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]

# Units per arm before the comparison counts any evidence (see the module doc).
MIN_UNITS = 30
MIN_UNITS_UNBOUNDED = 30


@dataclass(frozen=True)
class RunningArm:
    """One arm's figures after each element of the sequence (arrays of the sequence's length).

    Attributes:
        n: outcomes of the arm so far.
        units: distinct units among them.
        effective_units: how many units of equal weight they are worth, ``n² / Σ_u N_u²``
            (Kish): ``units`` when every unit has as many outcomes, far fewer when a few
            units have most of them.
        mean: the arm's metric, ``Σ y / n`` (0 while ``n`` is 0).
        variance: the variance of ``mean`` (delta method over units, floored when bounded).
    """

    n: Floats
    units: Floats
    effective_units: Floats
    mean: Floats
    variance: Floats


def _ratio(num: Floats, den: Floats) -> Floats:
    ratio: Floats = np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)
    return ratio


def _before_in_unit(values: Floats, units: NDArray[np.int64] | UnitCodes
                    ) -> tuple[Floats, Floats]:
    """For each element: the sum of ``values`` and the count of earlier elements of its unit."""
    if isinstance(units, UnitCodes):
        order = stable_order(units)
        units = units.codes
    else:
        order = stable_argsort(units)
    sorted_units = units[order]
    sorted_values = values[order]
    starts = np.r_[True, sorted_units[1:] != sorted_units[:-1]] if units.size else \
        np.zeros(0, dtype=bool)
    group = np.cumsum(starts) - 1
    running = np.cumsum(sorted_values)
    offset = (running - sorted_values)[starts][group] if units.size else running
    count = np.arange(units.size) - np.flatnonzero(starts)[group] if units.size else running
    prior_sum = np.empty_like(values)
    prior_count = np.empty_like(values)
    prior_sum[order] = running - sorted_values - offset
    prior_count[order] = count
    return prior_sum, prior_count


def running_arm(y: ArrayLike, members: ArrayLike, units: ArrayLike | UnitCodes | None = None, *,
                bounded: bool = False) -> RunningArm:
    """The running estimate of one arm along a sequence of outcomes.

    Args:
        y: each outcome's value in sequence order (1/0 correctness, or a loss).
        members: True where the outcome belongs to this arm.
        units: each outcome's unit (any integers; equal means the same unit; as
            :class:`UnitCodes` the grouping costs less), or None when every outcome is a unit
            of its own.
        bounded: the values lie in ``[0, 1]``, so the variance is floored (module doc).
    """
    values = np.asarray(y, dtype=float)
    member = np.asarray(members, dtype=bool)
    # The figures move only at the arm's own outcomes: computed over those, then carried along
    # the sequence (half the arithmetic of computing them at every element, same numbers).
    rows = np.flatnonzero(member)
    mine = values[rows]
    if units is None:
        prior_sum = np.zeros_like(mine)
        prior_count = np.zeros_like(mine)
    elif isinstance(units, UnitCodes):
        prior_sum, prior_count = _before_in_unit(mine, UnitCodes(units.codes[rows], units.size))
    else:
        prior_sum, prior_count = _before_in_unit(mine, np.asarray(units, dtype=np.int64)[rows])
    # When a unit with sums (S, N) gains a value y: S² grows by 2Sy + y², N² by 2N + 1 and
    # S·N by S + yN + y. Their running totals give the delta-method variance at every step.
    n = np.arange(1.0, rows.size + 1.0)
    total = np.cumsum(mine)
    sq_sums = np.cumsum(2 * prior_sum * mine + mine * mine)
    sq_counts = np.cumsum(2 * prior_count + 1)
    cross = np.cumsum(prior_sum + mine * prior_count + mine)
    distinct = np.cumsum((prior_count == 0).astype(float))
    mean = total / n
    spread = np.maximum(sq_sums - 2 * mean * cross + mean * mean * sq_counts, 0.0)
    variance = spread / (n * n)
    if bounded:
        shrunk = (total + 1.0) / (n + 2.0)
        variance = np.maximum(variance, shrunk * (1.0 - shrunk) / n)
    # Each element takes the figures after the arm's latest outcome up to it; 0 before any
    # (the figures' extra last place). One index serves the four figures.
    latest = np.cumsum(member) - 1
    taken = np.where(latest < 0, rows.size, latest)

    def carried(figures: Floats) -> Floats:
        out: Floats = np.concatenate([figures, [0.0]])[taken]
        return out

    return RunningArm(n=carried(n), units=carried(distinct),
                      effective_units=carried(n * n / sq_counts), mean=carried(mean),
                      variance=carried(variance))


def mixture_half_width(variance: ArrayLike, tau2: float, alpha: float) -> Floats:
    """Half-width of the normal-mixture confidence sequence at variance ``V`` (module doc);
    infinite where ``V`` is 0 or not finite (no estimate yet)."""
    v = np.asarray(variance, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    safe = np.where(ok, v, 1.0)
    squared = 2 * safe * (safe + tau2) / tau2 * (math.log(1 / alpha)
                                                 + 0.5 * np.log((safe + tau2) / safe))
    return np.where(ok, np.sqrt(squared), np.inf)


@dataclass(frozen=True)
class RunningDifference:
    """The comparison after each element of the sequence.

    Attributes:
        estimate: the difference ``b - a`` (NaN before both arms have an outcome).
        variance: its variance (NaN likewise).
        p_value: always-valid p-value of no difference: the running minimum of ``1/Λ`` at 0,
            below ``alpha`` exactly when the running intersection below has left zero.
        low, high: the running intersection of the confidence sequences (infinite before
            evidence counts). Should a later interval miss the intersection altogether (a
            chance of at most ``alpha`` when the model holds), the intersection keeps its
            last value.
    """

    estimate: Floats
    variance: Floats
    p_value: Floats
    low: Floats
    high: Floats


def _intersect(low: Floats, high: Floats) -> tuple[Floats, Floats]:
    run_low = np.maximum.accumulate(low) if low.size else low
    run_high = np.minimum.accumulate(high) if high.size else high
    empty = np.flatnonzero(run_low > run_high)
    if empty.size:
        first = int(empty[0])
        keep = first - 1
        run_low[first:] = run_low[keep] if keep >= 0 else -np.inf
        run_high[first:] = run_high[keep] if keep >= 0 else np.inf
    return run_low, run_high


def _sequence(estimate: Floats, variance: Floats, counts: Bools, tau2: float, alpha: float
              ) -> RunningDifference:
    """Confidence sequence and p-values, counting evidence only where ``counts`` is True."""
    if not tau2 > 0:
        raise ValueError(f"tau2 must be positive, got {tau2}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    v = np.where(counts & (variance > 0), variance, np.nan)
    half = mixture_half_width(v, tau2, alpha)
    theta = np.where(counts, estimate, 0.0)
    safe = np.where(np.isfinite(v), v, 1.0)
    log_lambda = 0.5 * np.log(safe / (safe + tau2)) + theta**2 * tau2 / (2 * safe * (safe + tau2))
    log_lambda = np.where(np.isfinite(v), log_lambda, 0.0)
    p_value = np.minimum.accumulate(np.exp(-np.maximum(log_lambda, 0.0))) if v.size else v
    low, high = _intersect(theta - half, theta + half)
    return RunningDifference(estimate=estimate, variance=variance, p_value=p_value,
                             low=low, high=high)


def running_difference(a: RunningArm, b: RunningArm, tau2: float, alpha: float, *,
                       min_units: int = MIN_UNITS) -> RunningDifference:
    """The comparison of two arms laid along one sequence (``b - a``)."""
    both = (a.n > 0) & (b.n > 0)
    estimate = np.where(both, b.mean - a.mean, np.nan)
    # The larger of the arms' own variances and the pooled one: under no difference both arms
    # share one spread, which the large arm estimates well; the small arm's own estimate moves
    # with its mean (a lucky canary looks both better and surer) and alone would overstate it.
    per_outcome = _ratio(a.n * a.n * a.variance + b.n * b.n * b.variance, a.n + b.n)
    pooled = per_outcome * (_ratio(np.ones_like(a.n), a.n) + _ratio(np.ones_like(b.n), b.n))
    variance = np.where(both, np.maximum(a.variance + b.variance, pooled), np.nan)
    # Effective units, not distinct ones: when a few users hold most of an arm's outcomes the
    # delta-method variance rests on those few and understates the spread (a false decision in
    # 15 % of heavy-tailed A/A runs, against 2 % this way; docs/calibration.md).
    least = max(min_units, 1)
    counts = (a.effective_units >= least) & (b.effective_units >= least)
    return _sequence(estimate, variance, counts, tau2, alpha)


def running_paired(differences: ArrayLike, tau2: float, alpha: float, *,
                   bounded: bool = False, min_pairs: int = MIN_UNITS) -> RunningDifference:
    """The comparison over paired differences ``b - a`` (shadow mode), one pair a unit.

    With ``bounded`` the differences are of correctness (``-1``, ``0`` or ``1``) and the
    variance is at least their spread around zero with one more discordant pair.
    """
    d = np.asarray(differences, dtype=float)
    n = np.arange(1, d.size + 1, dtype=float)
    total = np.cumsum(d)
    mean = total / n if d.size else d
    second = np.cumsum(d * d) / n if d.size else d
    variance = np.maximum(second - mean**2, 0.0) / n if d.size else d
    if bounded:
        # The spread around zero (what it is under no difference), with one pair more each
        # way than seen: it cannot collapse while the first pairs all agree, and a run of
        # discordant pairs one way cannot shrink it as its own mean grows.
        discordant = np.cumsum(d != 0)
        variance = np.maximum(variance, (discordant + 1.0) / (n + 2.0) / n)
    return _sequence(mean, variance, n >= max(min_pairs, 1), tau2, alpha)


def ratio_variance(y: ArrayLike, units: ArrayLike | UnitCodes | None = None) -> float:
    """The delta-method variance of ``Σ y / n`` over the units of ``y`` (module doc):
    ``Σ_u (S_u - r N_u)² / n²``, which is ``mean((y - r)²) / n`` with one value a unit.
    NaN without values. ``units`` as :class:`UnitCodes` spares the grouping's sort."""
    values = np.asarray(y, dtype=float)
    if values.size == 0:
        return math.nan
    mean = float(values.mean())
    residual = values - mean
    if isinstance(units, UnitCodes):
        residual = group_sums(units, residual)
    elif units is not None:
        _, codes = np.unique(np.asarray(units), return_inverse=True)
        # numpy's stub types every bincount as integers; with weights it sums floats.
        residual = np.bincount(codes, weights=residual)  # type: ignore[assignment]
    return float(np.sum(residual * residual)) / values.size**2


def samples_to_significance(sd_a: float, sd_b: float, effect: float, tau2: float,
                            alpha: float, *, share_b: float = 0.5, power: float = 0.8
                            ) -> int | None:
    """Labelled outcomes the smaller arm needs before the confidence sequence leaves zero
    with chance ``power`` when the true difference is ``effect``.

    At ``n`` outcomes in the smaller arm (and the larger in proportion to the shares) the
    difference's variance is ``V = sd_a²/n_a + sd_b²/n_b``; the answer is the smallest ``n``
    with ``|effect| >= w(V) + z_power sqrt(V)``, ``w`` the half-width of
    :func:`mixture_half_width`. It counts one look at ``n`` only, while the sequence is looked at
    all along, so it errs long: the calibration suite measures how often the sequence had left
    zero by then. ``sd`` is the per-outcome standard deviation (with a sticky key, the
    delta-method one, design effect included). ``None`` when ``effect`` is 0.
    """
    from scipy.stats import norm

    if effect == 0 or not (sd_a > 0 or sd_b > 0):
        return None
    share = min(max(share_b, 1e-6), 1 - 1e-6)
    scale_a = share / (1 - share) if share <= 0.5 else 1.0
    scale_b = 1.0 if share <= 0.5 else (1 - share) / share
    z = float(norm.ppf(power))

    def enough(n: float) -> bool:
        v = sd_a**2 / (n / scale_a) + sd_b**2 / (n / scale_b)
        return abs(effect) >= float(mixture_half_width(v, tau2, alpha)) + z * math.sqrt(v)

    low, high = 1, 2  # enough(high) and not enough(low), by doubling then halving
    while not enough(high):
        low, high = high, high * 2
        if high > 10**12:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high
