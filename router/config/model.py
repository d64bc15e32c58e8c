"""The configuration as frozen, typed objects: every key of the YAML file and its default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from router.config.challengers import (
    Arm,
    ListedChallenger,
    arms_of,
)

MODES = ("ab", "shadow", "single")
METRICS = ("accuracy", "log_loss", "mae", "rmse")
DEFAULT_STORE = "sqlite:///var/outcomes.db"
MAX_SEGMENT_KEYS = 5  # analysis.segments: a few keys, each a table to read


@dataclass(frozen=True)
class ModelRef:
    """A model by the name it is served under and the directory it is loaded from."""

    name: str
    path: Path


@dataclass(frozen=True)
class StickyKey:
    """A value a request carries, in an HTTP header or a top-level body field: the sticky
    unit id, or a segment (``analysis.segments``)."""

    source: str  # "header" | "body"
    name: str

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


@dataclass(frozen=True)
class Traffic:
    challenger_percent: float = 0.0
    sticky_key: StickyKey | None = None
    # A request header (lower case) naming the variant to serve, for testing; None: off.
    override_header: str | None = None
    override_requires_token: bool = False


@dataclass(frozen=True)
class Shadow:
    sample_percent: float = 100.0
    queue_size: int = 10_000
    timeout_ms: float = 1_000.0
    drain_s: float = 10.0


@dataclass(frozen=True)
class Guardrails:
    p99_latency_ms: float | None = None
    error_rate: float | None = None


@dataclass(frozen=True)
class Analysis:
    metric: str = "accuracy"
    alpha: float = 0.05
    min_effect: float = 0.01
    min_samples: int = 200
    guardrails: Guardrails = field(default_factory=Guardrails)
    # Request values the results are broken down by (``/stats``'s ``segments``).
    segments: tuple[StickyKey, ...] = ()


@dataclass(frozen=True)
class Rollout:
    steps: tuple[float, ...]  # the challenger's percentages, in order
    interval_s: float = 60.0
    auto_promote: bool = False
    auto_rollback: bool = True
    from_shadow: bool = False  # steps began with `shadow`: the challenger is judged unseen first


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1_048_576
    max_batch: int = 1_000
    # A request's headers, then its body, must arrive within these (slow or stalled clients
    # would otherwise hold a connection for ever); connections over the cap are refused, per
    # worker process. The last two are read once when `router serve` starts.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections: int = 1_000


@dataclass(frozen=True)
class Batching:
    # Measured (bench/serving.py, docs/performance.md): at 64 connections a 2 ms cap on the
    # wait after a call cut the router's CPU per request by a fifth against 1 ms (ONNX
    # Runtime); 4 and 8 ms did no better.
    max_batch: int = 64
    max_wait_ms: float = 2.0


@dataclass(frozen=True)
class Monitoring:
    window: int = 1_000  # latest labelled outcomes (rolling quality) and predictions (outputs)
    interval_s: float = 5.0  # how often the background task refreshes the monitoring gauges


@dataclass(frozen=True)
class RouterConfig:
    """One whole, valid configuration; ``lines`` maps key paths to their line for later errors."""

    experiment: str
    mode: str
    champion: ModelRef
    challenger: ModelRef | None = None
    previous: ModelRef | None = None
    challengers: tuple[ListedChallenger, ...] = ()  # the YAML's challengers: list
    traffic: Traffic = field(default_factory=Traffic)
    shadow: Shadow = field(default_factory=Shadow)
    analysis: Analysis = field(default_factory=Analysis)
    rollout: Rollout | None = None
    store: str = DEFAULT_STORE
    limits: Limits = field(default_factory=Limits)
    batching: Batching = field(default_factory=Batching)
    model_roots: tuple[Path, ...] = ()  # resolved; model paths must lie inside (when given)
    monitoring: Monitoring = field(default_factory=Monitoring)
    source: str = "<config>"
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def model_refs(self) -> dict[str, ModelRef]:
        """The models this configuration serves or keeps loaded, by role."""
        roles = {"champion": self.champion, "challenger": self.challenger,
                 "previous": self.previous}
        listed = {c.name: ModelRef(c.name, c.path) for c in self.challengers}
        return {**{role: ref for role, ref in roles.items() if ref is not None}, **listed}

    def metric_for(self, task: str) -> str:
        """The analysis metric for models of ``task``: ``analysis.metric``, unless the file
        leaves it to its default (accuracy) and the models are regressors: then mae."""
        given = "analysis.metric" in self.lines or self.analysis.metric != Analysis.metric
        return self.analysis.metric if given or task != "regression" else "mae"

    def key_of(self, role: str) -> str:
        """Where the YAML names the model of ``role`` (``challengers[1]`` for a listed one)."""
        return next((arm.key for arm in self.arms if arm.variant == role), role)

    @property
    def multi_challenger(self) -> bool:
        """The file lists ``challengers:``: variants are named, and ``/stats`` compares each
        challenger with the champion (``router.config.challengers``)."""
        return bool(self.challengers)

    @cached_property
    def arms(self) -> tuple[Arm, ...]:
        """The challengers in bucket order: ``challenger:`` first, then the list's entries."""
        challenger = self.challenger
        return arms_of(None if challenger is None else (challenger.name, challenger.path),
                       self.traffic.challenger_percent, self.challengers)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-native data, defaults filled in (for ``/config``)."""
        def ref(r: ModelRef | None) -> dict[str, str] | None:
            return None if r is None else {"name": r.name, "path": str(r.path)}

        g = self.analysis.guardrails
        return {
            "experiment": self.experiment,
            "mode": self.mode,
            "champion": ref(self.champion),
            "challenger": ref(self.challenger),
            "previous": ref(self.previous),
            **({"challengers": [{"name": c.name, "path": str(c.path), "percent": c.percent}
                                for c in self.challengers]} if self.challengers else {}),
            "traffic": {
                "challenger_percent": self.traffic.challenger_percent,
                "sticky_key": None if self.traffic.sticky_key is None
                else str(self.traffic.sticky_key),
                "override_header": self.traffic.override_header,
                "override_requires_token": self.traffic.override_requires_token,
            },
            "shadow": vars_of(self.shadow),
            "analysis": {
                "metric": self.analysis.metric,
                "alpha": self.analysis.alpha,
                "min_effect": self.analysis.min_effect,
                "min_samples": self.analysis.min_samples,
                "guardrails": {"p99_latency_ms": g.p99_latency_ms, "error_rate": g.error_rate},
                "segments": [str(key) for key in self.analysis.segments],
            },
            "rollout": None if self.rollout is None else {
                **{k: v for k, v in vars_of(self.rollout).items() if k != "from_shadow"},
                "steps": [*(["shadow"] if self.rollout.from_shadow else []),
                          *self.rollout.steps]},
            "store": self.store,
            "limits": vars_of(self.limits),
            "batching": vars_of(self.batching),
            "model_roots": [str(root) for root in self.model_roots],
            "monitoring": vars_of(self.monitoring),
        }


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


