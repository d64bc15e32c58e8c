"""``GET /stats/timeline``: the report's figures as they moved while the labels came in.

``/stats`` is a snapshot; the dashboard draws how each variant's metric, the difference and
the always-valid p-value evolved. The axis is the count of labelled outcomes in the order their
labels reached the store, the order the sequential test itself follows, so the p-value path is
exactly the one behind ``/stats``'s ``sequential_p_value`` and the last checkpoint holds
``/stats``'s current figures. Outcomes, groups, pairs and ``tau2`` are the report's own
definitions (``router.stats.report``), over the same current phase.

At each of up to ``CHECKPOINTS`` points, evenly spaced over the labels, the figures are those
of the prefix: each variant's metric with its 95 % interval (Wilson for accuracy, Student t for
a mean loss, its square roots for RMSE), the difference challenger minus champion with its
interval (Newcombe, Welch or delta method in ab mode; the paired t or delta method in shadow
mode) and the sequential p-value. Prefix means and variances come from cumulative sums over
values shifted by their mean (which keeps the sums' rounding small); nothing loops per row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from router.config import RouterConfig
from router.registry import ServedModel
from router.stats.loader import Phase, Settings, current_phase, read_columns, resolve_settings
from router.stats.proportions import difference_interval, wilson_interval
from router.stats.reader import ColumnSource
from router.stats.report import (
    CONFIDENCE,
    _iso,
    _masks,
    _num,
    _Outcomes,
    _pairs,
    _tau2,
    arrival_order,
    independent_sequential,
)
from router.stats.sequential import paired_always_valid_p_values

__all__ = ["CHECKPOINTS", "build_timeline", "compute_timeline"]

CHECKPOINTS = 50

Columns = Mapping[str, np.ndarray]
Interval = list[float] | None


def checkpoints(keys: np.ndarray, count: int = CHECKPOINTS) -> np.ndarray:
    """Positions in ``keys`` (sorted feedback ranks) that end a checkpoint, evenly spaced.

    A checkpoint never splits the outcomes of one label: in shadow mode both models' rows of a
    request share it, and a pair belongs to one side of a checkpoint.
    """
    if keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero(np.r_[keys[1:] != keys[:-1], True])
    m = min(count, ends.size)
    picks = np.ceil(np.arange(1, m + 1) * ends.size / m).astype(np.int64) - 1
    return ends[np.unique(picks)]


@dataclass(frozen=True)
class Moments:
    """Count, mean and sample variance (ddof 1; NaN below two values) of each prefix."""

    n: np.ndarray
    mean: np.ndarray
    var: np.ndarray


def prefix_moments(values: np.ndarray, members: np.ndarray, at: np.ndarray) -> Moments:
    """Moments of ``values[members]`` over the rows up to each position of ``at``."""
    shift = float(values[members].mean()) if members.any() else 0.0
    centred = np.where(members, values - shift, 0.0)
    n = np.cumsum(members)[at].astype(float)
    total = np.cumsum(centred)[at]
    squares = np.cumsum(centred * centred)[at]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, total / n, np.nan)
        var = np.where(n > 1, np.maximum(squares - n * mean**2, 0.0) / (n - 1), np.nan)
    return Moments(n=n, mean=mean + shift, var=var)


def _t_half(var: np.ndarray, n: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Half-width of the 95 % t interval: ``t(df) · sqrt(var / n)``; 0 with no spread."""
    with np.errstate(divide="ignore", invalid="ignore"):
        half = student_t.ppf(0.5 + CONFIDENCE / 2, np.where(df > 0, df, 1.0)) * np.sqrt(var / n)
    return np.where(var > 0, half, 0.0)


def _values(values: np.ndarray, valid: np.ndarray) -> list[float | None]:
    return [_num(v) if ok else None for v, ok in zip(values.tolist(), valid.tolist(), strict=True)]


def _intervals(low: np.ndarray, high: np.ndarray, valid: np.ndarray) -> list[Interval]:
    return [[float(lo), float(hi)] if ok and math.isfinite(lo) and math.isfinite(hi) else None
            for lo, hi, ok in zip(low.tolist(), high.tolist(), valid.tolist(), strict=True)]


# -- per variant -----------------------------------------------------------------------------


