"""``/stats``'s ``comparison``: the challenger against the champion, at the unit of assignment.

Which test is used where:

- ``ab`` mode (independent groups): without a sticky key, every request is a unit: the pooled
  two-proportion z-test with Newcombe's interval for accuracy, Welch's t-test and interval for
  a mean loss, the delta-method interval for RMSE. With a sticky key the user is the unit: each
  arm's metric is a ratio of per-user sums and the z-test and interval use its delta-method
  variance (``router.stats.confidence``).
- ``shadow`` mode (both models scored the same requests): McNemar's exact test for accuracy,
  the paired t-test on the per-request differences of a loss (the Wilcoxon signed-rank p-value
  is kept beside it as ``paired.wilcoxon_p_value``), with a t interval on the differences (delta
  method for RMSE).
- ``significant``, its direction and ``sequential_p_value`` come from the always-valid
  confidence sequence ``difference_cs`` over the labelled outcomes in the order their labels
  arrived, with ``tau2 = min_effect ** 2`` on the tested scale (squared errors for RMSE, whose
  ``min_effect`` is carried to that scale at the champion's RMSE ``r``:
  ``(r + min_effect) ** 2 - r ** 2``).

The whole path of the sequence is computed (:class:`Running`), so ``/stats/timeline`` reads its
checkpoints off the same arrays and ``/stats`` is its last point.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import norm

from router.outcomes.columns import AnalysisColumns
from router.stats.confidence import (
    MIN_UNITS,
    MIN_UNITS_UNBOUNDED,
    ratio_variance,
    running_arm,
    running_difference,
    running_paired,
    samples_to_significance,
)
from router.stats.means import (
    mean_difference_interval,
    mean_interval,
    one_sample_t_test,
    welch_test,
)
from router.stats.model import Running, Settings
from router.stats.paired import mcnemar_test, wilcoxon_test
from router.stats.proportions import difference_interval, two_proportion_test, wilson_interval
from router.stats.units import UnitCodes, UnitIndex, unit_values

__all__ = ["CONFIDENCE", "Outcomes", "Units", "arrival_order", "cs_on_metric_scale",
           "fixed_test", "independent", "metric_interval", "paired", "paired_rows",
           "paired_test", "repeats_units", "tau2_of", "unit_codes", "units_of"]

Columns = AnalysisColumns
Interval = tuple[float, float]
Units = np.ndarray | UnitCodes  # each outcome's unit: raw, or coded by a UnitIndex

CONFIDENCE = 0.95  # of every *_ci95
POWER = 0.8  # of samples_needed_per_variant
# Probabilities are clipped here before the log, as scikit-learn's log_loss does for float64.
_EPS = float(np.finfo(np.float64).eps)

_TESTS = {
    ("ab", "accuracy", False): "two-proportion z-test",
    ("ab", "loss", False): "Welch t-test",
    ("ab", "accuracy", True): "z-test on per-{unit} ratios (delta method)",
    ("ab", "loss", True): "z-test on per-{unit} ratios (delta method)",
    ("shadow", "accuracy", False): "McNemar exact test",
    ("shadow", "loss", False): "paired t-test",
}
SEQUENTIAL_TEST = "always-valid confidence sequence (normal mixture)"


def _z() -> float:
    return float(norm.ppf(0.5 + CONFIDENCE / 2))


class Outcomes:
    """Per-row ``y`` (1/0 correctness, or the loss) and which rows have one (``scored``)."""

    def __init__(self, columns: Columns, metric: str) -> None:
        error = columns["error"]
        if metric == "accuracy":
            label, predicted = columns["label"], columns["predicted"]
            valid = label != -1
            self.y = ((predicted == label) & (label >= 0)).astype(float)
        elif metric == "log_loss":
            probability = columns["true_probability"]
            valid = np.isfinite(probability)
            self.y = -np.log(np.clip(np.nan_to_num(probability, nan=1.0), _EPS, 1.0))
        else:
            residual = columns["value"] - columns["label_value"]
            valid = np.isfinite(residual)
            residual = np.where(valid, residual, 0.0)
            self.y = np.abs(residual) if metric == "mae" else residual**2
        self.scored = valid & ~error
        self.metric = metric

    @property
    def bounded(self) -> bool:
        """Outcomes in ``[0, 1]``: correctness."""
        return self.metric == "accuracy"

    def value(self, y: np.ndarray) -> float | None:
        """The metric of a group of per-row values."""
        if y.size == 0:
            return None
        mean = float(y.mean())
        return math.sqrt(mean) if self.metric == "rmse" else mean

    def to_metric(self, mean: float) -> float:
        return math.sqrt(max(mean, 0.0)) if self.metric == "rmse" else mean


def metric_interval(outcomes: Outcomes, y: np.ndarray, units: Units | None
                    ) -> Interval | None:
    """A variant's 95 % interval: Wilson (accuracy) or Student t (a mean loss; its square
    roots for RMSE) per request; with units, the normal interval of the delta method."""
    if units is not None:
        if y.size < 2:
            return None
        half = _z() * math.sqrt(ratio_variance(y, units))
        mean = float(y.mean())
        low, high = mean - half, mean + half
        if outcomes.bounded:
            low, high = max(low, 0.0), min(high, 1.0)
    elif outcomes.metric == "accuracy":
        return wilson_interval(int(y.sum()), int(y.size), CONFIDENCE) if y.size else None
    else:
        if y.size < 2:
            return None
        low, high = mean_interval(y, CONFIDENCE)
    if outcomes.metric == "rmse":
        return math.sqrt(max(low, 0.0)), math.sqrt(max(high, 0.0))
    return low, high


def tau2_of(metric: str, min_effect: float, champion_metric: float | None) -> float:
    """``min_effect ** 2`` on the tested scale (squared errors for RMSE)."""
    effect = min_effect
    if metric == "rmse" and champion_metric:
        effect = (champion_metric + effect) ** 2 - champion_metric**2
    return effect**2


def arrival_order(columns: Columns, rows: np.ndarray) -> np.ndarray:
    """Indices of the ``rows`` mask in the order their labels arrived (the sequential order)."""
    found = np.flatnonzero(rows)
    return found[np.argsort(columns["feedback_id"][found], kind="stable")]


def repeats_units(columns: Columns, rows: np.ndarray, index: UnitIndex | None = None) -> bool:
    """Some unit has more than one of ``rows`` (indices): only then does the unit change the
    analysis; with one outcome a unit, the per-request tests are the delta method's own.
    ``index``, the columns' units coded, spares a sort."""
    if index is not None:
        return index.take(rows).repeats()
    codes = unit_codes(columns, rows)
    if codes is None or codes.size < 2:
        return False
    ordered = np.sort(codes)
    return bool(np.any(ordered[1:] == ordered[:-1]))


