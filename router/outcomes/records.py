"""The plain records the gateway hands to the outcome log: predictions, feedback, switches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class PredictionRecord(NamedTuple):
    """One answered (or shadow-scored) row.

    ``request_id`` is the id feedback names: the request's id for a single prediction, or
    ``<request_id>:<index>`` for a row of a batch. ``prediction`` is the label for a classifier
    (kept as given: str, int or float) or the value for a regressor. ``probabilities`` maps each
    class (as ``str``) to its probability, in the model's class order; ``None`` when the model
    has no ``predict_proba``. ``error`` is a short message when the model failed on this row
    (then ``prediction`` is ``None``). ``fallback`` marks the champion's answer to a request that
    was assigned to the challenger whose call failed: the client got it, so it is logged, but the
    statistics leave it out of the champion's group (the failure is counted on the challenger).
    ``forced`` marks a row whose variant the client chose (the override header, or an Open
    Inference Protocol request naming one model): logged and answered, but kept out of every
    statistic, since it was not assigned at random. ``segments`` maps each configured segment
    key's name (``analysis.segments``) to the value the request carried; keys it did not
    carry are absent, and ``None`` stands for none at all.

    A named tuple rather than a frozen dataclass: one is built per answered row on the
    request path, and a frozen dataclass's ``__init__`` (a ``object.__setattr__`` per field)
    costs four times as much.
    """

    request_id: str
    ts: float  # unix seconds, when the answer was produced
    experiment: str
    revision: int
    variant: str  # "champion" | "challenger"
    model: str
    version: str
    features: tuple[float, ...]
    prediction: Any
    probability: float | None
    latency_ms: float
    shadow: bool = False
    unit_id: str | None = None
    probabilities: dict[str, float] | None = None
    error: str | None = None
    fallback: bool = False
    forced: bool = False
    segments: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """Ground truth for an earlier prediction: ``label`` (classification) or ``value``."""

    request_id: str
    ts: float
    label: str | None = None
    value: float | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One switch of the experiment (promote, rollback, rollout step), with why and by whom."""

    ts: float
    action: str
    from_model: str
    to_model: str
    reason: str
    actor: str
    details: dict[str, Any] = field(default_factory=dict)
    # Whose switch: a store may hold several experiments' logs. "" for a switch recorded
    # before history named its experiment, which every experiment's history then shows.
    experiment: str = ""


@dataclass(frozen=True, slots=True)
class RevisionRecord:
    """One applied configuration of an experiment: its number, content digest and content.

    Revisions live in the store, so every gateway process (and every replica) that applies
    the same file content agrees on its number, and a restart with an unchanged file keeps it.
    """

    experiment: str
    revision: int
    ts: float
    digest: str
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SwitchState:
    """The switchable part of an experiment's configuration as last set anywhere.

    ``state`` holds ``mode``, ``champion``, ``challenger``, ``previous`` (each ``{name, path}``
    or ``None``) and ``challenger_percent``. Every gateway sharing the store serves it over
    the switchable keys of any YAML file older than ``ts``: see ``router.live.sync``.
    """

    experiment: str
    generation: int
    ts: float
    state: dict[str, Any]
