"""What each variant has been answering, before any label arrives, against its training outputs.

Over each variant's latest ``monitoring.window`` answered predictions (in the order the store
logged them): a classifier's share of each predicted class next to the shares of its
predictions on the training data, saved with the model; a regressor's mean and quantiles next
to those of its training predictions (read from the saved histogram, so to within a bin).

``constant_output`` is the red flag of a model that suddenly answers one thing to everyone:
one class (or, for a regressor, one value) takes more than 99 % of a window of at least
:data:`MIN_PREDICTIONS`, and the training predictions say that should not happen. For a
classifier that is a binomial test: the chance of so large a share when the class keeps its
training share is below :data:`CONSTANT_ALPHA` (so a model that predicted one class 99.5 % of
the time in training is not flagged for doing it again). For a regressor, whose training
predictions in more than one histogram bin mean they were not constant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import binom

from router.outcomes.columns import AnalysisColumns
from router.serving.model import ServedModel

__all__ = ["CONSTANT_ALPHA", "CONSTANT_SHARE", "MIN_PREDICTIONS", "QUANTILES", "output_report"]

CONSTANT_SHARE = 0.99
MIN_PREDICTIONS = 100
CONSTANT_ALPHA = 1e-3
QUANTILES = (5, 25, 50, 75, 95)

Columns = AnalysisColumns


def _latest(rows: np.ndarray, window: int) -> np.ndarray:
    found = np.flatnonzero(rows)
    return found[-window:] if window > 0 else found[:0]


def _reference(model: ServedModel) -> Mapping[str, Any]:
    reference = (model.metadata.get("reference") or {}).get("predictions")
    return reference if isinstance(reference, Mapping) else {}


def _classes(columns: Columns, rows: np.ndarray, model: ServedModel,
             classes: tuple[str, ...]) -> dict[str, Any]:
    predicted = columns["predicted"][rows]
    predicted = predicted[predicted >= 0]
    n = int(predicted.size)
    counts = np.bincount(predicted, minlength=len(classes))
    reference = _reference(model)
    names = [str(c) for c in reference.get("classes") or ()]
    saved = np.asarray(reference.get("counts") or (), dtype=float)
    reference_shares = ({c: float(k / saved.sum()) for c, k in zip(names, saved, strict=True)}
                        if saved.size == len(names) and saved.sum() > 0 else {})
    entry: dict[str, Any] = {
        "predictions": n,
        "shares": {c: float(k / n) for c, k in zip(classes, counts, strict=True)} if n else {},
        "reference_shares": reference_shares,
        "top_class": None, "top_share": None, "constant_output": False,
    }
    if n:
        top = int(np.argmax(counts))
        share = float(counts[top] / n)
        expected = reference_shares.get(classes[top])
        entry.update(top_class=classes[top], top_share=share)
        # P(at least this many of n | the class keeps its training share).
        entry["constant_output"] = bool(
            n >= MIN_PREDICTIONS and share > CONSTANT_SHARE and expected is not None
            and binom.sf(counts[top] - 1, n, expected) < CONSTANT_ALPHA)
    return entry


def _histogram_summary(reference: Mapping[str, Any]) -> dict[str, Any] | None:
    """Mean and quantiles of a saved histogram, reading each bin as uniform."""
    edges = np.asarray(reference.get("edges") or (), dtype=float)
    counts = np.asarray(reference.get("counts") or (), dtype=float)
    if edges.size < 2 or counts.size != edges.size - 1 or counts.sum() <= 0:
        return None
    cumulative = np.r_[0.0, np.cumsum(counts)] / counts.sum()
    middles = (edges[:-1] + edges[1:]) / 2
    return {"mean": float(np.sum(middles * counts) / counts.sum()),
            "quantiles": {f"p{q}": float(np.interp(q / 100, cumulative, edges))
                          for q in QUANTILES},
            "bins_used": int(np.count_nonzero(counts))}


def _values(columns: Columns, rows: np.ndarray, model: ServedModel) -> dict[str, Any]:
    values = columns["value"][rows]
    values = values[np.isfinite(values)]
    n = int(values.size)
    summary = _histogram_summary(_reference(model))
    entry: dict[str, Any] = {
        "predictions": n, "mean": None, "std": None, "quantiles": {},
        "reference": None if summary is None else {"mean": summary["mean"],
                                                   "quantiles": summary["quantiles"]},
        "top_share": None, "constant_output": False,
    }
    if n:
        _, repeats = np.unique(values, return_counts=True)
        share = float(repeats.max() / n)
        entry.update(mean=float(values.mean()), std=float(values.std()), top_share=share,
                     quantiles={f"p{q}": float(v) for q, v in
                                zip(QUANTILES, np.percentile(values, QUANTILES), strict=True)})
        entry["constant_output"] = bool(n >= MIN_PREDICTIONS and share > CONSTANT_SHARE
                                        and summary is not None and summary["bins_used"] > 1)
    return entry


def output_report(columns: Columns, masks: Mapping[str, np.ndarray],
                  models: Mapping[str, ServedModel], classes: tuple[str, ...] | None,
                  window: int) -> dict[str, Any]:
    """``/stats``'s ``outputs``: ``{"window", "variants": {role: {...}}}`` for each served role.

    Rows are taken in the order of the columns, which every store gives in the order it logged
    them; failed calls (no prediction) are left out.
    """
    served = ~columns["error"]
    variants: dict[str, Any] = {}
    for role in masks:
        model = models.get(role)
        if model is None:
            continue
        rows = _latest(masks[role] & served, window)
        variants[role] = (_classes(columns, rows, model, classes) if classes is not None
                          else _values(columns, rows, model))
    return {"window": window, "variants": variants}
