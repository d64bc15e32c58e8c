"""The gateway's recommendation (promote, continue or rollback) as a pure function of figures.

Rules, in order of precedence:

1. A guardrail breach gives ``rollback``. With ``guardrails`` (what ``/stats`` passes: the
   always-valid tests of ``router.stats.guardrails``) a guardrail is breached when its test
   rejected; given only the observed figures, when the figure is over its limit once the
   challenger has served ``min_samples`` requests. Guardrails come first because they measure
   the challenger alone, so even a broken split cannot excuse them.
2. A sample ratio mismatch gives ``continue``: the split is not the configured one, so no
   comparison between the variants can be trusted, neither to promote nor to roll back.
3. Fewer than ``min_samples`` labelled outcomes in either variant gives ``continue``.
4. A significantly worse challenger gives ``rollback``.
5. A significantly better challenger, with its guardrails judged and held, gives ``promote``.
6. Otherwise ``continue``: with how many more labelled samples the sequential test expects to
   need, or, once the confidence sequence lies inside ``±min_effect``, that no difference of
   that size remains possible.

Which side is better comes from ``difference_cs`` when it is given (the running intersection of
the confidence sequence, which never changes side once it has left zero), else from the sign of
``difference``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["promote", "continue", "rollback"]


GuardrailState = Literal["held", "breached", "not enough data"]


@dataclass(frozen=True, kw_only=True)
class GuardrailCheck:
    """One guardrail's test (``router.stats.guardrails``), as the decision reads it."""

    name: str  # error_rate | p99_latency_ms
    estimate: float | None  # observed rate (of failures, or of requests over the latency limit)
    bound: float  # always-valid lower confidence bound of that rate
    limit: float  # the rate's limit
    p_value: float
    state: GuardrailState
    requests: int


@dataclass(frozen=True, kw_only=True)
class DecisionInputs:
    """The figures the decision rests on, all computed elsewhere from the outcome log.

    Attributes:
        metric: name of the analysis metric (``accuracy``, ``log_loss``, ``mae``, ``rmse``).
        higher_is_better: True for accuracy; False for losses, where a negative difference
            is an improvement.
        min_samples: labelled outcomes needed per variant before comparing them, and
            challenger requests needed before judging its guardrails.
        labelled_champion, labelled_challenger: labelled outcomes per variant.
        significant: the sequential p-value is below alpha.
        difference: challenger's metric minus champion's; ``None`` when not computable.
        p_value: the sequential p-value, only quoted in the reasons.
        samples_needed_per_variant: labelled samples per variant to detect ``min_effect``;
            ``None`` when unknown.
        srm_mismatch: the sample ratio mismatch test rejected the configured split.
        srm_p_value: that test's p-value, only quoted in the reasons.
        challenger_requests: predictions the challenger made (its shadow ones in shadow mode).
        challenger_error_rate, challenger_p99_ms: the challenger's observed figures, ``None``
            when it has none yet.
        guardrail_error_rate, guardrail_p99_ms: configured limits, ``None`` when not set.
        difference_cs: the running intersection of the difference's confidence sequence;
            when given, it decides the direction of a significant difference.
        min_effect: the smallest difference worth detecting, to say when none is left.
        guardrails: the guardrails' tests; when given they replace the raw comparison of
            ``challenger_error_rate`` and ``challenger_p99_ms`` with their limits.
        paired: shadow mode; the labelled counts are pairs (requests both models answered,
            with feedback), the same for both.
        champion_serves: False when the phase gives the challengers every user (100 %), so
            the champion has no outcome to compare with, however long one waits.
    """

    metric: str
    higher_is_better: bool
    min_samples: int
    labelled_champion: int
    labelled_challenger: int
    significant: bool
    difference: float | None
    p_value: float | None = None
    samples_needed_per_variant: int | None = None
    srm_mismatch: bool = False
    srm_p_value: float | None = None
    challenger_requests: int = 0
    challenger_error_rate: float | None = None
    challenger_p99_ms: float | None = None
    guardrail_error_rate: float | None = None
    guardrail_p99_ms: float | None = None
    difference_cs: tuple[float | None, float | None] | None = None
    min_effect: float | None = None
    guardrails: tuple[GuardrailCheck, ...] | None = None
    paired: bool = False
    champion_serves: bool = True


