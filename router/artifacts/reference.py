"""What save_model learns from the training data: feature names and ranges, histograms, shares.

Histograms use :data:`HISTOGRAM_BINS` equal-width bins between the finite minimum and maximum
seen in training; non-finite values (NaN, inf) are left out of ``min``/``max`` and of the counts,
so the counts of a feature sum to the number of its finite training values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from router.artifacts.estimators import native_list, to_native

__all__ = ["HISTOGRAM_BINS", "REFERENCE_SAMPLE_ROWS", "REFERENCE_SAMPLE_SEED", "distribution",
           "feature_dtypes", "finite", "histogram", "json_native", "resolve_feature_names"]

HISTOGRAM_BINS = 10
REFERENCE_SAMPLE_ROWS = 1000
REFERENCE_SAMPLE_SEED = 20240607


def resolve_feature_names(
    model: Any, X_train: Any, feature_names: Sequence[str] | None, n_columns: int
) -> list[str]:
    """``feature_names``, else the columns of ``X_train``, else the model's, else f0, f1, …"""
    model_names = getattr(model, "feature_names_in_", None)
    if feature_names is not None:
        names = [str(n) for n in feature_names]
    elif hasattr(X_train, "columns"):
        names = [str(n) for n in X_train.columns]
    elif model_names is not None:
        names = [str(n) for n in model_names]
    else:
        names = [f"f{i}" for i in range(n_columns)]
    if len(names) != n_columns:
        raise ValueError(f"{len(names)} feature names for {n_columns} columns of X_train")
    if len(set(names)) != len(names):
        raise ValueError(f"feature names must be unique, got {names}")
    # The router feeds the model a plain array in metadata order: if the model learned other
    # names (or the same in another order), every prediction would silently use wrong columns.
    if model_names is not None and [str(n) for n in model_names] != names:
        raise ValueError(
            f"feature names {names} differ from the names the model was fitted with "
            f"{[str(n) for n in model_names]}; pass X_train with the training columns in order"
        )
    return names


def feature_dtypes(X_train: Any, X: np.ndarray) -> list[str]:
    """The dtype of each training column as written, e.g. a DataFrame's per-column dtypes."""
    dtypes = getattr(X_train, "dtypes", None)
    if dtypes is not None and not isinstance(dtypes, np.dtype):
        listed = [str(t) for t in dtypes]
        if len(listed) == X.shape[1]:
            return listed
    source = X_train.dtype if isinstance(X_train, np.ndarray) else X.dtype
    return [str(source)] * X.shape[1]


def finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def histogram(values: np.ndarray) -> dict[str, list[Any]]:
    """Equal-width bin edges and counts of the finite values."""
    kept = finite(np.asarray(values, dtype=np.float64))
    if kept.size == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(kept, bins=HISTOGRAM_BINS)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _class_distribution(labels: list[Any], classes: list[Any]) -> dict[str, Any]:
    index = {c: i for i, c in enumerate(classes)}
    counts = [0] * len(classes)
    for label in labels:
        position = index.get(label)
        if position is not None:
            counts[position] += 1
    total = len(labels)
    shares = [c / total if total else 0.0 for c in counts]
    return {"kind": "classes", "classes": classes, "counts": counts, "shares": shares}


def distribution(values: Any, classes: list[Any] | None) -> dict[str, Any]:
    """Class counts and shares for a classifier's labels, else a histogram of the values."""
    if classes is not None:
        return _class_distribution(native_list(values), classes)
    return {"kind": "histogram", **histogram(np.asarray(values, dtype=np.float64))}


def json_native(value: Any, where: str) -> Any:
    """``value`` as JSON-native data; a non-finite float or an odd type names ``where``."""
    if isinstance(value, Mapping):
        return {str(k): json_native(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_native(v, where) for v in value]
    value = to_native(value)
    if isinstance(value, float) and not np.isfinite(value):
        raise ValueError(f"{where} is {value}; metadata.json holds finite numbers only")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"{where} has a value of type {type(value).__name__} that JSON cannot hold")
