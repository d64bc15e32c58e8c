"""What the router asks of a fitted estimator: its last step, its probabilities, quiet calls."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

__all__ = ["final_estimator", "has_predict_proba", "native_list", "predict_quietly",
           "to_native"]

_FEATURE_NAMES_WARNING = r"X does not have valid feature names"


def final_estimator(model: Any) -> Any:
    """The last step of a (possibly nested) Pipeline, or the model itself."""
    while isinstance(model, Pipeline):
        model = model.steps[-1][1]
    return model


def _safe_hasattr(obj: Any, attribute: str) -> bool:
    # hasattr only swallows AttributeError; a property that raises anything else must not
    # take the caller down, it just means the capability is not usable.
    try:
        getattr(obj, attribute)
    except Exception:
        return False
    return True


def has_predict_proba(model: Any) -> bool:
    """True when both the model and its final step offer ``predict_proba``.

    Some estimators expose the attribute only conditionally and raise from the property
    (``SVC(probability=False)``), so this never raises.
    """
    return _safe_hasattr(model, "predict_proba") and _safe_hasattr(
        final_estimator(model), "predict_proba"
    )


def to_native(value: Any) -> Any:
    """A numpy scalar as the plain Python scalar JSON can carry; other values unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def native_list(values: Any) -> list[Any]:
    """An array-like as a flat list of JSON-native scalars."""
    array = np.asarray(values)
    if array.dtype.kind in "biufU":
        return array.tolist()
    return [to_native(v) for v in array.ravel().tolist()]


def predict_quietly(method: Any, X: np.ndarray) -> Any:
    """Call ``method(X)`` with sklearn's "X does not have valid feature names" warning off.

    The router always passes a numpy array in feature order; a pipeline fitted on a DataFrame
    would otherwise warn on every call. Only that one warning is filtered; ``catch_warnings``
    is process-global, so callers use this only for models that were fitted with names.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FEATURE_NAMES_WARNING, category=UserWarning)
        return method(X)