def _variant_series(y: np.ndarray, members: np.ndarray, at: np.ndarray, metric: str
                    ) -> dict[str, Any]:
    """One variant's labelled count, metric and interval at each checkpoint."""
    if metric == "accuracy":
        n = np.cumsum(members)[at]
        x = np.cumsum(np.where(members, y, 0.0))[at]
        counts = [(round(s), int(k)) for s, k in zip(x.tolist(), n.tolist(), strict=True)]
        return {"labelled": n.tolist(),
                "metric": [s / k if k else None for s, k in counts],
                "ci95": [list(wilson_interval(s, k, CONFIDENCE)) if k else None
                         for s, k in counts]}
    m = prefix_moments(y, members, at)
    half = _t_half(m.var, m.n, m.n - 1)
    low, high = m.mean - half, m.mean + half
    value = m.mean
    if metric == "rmse":
        value = np.sqrt(np.maximum(m.mean, 0.0))
        low, high = np.sqrt(np.maximum(low, 0.0)), np.sqrt(np.maximum(high, 0.0))
    return {"labelled": m.n.astype(int).tolist(),
            "metric": _values(value, m.n > 0),
            "ci95": _intervals(low, high, m.n > 1)}


# -- comparison --------------------------------------------------------------------------------


def _z() -> float:
    return float(norm.ppf(0.5 + CONFIDENCE / 2))


