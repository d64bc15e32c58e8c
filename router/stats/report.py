"""The ``/stats`` report as a pure function of the analysis columns of the current phase.

Which test is used where:

- per variant, accuracy with a Wilson interval; a mean loss (log loss, absolute error) with a
  Student t interval; RMSE with the square roots of the t interval of the squared errors;
- ``ab`` mode (independent groups of requests): the pooled two-proportion z-test and Newcombe's
  interval for accuracy, Welch's t-test and interval on per-request losses otherwise;
- ``shadow`` mode (both models scored the same requests): McNemar's exact test for accuracy,
  the Wilcoxon signed-rank test on per-request losses otherwise, with a t interval on the
  paired differences;
- ``significant`` is the always-valid (mSPRT) p-value below alpha, over the labelled outcomes
  in the order their labels arrived, with ``tau2 = min_effect ** 2`` on the metric's scale.
  RMSE is tested on squared errors, so its ``min_effect`` is carried to that scale at the
  champion's RMSE ``r``: ``(r + min_effect) ** 2 - r ** 2``. An RMSE difference's interval is
  the delta-method one.

Rows answered by the champion for a failed challenger (``fallback``) are left out of the
champion's group; the failure is the challenger's error. A row is *labelled* when it has a
prediction and the label its metric needs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import norm

from router.config import RouterConfig
from router.monitoring import output_report, rolling_report
from router.registry import ServedModel
from router.stats.decision import DecisionInputs, decide
from router.stats.drift_report import drift_report
from router.stats.loader import Phase, Settings
from router.stats.means import (
    mean_difference_interval,
    mean_interval,
    samples_per_arm_means,
    welch_test,
)
from router.stats.paired import mcnemar_test, wilcoxon_test
from router.stats.proportions import (
    difference_interval,
    samples_per_arm,
    two_proportion_test,
    wilson_interval,
)
from router.stats.sequential import (
    always_valid_p_values,
    always_valid_p_values_means,
    paired_always_valid_p_values,
)
from router.stats.srm import SRM_ALPHA, srm_test

__all__ = ["POWER", "build_report"]

Columns = Mapping[str, np.ndarray]

POWER = 0.8  # of samples_needed_per_variant
CONFIDENCE = 0.95  # of every *_ci95
# Probabilities are clipped here before the log, as scikit-learn's log_loss does for float64.
_EPS = float(np.finfo(np.float64).eps)

_TESTS = {
    ("ab", "accuracy"): "two-proportion z-test",
    ("ab", "loss"): "Welch t-test",
    ("shadow", "accuracy"): "McNemar exact test",
    ("shadow", "loss"): "Wilcoxon signed-rank test",
}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _num(value: float | None) -> float | None:
    """A JSON-native float, ``None`` for a missing or non-finite one."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _pair(values: tuple[float, float] | None) -> list[float | None] | None:
    return None if values is None else [_num(values[0]), _num(values[1])]


# -- per-row outcomes ------------------------------------------------------------------------


class _Outcomes:
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

    def value(self, y: np.ndarray) -> float | None:
        """The metric of a group of per-row values."""
        if y.size == 0:
            return None
        mean = float(y.mean())
        return math.sqrt(mean) if self.metric == "rmse" else mean

    def interval(self, y: np.ndarray) -> tuple[float, float] | None:
        if self.metric == "accuracy":
            return wilson_interval(int(y.sum()), int(y.size), CONFIDENCE) if y.size else None
        if y.size < 2:
            return None
        low, high = mean_interval(y, CONFIDENCE)
        if self.metric == "rmse":
            return math.sqrt(max(low, 0.0)), math.sqrt(max(high, 0.0))
        return low, high


def _masks(columns: Columns) -> dict[str, np.ndarray]:
    # Forced rows (the client chose the variant) were not assigned at random: in no statistic.
    challenger = columns["challenger"] & ~columns["forced"]
    return {"champion": ~columns["challenger"] & ~columns["fallback"] & ~columns["shadow"]
            & ~columns["forced"],
            "challenger": challenger}


# -- variants ----------------------------------------------------------------------------------


def _distribution(columns: Columns, rows: np.ndarray, classes: tuple[str, ...] | None
                  ) -> dict[str, float]:
    if classes is not None:
        predicted = columns["predicted"][rows]
        predicted = predicted[predicted >= 0]
        if predicted.size == 0:
            return {}
        counts = np.bincount(predicted, minlength=len(classes))
        return {c: float(n / predicted.size) for c, n in zip(classes, counts, strict=True)}
    values = columns["value"][rows]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {}
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {"mean": float(values.mean()), "std": float(values.std()), "p5": float(p5),
            "p50": float(p50), "p95": float(p95)}


