"""Training-serving skew by log-and-compare: the inputs the gateway logged for some requests
against the same features recomputed offline by the training pipeline, feature by feature.

Both sides are tables of ``request_id`` and one column per feature; the offline rows are joined
to the logged ones by request id (a batch's rows are logged as ``<request_id>:<index>``), and an
offline id that was never logged counts in ``rows_missing``. Per feature, over the joined rows,
with differences taken as logged minus offline (serving minus training):

- ``mismatch_share``: the share of rows where ``|logged - offline| > atol + rtol·|offline|``
  (``numpy.isclose``; two NaNs agree, a NaN and a number do not);
- ``max_abs_diff``, ``mean_diff``: over the rows where both values are finite;
- ``skewed``: a systematic difference, that is either one of
  - *frequent*: more than ``max_mismatch_share`` of the rows differ beyond the tolerance, or
  - *one-sided*: the mean difference is itself beyond the tolerance
    (``|mean_diff| > atol + rtol·mean|offline|``) and significantly non-zero: Student's
    one-sample t-test on the differences (``scipy.stats.ttest_1samp``) gives a p-value below
    ``alpha`` divided by the number of features (Bonferroni).

So float noise within the tolerance is never skew, a few rows recomputed from fresher data are
not either, and a constant offset, a wrong scaling or a rare but one-sided bug is.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router.stats.means import one_sample_t_test
from router.tables import read_table, table_error

if TYPE_CHECKING:
    from router.outcomes import AnalysisReads

__all__ = ["SkewRule", "compare_skew", "config_skew", "render_skew", "store_skew"]

ID_COLUMN = "request_id"


@dataclass(frozen=True)
class SkewRule:
    """The tolerance of one value and when a feature's differences are systematic (module doc).

    ``rtol`` and ``atol`` default to ``numpy.isclose``'s. Raises ``InputValidationError`` for a
    negative or non-finite tolerance, a share outside ``[0, 1)`` or ``alpha`` outside ``(0, 1)``.
    """

    rtol: float = 1e-5
    atol: float = 1e-8
    max_mismatch_share: float = 0.01
    alpha: float = 0.01

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise table_error(f"{name} must be a finite number >= 0, got {value}", name)
        if not 0 <= self.max_mismatch_share < 1:
            raise table_error("max_mismatch_share must lie in [0, 1), got "
                              f"{self.max_mismatch_share}", "max_mismatch_share")
        if not 0 < self.alpha < 1:
            raise table_error(f"alpha must lie strictly between 0 and 1, got {self.alpha}",
                              "alpha")


@dataclass(frozen=True)
class _Features:
    """A table's request ids, feature names and values (rows by features, NaN where missing)."""

    ids: list[str]
    names: list[str]
    values: np.ndarray


def _read_features(table: Any, what: str, features: Sequence[str] | None) -> _Features:
    """``table`` (CSV path, DataFrame, mapping) checked: request ids present and unique, the
    columns exactly ``features`` (any order; all but the id when None), values numbers.

    Messages name a CSV file by its path, which the person who made it knows; another table
    by ``what``, the argument it was passed as (which also names the fault's field)."""
    columns = read_table(table, what)
    table_name = str(table) if isinstance(table, str | PathLike) else what
    if ID_COLUMN not in columns:
        raise table_error(f"{table_name} has no {ID_COLUMN!r} column (columns: "
                          f"{', '.join(columns) or 'none'})", ID_COLUMN)
    given = [name for name in columns if name != ID_COLUMN]
    names = list(features) if features is not None else given
    unknown = [name for name in given if name not in names]
    if unknown:
        raise table_error(f"{table_name} has columns that are no feature of the model: "
                          f"{', '.join(unknown)} (features: {', '.join(names)})", unknown[0])
    missing = [name for name in names if name not in columns]
    if missing or not names:
        raise table_error(f"{table_name} lacks feature columns: {', '.join(missing) or 'all'} "
                          f"(features: {', '.join(names) or 'none'})", (missing or [what])[0])
    ids: list[str] = []
    first_row: dict[str, int] = {}
    for i, value in enumerate(columns[ID_COLUMN]):
        if value is None:
            raise table_error(f"{table_name} row {i + 1}: {ID_COLUMN} is empty", ID_COLUMN)
        request_id = str(value)
        if request_id in first_row:
            raise table_error(f"{table_name} row {i + 1}: {ID_COLUMN} {request_id!r} repeats row "
                              f"{first_row[request_id] + 1}", ID_COLUMN)
        first_row[request_id] = i
        ids.append(request_id)
    values = np.full((len(ids), len(names)), np.nan)
    for j, name in enumerate(names):
        for i, value in enumerate(columns[name]):
            if value is None:
                continue  # a missing value: NaN, as pandas writes it
            try:
                values[i, j] = float(value)
            except (TypeError, ValueError):
                raise table_error(f"{table_name} row {i + 1}, column {name}: not a number: "
                                  f"{value!r}", name) from None
    return _Features(ids, names, values)


