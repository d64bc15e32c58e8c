"""The ``drift`` block of ``/stats``: live inputs and predictions against the training reference.

Each feature of the latest answered requests (``router.stats.loader.DRIFT_ROWS`` of them) is
compared with the champion's training data: PSI against the histogram saved in its metadata,
with the PSI that noise alone gives at these sample sizes (``expected_psi``) and the p-value of a
chi-square test of homogeneity on the binned counts, adjusted by Benjamini-Hochberg across the
features; and a two-sample KS p-value against the reference sample saved in its directory (at
most 1,000 training rows). Each variant's predictions over the phase are compared in the same
way with the prediction distribution saved with that model (adjusted across the variants).

``status`` is ``moderate`` (PSI 0.1 to 0.25) or ``major`` (PSI 0.25 and above) only when the
adjusted p-value is also below :data:`~router.stats.drift.DRIFT_ALPHA`; else ``stable``. The KS
p-value is shown for reference only: on thousands of rows it flags shifts too small to matter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from router.outcomes.columns import AnalysisColumns
from router.serving.model import ServedModel
from router.stats.drift import (
    DRIFT_ALPHA,
    PSI_MAJOR,
    PSI_MODERATE,
    ShiftTest,
    adjusted_p_values,
    bin_counts,
    drift_status,
    ks_p_value,
    shift_test,
)

__all__ = ["KS_ALPHA", "PSI_MAJOR", "PSI_MODERATE", "drift_report"]

KS_ALPHA = 0.01

Columns = AnalysisColumns


def _histogram_test(reference: Any, values: np.ndarray) -> ShiftTest | None:
    """``values`` against a saved ``{"edges", "counts"}`` histogram; None when either side
    is empty."""
    if not isinstance(reference, Mapping) or len(reference.get("edges") or ()) < 2:
        return None
    values = values[np.isfinite(values)]
    counts = np.asarray(reference.get("counts") or (), dtype=float)
    if values.size == 0 or counts.sum() <= 0:
        return None
    return shift_test(counts, bin_counts(values, reference["edges"]))


def _entries(tests: Sequence[ShiftTest | None]) -> list[dict[str, Any]]:
    """Each test as ``{psi, expected_psi, p_value, adjusted_p_value, status}``, adjusted
    together."""
    adjusted = adjusted_p_values([None if t is None else t.p_value for t in tests])
    return [{"psi": None if t is None else t.psi,
             "expected_psi": None if t is None else t.expected_psi,
             "p_value": None if t is None else t.p_value,
             "adjusted_p_value": q,
             "status": drift_status(None if t is None else t.psi, q)}
            for t, q in zip(tests, adjusted, strict=True)]


def _features(columns: Columns, champion: ServedModel) -> dict[str, dict[str, Any]]:
    rows = columns.get("features")
    reference = (champion.metadata.get("reference") or {}).get("features") or {}
    sample = champion.reference_sample
    if rows is None or rows.ndim != 2 or rows.shape[0] == 0 \
            or rows.shape[1] != len(champion.feature_names):
        return {}
    tests: list[ShiftTest | None] = []
    ks_values: list[float | None] = []
    for j, name in enumerate(champion.feature_names):
        live = rows[:, j][np.isfinite(rows[:, j])]
        tests.append(_histogram_test(reference.get(name), live))
        ks = None
        if sample is not None and live.size:
            column = sample[:, j][np.isfinite(sample[:, j])]
            ks = ks_p_value(column, live) if column.size else None
        ks_values.append(ks)
    return {name: {**entry, "ks_p_value": ks}
            for name, entry, ks in zip(champion.feature_names, _entries(tests), ks_values,
                                       strict=True)}


def _prediction_test(columns: Columns, rows: np.ndarray, model: ServedModel,
                     classes: tuple[str, ...] | None) -> ShiftTest | None:
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
        if current.sum() == 0:
            return None
        return shift_test(counts, current)
    if reference.get("kind") == "histogram" and "value" in columns:
        return _histogram_test(reference, columns["value"][rows])
    return None


def drift_report(columns: Columns, masks: Mapping[str, np.ndarray],
                 models: Mapping[str, ServedModel], classes: tuple[str, ...] | None
                 ) -> dict[str, Any]:
    """Feature drift against the champion's training data, prediction drift per model."""
    champion = models["champion"]
    features = columns.get("features")
    served = ~columns["error"]
    roles = [role for role in masks if models.get(role) is not None]
    predictions = dict(zip(roles, _entries([
        _prediction_test(columns, masks[role] & served, models[role], classes)
        for role in roles]), strict=True))
    challenger = predictions.get("challenger")
    return {
        "reference": f"{champion.name}:{champion.version}",
        "rows": 0 if features is None else int(features.shape[0]),
        "features": _features(columns, champion),
        "prediction_psi": predictions["champion"]["psi"],
        "challenger_prediction_psi": None if challenger is None else challenger["psi"],
        "predictions": predictions,
        "thresholds": {"psi_moderate": PSI_MODERATE, "psi_major": PSI_MAJOR,
                       "alpha": DRIFT_ALPHA, "ks_p_value": KS_ALPHA},
    }