def _variant(columns: Columns, rows: np.ndarray, outcomes: _Outcomes, model: ServedModel,
             name: str, shadow: bool, classes: tuple[str, ...] | None) -> dict[str, Any]:
    requests = int(rows.sum())
    errors = int((rows & columns["error"]).sum())
    latency = columns["latency_ms"][rows]
    percentiles = (np.percentile(latency, [50, 95, 99]).tolist() if latency.size
                   else [None, None, None])
    y = outcomes.y[rows & outcomes.scored]
    return {
        "model": name,
        "version": model.version,
        "requests": requests,
        "shadow": shadow,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "latency_ms": dict(zip(("p50", "p95", "p99"), percentiles, strict=True)),
        "labelled": int(y.size),
        "metric": _num(outcomes.value(y)),
        "metric_ci95": _pair(outcomes.interval(y)),
        "prediction_distribution": _distribution(columns, rows & ~columns["error"], classes),
    }


# -- comparison --------------------------------------------------------------------------------


def _tau2(settings: Settings, champion_metric: float | None) -> float:
    effect = settings.min_effect
    if settings.metric == "rmse" and champion_metric:
        # The test runs on squared errors: carry min_effect from RMSE to MSE at the champion.
        effect = (champion_metric + effect) ** 2 - champion_metric**2
    return effect**2


def _samples_needed(settings: Settings, y_a: np.ndarray, champion_metric: float | None,
                    paired_sd: float | None = None) -> int | None:
    """Labelled samples per variant to detect ``min_effect`` at the champion's level."""
    if champion_metric is None:
        return None
    effect = math.sqrt(_tau2(settings, champion_metric))
    if paired_sd:  # a paired design needs the spread of the differences only
        return samples_per_arm_means(paired_sd, 0.0, effect, settings.alpha, POWER)
    if settings.metric == "accuracy":
        p_a = champion_metric
        p_b = p_a + effect if p_a + effect <= 1.0 else p_a - effect
        return samples_per_arm(p_a, min(max(p_b, 0.0), 1.0), settings.alpha, POWER)
    if y_a.size < 2:
        return None
    sd = float(np.std(y_a, ddof=1))
    return samples_per_arm_means(sd, sd, effect, settings.alpha, POWER)


def _rmse_difference_interval(sq_a: np.ndarray, sq_b: np.ndarray, *, paired: bool
                              ) -> tuple[float, float] | None:
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
    half = float(norm.ppf(0.5 + CONFIDENCE / 2)) * math.sqrt(max(float(variance), 0.0))
    difference = math.sqrt(m_b) - math.sqrt(m_a)
    return difference - half, difference + half


def arrival_order(columns: Columns, rows: np.ndarray) -> np.ndarray:
    """Indices of the ``rows`` mask in the order their labels arrived (the sequential order)."""
    found = np.flatnonzero(rows)
    return found[np.argsort(columns["feedback_id"][found], kind="stable")]


def independent_sequential(y: np.ndarray, is_b: np.ndarray, metric: str, tau2: float
                           ) -> np.ndarray:
    """The always-valid p-value after each outcome of ``y`` (in arrival order), ab mode."""
    n_a, n_b = np.cumsum(~is_b), np.cumsum(is_b)
    if metric == "accuracy":
        return always_valid_p_values(np.cumsum(y * ~is_b), n_a, np.cumsum(y * is_b), n_b, tau2)
    return always_valid_p_values_means(np.cumsum(y * ~is_b), np.cumsum(y * y * ~is_b), n_a,
                                       np.cumsum(y * is_b), np.cumsum(y * y * is_b), n_b, tau2)


