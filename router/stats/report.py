"""The ``/stats`` report as a pure function of the analysis columns of the current phase.

What is tested, and how, is the comparison's business (``router.stats.comparison``); here the
report is put together: per variant, the requests, units, errors, latencies and the metric with
its 95 % interval; the comparison; the sample ratio mismatch check; the guardrails
(``router.stats.guardrails``) and the decision (``router.stats.decision``).

Rows answered by the champion for a failed challenger (``fallback``) are left out of the
champion's group; the failure is the challenger's error. A row is *labelled* when it has a
prediction and the label its metric needs. With a sticky key the analysis unit is the user
(``analysis_unit``): the unit of assignment.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from router.outcomes.columns import AnalysisColumns
from router.stats.comparison import (
    Outcomes,
    independent,
    metric_interval,
    paired,
    repeats_units,
    units_of,
)
from router.stats.decision import Decision, DecisionInputs, GuardrailCheck, decide
from router.stats.guardrails import guardrail_test
from router.stats.model import Design, Phase, Report, Running, Settings, champion_serves
from router.stats.requests import (
    count_distinct,
    distinct_requests,
    request_starts,
    with_request_units,
)
from router.stats.segments import segment_report, segment_warnings
from router.stats.srm import SRM_ALPHA, srm_test
from router.stats.units import UnitIndex

__all__ = ["assemble", "build_report"]

Columns = AnalysisColumns


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _num(value: float | None) -> float | None:
    """A JSON-native float, ``None`` for a missing or non-finite one."""
    if value is None or not np.isfinite(value):
        return None
    return float(value)


def _pair(values: tuple[float, float] | None) -> list[float | None] | None:
    return None if values is None else [_num(values[0]), _num(values[1])]


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


def _variant(columns: Columns, rows: np.ndarray, outcomes: Outcomes, model: tuple[str, str | None],
             shadow: bool, classes: tuple[str, ...] | None, sticky: bool, clustered: bool,
             starts: np.ndarray, index: UnitIndex | None = None) -> dict[str, Any]:
    requests = int(rows.sum())
    errors = int((rows & columns["error"]).sum())
    latency = columns["latency_ms"][rows & starts]  # a request's latency once (``starts``)
    latency = latency[np.isfinite(latency)]  # an exported log may have none
    percentiles = (np.percentile(latency, [50, 95, 99]).tolist() if latency.size
                   else [None, None, None])
    scored = np.flatnonzero(rows & outcomes.scored)
    y = outcomes.y[scored]
    units = units_of(columns, scored, index) if clustered else None
    return {
        "model": model[0],
        "version": model[1],
        "requests": requests,
        "units": _units(columns, rows, sticky, index),
        "shadow": shadow,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "latency_ms": dict(zip(("p50", "p95", "p99"), percentiles, strict=True)),
        "labelled": int(y.size),
        "metric": _num(outcomes.value(y)),
        "metric_ci95": _pair(metric_interval(outcomes, y, units)),
        "prediction_distribution": _distribution(columns, rows & ~columns["error"], classes),
    }


# -- sample ratio mismatch ---------------------------------------------------------------------


def _units(columns: Columns, rows: np.ndarray, sticky: bool, index: UnitIndex | None = None
           ) -> int:
    """Assignment units among ``rows``: distinct unit ids with a sticky key, else requests
    (``router.stats.requests``: a batch goes to one variant as a whole, and a model call
    answers many requests). A request without a unit id, under a sticky key, was assigned at
    random like one without a key. ``index``, the columns' units coded, counts the ids without
    a sort.
    """
    keys = columns.get("unit_key")
    if not sticky or keys is None:
        return distinct_requests(columns, rows)
    if index is not None:
        return index.users(rows) + distinct_requests(columns, rows & ~index.has_id)
    has_id = rows & (keys != 0)
    return count_distinct(keys[has_id]) + distinct_requests(columns, rows & ~has_id)


def _srm(columns: Columns, masks: dict[str, np.ndarray], phase: Phase, design: Design,
         index: UnitIndex | None = None) -> dict[str, Any]:
    """Observed units per variant against the shares each revision of the phase asked for."""
    assigned = ~columns["shadow"] & ~columns["fallback"] & ~columns["forced"]
    revision = columns["revision"]
    revisions = phase.revisions if phase.revisions is not None \
        else tuple(int(r) for r in np.flatnonzero(np.bincount(revision)))
    per_revision = []
    observed = np.zeros(2)
    expected_challenger = 0.0
    sticky_seen: set[bool] = set()
    seen = None if index is None else index.unseen()
    for r in revisions:
        share = phase.challenger_percent.get(r, design.challenger_percent)
        sticky = phase.sticky.get(r, design.sticky)
        rows = assigned & (revision == r)
        if sticky and index is not None and seen is not None:
            # A user who comes back in a later revision of the phase is still one user.
            rows = index.first_visits(rows, seen)
        counts = [_units(columns, rows & masks[v], sticky, index)
                  for v in ("champion", "challenger")]
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
        "users" if design.sticky else "requests")
    if total == 0:
        return {"expected_percent": design.challenger_percent, "observed_percent": None,
                "p_value": 1.0, "mismatch": False, "unit": unit, "revisions": []}
    expected_percent = 100.0 * expected_challenger / total
    p_value = srm_test([int(observed[0]), int(observed[1])],
                       [100.0 - expected_percent, expected_percent])
    return {"expected_percent": round(expected_percent, 6),
            "observed_percent": 100.0 * observed[1] / total,
            "p_value": p_value, "mismatch": p_value < SRM_ALPHA, "unit": unit,
            "revisions": per_revision}


# -- guardrails --------------------------------------------------------------------------------


def _guardrails(columns: Columns, rows: np.ndarray, design: Design, alpha: float
                ) -> dict[str, GuardrailCheck]:
    """Each configured guardrail tested on the challenger's requests in logged order, ``rows``
    the first row of each (:func:`router.stats.requests.request_starts`).

    The error rate counts failed requests; the latency guardrail asks whether more than 1 % of
    the requests were slower than ``p99_latency_ms``. The guardrails share ``alpha`` equally,
    so that together they raise a false alarm at most that often.
    """
    limits: list[tuple[str, np.ndarray, float]] = []
    if design.error_rate_limit is not None:
        limits.append(("error_rate", columns["error"][rows], design.error_rate_limit))
    if design.p99_latency_ms is not None:
        limits.append(("p99_latency_ms", columns["latency_ms"][rows] > design.p99_latency_ms,
                       0.01))
    level = alpha / max(len(limits), 1)
    checks = {}
    for name, bad, limit in limits:
        result = guardrail_test(bad, limit, level, design.min_samples)
        checks[name] = GuardrailCheck(name=name, estimate=result.estimate, bound=result.bound,
                                      limit=limit, p_value=result.p_value, state=result.state,
                                      requests=int(bad.size))
    return checks


def _guardrails_json(checks: Mapping[str, GuardrailCheck], design: Design,
                     latency: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, check in checks.items():
        entry = {"estimate": check.estimate, "bound": check.bound, "limit": check.limit,
                 "p_value": check.p_value, "state": check.state, "requests": check.requests}
        if name == "p99_latency_ms":
            entry = {"observed_p99_ms": float(np.percentile(latency, 99)) if latency.size
                     else None, "limit_ms": design.p99_latency_ms,
                     "share_slower": entry.pop("estimate"), **entry}
        out[name] = entry
    return out


# -- the report --------------------------------------------------------------------------------


def _head(design: Design, mode: str, config_revision: int | None, settings: Settings,
          by_user: bool, phase: Phase, now: float | None,
          compared: str = "the comparison ignores") -> dict[str, Any]:
    """The keys every report opens with: what, when, and which outcomes were analysed."""
    return {
        "experiment": design.experiment,
        "mode": mode,
        "config_revision": config_revision,
        "metric": settings.metric,
        "analysis_unit": "user" if by_user else "request",
        "generated_at": _iso(time.time() if now is None else now),
        "phase": {"revisions": None if phase.revisions is None else list(phase.revisions),
                  "since": _iso(phase.since),
                  "analysed": f"current phase only: {compared} outcomes logged under an "
                              "earlier split"},
    }


def build_report(columns: Columns, *, design: Design, phase: Phase, settings: Settings,
                 sections: Mapping[str, Any] | None = None,
                 config_revision: int | None = None,
                 shadow_calls: Mapping[str, int] | None = None,
                 now: float | None = None) -> dict[str, Any]:
    """The report ``/stats`` answers and ``router stats`` prints, JSON-native throughout.

    Args:
        columns: the analysis columns of the phase (see ``router.outcomes.columns``).
        design: the experiment (mode, models, split, guardrails, min_samples).
        phase: the revisions analysed; settings: metric, alpha and min_effect in force.
        sections: the blocks that need the models (``drift``, ``rolling``, ``outputs``), in
            the order they are shown; the caller computes them.
        config_revision: the revision the gateway serves, reported as is.
        shadow_calls: the shadow mirror's counters, shown under the challenger.
        now: the report's time (unix seconds), the current time by default.
    """
    return assemble(columns, design=design, phase=phase, settings=settings, sections=sections,
                    config_revision=config_revision, shadow_calls=shadow_calls, now=now).json


def assemble(columns: Columns, *, design: Design, phase: Phase, settings: Settings,
             sections: Mapping[str, Any] | None = None, config_revision: int | None = None,
             shadow_calls: Mapping[str, int] | None = None, now: float | None = None) -> Report:
    """:func:`build_report` with the typed decision and the running sequence beside the JSON
    (the rollout acts on the former, the timeline draws the latter)."""
    mode = design.mode if "challenger" in design.models else "single"
    masks = _masks(columns)
    outcomes = Outcomes(columns, settings.metric)
    roles = ("champion", "challenger") if mode != "single" else ("champion",)
    by_user = design.sticky and mode == "ab"
    starts = request_starts(columns)
    if mode == "ab":  # a row's unit is its user, or without one its request
        columns = with_request_units(columns, starts)
    # Every grouping by unit below reads these codes: one sort of the units for all of them.
    index = UnitIndex.of(columns) if mode == "ab" else None
    # The units change the formulas only once a user (or a batch request) has several outcomes.
    clustered = mode == "ab" and repeats_units(columns, np.flatnonzero(outcomes.scored), index)
    unit = ("user" if by_user else "request") if clustered else None
    variants = {
        role: _variant(columns, masks[role], outcomes, design.models[role],
                       shadow=mode == "shadow" and role == "challenger",
                       classes=settings.classes, sticky=by_user, clustered=clustered,
                       starts=starts, index=index)
        for role in roles
    }
    for role in roles:  # served on request, counted apart from the experiment's requests
        variants[role]["forced"] = int(
            (columns["forced"] & (columns["challenger"] == (role == "challenger"))).sum())
    comparison: dict[str, Any] | None = None
    running: Running | None = None
    guardrails: dict[str, Any] | None = None
    inputs: DecisionInputs | None = None
    in_a = masks["champion"] & outcomes.scored
    in_b = masks["challenger"] & outcomes.scored
    if mode == "ab":
        variants["challenger"]["fallbacks"] = int((columns["fallback"] & ~columns["shadow"]).sum())
        comparison, running = independent(columns, in_a, in_b, outcomes, settings, unit,
                                          index)
        comparison["srm"] = _srm(columns, masks, phase, design, index)
    elif mode == "shadow":
        if shadow_calls is not None:
            variants["challenger"]["shadow_calls"] = dict(shadow_calls)
        comparison, running = paired(columns, in_a, in_b, outcomes, settings)
        comparison["srm"] = None

    if comparison is None:
        outcome = Decision("continue", ("mode single: there is no challenger to compare",))
    else:
        challenger_rows = np.flatnonzero(masks["challenger"] & starts)
        checks = _guardrails(columns, challenger_rows, design, settings.alpha)
        guardrails = _guardrails_json(checks, design, columns["latency_ms"][challenger_rows])
        labelled = comparison.pop("labelled")
        srm = comparison["srm"]
        cs = comparison["difference_cs"]
        inputs = DecisionInputs(
            metric=settings.metric,
            higher_is_better=settings.metric == "accuracy",
            min_samples=design.min_samples,
            labelled_champion=labelled[0],
            labelled_challenger=labelled[1],
            significant=comparison["significant"],
            difference=comparison["difference"],
            p_value=comparison["sequential_p_value"],
            samples_needed_per_variant=comparison["samples_needed_per_variant"],
            srm_mismatch=bool(srm and srm["mismatch"]),
            srm_p_value=srm["p_value"] if srm else None,
            challenger_requests=variants["challenger"]["requests"],
            difference_cs=None if cs is None else (cs[0], cs[1]),
            min_effect=settings.min_effect,
            guardrails=tuple(checks.values()),
            paired=mode == "shadow",
            champion_serves=champion_serves(design, phase),
        )
        outcome = decide(inputs)
    segments = segment_report(columns, masks, outcomes, mode=mode, keys=design.segments,
                              clustered=clustered, index=index)
    warnings = segment_warnings(segments, settings.metric, settings.alpha)
    if warnings:  # the action stays the whole experiment's
        outcome = Decision(outcome.action, (*outcome.reasons, *warnings))

    report = {
        **_head(design, mode, config_revision, settings, by_user, phase, now),
        "variants": variants,
        "comparison": comparison,
        "guardrails": guardrails,
        **(sections or {}),
        "segments": segments,
        "decision": {"action": outcome.action, "reasons": list(outcome.reasons)},
        "unknown_feedback_ids": int(columns["unknown_feedback_ids"]),
    }
    return Report(report, outcome, inputs, running, clustered)
