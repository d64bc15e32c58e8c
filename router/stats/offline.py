"""``router.stats.analyze``: the ``/stats`` report of any exported log, not only the router's.

A team that logged an experiment elsewhere (KServe's logger, a warehouse export) can judge it
with the router's statistics: one row per answered request, in the order its label arrived,
as a pandas DataFrame, a CSV file or a mapping of column name to sequence:

========================  ==========================================================
``variant``               ``champion`` or ``challenger``
``prediction``            the answer; empty (None) for a failed call
``label``                 the ground truth; empty (None) while unlabelled
``unit_id`` (optional)    the unit of assignment (a user): the analysis unit when given
``request_id`` (optional) pairs the champion's and challenger's rows of one request
                          (shadow mode, where it is required)
``latency_ms`` (optional) for the latency guardrail
``error`` (optional)      True for a failed call (default: no prediction)
``shadow`` (optional)     True for a challenger's mirrored call (default: in shadow mode,
                          every challenger row)
``segment:KEY`` (optional) the request's value for a segment key (``/stats``'s
                          ``segments``), up to five such columns; or the columns that
                          ``analysis.segments`` names
========================  ==========================================================

The rows become the same analysis columns a store gives ``/stats`` and go through the same
``build_report``; only the drift block, which needs the models' training references, is left
out.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np

from router.config.model import MAX_SEGMENT_KEYS, METRICS
from router.outcomes.columns import AnalysisColumns, segments_from
from router.stats.model import Design, Phase, Settings
from router.stats.report import build_report
from router.tables import read_table
from router.tables import table_error as _bad

__all__ = ["analyze", "read_outcomes"]

# log_loss needs the probability of the true class, which an exported log does not have.
_METRICS = tuple(m for m in METRICS if m != "log_loss")
_ANALYSIS_KEYS = {"metric", "alpha", "min_effect", "min_samples", "guardrails", "segments"}
_SEGMENT_PREFIX = "segment:"
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n", ""}


def read_outcomes(outcomes: Any) -> dict[str, list[Any]]:
    """The table as columns of Python values (missing values as None)."""
    table = read_table(outcomes, "outcomes")
    # A file by its path, which the person who exported it knows.
    lacks = f"{outcomes} has" if isinstance(outcomes, str | PathLike) else "the outcomes have"
    for name in ("variant", "prediction", "label"):
        if name not in table:
            raise _bad(f"{lacks} no {name!r} column (columns: {', '.join(table) or 'none'})",
                       name)
    return table


def _flags(table: Mapping[str, list[Any]], name: str, default: np.ndarray) -> np.ndarray:
    if name not in table:
        return default
    out = default.copy()
    for i, value in enumerate(table[name]):
        if value is None:
            continue
        text = str(value).strip().lower()
        if text not in _TRUE | _FALSE:
            raise _bad(f"row {i + 1}: {name} must be true or false, got {value!r}", name)
        out[i] = text in _TRUE
    return out


def _numbers(values: list[Any], name: str) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            raise _bad(f"row {i + 1}: {name} must be a number, got {value!r}", name) from None
    return out


def _settings(analysis: Mapping[str, Any] | None) -> tuple[Settings, int, Mapping[str, Any]]:
    analysis = dict(analysis or {})
    unknown = set(analysis) - _ANALYSIS_KEYS
    if unknown:
        raise _bad(f"unknown analysis keys: {', '.join(sorted(unknown))} (known: "
                   f"{', '.join(sorted(_ANALYSIS_KEYS))})", "analysis")
    metric = analysis.get("metric", "accuracy")
    if metric not in _METRICS:
        raise _bad(f"metric must be one of {', '.join(_METRICS)} offline (log_loss needs the "
                   f"probabilities the export lacks), got {metric!r}", "metric")
    alpha = float(analysis.get("alpha", 0.05))
    if not 0 < alpha < 1:
        raise _bad(f"alpha must lie strictly between 0 and 1, got {alpha}", "alpha")
    min_effect = float(analysis.get("min_effect", 0.01))
    if not min_effect > 0:
        raise _bad(f"min_effect must be positive, got {min_effect}", "min_effect")
    min_samples = int(analysis.get("min_samples", 200))
    guardrails = analysis.get("guardrails") or {}
    if not isinstance(guardrails, Mapping) or set(guardrails) - {"p99_latency_ms", "error_rate"}:
        raise _bad("guardrails is a mapping of p99_latency_ms and error_rate", "guardrails")
    return (Settings(metric=metric, alpha=alpha, min_effect=min_effect, classes=None),
            min_samples, guardrails)


def _columns(table: Mapping[str, list[Any]], metric: str, mode: str
             ) -> tuple[AnalysisColumns, tuple[str, ...] | None]:
    size = len(table["variant"])
    variants = table["variant"]
    wrong = next((i for i, v in enumerate(variants) if v not in ("champion", "challenger")), None)
    if wrong is not None:
        raise _bad(f"row {wrong + 1}: variant must be champion or challenger, got "
                   f"{variants[wrong]!r}", "variant")
    challenger = np.array([v == "challenger" for v in variants], dtype=bool)
    predictions, labels = table["prediction"], table["label"]
    error = _flags(table, "error", np.array([p is None for p in predictions], dtype=bool))
    shadow = _flags(table, "shadow", challenger & (mode == "shadow"))
    labelled = np.array([label is not None for label in labels], dtype=bool)
    # Rows are in the order their labels arrived; a shadow request's two rows share one label.
    feedback = np.where(labelled, np.arange(size), -1)
    if mode == "shadow":
        if "request_id" not in table:
            raise _bad("shadow mode pairs the two models' rows of a request: the outcomes "
                       "need a request_id column", "request_id")
        first: dict[Any, int] = {}
        for i, request_id in enumerate(table["request_id"]):
            if labelled[i] and request_id is not None:
                feedback[i] = first.setdefault(request_id, i)
    columns: AnalysisColumns = {
        "ts": np.arange(size, dtype=float), "revision": np.zeros(size, dtype=np.int64),
        "challenger": challenger, "shadow": shadow, "fallback": np.zeros(size, dtype=bool),
        "forced": np.zeros(size, dtype=bool), "error": error,
        "latency_ms": _numbers(table.get("latency_ms", [None] * size), "latency_ms"),
        "feedback_id": feedback.astype(np.int64),
        "unknown_feedback_ids": np.array(0),
    }
    classes: tuple[str, ...] | None = None
    if metric == "accuracy":
        seen: dict[str, None] = {}
        for value in (*predictions, *labels):
            if value is not None:
                seen.setdefault(str(value), None)
        classes = tuple(seen)
        index = {c: i for i, c in enumerate(classes)}
        columns["predicted"] = np.array([-1 if p is None else index[str(p)] for p in predictions],
                                        dtype=np.int64)
        columns["label"] = np.array([-1 if v is None else index[str(v)] for v in labels],
                                    dtype=np.int64)
    else:
        columns["value"] = _numbers(predictions, "prediction")
        columns["label_value"] = _numbers(labels, "label")
    if "unit_id" in table:
        columns["unit_key"] = np.array(
            [0 if u is None else (hash(str(u)) or 1) for u in table["unit_id"]], dtype=np.int64)
    return columns, classes


def _segments(table: Mapping[str, list[Any]], named: Any) -> tuple[tuple[str, ...], np.ndarray]:
    """The segment keys and their values: the columns ``named`` lists (``header:NAME``,
    ``body:NAME`` or ``NAME``, each column NAME or segment:NAME), else every segment:KEY."""
    if named is None:
        columns = {name.removeprefix(_SEGMENT_PREFIX): name for name in table
                   if name.startswith(_SEGMENT_PREFIX)}
    elif isinstance(named, list | tuple):
        columns = {}
        for item in named:
            key = str(item).removeprefix("header:").removeprefix("body:")
            column = next((c for c in (key, _SEGMENT_PREFIX + key) if c in table), None)
            if column is None:
                raise _bad(f"no {key!r} column for the segment {item} (nor "
                           f"{_SEGMENT_PREFIX}{key})", "segments")
            columns[key] = column
    else:
        raise _bad("segments is a list of keys (header:NAME, body:NAME or a column name)",
                   "segments")
    if len(columns) > MAX_SEGMENT_KEYS:
        raise _bad(f"at most {MAX_SEGMENT_KEYS} segment keys, got {len(columns)}", "segments")
    keys = tuple(columns)
    size = len(table["variant"])
    logged = [{key: table[column][i] for key, column in columns.items()} for i in range(size)]
    return keys, segments_from(logged, keys)


def analyze(outcomes: Any, analysis: Mapping[str, Any] | None = None, *, mode: str = "ab",
            challenger_percent: float = 50.0) -> dict[str, Any]:
    """The ``/stats`` JSON of an exported log (see the module doc for the columns).

    Args:
        outcomes: a pandas DataFrame, a path to a CSV file, or a mapping of column to sequence.
        analysis: the YAML's ``analysis:`` mapping (``metric``, ``alpha``, ``min_effect``,
            ``min_samples``, ``guardrails``, ``segments``); the YAML's defaults where absent.
        mode: ``ab`` (independent groups) or ``shadow`` (both models on every request).
        challenger_percent: the configured share of units, for the sample ratio check.

    Raises:
        InputValidationError: a column, value or setting the analysis cannot use, named.
    """
    if mode not in ("ab", "shadow"):
        raise _bad(f"mode must be ab or shadow, got {mode!r}", "mode")
    if not 0 <= challenger_percent <= 100:
        raise _bad(f"challenger_percent must lie in 0..100, got {challenger_percent}",
                   "challenger_percent")
    settings, min_samples, guardrails = _settings(analysis)
    table = read_outcomes(outcomes)
    columns, classes = _columns(table, settings.metric, mode)
    keys, columns["segments"] = _segments(table, (analysis or {}).get("segments"))
    settings = Settings(metric=settings.metric, alpha=settings.alpha,
                        min_effect=settings.min_effect, classes=classes)
    has_latency = bool(np.isfinite(columns["latency_ms"]).any())
    design = Design(
        experiment="offline analysis", mode=mode,
        models={"champion": ("champion", None), "challenger": ("challenger", None)},
        challenger_percent=float(challenger_percent), sticky="unit_key" in columns,
        min_samples=min_samples,
        error_rate_limit=guardrails.get("error_rate"),
        p99_latency_ms=guardrails.get("p99_latency_ms") if has_latency else None,
        segments=keys)
    return build_report(columns, design=design, phase=Phase(revisions=None), settings=settings)