def _independent(columns: Columns, masks: dict[str, np.ndarray], outcomes: _Outcomes,
                 settings: Settings) -> dict[str, Any]:
    """ab mode: two groups of different requests."""
    in_a = masks["champion"] & outcomes.scored
    in_b = masks["challenger"] & outcomes.scored
    y_a, y_b = outcomes.y[in_a], outcomes.y[in_b]
    metric_a, metric_b = outcomes.value(y_a), outcomes.value(y_b)
    difference = None if metric_a is None or metric_b is None else metric_b - metric_a

    rows = arrival_order(columns, in_a | in_b)
    tau2 = _tau2(settings, metric_a)

    interval: tuple[float, float] | None
    if settings.metric == "accuracy":
        x_a, x_b = int(y_a.sum()), int(y_b.sum())
        _, p_value = two_proportion_test(x_a, y_a.size, x_b, y_b.size)
        interval = (difference_interval(x_a, y_a.size, x_b, y_b.size, CONFIDENCE)
                    if difference is not None else None)
        sequential = independent_sequential(outcomes.y[rows], masks["challenger"][rows],
                                            settings.metric, tau2) if rows.size else None
    else:
        _, p_value = welch_test(y_a, y_b)
        if settings.metric == "rmse":
            interval = _rmse_difference_interval(y_a, y_b, paired=False)
        else:
            interval = (mean_difference_interval(y_a, y_b, CONFIDENCE)
                        if y_a.size >= 2 and y_b.size >= 2 else None)
        sequential = independent_sequential(outcomes.y[rows], masks["challenger"][rows],
                                            settings.metric, tau2) if rows.size else None
    return _comparison("ab", settings, difference, interval, p_value, tau2, sequential,
                       _samples_needed(settings, y_a, metric_a), (int(y_a.size), int(y_b.size)),
                       None)


def _comparison(mode: str, settings: Settings, difference: float | None,
                interval: tuple[float, float] | None, p_value: float | None, tau2: float,
                sequential: np.ndarray | None, samples_needed: int | None,
                labelled: tuple[int, int], paired: dict[str, Any] | None) -> dict[str, Any]:
    """``/stats``'s ``comparison``, the same fields in both modes."""
    return {
        "test": _TESTS[(mode, "accuracy" if settings.metric == "accuracy" else "loss")],
        "difference": _num(difference),
        "difference_ci95": _pair(interval),
        "p_value": _num(p_value),
        "tau2": tau2,
        "sequential_p_value": 1.0 if sequential is None else float(sequential[-1]),
        "samples_needed_per_variant": samples_needed,
        "labelled": labelled,
        "paired": paired,
    }


def _first_of_each(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``keys[rows]`` in ascending order, with the first row holding each."""
    order = rows[np.argsort(keys[rows], kind="stable")]
    sorted_keys = keys[order]
    first = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if order.size else order.astype(bool)
    return sorted_keys[first], order[first]


def _pairs(keys: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``rows_a`` and ``rows_b`` sharing a key, matched one to one, by ascending key.

    By sorting rather than ``np.intersect1d``, whose hashing is many times slower on a
    million distinct keys."""
    keys_a, first_a = _first_of_each(keys, rows_a)
    keys_b, first_b = _first_of_each(keys, rows_b)
    if keys_a.size == 0 or keys_b.size == 0:
        return first_a[:0], first_b[:0]
    at = np.minimum(np.searchsorted(keys_a, keys_b), keys_a.size - 1)
    found = keys_a[at] == keys_b
    return first_a[at[found]], first_b[found]


def _distinct(values: np.ndarray) -> int:
    """How many distinct values (by sorting: ``np.unique`` hashes, far slower at this size)."""
    if values.size == 0:
        return 0
    ordered = np.sort(values)
    return int(np.count_nonzero(ordered[1:] != ordered[:-1])) + 1


def _paired(columns: Columns, masks: dict[str, np.ndarray], outcomes: _Outcomes,
            settings: Settings) -> dict[str, Any]:
    """shadow mode: both models scored the same requests, paired by their feedback."""
    rows_a = np.flatnonzero(masks["champion"] & outcomes.scored)
    rows_b = np.flatnonzero(masks["challenger"] & outcomes.scored)
    # Both rows of a request join the same (latest) feedback; sorted by it, in arrival order.
    a, b = _pairs(columns["feedback_id"], rows_a, rows_b)
    y_a, y_b = outcomes.y[a], outcomes.y[b]
    n = int(a.size)
    d = y_b - y_a
    metric_a, metric_b = outcomes.value(y_a), outcomes.value(y_b)
    difference = None if metric_a is None or metric_b is None else metric_b - metric_a
    tau2 = _tau2(settings, metric_a)

    paired: dict[str, Any] = {"n": n, "agreement": None, "agreement_ci95": None,
                              "champion_only_correct": None, "challenger_only_correct": None,
                              "mcnemar_p_value": None, "wilcoxon_p_value": None}
    if settings.classes is not None:
        same = int((columns["predicted"][a] == columns["predicted"][b]).sum())
        correct_a = (columns["predicted"][a] == columns["label"][a]) & (columns["label"][a] >= 0)
        correct_b = (columns["predicted"][b] == columns["label"][b]) & (columns["label"][b] >= 0)
        only_a, only_b = int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())
        paired.update(agreement=same / n if n else None,
                      agreement_ci95=_pair(wilson_interval(same, n, CONFIDENCE)) if n else None,
                      champion_only_correct=only_a, challenger_only_correct=only_b,
                      mcnemar_p_value=mcnemar_test(only_a, only_b))
    if settings.metric == "accuracy":
        p_value = paired["mcnemar_p_value"] if n else 1.0
    else:
        p_value = wilcoxon_test(y_a, y_b)
        paired["wilcoxon_p_value"] = p_value

    interval: tuple[float, float] | None = None
    if settings.metric == "rmse":
        interval = _rmse_difference_interval(y_a, y_b, paired=True)
    elif n >= 2:
        interval = mean_interval(d, CONFIDENCE)
    paired_sd = float(np.std(d, ddof=1)) if n >= 2 else None
    sequential = paired_always_valid_p_values(d, tau2) if n else None
    return _comparison("shadow", settings, difference, interval, p_value, tau2, sequential,
                       _samples_needed(settings, y_a, metric_a, paired_sd=paired_sd), (n, n),
                       paired)


