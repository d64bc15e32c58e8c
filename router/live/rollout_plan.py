"""What a rollout does next, decided from the figures alone: the view of a report it acts on,
and the move (a step, a stop, a promotion) that the controller then carries out.

Pure: no file, no store, no clock.

Several challengers: each one moves on its own decision.

In ``ab`` mode, one move a look, in this order:

1. a challenger whose decision is ``rollback`` (a breached guardrail, significantly worse) is
   stopped, its share set to 0 (with ``auto_rollback``; otherwise the rollout holds);
2. while no challenger has reached the first step, every one is set to it at once;
3. the challenger the experiment's decision promotes is promoted, when it is at the last step
   and ``auto_promote`` is set;
4. the first challenger (in list order) that serves users, is below the last step and has
   ``min_samples`` labelled outcomes, as has the champion, moves to the next step.

A step that would leave the champion no traffic (100 %, or less beside other challengers) is
never moved to: the phase it would start has no champion outcomes, so nothing could be
compared and no decision could promote. The step before it is the last one, and the promotion
makes the rest of the way (:func:`top_step`).

A challenger at 0 % while others serve has been stopped, and stays so. With ``steps`` opening
on ``shadow``, every challenger is judged on mirrored traffic first: a worse one is stopped
there (it leaves the list), and once each one left has ``min_samples`` labelled pairs and its
guardrails judged, the file moves to ``mode: ab`` with each at the first percentage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.config import RouterConfig

if TYPE_CHECKING:
    from router.stats.model import Report

log = logging.getLogger("router.live.rollout")


@dataclass(frozen=True)
class RolloutView:
    """What the controller needs to know of the experiment's current phase."""

    action: str  # the decision: promote | continue | rollback
    reasons: tuple[str, ...]
    labelled: dict[str, int]  # per variant, in the current phase
    figures: dict[str, Any] = field(default_factory=dict)  # recorded with each move
    guardrails_judged: bool = True  # every configured guardrail is held or breached
    # Several challengers: each one's view by variant, and the challenger the summary names.
    arms: dict[str, RolloutView] = field(default_factory=dict)
    challenger: str | None = None


@dataclass(frozen=True)
class Move:
    kind: str  # step | rollback | promote
    reason: str
    percent: float | None = None
    challenger: str | None = None  # several challengers: which one (None: every one)


def view_of_report(report: Report) -> RolloutView:
    """What the controller reads of a report of the current phase: the typed decision and the
    labelled counts it rests on, and the figures to record with a move."""
    if report.arms:
        return arms_view(report)
    variants = report.json.get("variants", {})
    comparison = report.json.get("comparison") or {}
    figures = {key: comparison.get(key) for key in (
        "metric", "difference", "difference_ci95", "difference_cs", "p_value",
        "sequential_p_value")}
    for role, numbers in variants.items():
        figures[f"{role}_metric"] = numbers.get("metric")
        figures[f"{role}_requests"] = numbers.get("requests")
        figures[f"{role}_error_rate"] = numbers.get("error_rate")
    inputs = report.inputs
    labelled = ({"champion": inputs.labelled_champion,
                 "challenger": inputs.labelled_challenger} if inputs is not None
                else {role: int(numbers.get("labelled") or 0)
                      for role, numbers in variants.items()})
    judged = inputs is None or all(check.state != "not enough data"
                                   for check in inputs.guardrails or ())
    return RolloutView(action=report.decision.action, reasons=report.decision.reasons,
                       labelled=labelled, figures=figures, guardrails_judged=judged)


def switch_details(view: RolloutView, challenger: str | None = None) -> dict[str, Any]:
    """The figures a switch is recorded with: the decision, its reasons and the numbers behind
    them, of ``challenger`` when several are compared (the summary's otherwise)."""
    judged = view.arms.get(challenger or "", view)
    return {**judged.figures, "decision": judged.action, "reasons": list(judged.reasons)}


def figures_now(evaluate: Callable[[], RolloutView], challenger: str | None = None
                ) -> dict[str, Any]:
    """:func:`switch_details` of the current phase, for a switch a person makes. Never raises:
    a rollback is what an operator reaches for when things are failing, the statistics'
    store included, so the switch goes ahead and its entry says why it has no figures."""
    try:
        return switch_details(evaluate(), challenger)
    except Exception as exc:
        log.warning("switch recorded without figures: %s", exc)
        return {"figures_unavailable": f"{type(exc).__name__}: {exc}"}


def plan(config: RouterConfig, view: RolloutView) -> Move | None:
    """The next move, or None to hold; pure, so every rule is tested without a server."""
    rollout = config.rollout
    if rollout is None or not config.arms:
        return None
    if config.multi_challenger:
        return plan_arms(config, view)
    if config.mode == "shadow" and rollout.from_shadow:
        return _plan_shadow(config, view)
    if config.mode != "ab":
        return None
    why = "; ".join(view.reasons)
    if view.action == "rollback":
        return Move("rollback", f"automatic rollback: {why}") if rollout.auto_rollback else None
    percent = config.traffic.challenger_percent
    if percent < rollout.steps[0]:
        return Move("step", f"rollout starts at {rollout.steps[0]:g}%", rollout.steps[0])
    needed = config.analysis.min_samples
    short = {v: n for v, n in view.labelled.items() if n < needed}
    if short or len(view.labelled) < 2:
        return None
    if percent >= top_step(rollout.steps):
        if rollout.auto_promote and view.action == "promote":
            return Move("promote", f"automatic promotion at {percent:g}%: {why}")
        return None
    following = next(step for step in rollout.steps if step > percent)
    return Move("step", f"{percent:g}% healthy with {min(view.labelled.values())} labelled per "
                        f"variant (decision {view.action}); moving to {following:g}%", following)


