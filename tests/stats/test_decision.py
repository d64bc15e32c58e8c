"""The recommendation: each rule of decide, their order of precedence, and its A/A behaviour."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from router.stats import (
    Decision,
    DecisionInputs,
    GuardrailCheck,
    always_valid_p_values,
    decide,
    samples_per_arm,
)

Counts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

# A healthy, clearly better challenger: every rule lets it through to "promote".
BASE = DecisionInputs(
    metric="accuracy",
    higher_is_better=True,
    min_samples=200,
    labelled_champion=5000,
    labelled_challenger=1200,
    significant=True,
    difference=0.02,
    p_value=0.004,
    samples_needed_per_variant=4100,
    srm_mismatch=False,
    srm_p_value=0.41,
    challenger_requests=1500,
    challenger_error_rate=0.002,
    challenger_p99_ms=12.0,
    guardrail_error_rate=0.01,
    guardrail_p99_ms=50.0,
)

# (case, changes to BASE, expected action, a phrase one reason must contain)
TABLE: list[tuple[str, dict[str, Any], str, str]] = [
    ("all clear", {}, "promote", "significantly better on accuracy"),
    ("promote quotes the guardrails", {}, "promote", "p99 latency 12 ms is within the 50 ms"),
    (
        "lower loss is better",
        {"metric": "mae", "higher_is_better": False, "difference": -0.3},
        "promote",
        "significantly better on mae",
    ),
    (
        "no guardrail set",
        {"guardrail_error_rate": None, "guardrail_p99_ms": None},
        "promote",
        "no guardrail is configured",
    ),
    (
        "error rate over its limit",
        {"challenger_error_rate": 0.03},
        "rollback",
        "error rate 3.00% is over the guardrail of 1.00%",
    ),
    (
        "p99 over its limit",
        {"challenger_p99_ms": 80.0},
        "rollback",
        "p99 latency 80 ms is over the guardrail of 50 ms",
    ),
    (
        "at the limit is within it",
        {"challenger_error_rate": 0.01, "challenger_p99_ms": 50.0},
        "promote",
        "error rate 1.00% is within",
    ),
    (
        "breach beats SRM",
        {"challenger_error_rate": 0.5, "srm_mismatch": True},
        "rollback",
        "over the guardrail",
    ),
    (
        "breach beats too few labels",
        {"challenger_p99_ms": 900.0, "labelled_challenger": 3},
        "rollback",
        "p99 latency 900 ms",
    ),
    (
        "breach ignored on too few requests",
        {"challenger_error_rate": 0.5, "challenger_requests": 150, "labelled_challenger": 150},
        "continue",
        "challenger has 150 labelled samples; 200 needed",
    ),
    (
        "SRM holds an improvement",
        {"srm_mismatch": True, "srm_p_value": 1e-6},
        "continue",
        "sample ratio mismatch",
    ),
    (
        "SRM holds a worse challenger",
        {"srm_mismatch": True, "difference": -0.05},
        "continue",
        "cannot be trusted",
    ),
    (
        "too few challenger labels",
        {"labelled_challenger": 150},
        "continue",
        "challenger has 150 labelled samples; 200 needed",
    ),
    (
        "too few champion labels",
        {"labelled_champion": 20},
        "continue",
        "champion has 20 labelled samples; 200 needed",
    ),
    (
        "a champion that serves no one",
        {"labelled_champion": 0, "champion_serves": False},
        "continue",
        "the champion serves no traffic in this phase",
    ),
    (
        "shadow counts pairs",
        {"labelled_champion": 57, "labelled_challenger": 57, "paired": True},
        "continue",
        "57 labelled pairs (requests both models answered, with feedback); 200 needed",
    ),
    (
        "too few labels hold a worse challenger",
        {"labelled_challenger": 50, "difference": -0.2},
        "continue",
        "challenger has 50 labelled samples",
    ),
    (
        "significantly worse accuracy",
        {"difference": -0.02},
        "rollback",
        "significantly worse on accuracy",
    ),
    (
        "significantly worse loss",
        {"metric": "log_loss", "higher_is_better": False, "difference": 0.1},
        "rollback",
        "log_loss difference (challenger - champion) +0.1000",
    ),
    (
        "better, guardrails not yet judged",
        {"challenger_requests": 150, "challenger_error_rate": None},
        "continue",
        "guardrails cannot be judged yet (150 requests served; 200 needed)",
    ),
    (
        "not significant",
        {"significant": False},
        "continue",
        "expects about 2900 more labelled samples per variant (4100 in the smaller one)",
    ),
    (
        "not significant, size unknown",
        {"significant": False, "samples_needed_per_variant": None},
        "continue",
        "keep collecting labelled samples",
    ),
    (
        "not significant past the plan",
        {"significant": False, "samples_needed_per_variant": 1000},
        "continue",
        "may still be smaller than it: keep collecting until the confidence sequence says so",
    ),
    (
        "significant without a difference",
        {"difference": None},
        "continue",
        "no significant difference yet",
    ),
]


@pytest.mark.parametrize(
    ("changes", "action", "phrase"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_decide_table(changes: dict[str, Any], action: str, phrase: str) -> None:
    """Each rule gives its action, in the documented order, with a reason naming the figures."""
    decision = decide(dataclasses.replace(BASE, **changes))
    assert decision.action == action
    assert any(phrase in reason for reason in decision.reasons), decision.reasons


def test_two_short_variants_each_get_a_reason() -> None:
    """Both variants short of labels are each named with their count."""
    decision = decide(dataclasses.replace(BASE, labelled_champion=10, labelled_challenger=150))
    assert decision == Decision(
        "continue",
        (
            "champion has 10 labelled samples; 200 needed",
            "challenger has 150 labelled samples; 200 needed",
        ),
    )


def test_srm_never_promotes_whatever_else_holds() -> None:
    """With a sample ratio mismatch the answer is never promote."""
    for significant in (True, False):
        for difference in (-0.1, 0.0, 0.1, None):
            inputs = dataclasses.replace(
                BASE, srm_mismatch=True, significant=significant, difference=difference
            )
            assert decide(inputs).action == "continue"


def test_reasons_are_sentences_with_the_figures() -> None:
    """A promotion quotes the difference, the p-value and the labelled counts."""
    reasons = decide(BASE).reasons
    assert reasons[0] == (
        "challenger is significantly better on accuracy: accuracy difference "
        "(challenger - champion) +0.0200, sequential p = 0.004; 5000 champion and 1200 "
        "challenger labelled samples"
    )


def test_inputs_and_decision_are_frozen() -> None:
    """Inputs and decision are immutable values, safe to share between threads."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.significant = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decide(BASE).action = "rollback"  # type: ignore[misc]


