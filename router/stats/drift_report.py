"""The ``drift`` block of ``/stats``: live inputs and predictions against the training reference.

Each feature of the latest answered requests (``router.stats.loader.DRIFT_ROWS`` of them) is
compared with the champion's training data: PSI against the histogram saved in its metadata,
and a two-sample KS p-value against the reference sample saved in its directory (at most 1,000
training rows). Each variant's predictions over the phase are compared by PSI with the
prediction distribution saved with that model.

Thresholds: PSI below 0.1 is ``stable``, 0.1 to 0.25 ``moderate``, 0.25 and above ``major``.
A KS p-value below 0.01 says the distributions differ detectably, which on thousands of rows
even a negligible shift does: read it together with the PSI, which measures how much.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from router.registry import ServedModel
from router.stats.drift import bin_counts, ks_p_value, psi

__all__ = ["KS_ALPHA", "PSI_MAJOR", "PSI_MODERATE", "drift_report"]

PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
KS_ALPHA = 0.01

Columns = Mapping[str, np.ndarray]


def _status(value: float | None) -> str | None:
    if value is None:
        return None
    if value >= PSI_MAJOR:
        return "major"
    return "moderate" if value >= PSI_MODERATE else "stable"


def _psi(reference: Any, values: np.ndarray) -> float | None:
    """PSI of ``values`` against a saved ``{"edges", "counts"}`` histogram; None when either
    side is empty."""
    if not isinstance(reference, Mapping) or len(reference.get("edges") or ()) < 2:
        return None
    values = values[np.isfinite(values)]
    counts = np.asarray(reference.get("counts") or (), dtype=float)
    if values.size == 0 or counts.sum() <= 0:
        return None
    return psi(counts, bin_counts(values, reference["edges"]))


def _features(columns: Columns, champion: ServedModel) -> dict[str, dict[str, Any]]:
    rows = columns.get("features")
    reference = (champion.metadata.get("reference") or {}).get("features") or {}
    sample = champion.reference_sample
    if rows is None or rows.ndim != 2 or rows.shape[0] == 0 \
            or rows.shape[1] != len(champion.feature_names):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(champion.feature_names):
        live = rows[:, j][np.isfinite(rows[:, j])]
        value = _psi(reference.get(name), live)
        ks = None
        if sample is not None and live.size:
            column = sample[:, j][np.isfinite(sample[:, j])]
            ks = ks_p_value(column, live) if column.size else None
        out[name] = {"psi": value, "ks_p_value": ks, "status": _status(value)}
    return out


def _prediction_psi(columns: Columns, rows: np.ndarray, model: ServedModel,
                    classes: tuple[str, ...] | None) -> float | None:
    reference = (model.metadata.get("reference") or {}).get("predictions")
    if not isinstance(reference, Mapping) or not rows.any():
        return None
    if reference.get("kind") == "classes" and classes is not None:
        names = [str(c) for c in reference.get("classes") or ()]
        counts = np.asarray(reference.get("counts") or (), dtype=float)
        predicted = columns["predicted"][rows]
        predicted = predicted[predicted >= 0]
        if predicted.size == 0 or counts.size != len(names) or counts.sum() <= 0:
            return None
        live = np.bincount(predicted, minlength=len(classes))
        position = {c: i for i, c in enumerate(classes)}
        current = np.array([live[position[n]] if n in position else 0 for n in names])
        return psi(counts, current)
    if reference.get("kind") == "histogram" and "value" in columns:
        return _psi(reference, columns["value"][rows])
    return None


def drift_report(columns: Columns, masks: Mapping[str, np.ndarray],
                 models: Mapping[str, ServedModel], classes: tuple[str, ...] | None
                 ) -> dict[str, Any]:
    """Feature PSI and KS against the champion's training data, prediction PSI per model."""
    champion = models["champion"]
    features = columns.get("features")
    served = ~columns["error"]
    challenger = models.get("challenger")
    return {
        "reference": f"{champion.name}:{champion.version}",
        "rows": 0 if features is None else int(features.shape[0]),
        "features": _features(columns, champion),
        "prediction_psi": _prediction_psi(columns, masks["champion"] & served, champion,
                                          classes),
        "challenger_prediction_psi": None if challenger is None else _prediction_psi(
            columns, masks["challenger"] & served, challenger, classes),
        "thresholds": {"psi_moderate": PSI_MODERATE, "psi_major": PSI_MAJOR,
                       "ks_p_value": KS_ALPHA},
    }
