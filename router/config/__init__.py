"""The YAML configuration: its typed model (:mod:`~router.config.model`), the parser that
checks every key and line (:mod:`~router.config.parse`) with its reader and bounds, and the
``challengers:`` list (:mod:`~router.config.challengers`)."""

from router.config.model import (
    DEFAULT_STORE,
    METRICS,
    MODES,
    Analysis,
    Batching,
    Guardrails,
    Limits,
    ModelRef,
    Monitoring,
    Rollout,
    RouterConfig,
    Shadow,
    StickyKey,
    Traffic,
)
from router.config.parse import load_config, parse_config, resolve_model_path

__all__ = [
    "DEFAULT_STORE",
    "METRICS",
    "MODES",
    "Analysis",
    "Batching",
    "Guardrails",
    "Limits",
    "ModelRef",
    "Monitoring",
    "Rollout",
    "RouterConfig",
    "Shadow",
    "StickyKey",
    "Traffic",
    "load_config",
    "parse_config",
    "resolve_model_path",
]
