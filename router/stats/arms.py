"""``/stats`` with several challengers (``challengers:``): each compared with the champion.

The report keeps the one-challenger report's pieces (``router.stats.report``) and lays them
out per challenger:

- ``variants``: the champion, then each challenger under its variant name;
- ``comparisons``: each challenger against the champion, the fields of the one-challenger
  ``comparison``, plus ``adjusted_p_value``: the fixed-horizon p-values corrected together by
  Holm's step-down method, so that they control the family-wise error rate across challengers;
- the sequential test of each comparison (and so ``significant``, ``difference_cs`` and the
  decision) runs at ``alpha / k`` for ``k`` challengers (Bonferroni: the confidence sequences
  hold together with probability ``1 - alpha``); the guardrail tests too, since each can stop a
  challenger;
- ``srm``: one chi-square test of the units of all ``k + 1`` arms against their shares;
- ``guardrails`` and ``decisions``: per challenger, each decided as the one-challenger
  decision would (``router.stats.decision``) on its own figures and the shared SRM check;
- ``decision``: the summary, naming the challenger it acts on. ``promote`` when one or more
  challengers would be promoted, the best of them (the largest improvement on the metric);
  else ``rollback`` when any challenger should be stopped (naming the first, with every
  reason); else ``continue``;
- ``segments``: per segment key and value, every variant's figures and each challenger's
  comparison under ``comparisons`` (``router.stats.segments``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from router.outcomes.columns import AnalysisColumns
from router.stats.comparison import Outcomes, independent, paired, repeats_units
from router.stats.decision import Decision, DecisionInputs, decide
from router.stats.holm import holm
from router.stats.model import ArmReport, Design, Phase, Report, Settings, champion_serves
from router.stats.report import _guardrails, _guardrails_json, _head, _units, _variant
from router.stats.requests import request_starts, with_request_units
from router.stats.segments import segment_report, segment_warnings
from router.stats.srm import SRM_ALPHA, srm_test
from router.stats.units import UnitIndex

__all__ = ["arm_masks", "assemble_arms", "holm", "summarise"]

Columns = AnalysisColumns
CHAMPION = "champion"


def arm_masks(columns: Columns, arms: Sequence[str]) -> dict[str, np.ndarray]:
    """The rows of each variant that the statistics count: the champion's own answers (no
    fallback, no forced request), and each challenger's rows but forced ones."""
    arm, forced = columns["arm"], columns["forced"]
    masks = {CHAMPION: (arm == 0) & ~columns["fallback"] & ~columns["shadow"] & ~forced}
    for place, name in enumerate(arms, 1):
        masks[name] = (arm == place) & ~forced
    return masks


def _srm(columns: Columns, masks: Mapping[str, np.ndarray], phase: Phase, design: Design,
         index: UnitIndex | None = None) -> dict[str, Any]:
    """Observed units of every arm at once against the shares each revision asked for."""
    names = [CHAMPION, *design.arms]
    assigned = ~columns["shadow"] & ~columns["fallback"] & ~columns["forced"]
    revision = columns["revision"]
    revisions = phase.revisions if phase.revisions is not None \
        else tuple(int(r) for r in np.flatnonzero(np.bincount(revision)))
    observed, expected = np.zeros(len(names)), np.zeros(len(names))
    per_revision, units_seen = [], set()
    seen = None if index is None else index.unseen()
    for r in revisions:
        shares = phase.arm_percents.get(r, design.arm_percents)
        sticky = phase.sticky.get(r, design.sticky)
        rows = assigned & (revision == r)
        if sticky and index is not None and seen is not None:
            # A user who comes back in a later revision of the phase is still one user.
            rows = index.first_visits(rows, seen)
        counts = [_units(columns, rows & masks[name], sticky, index) for name in names]
        if sum(counts) == 0 or len(shares) != len(design.arms):
            continue
        percents = [100.0 - sum(shares), *shares]
        units_seen.add("users" if sticky else "requests")
        observed += counts
        expected += np.array(percents) * sum(counts) / 100.0
        per_revision.append({"revision": int(r),
                             "expected_percent": dict(zip(names, percents, strict=True)),
                             "units": dict(zip(names, counts, strict=True)),
                             "unit": "users" if sticky else "requests"})
    unit = " and ".join(sorted(units_seen)) or ("users" if design.sticky else "requests")
    total = float(observed.sum())
    if total == 0:
        percents = [100.0 - sum(design.arm_percents), *design.arm_percents]
        return {"expected_percent": dict(zip(names, percents, strict=True)),
                "observed_percent": None, "p_value": 1.0, "mismatch": False, "unit": unit,
                "revisions": []}
    expected_percent = 100.0 * expected / total
    p_value = srm_test([int(n) for n in observed], expected_percent.tolist())
    return {"expected_percent": {n: round(float(e), 6) for n, e in zip(names, expected_percent,
                                                                         strict=True)},
            "observed_percent": {n: 100.0 * float(o) / total for n, o in zip(names, observed,
                                                                              strict=True)},
            "p_value": p_value, "mismatch": p_value < SRM_ALPHA, "unit": unit,
            "revisions": per_revision}


