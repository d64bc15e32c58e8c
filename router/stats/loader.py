"""From a store to a report: the current phase, the analysis columns, then ``build_report``.

A *phase* is the latest run of consecutive configuration revisions that serve the same split:
the same mode, the same ``challenger_percent`` and listed challengers' shares (in ``ab`` mode)
and the same champion and challengers. Changing the split changes who lands in each group from
then on, so pooling outcomes across phases would mix populations; the comparison covers the
current phase only.
The ``/stats`` route and ``router stats`` both call :func:`compute_report`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from router.config import METRICS, RouterConfig
from router.errors import InputValidationError
from router.outcomes.records import RevisionRecord
from router.serving.model import ServedModel
from router.serving.snapshot import metric_problem
from router.stats.model import Phase, Settings
from router.stats.reader import ColumnSource

if TYPE_CHECKING:
    from router.outcomes.columns import AnalysisColumns
    from router.stats.model import Design, Report

__all__ = ["DRIFT_ROWS", "MONITORING_ROWS", "assemble_report", "compute_report",
           "current_phase", "design_of", "monitoring_sections", "read_columns",
           "resolve_settings"]

# Feature drift looks at the latest requests only: more rows add no information to a PSI,
# and would make a KS test flag shifts far too small to matter.
DRIFT_ROWS = 10_000
# The monitoring gauges read the log's newest rows only, so that what a refresh costs and what
# it holds stay the same however long the log grows: a hundred times the default window of
# rolling quality, ten times the drift's rows.
MONITORING_ROWS = 100_000


def _ref(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, Mapping):
        return None
    return str(value.get("name")), str(value.get("path"))


def _split(config: Mapping[str, Any]) -> tuple[Any, ...]:
    mode = config.get("mode")
    traffic = config.get("traffic") or {}
    percent = float(traffic.get("challenger_percent") or 0.0) if mode == "ab" else None
    challenger = _ref(config.get("challenger")) if mode != "single" else None
    listed = tuple((_ref(c), float(c.get("percent") or 0.0) if mode == "ab" else None)
                   for c in config.get("challengers") or ()) if mode != "single" else ()
    return mode, percent, _ref(config.get("champion")), challenger, listed


def _arm_percents(config: Mapping[str, Any]) -> tuple[float, ...]:
    """A revision's challengers' shares in bucket order (``router.challengers``)."""
    first = [float((config.get("traffic") or {}).get("challenger_percent") or 0.0)] \
        if config.get("challenger") else []
    return (*first, *(float(c.get("percent") or 0.0) for c in config.get("challengers") or ()))


def current_phase(revisions: Sequence[RevisionRecord]) -> Phase:
    """The latest run of revisions with the latest revision's split (see the module doc)."""
    if not revisions:
        return Phase(revisions=None)
    ordered = sorted(revisions, key=lambda r: r.revision)
    split = _split(ordered[-1].config)
    start = len(ordered) - 1
    while start > 0 and _split(ordered[start - 1].config) == split:
        start -= 1
    phase = ordered[start:]
    return Phase(
        revisions=tuple(r.revision for r in phase),
        since=phase[0].ts,
        challenger_percent={r.revision: float((r.config.get("traffic") or {})
                                              .get("challenger_percent") or 0.0)
                            for r in phase},
        sticky={r.revision: bool((r.config.get("traffic") or {}).get("sticky_key"))
                for r in phase},
        arm_percents={r.revision: _arm_percents(r.config) for r in phase},
    )


def _classes(models: Mapping[str, ServedModel]) -> tuple[str, ...] | None:
    champion = models["champion"]
    if champion.classes is None:
        return None
    seen: dict[str, None] = {}
    for role, model in models.items():  # the champion first, then each challenger
        if role != "previous" and model.classes is not None:
            seen.update((str(c), None) for c in model.classes)
    return tuple(seen)


def resolve_settings(config: RouterConfig, models: Mapping[str, ServedModel], *,
                     alpha: float | None = None, metric: str | None = None) -> Settings:
    """The settings for one report; an ``alpha`` or ``metric`` that cannot apply is refused
    with ``InputValidationError`` naming the parameter."""
    chosen = metric if metric is not None else config.metric_for(models["champion"].task)
    level = alpha if alpha is not None else config.analysis.alpha
    if chosen not in METRICS:
        raise InputValidationError(
            f"metric must be one of {', '.join(METRICS)}, got {chosen!r}",
            [{"field": "metric", "message": f"one of {', '.join(METRICS)}"}])
    if not 0.0 < level < 1.0:
        raise InputValidationError(f"alpha must lie strictly between 0 and 1, got {level}",
                                   [{"field": "alpha", "message": "between 0 and 1"}])
    classes = _classes(models)
    problem = metric_problem(chosen, [m for role, m in models.items() if role != "previous"])
    if problem is not None:
        raise InputValidationError(f"metric {problem}", [{"field": "metric", "message": problem}])
    return Settings(metric=chosen, alpha=float(level), min_effect=config.analysis.min_effect,
                    classes=classes)