def _feature_report(logged: np.ndarray, offline: np.ndarray, rule: SkewRule,
                    features: int) -> dict[str, Any]:
    """One feature's entry from its joined values."""
    if logged.size == 0:
        return {"mismatch_share": None, "max_abs_diff": None, "mean_diff": None,
                "skewed": False}
    close = np.isclose(logged, offline, rtol=rule.rtol, atol=rule.atol, equal_nan=True)
    mismatch_share = float(np.mean(~close))
    diff = logged - offline
    finite = np.isfinite(diff)
    if not finite.any():
        return {"mismatch_share": mismatch_share, "max_abs_diff": None, "mean_diff": None,
                "skewed": mismatch_share > rule.max_mismatch_share}
    diff = diff[finite]
    mean_diff = float(diff.mean())
    beyond_tolerance = abs(mean_diff) > rule.atol + rule.rtol * float(
        np.abs(offline[finite]).mean())
    one_sided = beyond_tolerance and one_sample_t_test(diff)[1] < rule.alpha / features
    return {"mismatch_share": mismatch_share, "max_abs_diff": float(np.abs(diff).max()),
            "mean_diff": mean_diff,
            "skewed": bool(mismatch_share > rule.max_mismatch_share or one_sided)}


def _report(names: Sequence[str], logged: np.ndarray, offline: np.ndarray, missing: int,
            rule: SkewRule) -> dict[str, Any]:
    return {"rows_joined": int(logged.shape[0]), "rows_missing": int(missing),
            "features": {name: _feature_report(logged[:, j], offline[:, j], rule, len(names))
                         for j, name in enumerate(names)}}


def compare_skew(logged: Any, offline: Any, *, rtol: float = 1e-5, atol: float = 1e-8,
                 max_mismatch_share: float = 0.01, alpha: float = 0.01) -> dict[str, Any]:
    """Training-serving skew of two tables of ``request_id`` and feature columns.

    Args:
        logged: what serving saw: a pandas DataFrame, a CSV path or a mapping of column to
            sequence; its columns other than ``request_id`` are the features compared.
        offline: the same features recomputed by the training pipeline, the same columns in
            any order, a row per request id; ids not in ``logged`` count as missing.
        rtol, atol, max_mismatch_share, alpha: the rule (module doc, :class:`SkewRule`).

    Returns:
        ``{"rows_joined", "rows_missing", "features": {name: {"mismatch_share",
        "max_abs_diff", "mean_diff", "skewed"}}}``; the figures are None without a joined row.

    Raises:
        InputValidationError: a table or setting that cannot be used, with its row and column.
    """
    rule = SkewRule(rtol, atol, max_mismatch_share, alpha)
    served = _read_features(logged, "logged", None)
    recomputed = _read_features(offline, "offline", served.names)
    row_of = {request_id: i for i, request_id in enumerate(served.ids)}
    joined = [(row_of[request_id], i) for i, request_id in enumerate(recomputed.ids)
              if request_id in row_of]
    served_rows = [s for s, _ in joined]
    offline_rows = [o for _, o in joined]
    columns = [served.names.index(name) for name in recomputed.names]
    return _report(recomputed.names, served.values[np.ix_(served_rows, columns)],
                   recomputed.values[offline_rows], len(recomputed.ids) - len(joined), rule)