@dataclass(frozen=True)
class Decision:
    """The recommendation and the sentences that justify it, with their figures."""

    action: Action
    reasons: tuple[str, ...]


def _pct(rate: float) -> str:
    return f"{rate * 100:.2f}%"


def _ms(value: float) -> str:
    # Three significant digits: a reason is read by a person, and 9.46685 ms says no more.
    return f"{value:.3g} ms"


_NAMES = {"error_rate": "error rate", "p99_latency_ms": "share of requests over the p99 limit"}


def _tested_guardrails(inputs: DecisionInputs) -> tuple[list[str], list[str], bool]:
    breaches: list[str] = []
    held: list[str] = []
    judged = True
    for check in inputs.guardrails or ():
        name = _NAMES.get(check.name, check.name)
        seen = "n/a" if check.estimate is None else _pct(check.estimate)
        if check.state == "breached":
            breaches.append(
                f"challenger {name} {seen} is significantly over the guardrail of "
                f"{_pct(check.limit)} (at least {_pct(check.bound)} with confidence; "
                f"p = {check.p_value:.2g}, {check.requests} requests)")
        elif check.state == "held":
            held.append(f"challenger {name} {seen} is not significantly over the "
                        f"{_pct(check.limit)} guardrail")
        else:
            judged = False
    return breaches, held, judged


def _guardrails(inputs: DecisionInputs) -> tuple[list[str], list[str], bool]:
    """``(breaches, held, judged)``: sentences for the limits broken and kept, and whether
    every configured limit could be judged (enough challenger requests, a figure to compare).
    """
    if inputs.guardrails is not None:
        return _tested_guardrails(inputs)
    limits = (
        ("error rate", inputs.challenger_error_rate, inputs.guardrail_error_rate, _pct),
        ("p99 latency", inputs.challenger_p99_ms, inputs.guardrail_p99_ms, _ms),
    )
    enough = inputs.challenger_requests >= inputs.min_samples
    breaches: list[str] = []
    held: list[str] = []
    judged = True
    for name, observed, limit, fmt in limits:
        if limit is None:
            continue
        if not enough or observed is None:
            judged = False
        elif observed > limit:
            breaches.append(
                f"challenger {name} {fmt(observed)} is over the guardrail of {fmt(limit)} "
                f"({inputs.challenger_requests} requests)"
            )
        else:
            held.append(f"challenger {name} {fmt(observed)} is within the {fmt(limit)} guardrail")
    return breaches, held, judged


def _improves(inputs: DecisionInputs) -> bool | None:
    """True if a significant difference favours the challenger, False if the champion, None
    if there is none (plain bools: numpy's would fail an ``is`` check)."""
    if inputs.difference_cs is not None:
        low, high = inputs.difference_cs
        if low is not None and low > 0:
            return bool(inputs.higher_is_better)
        if high is not None and high < 0:
            return not inputs.higher_is_better
        return None
    if not inputs.significant or inputs.difference is None or inputs.difference == 0:
        return None
    return bool((inputs.difference > 0) == inputs.higher_is_better)


def _settled_small(inputs: DecisionInputs) -> bool:
    """The confidence sequence lies inside ``±min_effect``: no effect worth having is left."""
    if inputs.difference_cs is None or not inputs.min_effect:
        return False
    low, high = inputs.difference_cs
    return low is not None and high is not None and -inputs.min_effect < low \
        and high < inputs.min_effect


