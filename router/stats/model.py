"""The statistics' plain types: the phase and settings analysed, the experiment's design, the
running sequence of a comparison, and the report with its decisions.

The modules that compute (``comparison``, ``report``, ``arms``, ``loader``) all speak these, so
none of them needs another's types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.stats.confidence import RunningArm, RunningDifference
from router.stats.decision import Decision, DecisionInputs


@dataclass(frozen=True)
class Phase:
    """The revisions analysed together, with what each one configured.

    ``revisions`` is ``None`` when the store recorded no revision for the experiment; then every
    logged row is analysed, under the running configuration's split.
    """

    revisions: tuple[int, ...] | None
    since: float | None = None
    challenger_percent: Mapping[int, float] = field(default_factory=dict)
    sticky: Mapping[int, bool] = field(default_factory=dict)
    # Each challenger's share in bucket order (challenger:, then challengers:), per revision.
    arm_percents: Mapping[int, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """The analysis settings in force: the config's, or the ``alpha``/``metric`` asked for."""

    metric: str
    alpha: float
    min_effect: float
    classes: tuple[str, ...] | None  # the labels of champion and challengers, as str


@dataclass(frozen=True, kw_only=True)
class Design:
    """What the report needs of the experiment besides its outcomes.

    Attributes:
        experiment: the experiment's name.
        mode: ``ab``, ``shadow`` or ``single`` (``single`` whenever there is no challenger).
        models: ``(name, version)`` by role.
        challenger_percent: the configured share, for the SRM check where the phase has none.
        sticky: units are users (a sticky key), so the analysis unit is the user.
        min_samples: labelled outcomes per variant before a decision; challenger requests
            before a guardrail can be ``held``.
        error_rate_limit, p99_latency_ms: the guardrails, None when not set.
        segments: the segment keys' names (``router.stats.segments``), in the config's order.
        arms, arm_percents: with several challengers (``router.stats.arms``), their variants
            and shares in bucket order; empty otherwise.
    """

    experiment: str
    mode: str
    models: Mapping[str, tuple[str, str | None]]
    challenger_percent: float = 50.0
    sticky: bool = False
    min_samples: int = 200
    error_rate_limit: float | None = None
    p99_latency_ms: float | None = None
    segments: tuple[str, ...] = ()
    arms: tuple[str, ...] = ()
    arm_percents: tuple[float, ...] = ()


def champion_serves(design: Design, phase: Phase) -> bool:
    """Whether some revision of the phase leaves the champion users: not so in ``ab`` mode
    when the challengers' shares add up to 100 % throughout."""
    if design.mode != "ab":
        return True
    if design.arms:
        arm_shares = list(phase.arm_percents.values()) or [design.arm_percents]
        return any(sum(shares) < 100 for shares in arm_shares)
    shares = list(phase.challenger_percent.values()) or [design.challenger_percent]
    return any(share < 100 for share in shares)


@dataclass(frozen=True)
class Report:
    """The report's JSON and the typed decision, with the sequence behind the comparison.

    With several challengers ``decision`` summarises theirs, ``challenger`` names the one it
    acts on (None for ``continue``), ``arms`` holds each one's and ``inputs`` and ``running``
    are None.
    """

    json: dict[str, Any]
    decision: Decision
    inputs: DecisionInputs | None  # None without a challenger to compare
    running: Running | None
    clustered: bool = False  # some unit (a user, or a batch request) has several outcomes
    arms: Mapping[str, ArmReport] = field(default_factory=dict)
    challenger: str | None = None


@dataclass(frozen=True)
class ArmReport:
    """One of several challengers: its decision, the figures behind it and its sequence."""

    decision: Decision
    inputs: DecisionInputs
    running: Running


@dataclass(frozen=True)
class Running:
    """The comparison after each labelled outcome, in arrival order.

    ``rows`` are the outcomes' row indices (pairs' champion rows in shadow mode); ``a`` and ``b``
    the arms (None in shadow mode), ``difference`` the sequence on the tested scale.
    """

    rows: np.ndarray
    a: RunningArm | None
    b: RunningArm | None
    difference: RunningDifference

    def significant(self) -> bool:
        return bool(self.rows.size) and bool(self.difference.low[-1] > 0
                                             or self.difference.high[-1] < 0)