# -- sample ratio mismatch ---------------------------------------------------------------------


def _units(columns: Columns, rows: np.ndarray, sticky: bool) -> int:
    """Assignment units among ``rows``: distinct unit ids with a sticky key, else requests.

    The rows of one batch request share the timestamp the gateway stamped on them, so distinct
    timestamps count requests, not rows (a batch goes to one variant as a whole). A request
    without a unit id, under a sticky key, was assigned at random like one without a key.
    """
    keys = columns.get("unit_key")
    if not sticky or keys is None:
        return _distinct(columns["ts"][rows])
    has_id = rows & (keys != 0)
    return _distinct(keys[has_id]) + _distinct(columns["ts"][rows & ~has_id])


def _srm(columns: Columns, masks: dict[str, np.ndarray], phase: Phase, config: RouterConfig
         ) -> dict[str, Any]:
    """Observed units per variant against the shares each revision of the phase asked for."""
    assigned = ~columns["shadow"] & ~columns["fallback"] & ~columns["forced"]
    revision = columns["revision"]
    revisions = phase.revisions if phase.revisions is not None \
        else tuple(int(r) for r in np.flatnonzero(np.bincount(revision)))
    per_revision = []
    observed = np.zeros(2)
    expected_challenger = 0.0
    sticky_seen: set[bool] = set()
    for r in revisions:
        share = phase.challenger_percent.get(r, config.traffic.challenger_percent)
        sticky = phase.sticky.get(r, config.traffic.sticky_key is not None)
        rows = assigned & (revision == r)
        counts = [_units(columns, rows & masks[v], sticky) for v in ("champion", "challenger")]
        if sum(counts) == 0:
            continue
        sticky_seen.add(sticky)
        observed += counts
        expected_challenger += sum(counts) * share / 100.0
        per_revision.append({"revision": int(r), "expected_percent": share,
                             "champion": counts[0], "challenger": counts[1],
                             "unit": "users" if sticky else "requests"})
    total = float(observed.sum())
    unit = " and ".join(sorted({"users" if s else "requests" for s in sticky_seen})) or (
        "users" if config.traffic.sticky_key is not None else "requests")
    if total == 0:
        return {"expected_percent": config.traffic.challenger_percent, "observed_percent": None,
                "p_value": 1.0, "mismatch": False, "unit": unit, "revisions": []}
    expected_percent = 100.0 * expected_challenger / total
    p_value = srm_test([int(observed[0]), int(observed[1])],
                       [100.0 - expected_percent, expected_percent])
    return {"expected_percent": round(expected_percent, 6),
            "observed_percent": 100.0 * observed[1] / total,
            "p_value": p_value, "mismatch": p_value < SRM_ALPHA, "unit": unit,
            "revisions": per_revision}


# -- the report --------------------------------------------------------------------------------