def _better(inputs: DecisionInputs) -> float:
    """How much a challenger improves on the champion, positive when it does."""
    difference = inputs.difference or 0.0
    return difference if inputs.higher_is_better else -difference


def summarise(arms: Mapping[str, ArmReport]) -> tuple[Decision, str | None]:
    """The experiment's decision from each challenger's, and the challenger it acts on."""
    promoted = [name for name, arm in arms.items() if arm.decision.action == "promote"]
    if promoted:
        best = max(promoted, key=lambda name: _better(arms[name].inputs))
        reasons = [f"promote {best}: {arms[best].decision.reasons[0]}"]
        for other in (name for name in promoted if name != best):
            reasons.append(
                f"{other} is significantly better too, by {_change(arms[other].inputs)} "
                f"against {best}'s {_change(arms[best].inputs)}: {best} improves on the "
                "champion the most")
        return Decision("promote", (*reasons, *arms[best].decision.reasons[1:])), best
    stopped = [name for name, arm in arms.items() if arm.decision.action == "rollback"]
    if stopped:
        return Decision("rollback", tuple(
            f"roll back {name}: {reason}" for name in stopped
            for reason in arms[name].decision.reasons)), stopped[0]
    return Decision("continue", tuple(f"{name}: {reason}" for name, arm in arms.items()
                                      for reason in arm.decision.reasons)), None


def _change(inputs: DecisionInputs) -> str:
    difference = "n/a" if inputs.difference is None else f"{inputs.difference:+.4f}"
    return f"{difference} {inputs.metric}"


def _inputs(comparison: dict[str, Any], labelled: tuple[int, int], settings: Settings,
            design: Design, phase: Phase, srm: dict[str, Any] | None, requests: int,
            checks: Mapping[str, Any]) -> DecisionInputs:
    cs = comparison["difference_cs"]
    return DecisionInputs(
        metric=settings.metric, higher_is_better=settings.metric == "accuracy",
        min_samples=design.min_samples, labelled_champion=labelled[0],
        labelled_challenger=labelled[1], significant=comparison["significant"],
        difference=comparison["difference"], p_value=comparison["sequential_p_value"],
        samples_needed_per_variant=comparison["samples_needed_per_variant"],
        srm_mismatch=bool(srm and srm["mismatch"]), srm_p_value=srm["p_value"] if srm else None,
        challenger_requests=requests, difference_cs=None if cs is None else (cs[0], cs[1]),
        min_effect=settings.min_effect, guardrails=tuple(checks.values()),
        paired=design.mode == "shadow", champion_serves=champion_serves(design, phase))