def top_step(steps: tuple[float, ...], others: float = 0.0) -> float:
    """The highest step a challenger is moved to, beside ``others`` (the other challengers'
    shares): a step that leaves the champion no traffic is never moved to, since with no
    champion outcomes in the phase nothing is compared and no decision could ever promote
    there. Such a step is reached by the promotion itself, from the step before it."""
    kept = [step for step in steps if step + others < 100]
    return kept[-1] if kept else steps[0]


def _plan_shadow(config: RouterConfig, view: RolloutView) -> Move | None:
    """The shadow stage: the challenger answers no user yet. A worse challenger (or a breached
    guardrail) is stopped here; one not found worse, with ``min_samples`` labelled pairs and
    its guardrails judged, gets the first percentage of users."""
    rollout = config.rollout
    assert rollout is not None
    why = "; ".join(view.reasons)
    if view.action == "rollback":
        return (Move("rollback", f"automatic rollback in shadow, before any user was served by "
                                 f"the challenger: {why}") if rollout.auto_rollback else None)
    pairs = min(view.labelled.values(), default=0)
    if pairs < config.analysis.min_samples or not view.guardrails_judged:
        return None
    first = rollout.steps[0]
    return Move("step", f"shadow healthy with {pairs} labelled pairs (decision {view.action}); "
                        f"serving {first:g}% of users", first)


# -- several challengers -----------------------------------------------------------------------

_FIGURES = ("metric", "difference", "difference_ci95", "difference_cs", "p_value",
            "adjusted_p_value", "sequential_p_value")


def arms_view(report: Report) -> RolloutView:
    """Each challenger's decision, labelled counts and figures, with the summary's."""
    variants = report.json.get("variants", {})
    comparisons = report.json.get("comparisons") or {}
    arms = {}
    for name, arm in report.arms.items():
        figures: dict[str, Any] = {key: (comparisons.get(name) or {}).get(key)
                                   for key in _FIGURES}
        for role in ("champion", name):
            numbers = variants.get(role) or {}
            for what in ("metric", "requests", "error_rate"):
                figures[f"{'champion' if role == 'champion' else 'challenger'}_{what}"] = \
                    numbers.get(what)
        inputs = arm.inputs
        arms[name] = RolloutView(
            action=arm.decision.action, reasons=arm.decision.reasons,
            labelled={"champion": inputs.labelled_champion, name: inputs.labelled_challenger},
            figures={"challenger": name, **figures},
            guardrails_judged=all(check.state != "not enough data"
                                  for check in inputs.guardrails or ()))
    return RolloutView(action=report.decision.action, reasons=report.decision.reasons,
                       labelled={}, arms=arms, challenger=report.challenger)


def _why(view: RolloutView) -> str:
    return "; ".join(view.reasons)


def plan_arms(config: RouterConfig, view: RolloutView) -> Move | None:
    """The next move with several challengers (module doc), or None to hold."""
    rollout = config.rollout
    assert rollout is not None
    if config.mode == "shadow" and rollout.from_shadow:
        return _plan_arms_shadow(config, view)
    if config.mode != "ab":
        return None
    steps = rollout.steps
    for arm in config.arms:
        judged = view.arms.get(arm.variant)
        if judged is not None and judged.action == "rollback" and arm.percent > 0:
            if not rollout.auto_rollback:
                return None
            return Move("rollback", f"automatic rollback of {arm.variant}: {_why(judged)}",
                        challenger=arm.variant)
    if all(arm.percent < steps[0] for arm in config.arms):
        return Move("step", f"rollout starts at {steps[0]:g}% for each challenger", steps[0])
    chosen = next((arm for arm in config.arms if arm.variant == view.challenger), None)
    if view.action == "promote" and chosen is not None and rollout.auto_promote \
            and chosen.percent >= top_step(steps, _others(config, chosen.variant)):
        return Move("promote", f"automatic promotion of {chosen.variant} at "
                                   f"{chosen.percent:g}%: {_why(view)}",
                        challenger=chosen.variant)
    for arm in config.arms:
        judged = view.arms.get(arm.variant)
        if judged is None or len(judged.labelled) < 2 \
                or not 0 < arm.percent < top_step(steps, _others(config, arm.variant)):
            continue
        labelled = min(judged.labelled.values())
        if labelled < config.analysis.min_samples:
            continue
        following = next(step for step in steps if step > arm.percent)
        return Move("step", f"{arm.variant} at {arm.percent:g}% healthy with {labelled} "
                            f"labelled per variant (decision {judged.action}); moving to "
                            f"{following:g}%", following, challenger=arm.variant)
    return None


def _others(config: RouterConfig, variant: str) -> float:
    """The shares of every challenger but ``variant``."""
    return sum(arm.percent for arm in config.arms if arm.variant != variant)


def _plan_arms_shadow(config: RouterConfig, view: RolloutView) -> Move | None:
    rollout = config.rollout
    assert rollout is not None
    judged = [(arm.variant, view.arms.get(arm.variant)) for arm in config.arms]
    for variant, arm_view in judged:
        if arm_view is not None and arm_view.action == "rollback":
            if not rollout.auto_rollback:
                return None
            return Move("rollback", f"automatic rollback of {variant} in shadow, before any "
                                    f"user was served by it: {_why(arm_view)}",
                        challenger=variant)
    if any(arm_view is None for _, arm_view in judged):
        return None
    pairs = min(min(v.labelled.values(), default=0) for _, v in judged if v is not None)
    if pairs < config.analysis.min_samples or not all(
            v.guardrails_judged for _, v in judged if v is not None):
        return None
    first = rollout.steps[0]
    return Move("step", f"shadow healthy: every challenger has at least {pairs} labelled "
                        f"pairs; serving {first:g}% of users to each", first)