def unit_codes(columns: Columns, rows: np.ndarray) -> np.ndarray | None:
    """The unit of each of ``rows`` (indices) as an integer, or None without a sticky key; a row
    without a unit id was assigned at random, so it is a unit of its own."""
    keys = columns.get("unit_key")
    return None if keys is None else unit_values(keys, rows)


def units_of(columns: Columns, rows: np.ndarray, index: UnitIndex | None) -> Units | None:
    """:func:`unit_codes`, coded by ``index`` when the report has one."""
    return index.take(rows) if index is not None else unit_codes(columns, rows)


# -- the running sequence ----------------------------------------------------------------------


def running_independent(columns: Columns, in_a: np.ndarray, in_b: np.ndarray,
                        outcomes: Outcomes, tau2: float, alpha: float, sticky: bool,
                        index: UnitIndex | None = None) -> Running:
    """ab mode: the two groups' outcomes laid along the order their labels arrived."""
    rows = arrival_order(columns, in_a | in_b)
    y = outcomes.y[rows]
    is_b = in_b[rows]
    units = units_of(columns, rows, index) if sticky else None
    a = running_arm(y, ~is_b, units, bounded=outcomes.bounded)
    b = running_arm(y, is_b, units, bounded=outcomes.bounded)
    minimum = MIN_UNITS if outcomes.bounded else MIN_UNITS_UNBOUNDED
    return Running(rows, a, b, running_difference(a, b, tau2, alpha, min_units=minimum))