def store_skew(store: AnalysisReads, offline: Any, feature_names: Sequence[str], *,
               rtol: float = 1e-5, atol: float = 1e-8, max_mismatch_share: float = 0.01,
               alpha: float = 0.01) -> dict[str, Any]:
    """:func:`compare_skew` of the inputs a store logged for the offline table's request ids.

    ``feature_names`` are the served model's features in the order the gateway logs them
    (``ModelArtifact.feature_names``); ``offline`` must have exactly these columns and
    ``request_id``. Raises ``InputValidationError`` as :func:`compare_skew` does, and when a
    logged row has another number of inputs than ``feature_names``.
    """
    rule = SkewRule(rtol, atol, max_mismatch_share, alpha)
    names = list(feature_names)
    recomputed = _read_features(offline, "offline", names)
    found = store.logged_features(recomputed.ids)
    joined = [i for i, request_id in enumerate(recomputed.ids) if request_id in found]
    logged = np.full((len(joined), len(names)), np.nan)
    for row, i in enumerate(joined):
        inputs = found[recomputed.ids[i]]
        if len(inputs) != len(names):
            raise table_error(f"request {recomputed.ids[i]!r} was logged with {len(inputs)} "
                              f"inputs, the model has {len(names)} features "
                              f"({', '.join(names)})", "features")
        logged[row] = inputs
    order = [recomputed.names.index(name) for name in names]
    return _report(names, logged, recomputed.values[np.ix_(joined, order)],
                   len(recomputed.ids) - len(joined), rule)


def config_skew(config_file: str | Path, offline: Any, *, store_url: str | None = None,
                base_dir: Path | None = None, rule: SkewRule | None = None) -> dict[str, Any]:
    """:func:`store_skew` on the store a YAML config names (or ``store_url``), with the
    features of the config's champion read from its ``metadata.json`` (no model is loaded).
    Relative paths resolve against ``base_dir`` (default: the working directory)."""
    from router.artifacts.metadata import read_metadata
    from router.config import load_config
    from router.outcomes import open_store

    base = base_dir or Path.cwd()
    config = load_config(config_file, base_dir=base)
    metadata, _ = read_metadata(config.champion.path, config.model_roots)
    names = [feature["name"] for feature in metadata["features"]]
    rule = rule or SkewRule()
    store = open_store(store_url or config.store, base, create=False)
    try:
        return store_skew(store, offline, names, rtol=rule.rtol, atol=rule.atol,
                          max_mismatch_share=rule.max_mismatch_share, alpha=rule.alpha)
    finally:
        store.close()


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def render_skew(report: dict[str, Any], rule: SkewRule | None = None) -> str:
    """The report as a table: a line per feature, the skewed ones marked."""
    rule = rule or SkewRule()
    rows = [("FEATURE", "MISMATCH", "MAX |DIFF|", "MEAN DIFF", "SKEWED")]
    for name, entry in report["features"].items():
        share = entry["mismatch_share"]
        rows.append((name, "-" if share is None else f"{100 * share:.2f} %",
                     _figure(entry["max_abs_diff"]), _figure(entry["mean_diff"]),
                     "SKEWED" if entry["skewed"] else "no"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"rows joined {report['rows_joined']:,}, missing {report['rows_missing']:,} "
             "(offline request ids not in the log)", ""]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    skewed = [name for name, entry in report["features"].items() if entry["skewed"]]
    lines += ["", f"skewed: {', '.join(skewed) or 'none'}", *textwrap.wrap(
        f"Differences are logged minus offline. A value differs when |diff| > {rule.atol:g} + "
        f"{rule.rtol:g} * |offline|; a feature is skewed when over "
        f"{100 * rule.max_mismatch_share:g} % of its rows differ, or when its mean difference "
        f"is beyond the tolerance and non-zero by a t-test at {rule.alpha:g} / "
        f"{len(rows) - 1} features.", 80)]
    return "\n".join(lines)