def _evidence(inputs: DecisionInputs) -> str:
    diff = "n/a" if inputs.difference is None else f"{inputs.difference:+.4f}"
    cs = inputs.difference_cs
    bounds = "" if cs is None or cs[0] is None or cs[1] is None \
        else f", confidence sequence [{cs[0]:+.4f}, {cs[1]:+.4f}]"
    p = "" if inputs.p_value is None else f", sequential p = {inputs.p_value:.4g}"
    return (
        f"{inputs.metric} difference (challenger - champion) {diff}{bounds}{p}; "
        f"{inputs.labelled_champion} champion and {inputs.labelled_challenger} challenger "
        "labelled samples"
    )


def _too_few(inputs: DecisionInputs) -> list[str]:
    """Why there are too few labelled outcomes to compare yet; empty when there are enough."""
    needed = inputs.min_samples
    if not inputs.champion_serves and inputs.labelled_champion < needed:
        return ["the champion serves no traffic in this phase (the challengers have 100 % of "
                "it), so there is nothing to compare the challenger with: promote it (router "
                "promote) or lower its share"]
    if inputs.paired:
        pairs = min(inputs.labelled_champion, inputs.labelled_challenger)
        return [f"{pairs} labelled pairs (requests both models answered, with feedback); "
                f"{needed} needed"] if pairs < needed else []
    return [f"{variant} has {labelled} labelled samples; {needed} needed"
            for variant, labelled in (("champion", inputs.labelled_champion),
                                      ("challenger", inputs.labelled_challenger))
            if labelled < needed]


def decide(inputs: DecisionInputs) -> Decision:
    """Recommend ``promote``, ``continue`` or ``rollback``; see the module docstring for the
    rules and their order."""
    breaches, held, judged = _guardrails(inputs)
    srm = "sample ratio mismatch: the traffic split differs from the configured one" + (
        "" if inputs.srm_p_value is None else f" (p = {inputs.srm_p_value:.2g})"
    )
    if breaches:
        return Decision("rollback", (*breaches, *([srm] if inputs.srm_mismatch else [])))

    if inputs.srm_mismatch:
        return Decision(
            "continue",
            (f"{srm}, so the comparison cannot be trusted; check assignment before deciding",),
        )

    short = _too_few(inputs)
    if short:
        return Decision("continue", tuple(short))

    direction = _improves(inputs)
    if direction is False:
        return Decision(
            "rollback",
            (f"challenger is significantly worse on {inputs.metric}: {_evidence(inputs)}",),
        )
    if direction is True:
        if not judged:
            return Decision(
                "continue",
                (
                    f"challenger is significantly better on {inputs.metric}, but its "
                    f"guardrails cannot be judged yet ({inputs.challenger_requests} requests "
                    f"served; {inputs.min_samples} needed)",
                ),
            )
        return Decision(
            "promote",
            (
                f"challenger is significantly better on {inputs.metric}: {_evidence(inputs)}",
                *(held or ["no guardrail is configured"]),
            ),
        )

    if _settled_small(inputs):
        low, high = inputs.difference_cs or (None, None)
        return Decision("continue", (
            f"no significant difference: {_evidence(inputs)}",
            f"the confidence sequence [{low:+.4f}, {high:+.4f}] excludes differences of "
            f"{inputs.min_effect:g} or more either way: the challenger is not better by the "
            "minimum effect, and stopping here loses nothing worth detecting"))
    labelled = min(inputs.labelled_champion, inputs.labelled_challenger)
    needed = inputs.samples_needed_per_variant
    if needed is None:
        more = "keep collecting labelled samples"
    elif needed > labelled:
        more = (
            f"the sequential test expects about {needed - labelled} more labelled samples "
            f"per variant ({needed} in the smaller one) to detect the minimum effect"
        )
    else:
        more = (
            f"the {needed} labelled samples per variant the sequential test expected to need "
            "for the minimum effect are reached; the difference may still be smaller than it: "
            "keep collecting until the confidence sequence says so"
        )
    return Decision("continue", (f"no significant difference yet: {_evidence(inputs)}", more))