def build_report(columns: Columns, *, config: RouterConfig, models: Mapping[str, ServedModel],
                 phase: Phase, settings: Settings, config_revision: int | None = None,
                 shadow_calls: Mapping[str, int] | None = None,
                 now: float | None = None) -> dict[str, Any]:
    """The report ``/stats`` answers and ``router stats`` prints, JSON-native throughout.

    Args:
        columns: the analysis columns of the phase (see ``router.outcomes.columns``).
        config: the running configuration (mode, names, guardrails, analysis settings).
        models: the served models by role (versions, classes, drift references).
        phase: the revisions analysed; settings: metric, alpha and min_effect in force.
        config_revision: the revision the gateway serves, reported as is.
        shadow_calls: the shadow mirror's counters, shown under the challenger.
        now: the report's time (unix seconds), the current time by default.
    """
    mode = config.mode if models.get("challenger") is not None else "single"
    masks = _masks(columns)
    outcomes = _Outcomes(columns, settings.metric)
    roles = ("champion", "challenger") if mode != "single" else ("champion",)
    variants = {
        role: _variant(columns, masks[role], outcomes, models[role], config.model_refs()[role].name,
                       shadow=mode == "shadow" and role == "challenger",
                       classes=settings.classes)
        for role in roles
    }
    for role in roles:  # served on request, counted apart from the experiment's requests
        variants[role]["forced"] = int(
            (columns["forced"] & (columns["challenger"] == (role == "challenger"))).sum())
    comparison: dict[str, Any] | None = None
    if mode == "ab":
        variants["challenger"]["fallbacks"] = int((columns["fallback"] & ~columns["shadow"]).sum())
        comparison = _independent(columns, masks, outcomes, settings)
        comparison["srm"] = _srm(columns, masks, phase, config)
    elif mode == "shadow":
        if shadow_calls is not None:
            variants["challenger"]["shadow_calls"] = dict(shadow_calls)
        comparison = _paired(columns, masks, outcomes, settings)
        comparison["srm"] = None

    if comparison is None:
        decision = {"action": "continue",
                    "reasons": ["mode single: there is no challenger to compare"]}
    else:
        labelled = comparison.pop("labelled")
        comparison = {"metric": settings.metric, "alpha": settings.alpha,
                      "min_effect": settings.min_effect,
                      "sequential_test": "mSPRT, normal mixture", **comparison}
        comparison["significant"] = comparison["sequential_p_value"] < settings.alpha
        decision = _decision(comparison, variants["challenger"], labelled, settings, config)
        comparison = {k: comparison[k] for k in _COMPARISON_ORDER}

    generated = time.time() if now is None else now
    return {
        "experiment": config.experiment,
        "mode": mode,
        "config_revision": config_revision,
        "metric": settings.metric,
        "generated_at": _iso(generated),
        "phase": {"revisions": None if phase.revisions is None else list(phase.revisions),
                  "since": _iso(phase.since),
                  "analysed": "current phase only: the comparison ignores outcomes logged "
                              "under an earlier split"},
        "variants": variants,
        "comparison": comparison,
        "drift": drift_report(columns, masks, models, settings.classes),
        "rolling": rolling_report(columns, {r: masks[r] for r in roles}, models,
                                  settings.classes, config.monitoring.window),
        "outputs": output_report(columns, {r: masks[r] for r in roles}, models,
                                 settings.classes, config.monitoring.window),
        "decision": decision,
        "unknown_feedback_ids": int(columns["unknown_feedback_ids"]),
    }


_COMPARISON_ORDER = (
    "metric", "test", "alpha", "min_effect", "difference", "difference_ci95", "p_value",
    "sequential_test", "tau2", "sequential_p_value", "significant",
    "samples_needed_per_variant", "srm", "paired",
)


def _decision(comparison: dict[str, Any], challenger: dict[str, Any], labelled: tuple[int, int],
              settings: Settings, config: RouterConfig) -> dict[str, Any]:
    srm = comparison["srm"]
    guardrails = config.analysis.guardrails
    outcome = decide(DecisionInputs(
        metric=settings.metric,
        higher_is_better=settings.metric == "accuracy",
        min_samples=config.analysis.min_samples,
        labelled_champion=labelled[0],
        labelled_challenger=labelled[1],
        significant=comparison["significant"],
        difference=comparison["difference"],
        p_value=comparison["sequential_p_value"],
        samples_needed_per_variant=comparison["samples_needed_per_variant"],
        srm_mismatch=bool(srm and srm["mismatch"]),
        srm_p_value=srm["p_value"] if srm else None,
        challenger_requests=challenger["requests"],
        challenger_error_rate=challenger["error_rate"],
        challenger_p99_ms=challenger["latency_ms"]["p99"],
        guardrail_error_rate=guardrails.error_rate,
        guardrail_p99_ms=guardrails.p99_latency_ms,
    ))
    return {"action": outcome.action, "reasons": list(outcome.reasons)}
