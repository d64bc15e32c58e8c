"""``GET /stats/timeline``: the report's figures as they moved while the labels came in.

``/stats`` is a snapshot; the dashboard draws how each variant's metric, the difference, its
confidence sequence and the always-valid p-value evolved. The axis is the count of labelled
outcomes in the order their labels reached the store, the order the sequential test itself
follows. Nothing is computed twice: the sequence (estimate, confidence sequence, p-value after
every outcome) is the one ``/stats`` computed (``router.stats.report.assemble``), read at up to
``CHECKPOINTS`` evenly spaced points, and the fixed-horizon figures at a checkpoint are the
report's own functions (``router.stats.comparison``) over the labels until then. So each
checkpoint is the report of the labels so far, and the last one is ``/stats``.

With several challengers each one gets the timeline of its own comparison (``timelines``, by
name): the champion's and that challenger's outcomes, the sequence at ``alpha / k`` as
``/stats`` runs it (``router.stats.arms``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, cast

import numpy as np

from router.config import RouterConfig
from router.outcomes.columns import AnalysisColumns
from router.serving.model import ServedModel
from router.stats.comparison import (
    CONFIDENCE,
    Outcomes,
    cs_on_metric_scale,
    fixed_test,
    metric_interval,
    paired_rows,
    paired_test,
    unit_codes,
)
from router.stats.loader import current_phase, design_of, read_columns, resolve_settings
from router.stats.model import Design, Phase, Running, Settings
from router.stats.paired import mcnemar_test
from router.stats.reader import ColumnSource
from router.stats.report import _iso, _masks, _num, _pair, assemble
from router.stats.requests import with_request_units

__all__ = ["CHECKPOINTS", "build_timeline", "checkpoints", "compute_timeline"]

CHECKPOINTS = 50

Columns = AnalysisColumns


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


def _variant_series(outcomes: Outcomes, columns: Columns, rows: np.ndarray,
                    member: np.ndarray, at: np.ndarray, sticky: bool) -> dict[str, Any]:
    """One variant's labelled count, metric and interval at each checkpoint."""
    labelled, metric, ci95 = [], [], []
    for end in at.tolist():
        mine = rows[: end + 1][member[: end + 1]]
        y = outcomes.y[mine]
        units = unit_codes(columns, mine) if sticky else None
        labelled.append(int(y.size))
        metric.append(_num(outcomes.value(y)))
        ci95.append(_pair(metric_interval(outcomes, y, units)))
    return {"labelled": labelled, "metric": metric, "ci95": ci95}


def _comparison_point(outcomes: Outcomes, running: Running, at: int, y_a: np.ndarray,
                      y_b: np.ndarray, test: tuple[float | None, Any]) -> dict[str, Any]:
    metric_a, metric_b = outcomes.value(y_a), outcomes.value(y_b)
    means = (float(y_a.mean()), float(y_b.mean())) if y_a.size and y_b.size else None
    reached = 0 <= at < running.difference.p_value.size  # no element yet: no evidence
    return {"difference": None if metric_a is None or metric_b is None
            else _num(metric_b - metric_a),
            "difference_ci95": _pair(test[1]),
            "difference_cs": cs_on_metric_scale(running, at, outcomes, means) if reached
            else None,
            "sequential_p_value": float(running.difference.p_value[at]) if reached else 1.0}