def assemble_arms(columns: Columns, *, design: Design, phase: Phase, settings: Settings,
                  sections: Mapping[str, Any] | None = None,
                  config_revision: int | None = None,
                  shadow_calls: Mapping[str, Any] | None = None,
                  now: float | None = None) -> Report:
    """The report of an ``ab`` or ``shadow`` experiment with several challengers (module doc),
    with each challenger's decision and sequence beside the JSON."""
    mode, arms = design.mode, design.arms
    masks = arm_masks(columns, arms)
    outcomes = Outcomes(columns, settings.metric)
    by_user = design.sticky and mode == "ab"
    starts = request_starts(columns)
    if mode == "ab":  # a row's unit is its user, or without one its request
        columns = with_request_units(columns, starts)
    # Every grouping by unit below reads these codes: one sort of the units for all of them.
    index = UnitIndex.of(columns) if mode == "ab" else None
    clustered = mode == "ab" and repeats_units(columns, np.flatnonzero(outcomes.scored), index)
    unit = ("user" if by_user else "request") if clustered else None
    variants = {role: _variant(columns, masks[role], outcomes, design.models[role],
                               shadow=mode == "shadow" and role != CHAMPION,
                               classes=settings.classes, sticky=by_user, clustered=clustered,
                               starts=starts, index=index)
                for role in (CHAMPION, *arms)}
    for place, role in enumerate((CHAMPION, *arms)):
        variants[role]["forced"] = int((columns["forced"] & (columns["arm"] == place)).sum())
    srm = _srm(columns, masks, phase, design, index) if mode == "ab" else None
    # Each challenger's sequential test and guardrails at alpha / k (module doc).
    split = dataclasses.replace(settings, alpha=settings.alpha / len(arms))
    in_a = masks[CHAMPION] & outcomes.scored
    comparisons: dict[str, dict[str, Any]] = {}
    guardrails: dict[str, dict[str, Any]] = {}
    reports: dict[str, ArmReport] = {}
    for role in arms:
        rows = masks[role]
        in_b = rows & outcomes.scored
        if mode == "ab":
            variants[role]["fallbacks"] = int((rows & columns["error"] & ~columns["shadow"]
                                               ).sum())
            comparison, running = independent(columns, in_a, in_b, outcomes, split, unit,
                                              index)
        else:
            if shadow_calls is not None and role in shadow_calls:
                variants[role]["shadow_calls"] = dict(shadow_calls[role])
            comparison, running = paired(columns, in_a, in_b, outcomes, split)
        labelled = comparison.pop("labelled")
        challenger_rows = np.flatnonzero(rows & starts)
        checks = _guardrails(columns, challenger_rows, design, split.alpha)
        guardrails[role] = _guardrails_json(checks, design,
                                            columns["latency_ms"][challenger_rows])
        inputs = _inputs(comparison, labelled, settings, design, phase, srm,
                         variants[role]["requests"], checks)
        reports[role] = ArmReport(decide(inputs), inputs, running)
        comparisons[role] = comparison
    for role, adjusted in zip(arms, holm([comparisons[r]["p_value"] for r in arms]),
                              strict=True):
        comparisons[role]["adjusted_p_value"] = adjusted
    outcome, chosen = summarise(reports)
    segments = segment_report(columns, masks, outcomes, mode=mode, keys=design.segments,
                              clustered=clustered, challengers=arms, index=index)
    warnings = segment_warnings(segments, settings.metric, settings.alpha)
    if warnings:  # the action stays the whole experiment's
        outcome = Decision(outcome.action, (*outcome.reasons, *warnings))

    report = {
        **_head(design, mode, config_revision, settings, by_user, phase, now,
                 "the comparisons ignore"),
        "challengers": list(arms),
        "variants": variants,
        "comparisons": comparisons,
        "multiple_comparisons": {
            "challengers": len(arms), "alpha": settings.alpha,
            "sequential_alpha": split.alpha,
            "adjusted_p_value": "Holm's step-down correction of the fixed-horizon p-values"},
        "srm": srm,
        "guardrails": guardrails,
        **(sections or {}),
        "segments": segments,
        "decisions": {role: {"action": arm.decision.action, "reasons": list(arm.decision.reasons)}
                      for role, arm in reports.items()},
        "decision": {"action": outcome.action, "challenger": chosen,
                     "reasons": list(outcome.reasons)},
        "unknown_feedback_ids": int(columns["unknown_feedback_ids"]),
    }
    return Report(report, outcome, None, None, clustered, arms=reports, challenger=chosen)