def read_columns(store: ColumnSource, config: RouterConfig, settings: Settings, phase: Phase,
                 *, latest_rows: int = 0) -> AnalysisColumns:
    """The phase's analysis columns with everything the report needs (the timeline asks the
    same question, so a :class:`~router.stats.reader.SharedColumns` read serves both).

    ``latest_rows`` is the monitoring sections' read: the newest rows, without the columns
    that only the comparisons use (each row's unit key, segment values and the true label's
    probability): a tenth of the read over 100,000 rows, on the serving process.
    """
    whole = not latest_rows
    # The stores build a plain dict under the names AnalysisColumns gives its columns.
    return cast("AnalysisColumns", store.analysis_columns(
        config.experiment, phase.revisions, classes=settings.classes,
        units=whole and (any(phase.sticky.values())
                         or (phase.revisions is None and config.traffic.sticky_key is not None)),
        true_probability=whole and settings.metric == "log_loss", feature_rows=DRIFT_ROWS,
        segments=[key.name for key in config.analysis.segments] if whole else [],
        arms=tuple(arm.variant for arm in config.arms) if config.multi_challenger else (),
        **({"latest_rows": latest_rows} if latest_rows else {})))


def design_of(config: RouterConfig, models: Mapping[str, ServedModel]) -> Design:
    """The report's view of a running configuration."""
    from router.stats.model import Design

    refs = config.model_refs()
    guardrails = config.analysis.guardrails
    several = config.multi_challenger
    return Design(
        experiment=config.experiment,
        mode=config.mode,
        models={role: (refs[role].name, model.version) for role, model in models.items()
                if role in ("champion", "challenger") or (several and role != "previous")},
        challenger_percent=config.traffic.challenger_percent,
        arms=tuple(arm.variant for arm in config.arms) if several else (),
        arm_percents=tuple(arm.percent for arm in config.arms) if several else (),
        sticky=config.traffic.sticky_key is not None,
        min_samples=config.analysis.min_samples,
        error_rate_limit=guardrails.error_rate,
        p99_latency_ms=guardrails.p99_latency_ms,
        segments=tuple(key.name for key in config.analysis.segments),
    )


def compute_report(store: ColumnSource, config: RouterConfig,
                   models: Mapping[str, ServedModel], *, config_revision: int | None = None,
                   alpha: float | None = None, metric: str | None = None,
                   shadow_calls: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The ``/stats`` report of ``config``'s experiment, read from ``store`` (blocking I/O)."""
    return assemble_report(store, config, models, config_revision=config_revision,
                           alpha=alpha, metric=metric, shadow_calls=shadow_calls).json


def assemble_report(store: ColumnSource, config: RouterConfig,
                    models: Mapping[str, ServedModel], *, config_revision: int | None = None,
                    alpha: float | None = None, metric: str | None = None,
                    shadow_calls: Mapping[str, int] | None = None) -> Report:
    """:func:`compute_report` with the typed decision beside the JSON (for the rollout)."""
    from router.stats.arms import assemble_arms
    from router.stats.report import assemble

    read = _read(store, config, models, alpha=alpha, metric=metric)
    if config_revision is None and read.phase.revisions:
        config_revision = read.phase.revisions[-1]
    build = assemble_arms if read.several else assemble
    return build(read.columns, design=design_of(config, models), phase=read.phase,
                 settings=read.settings, sections=_sections(read, config, models),
                 config_revision=config_revision, shadow_calls=shadow_calls)


def monitoring_sections(store: ColumnSource, config: RouterConfig,
                        models: Mapping[str, ServedModel]) -> dict[str, Any]:
    """The report's ``drift``, ``rolling`` and ``outputs``, the same as :func:`compute_report`
    gives them, without its comparisons, tests and decision.

    The monitoring gauges refresh from these on the serving process every few seconds; over a
    log of a few hundred thousand rows the rest of the report cost as much again as these. They
    read the phase's rows among the log's newest :data:`MONITORING_ROWS`, nothing kept: the
    same sections as the report's while the log is smaller, and over a longer log rolling
    quality and outputs over their windows (unless labels are scarcer than one in a hundred
    rows) and prediction drift over those rows.
    """
    read = _read(store, config, models, latest_rows=MONITORING_ROWS)
    return _sections(read, config, models)


class _Read(NamedTuple):
    settings: Settings
    phase: Phase
    columns: AnalysisColumns
    masks: dict[str, Any]
    several: bool


def _read(store: ColumnSource, config: RouterConfig, models: Mapping[str, ServedModel], *,
          alpha: float | None = None, metric: str | None = None, latest_rows: int = 0) -> _Read:
    """The current phase's columns, and each arm's rows among them."""
    from router.stats.arms import arm_masks
    from router.stats.report import _masks

    settings = resolve_settings(config, models, alpha=alpha, metric=metric)
    phase = current_phase(store.revisions(config.experiment))
    columns = read_columns(store, config, settings, phase, latest_rows=latest_rows)
    several = config.multi_challenger and config.mode != "single"
    masks = arm_masks(columns, design_of(config, models).arms) if several else _masks(columns)
    return _Read(settings, phase, columns, masks, several)


def _sections(read: _Read, config: RouterConfig, models: Mapping[str, ServedModel]
              ) -> dict[str, Any]:
    """The blocks that need the models: drift, rolling quality and outputs."""
    from router.monitoring import output_report, rolling_report
    from router.stats.drift_report import drift_report

    compared = config.mode != "single" and (read.several or models.get("challenger") is not None)
    roles = {role: mask for role, mask in read.masks.items() if compared or role == "champion"}
    window = config.monitoring.window
    classes = read.settings.classes
    return {"drift": drift_report(read.columns, read.masks, models, classes),
            "rolling": rolling_report(read.columns, roles, models, classes, window),
            "outputs": output_report(read.columns, roles, models, classes, window)}