def _independent_series(y: np.ndarray, is_b: np.ndarray, at: np.ndarray, metric: str,
                        tau2: float) -> dict[str, Any]:
    """ab mode: the difference, its interval and the sequential p-value at each checkpoint."""
    sequential = independent_sequential(y, is_b, metric, tau2)[at] if at.size else at
    a, b = prefix_moments(y, ~is_b, at), prefix_moments(y, is_b, at)
    both = (a.n > 0) & (b.n > 0)
    if metric == "accuracy":
        x_a, x_b = np.rint(a.mean * a.n), np.rint(b.mean * b.n)
        with np.errstate(divide="ignore", invalid="ignore"):
            difference = x_b / b.n - x_a / a.n  # from the counts, exactly as /stats has it
        intervals = [list(difference_interval(int(xa), int(na), int(xb), int(nb), CONFIDENCE))
                     if ok else None
                     for xa, na, xb, nb, ok in zip(x_a.tolist(), a.n.tolist(), x_b.tolist(),
                                                   b.n.tolist(), both.tolist(), strict=True)]
    elif metric == "rmse":
        difference = np.sqrt(np.maximum(b.mean, 0.0)) - np.sqrt(np.maximum(a.mean, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = a.var / (4 * a.mean * a.n) + b.var / (4 * b.mean * b.n)
        half = _z() * np.sqrt(np.maximum(variance, 0.0))
        ok = (a.n > 1) & (b.n > 1) & (a.mean > 0) & (b.mean > 0)
        intervals = _intervals(difference - half, difference + half, ok)
    else:
        difference = b.mean - a.mean
        va, vb = a.var / a.n, b.var / b.n
        se2 = va + vb
        with np.errstate(divide="ignore", invalid="ignore"):
            df = se2**2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
        half = _t_half(se2, np.ones_like(se2), df)  # se2 is already the variance of the mean
        intervals = _intervals(difference - half, difference + half, (a.n > 1) & (b.n > 1))
    return {"pairs": None,
            "difference": _values(difference, both),
            "difference_ci95": intervals,
            "sequential_p_value": [float(p) for p in sequential]}


def _paired_series(y_a: np.ndarray, y_b: np.ndarray, count: np.ndarray, metric: str,
                   tau2: float) -> dict[str, Any]:
    """shadow mode: the same over the first ``count`` pairs (in arrival order) at each point."""
    if y_a.size == 0:
        nothing: list[Any] = [None] * count.size
        return {"pairs": count.astype(int).tolist(), "difference": nothing,
                "difference_ci95": nothing, "sequential_p_value": [1.0] * count.size}
    at = np.maximum(count - 1, 0)
    labelled = count > 0
    d = y_b - y_a
    everyone = np.ones(d.size, dtype=bool)
    sequential = np.where(labelled, paired_always_valid_p_values(d, tau2)[at], 1.0)
    ma, mb = prefix_moments(y_a, everyone, at), prefix_moments(y_b, everyone, at)
    n = count.astype(float)
    if metric == "rmse":
        difference = np.sqrt(np.maximum(mb.mean, 0.0)) - np.sqrt(np.maximum(ma.mean, 0.0))
        both = prefix_moments(y_a + y_b, everyone, at)  # var(a + b) = var a + var b + 2 cov
        cov = (both.var - ma.var - mb.var) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            g_a, g_b = -0.5 / np.sqrt(ma.mean), 0.5 / np.sqrt(mb.mean)
            variance = (g_a**2 * ma.var + g_b**2 * mb.var + 2 * g_a * g_b * cov) / n
        half = _z() * np.sqrt(np.maximum(variance, 0.0))
        ok = (n > 1) & (ma.mean > 0) & (mb.mean > 0)
    else:
        difference = mb.mean - ma.mean
        md = prefix_moments(d, everyone, at)
        half = _t_half(md.var, n, n - 1)
        ok = n > 1
    return {"pairs": count.astype(int).tolist(),
            "difference": _values(difference, labelled),
            "difference_ci95": _intervals(difference - half, difference + half, ok),
            "sequential_p_value": [float(p) for p in sequential]}


# -- the timeline ------------------------------------------------------------------------------


def build_timeline(columns: Columns, *, config: RouterConfig,
                   models: Mapping[str, ServedModel], phase: Phase, settings: Settings,
                   count: int = CHECKPOINTS, now: float | None = None) -> dict[str, Any]:
    """The timeline ``/stats/timeline`` answers, JSON-native throughout.

    Args:
        columns: the analysis columns of the phase (see ``router.outcomes.columns``).
        config, models, phase, settings: as for ``router.stats.report.build_report``.
        count: the most checkpoints to give.
        now: the payload's time (unix seconds), the current time by default.
    """
    mode = config.mode if models.get("challenger") is not None else "single"
    masks = _masks(columns)
    outcomes = _Outcomes(columns, settings.metric)
    roles = ("champion", "challenger") if mode != "single" else ("champion",)
    in_role = {role: masks[role] & outcomes.scored for role in roles}
    union = np.zeros(outcomes.y.size, dtype=bool)
    for mask in in_role.values():
        union |= mask
    rows = arrival_order(columns, union)
    keys = columns["feedback_id"][rows]
    at = checkpoints(keys, count)
    y = outcomes.y[rows]
    variants = {role: _variant_series(y, in_role[role][rows], at, settings.metric)
                for role in roles}

    comparison: dict[str, Any] | None = None
    if mode == "ab":
        tau2 = _tau2(settings, outcomes.value(outcomes.y[in_role["champion"]]))
        comparison = {"tau2": tau2, **_independent_series(
            y, masks["challenger"][rows], at, settings.metric, tau2)}
    elif mode == "shadow":
        a, b = _pairs(columns["feedback_id"], np.flatnonzero(in_role["champion"]),
                      np.flatnonzero(in_role["challenger"]))
        y_a, y_b = outcomes.y[a], outcomes.y[b]
        tau2 = _tau2(settings, outcomes.value(y_a))
        # Pairs come in arrival order: those labelled by a checkpoint are a prefix.
        pairs = np.searchsorted(columns["feedback_id"][a], keys[at], side="right")
        comparison = {"tau2": tau2, **_paired_series(y_a, y_b, pairs, settings.metric, tau2)}

    generated = time.time() if now is None else now
    return {
        "experiment": config.experiment,
        "mode": mode,
        "metric": settings.metric,
        "higher_is_better": settings.metric == "accuracy",
        "alpha": settings.alpha,
        "confidence": CONFIDENCE,
        "generated_at": _iso(generated),
        "phase": {"revisions": None if phase.revisions is None else list(phase.revisions),
                  "since": _iso(phase.since)},
        "axis": "labelled outcomes, in the order their labels arrived",
        "labelled": (at + 1).tolist(),
        "variants": variants,
        "comparison": comparison,
    }


def compute_timeline(store: ColumnSource, config: RouterConfig,
                     models: Mapping[str, ServedModel], *, alpha: float | None = None,
                     metric: str | None = None, count: int = CHECKPOINTS) -> dict[str, Any]:
    """The timeline of ``config``'s experiment, read from ``store`` (blocking I/O)."""
    settings = resolve_settings(config, models, alpha=alpha, metric=metric)
    phase = current_phase(store.revisions(config.experiment))
    columns = read_columns(store, config, settings, phase)
    return build_timeline(columns, config=config, models=models, phase=phase,
                          settings=settings, count=count)