def paired_rows(columns: Columns, in_a: np.ndarray, in_b: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Shadow pairs: the champion's and the challenger's row of each request both labelled,
    matched one to one through their shared (latest) feedback, in arrival order."""
    keys = columns["feedback_id"]
    keys_a, first_a = _first_of_each(keys, np.flatnonzero(in_a))
    keys_b, first_b = _first_of_each(keys, np.flatnonzero(in_b))
    if keys_a.size == 0 or keys_b.size == 0:
        return first_a[:0], first_b[:0]
    at = np.minimum(np.searchsorted(keys_a, keys_b), keys_a.size - 1)
    found = keys_a[at] == keys_b
    return first_a[at[found]], first_b[found]


def _first_of_each(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``keys[rows]`` in ascending order, with the first row holding each (by
    sorting rather than ``np.intersect1d``, whose hashing is many times slower at a million)."""
    order = rows[np.argsort(keys[rows], kind="stable")]
    sorted_keys = keys[order]
    first = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if order.size else order.astype(bool)
    return sorted_keys[first], order[first]


def running_paired_rows(y_a: np.ndarray, y_b: np.ndarray, rows: np.ndarray,
                        outcomes: Outcomes, tau2: float, alpha: float) -> Running:
    minimum = MIN_UNITS if outcomes.bounded else MIN_UNITS_UNBOUNDED
    return Running(rows, None, None, running_paired(y_b - y_a, tau2, alpha,
                                                     bounded=outcomes.bounded,
                                                     min_pairs=minimum))


# -- the comparison ----------------------------------------------------------------------------


def _num(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _pair(values: Interval | None) -> list[float | None] | None:
    return None if values is None else [_num(values[0]), _num(values[1])]


def cs_on_metric_scale(running: Running, at: int, outcomes: Outcomes,
                       means: tuple[float, float] | None) -> list[float] | None:
    """The running intersection after element ``at``, on the metric's scale (an MSE one carried
    to RMSE through ``√b - √a = (b - a) / (√a + √b)`` at the arms' mean squared errors
    ``means``), None before it counts any evidence."""
    if not running.rows.size:
        return None
    low, high = float(running.difference.low[at]), float(running.difference.high[at])
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    if outcomes.metric == "rmse" and means is not None:
        scale = math.sqrt(max(means[0], 0.0)) + math.sqrt(max(means[1], 0.0))
        if scale > 0:
            low, high = low / scale, high / scale
    if outcomes.bounded:  # a difference of two accuracies lies in [-1, 1]
        low, high = max(low, -1.0), min(high, 1.0)
    return [low, high]


def _rmse_difference_interval(sq_a: np.ndarray, sq_b: np.ndarray, *, paired: bool
                              ) -> Interval | None:
    """Delta-method interval for ``sqrt(mean(sq_b)) - sqrt(mean(sq_a))``."""
    if sq_a.size < 2 or sq_b.size < 2:
        return None
    m_a, m_b = float(sq_a.mean()), float(sq_b.mean())
    if m_a <= 0 or m_b <= 0:
        return None
    g_a, g_b = -0.5 / math.sqrt(m_a), 0.5 / math.sqrt(m_b)
    if paired:
        cov = np.cov(np.vstack([sq_a, sq_b]))
        variance = (g_a**2 * cov[0, 0] + g_b**2 * cov[1, 1] + 2 * g_a * g_b * cov[0, 1]) \
            / sq_a.size
    else:
        variance = g_a**2 * np.var(sq_a, ddof=1) / sq_a.size \
            + g_b**2 * np.var(sq_b, ddof=1) / sq_b.size
    half = _z() * math.sqrt(max(float(variance), 0.0))
    difference = math.sqrt(m_b) - math.sqrt(m_a)
    return difference - half, difference + half


def _unit_test(outcomes: Outcomes, y_a: np.ndarray, u_a: Units, y_b: np.ndarray,
               u_b: Units) -> tuple[float | None, Interval | None]:
    """The fixed-horizon z-test and interval with the delta-method variance (a sticky key)."""
    if y_a.size < 2 or y_b.size < 2:
        return None, None
    v_a, v_b = ratio_variance(y_a, u_a), ratio_variance(y_b, u_b)
    m_a, m_b = float(y_a.mean()), float(y_b.mean())
    if outcomes.metric == "rmse":
        if m_a <= 0 or m_b <= 0:
            return None, None
        v_a, v_b = v_a / (4 * m_a), v_b / (4 * m_b)
        m_a, m_b = math.sqrt(m_a), math.sqrt(m_b)
    se = math.sqrt(v_a + v_b)
    difference = m_b - m_a
    if se == 0:
        return (1.0 if difference == 0 else 0.0), (difference, difference)
    p_value = float(2 * norm.sf(abs(difference) / se))
    return p_value, (difference - _z() * se, difference + _z() * se)


def _plan(settings: Settings, sd_a: float | None, sd_b: float | None, share_b: float,
          tau2: float) -> int | None:
    if sd_a is None or sd_b is None:
        return None
    return samples_to_significance(sd_a, sd_b, math.sqrt(tau2), tau2, settings.alpha,
                                   share_b=share_b, power=POWER)


def _unit_pair(columns: Columns, in_a: np.ndarray, in_b: np.ndarray, sticky: bool,
               index: UnitIndex | None) -> tuple[Units | None, Units | None]:
    if not sticky:
        return None, None
    return (units_of(columns, np.flatnonzero(in_a), index),
            units_of(columns, np.flatnonzero(in_b), index))


def fixed_test(outcomes: Outcomes, y_a: np.ndarray, y_b: np.ndarray,
               u_a: Units | None = None, u_b: Units | None = None
               ) -> tuple[float | None, Interval | None]:
    """ab mode's fixed-horizon p-value and 95 % interval of the difference (module doc);
    ``u_a`` and ``u_b`` are the outcomes' units under a sticky key."""
    if u_a is not None and u_b is not None:
        return _unit_test(outcomes, y_a, u_a, y_b, u_b)
    if outcomes.metric == "accuracy":
        x_a, x_b = int(y_a.sum()), int(y_b.sum())
        _, p_value = two_proportion_test(x_a, y_a.size, x_b, y_b.size)
        both = y_a.size > 0 and y_b.size > 0
        return p_value, (difference_interval(x_a, y_a.size, x_b, y_b.size, CONFIDENCE)
                         if both else None)
    _, p_value = welch_test(y_a, y_b)
    if outcomes.metric == "rmse":
        return p_value, _rmse_difference_interval(y_a, y_b, paired=False)
    return p_value, (mean_difference_interval(y_a, y_b, CONFIDENCE)
                     if y_a.size >= 2 and y_b.size >= 2 else None)


def paired_test(outcomes: Outcomes, y_a: np.ndarray, y_b: np.ndarray, mcnemar_p: float | None
                ) -> tuple[float | None, Interval | None]:
    """shadow mode's fixed-horizon p-value (McNemar's, given, for accuracy; the paired t-test
    otherwise) and the 95 % interval of the paired difference."""
    d = y_b - y_a
    p_value = (mcnemar_p if d.size else 1.0) if outcomes.metric == "accuracy" else _paired_t(d)
    if outcomes.metric == "rmse":
        return p_value, _rmse_difference_interval(y_a, y_b, paired=True)
    return p_value, (mean_interval(d, CONFIDENCE) if d.size >= 2 else None)


def independent(columns: Columns, in_a: np.ndarray, in_b: np.ndarray, outcomes: Outcomes,
                settings: Settings, unit: str | None, index: UnitIndex | None = None
                ) -> tuple[dict[str, Any], Running]:
    """ab mode's comparison and the sequence behind it. ``unit`` names what the outcomes are
    grouped by ("user", or "request" for a batch request's rows), None when each outcome is
    its own unit; ``index``, the columns' units coded, spares the groupings their sorts."""
    clustered = unit is not None
    y_a, y_b = outcomes.y[in_a], outcomes.y[in_b]
    metric_a, metric_b = outcomes.value(y_a), outcomes.value(y_b)
    difference = None if metric_a is None or metric_b is None else metric_b - metric_a
    tau2 = tau2_of(settings.metric, settings.min_effect, metric_a)
    running = running_independent(columns, in_a, in_b, outcomes, tau2, settings.alpha, clustered,
                                  index)

    p_value, interval = fixed_test(outcomes, y_a, y_b,
                                   *_unit_pair(columns, in_a, in_b, clustered, index))
    sd_a = sd_b = None
    if running.a is not None and running.b is not None and running.rows.size:
        a, b = running.a, running.b
        if a.n[-1] >= 2 and b.n[-1] >= 2:
            sd_a = math.sqrt(a.n[-1] * a.variance[-1])
            sd_b = math.sqrt(b.n[-1] * b.variance[-1])
    share_b = y_b.size / (y_a.size + y_b.size) if y_a.size + y_b.size else 0.5
    means = (float(y_a.mean()), float(y_b.mean())) if y_a.size and y_b.size else None
    cs = cs_on_metric_scale(running, -1, outcomes, means)
    plan = _plan(settings, sd_a, sd_b, share_b, tau2)
    comparison = _fields("ab", settings, unit, difference, interval, p_value, tau2, running,
                         cs, plan, (int(y_a.size), int(y_b.size)), None)
    return comparison, running


def paired(columns: Columns, in_a: np.ndarray, in_b: np.ndarray, outcomes: Outcomes,
           settings: Settings) -> tuple[dict[str, Any], Running]:
    """shadow mode's comparison: both models scored the same requests, paired by feedback."""
    a, b = paired_rows(columns, in_a, in_b)
    y_a, y_b = outcomes.y[a], outcomes.y[b]
    n = int(a.size)
    d = y_b - y_a
    metric_a, metric_b = outcomes.value(y_a), outcomes.value(y_b)
    difference = None if metric_a is None or metric_b is None else metric_b - metric_a
    tau2 = tau2_of(settings.metric, settings.min_effect, metric_a)
    running = running_paired_rows(y_a, y_b, a, outcomes, tau2, settings.alpha)

    details: dict[str, Any] = {"n": n, "agreement": None, "agreement_ci95": None,
                               "champion_only_correct": None, "challenger_only_correct": None,
                               "mcnemar_p_value": None, "wilcoxon_p_value": None}
    if settings.classes is not None:
        same = int((columns["predicted"][a] == columns["predicted"][b]).sum())
        correct_a = (columns["predicted"][a] == columns["label"][a]) & (columns["label"][a] >= 0)
        correct_b = (columns["predicted"][b] == columns["label"][b]) & (columns["label"][b] >= 0)
        only_a, only_b = int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())
        details.update(agreement=same / n if n else None,
                       agreement_ci95=_pair(wilson_interval(same, n, CONFIDENCE)) if n else None,
                       champion_only_correct=only_a, challenger_only_correct=only_b,
                       mcnemar_p_value=mcnemar_test(only_a, only_b))
    if settings.metric != "accuracy":
        details["wilcoxon_p_value"] = wilcoxon_test(y_a, y_b)
    p_value, interval = paired_test(outcomes, y_a, y_b, details["mcnemar_p_value"])
    sd = float(np.std(d)) if n >= 2 else None
    if outcomes.bounded and n >= 2:
        sd = math.sqrt(float(np.mean(d * d)))  # the spread the sequence itself uses
    plan = None if not sd else samples_to_significance(sd / math.sqrt(2), sd / math.sqrt(2),
                                                        math.sqrt(tau2), tau2, settings.alpha,
                                                        power=POWER)
    means = (float(y_a.mean()), float(y_b.mean())) if n else None
    cs = cs_on_metric_scale(running, -1, outcomes, means)
    comparison = _fields("shadow", settings, None, difference, interval, p_value, tau2,
                         running, cs, plan, (n, n), details)
    return comparison, running


def _paired_t(d: np.ndarray) -> float | None:
    """Two-sided paired t-test of mean ``d == 0`` (``scipy.stats.ttest_rel``), 1.0 when every
    difference is zero, None below two pairs."""
    return one_sample_t_test(d)[1] if d.size >= 2 else None


def _fields(mode: str, settings: Settings, unit: str | None, difference: float | None,
            interval: Interval | None, p_value: float | None, tau2: float, running: Running,
            cs: list[float] | None, samples_needed: int | None,
            labelled: tuple[int, int], details: dict[str, Any] | None) -> dict[str, Any]:
    """``/stats``'s ``comparison``, the same fields in both modes."""
    kind = "accuracy" if settings.metric == "accuracy" else "loss"
    p_values = running.difference.p_value
    return {
        "metric": settings.metric,
        "test": _TESTS[(mode, kind, unit is not None)].format(unit=unit),
        "alpha": settings.alpha,
        "min_effect": settings.min_effect,
        "difference": _num(difference),
        "difference_ci95": _pair(interval),
        "p_value": _num(p_value),
        "sequential_test": SEQUENTIAL_TEST,
        "tau2": tau2,
        "difference_cs": cs,
        "sequential_p_value": float(p_values[-1]) if p_values.size else 1.0,
        "significant": running.significant(),
        "samples_needed_per_variant": samples_needed,
        "labelled": labelled,
        "paired": details,
    }