def _series(points: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = ("difference", "difference_ci95", "difference_cs", "sequential_p_value")
    return {key: [point[key] for point in points] for key in keys}


# -- the timeline ------------------------------------------------------------------------------


def build_timeline(columns: Columns, *, design: Design, phase: Phase, settings: Settings,
                   count: int = CHECKPOINTS, now: float | None = None) -> dict[str, Any]:
    """The timeline ``/stats/timeline`` answers, JSON-native throughout.

    Args:
        columns: the analysis columns of the phase (see ``router.outcomes.columns``).
        design, phase, settings: as for ``router.stats.report.build_report``.
        count: the most checkpoints to give.
        now: the payload's time (unix seconds), the current time by default.
    """
    # The timeline draws no segment: their tests would be computed for nothing (and a
    # challenger's rows alone, below, keep no segment column).
    design = dataclasses.replace(design, segments=())
    if design.mode == "ab":  # as the report groups them: a row's unit is its user or request
        columns = with_request_units(columns)
    if design.arms and design.mode != "single":
        return _arms_timeline(columns, design=design, phase=phase, settings=settings,
                              count=count, now=now)
    report = assemble(columns, design=design, phase=phase, settings=settings, now=now)
    mode = report.json["mode"]
    masks = _masks(columns)
    outcomes = Outcomes(columns, settings.metric)
    roles = ("champion", "challenger") if mode != "single" else ("champion",)
    in_role = {role: masks[role] & outcomes.scored for role in roles}
    union = np.zeros(outcomes.y.size, dtype=bool)
    for mask in in_role.values():
        union |= mask
    found = np.flatnonzero(union)
    rows = found[np.argsort(columns["feedback_id"][found], kind="stable")]
    keys = columns["feedback_id"][rows]
    at = checkpoints(keys, count)
    sticky = report.clustered
    variants = {role: _variant_series(outcomes, columns, rows, in_role[role][rows], at, sticky)
                for role in roles}

    comparison: dict[str, Any] | None = None
    running = report.running
    if mode == "ab" and running is not None:
        is_b = in_role["challenger"][rows]
        points = []
        for end in at.tolist():
            prefix, b = rows[: end + 1], is_b[: end + 1]
            y_a, y_b = outcomes.y[prefix[~b]], outcomes.y[prefix[b]]
            units = ((unit_codes(columns, prefix[~b]), unit_codes(columns, prefix[b]))
                     if sticky else (None, None))
            points.append(_comparison_point(outcomes, running, end, y_a, y_b,
                                            fixed_test(outcomes, y_a, y_b, *units)))
        comparison = {"tau2": report.json["comparison"]["tau2"], "pairs": None,
                      **_series(points)}
    elif mode == "shadow" and running is not None:
        a, b = paired_rows(columns, in_role["champion"], in_role["challenger"])
        # Pairs come in arrival order: those labelled by a checkpoint are a prefix.
        pairs = np.searchsorted(columns["feedback_id"][a], keys[at], side="right")
        points = []
        for k in pairs.tolist():
            y_a, y_b = outcomes.y[a[:k]], outcomes.y[b[:k]]
            mcnemar = None
            if settings.metric == "accuracy":
                only_a = int(((y_a == 1) & (y_b == 0)).sum())
                only_b = int(((y_a == 0) & (y_b == 1)).sum())
                mcnemar = mcnemar_test(only_a, only_b)
            points.append(_comparison_point(outcomes, running, k - 1, y_a, y_b,
                                            paired_test(outcomes, y_a, y_b, mcnemar)))
        comparison = {"tau2": report.json["comparison"]["tau2"],
                      "pairs": pairs.astype(int).tolist(), **_series(points)}

    generated = time.time() if now is None else now
    return {
        "experiment": design.experiment,
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


def _arms_timeline(columns: Columns, *, design: Design, phase: Phase, settings: Settings,
                   count: int, now: float | None) -> dict[str, Any]:
    """Several challengers: each one's comparison with the champion as its own timeline."""
    arm, rows = columns["arm"], columns["ts"].size
    split = dataclasses.replace(settings, alpha=settings.alpha / len(design.arms))
    timelines = {}
    for place, name in enumerate(design.arms, 1):
        keep = (arm == 0) | (arm == place)
        # The champion against this challenger alone: its rows as the challenger's.
        pair = cast(AnalysisColumns, {key: values[keep] if isinstance(values, np.ndarray)
                                      and values.ndim == 1 and values.size == rows else values
                                      for key, values in columns.items()})
        pair["challenger"] = pair["arm"] == place
        alone = dataclasses.replace(
            design, arms=(), arm_percents=(), challenger_percent=design.arm_percents[place - 1],
            models={"champion": design.models["champion"], "challenger": design.models[name]})
        timeline = build_timeline(pair, design=alone, phase=phase, settings=split, count=count,
                                  now=now)
        variants = timeline["variants"]
        timelines[name] = {"labelled": timeline["labelled"], "alpha": split.alpha,
                           "variants": {"champion": variants["champion"],
                                        name: variants["challenger"]},
                           "comparison": timeline["comparison"]}
    generated = time.time() if now is None else now
    return {
        "experiment": design.experiment, "mode": design.mode, "metric": settings.metric,
        "higher_is_better": settings.metric == "accuracy", "alpha": settings.alpha,
        "confidence": CONFIDENCE, "generated_at": _iso(generated),
        "phase": {"revisions": None if phase.revisions is None else list(phase.revisions),
                  "since": _iso(phase.since)},
        "axis": "labelled outcomes of the champion and the challenger, in the order their "
                "labels arrived",
        "challengers": list(design.arms),
        "timelines": timelines,
    }


def compute_timeline(store: ColumnSource, config: RouterConfig,
                     models: Mapping[str, ServedModel], *, alpha: float | None = None,
                     metric: str | None = None, count: int = CHECKPOINTS) -> dict[str, Any]:
    """The timeline of ``config``'s experiment, read from ``store`` (blocking I/O)."""
    settings = resolve_settings(config, models, alpha=alpha, metric=metric)
    phase = current_phase(store.revisions(config.experiment))
    columns = read_columns(store, config, settings, phase)
    return build_timeline(columns, design=design_of(config, models), phase=phase,
                          settings=settings, count=count)
