"""Quality of each variant over its latest ``monitoring.window`` labelled outcomes.

The window is the latest labels to *arrive* (the order of ``feedback_id``), so it moves as a
labelling job reports, whatever the age of the predictions it labels. A classifier gets
accuracy and, per class, precision, recall and F1 (with their macro averages); a regressor gets
MAE, RMSE and the mean error (prediction minus truth: a bias shows as a sign). Each variant's
entry carries the metrics recorded with its model at save time, the level a drop is read
against. A true label that is none of the model's classes counts as a wrong prediction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from router.outcomes.columns import AnalysisColumns
from router.serving.model import ServedModel

__all__ = ["rolling_report", "window_rows"]

Columns = AnalysisColumns


def window_rows(columns: Columns, rows: np.ndarray, window: int) -> np.ndarray:
    """Indices of the latest ``window`` of ``rows`` (a mask) by label arrival, oldest first."""
    found = np.flatnonzero(rows)
    if window <= 0:
        return found[:0]
    keys = columns["feedback_id"][found]
    if found.size > window:
        # The latest ``window`` by a partial sort: linear, where sorting a million is not.
        latest = np.argpartition(keys, found.size - window)[found.size - window:]
        found, keys = found[latest], keys[latest]
    return found[np.argsort(keys, kind="stable")]


def _classification(columns: Columns, rows: np.ndarray, classes: tuple[str, ...]
                    ) -> dict[str, Any]:
    truth, predicted = columns["label"][rows], columns["predicted"][rows]
    if rows.size == 0:
        return {"accuracy": None, "macro_precision": None, "macro_recall": None,
                "macro_f1": None, "classes": {}}
    indices = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=indices, zero_division=0)
    return {
        "accuracy": float(np.mean(truth == predicted)),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "macro_f1": float(np.mean(f1)),
        "classes": {c: {"precision": float(precision[i]), "recall": float(recall[i]),
                        "f1": float(f1[i]), "support": int(support[i])}
                    for i, c in enumerate(classes)},
    }


def _regression(columns: Columns, rows: np.ndarray) -> dict[str, Any]:
    if rows.size == 0:
        return {"mae": None, "rmse": None, "mean_error": None}
    error = columns["value"][rows] - columns["label_value"][rows]
    return {"mae": float(np.mean(np.abs(error))), "rmse": math.sqrt(float(np.mean(error**2))),
            "mean_error": float(np.mean(error))}


def _labelled(columns: Columns, classes: tuple[str, ...] | None) -> np.ndarray:
    """Rows with a prediction and the label its task needs."""
    rows: np.ndarray
    if classes is not None:
        rows = (columns["label"] != -1) & (columns["predicted"] >= 0) & ~columns["error"]
    else:
        rows = np.isfinite(columns["value"]) & np.isfinite(columns["label_value"]) \
            & ~columns["error"]
    return rows


def rolling_report(columns: Columns, masks: Mapping[str, np.ndarray],
                   models: Mapping[str, ServedModel], classes: tuple[str, ...] | None,
                   window: int) -> dict[str, Any]:
    """``/stats``'s ``rolling``: ``{"window", "variants": {role: {...}}}`` for each served role.

    Args:
        columns: the analysis columns (``router.outcomes.columns``).
        masks: the rows of each role (``champion`` without fallbacks and shadow copies).
        models: the served models by role; roles without a mask or a model are left out.
        classes: the classifiers' labels as ``str``, or ``None`` for regressors.
        window: how many of the latest labelled outcomes each variant is measured on.
    """
    labelled = _labelled(columns, classes)
    variants: dict[str, Any] = {}
    for role in masks:
        model = models.get(role)
        if model is None:
            continue
        rows = window_rows(columns, masks[role] & labelled, window)
        quality = _classification(columns, rows, classes) if classes is not None \
            else _regression(columns, rows)
        variants[role] = {"labelled": int(rows.size), **quality,
                          "recorded": dict(model.metadata.get("metrics") or {})}
    return {"window": window, "variants": variants}