def test_aa_experiments_are_promoted_at_most_at_alpha(
    aa_looks: Counts, false_positive_bound: Callable[[float, int], float]
) -> None:
    """500 A/A experiments decided at every look are promoted in <= alpha (+ margin)."""
    alpha = 0.05
    x_a, n_a, x_b, n_b = aa_looks
    # A generous tau² = 0.1² makes early significance, and so a false promotion, likelier.
    p = always_valid_p_values(x_a, n_a, x_b, n_b, tau2=0.01)
    promoted = np.zeros(x_a.shape[0], dtype=bool)
    for look in range(x_a.shape[1]):
        for row in range(x_a.shape[0]):
            rate_a = x_a[row, look] / n_a[row, look]
            inputs = DecisionInputs(
                metric="accuracy",
                higher_is_better=True,
                min_samples=200,
                labelled_champion=int(n_a[row, look]),
                labelled_challenger=int(n_b[row, look]),
                significant=bool(p[row, look] < alpha),
                difference=float(x_b[row, look] / n_b[row, look] - rate_a),
                p_value=float(p[row, look]),
                samples_needed_per_variant=samples_per_arm(rate_a, min(1.0, rate_a + 0.1)),
                challenger_requests=int(n_b[row, look]),
                challenger_error_rate=0.0,
                challenger_p99_ms=5.0,
                guardrail_error_rate=0.01,
                guardrail_p99_ms=50.0,
            )
            promoted[row] |= decide(inputs).action == "promote"
    assert promoted.mean() <= false_positive_bound(alpha, x_a.shape[0])


def test_a_numpy_difference_decides_like_a_float() -> None:
    """A numpy float64 difference gives the same action as the float (no numpy bool leaks)."""
    assert decide(dataclasses.replace(BASE, difference=np.float64(0.02))).action == "promote"
    assert decide(dataclasses.replace(BASE, difference=np.float64(-0.02))).action == "rollback"


def test_the_confidence_sequence_decides_the_direction() -> None:
    """With a confidence sequence, its side of zero decides, whatever today's estimate says;
    one inside ±min_effect says no effect worth detecting is left."""
    below = dataclasses.replace(BASE, difference=0.001, difference_cs=(-0.03, -0.001))
    assert decide(below).action == "rollback"
    above = dataclasses.replace(BASE, difference=-0.001, difference_cs=(0.002, 0.04))
    assert decide(above).action == "promote"
    small = decide(dataclasses.replace(BASE, significant=False, difference_cs=(-0.004, 0.006),
                                       min_effect=0.01))
    assert small.action == "continue"
    assert any("excludes differences of 0.01 or more" in r for r in small.reasons)


def test_tested_guardrails_replace_the_raw_comparison() -> None:
    """Given the guardrails' tests, a raw rate over the limit is no breach until the test
    rejects; a rejected one is, with its bound quoted; not enough data blocks a promotion."""
    def check(state: str) -> GuardrailCheck:
        return GuardrailCheck(name="error_rate", estimate=0.012, bound=0.004, limit=0.01,
                              p_value=0.2 if state != "breached" else 0.001, state=state,
                              requests=250)

    raw_over = dataclasses.replace(BASE, challenger_error_rate=0.012)
    assert decide(raw_over).action == "rollback"  # figures alone: the raw comparison
    assert decide(dataclasses.replace(raw_over, guardrails=(check("held"),))).action == "promote"
    breached = decide(dataclasses.replace(raw_over, guardrails=(check("breached"),)))
    assert breached.action == "rollback" and "at least 0.40% with confidence" in breached.reasons[0]
    waiting = decide(dataclasses.replace(raw_over, guardrails=(check("not enough data"),)))
    assert waiting.action == "continue"
