"""How large a feature value each served model can take, found once when it is loaded.

A JSON number such as 1e300 is finite, so it passes the finiteness check, yet a scikit-learn
forest computes in float32 (whose largest value is about 3.4e38) and refuses it, and a scaler
may turn a large float64 into infinity for the step after it. Sent to the challenger, such a
request fails there and counts against the challenger: ten of them could make the decision a
rollback on the error-rate guardrail. So the gateway refuses, with a 422 naming the field, any
value beyond what every loaded model takes.

The bound is probed through scikit-learn itself (the reference every engine must match), on a
row of the model's reference sample with one feature at a time, and then all of them, set to
plus and minus a power of ten: the largest power of ten every such row is answered for, with
finite outputs, is the model's bound. A model that fails on its own reference row gets no
bound: its failures are its own.
"""

from __future__ import annotations

import math
import sys
import warnings
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from router.serving.model import ServedModel

NO_BOUND = sys.float_info.max
_SMALLEST_EXPONENT, _LARGEST_EXPONENT = 3, 308

_bounds: weakref.WeakKeyDictionary[ServedModel, float] = weakref.WeakKeyDictionary()


def input_bound(model: ServedModel) -> float:
    """The largest absolute feature value ``model`` answers for (probed once, then kept)."""
    bound = _bounds.get(model)
    if bound is None:
        bound = _bounds[model] = _probe(model)
    return bound


def common_bound(models: Iterable[ServedModel]) -> float:
    """The bound every one of ``models`` takes."""
    return min((input_bound(m) for m in models), default=NO_BOUND)


def _probe(model: ServedModel) -> float:
    sample = model.reference_sample
    base = np.asarray(sample[0], dtype=np.float64) if sample is not None and len(sample) \
        else np.zeros(model.n_features)
    if not _answers(model, base[np.newaxis, :]):
        return NO_BOUND
    if _answers(model, _extremes(base, NO_BOUND)):
        return NO_BOUND
    low, high = _SMALLEST_EXPONENT, _LARGEST_EXPONENT  # 10**high is refused
    if not _answers(model, _extremes(base, 10.0 ** low)):
        return 10.0 ** low  # below this a refusal is not about size; never refuse less
    while high - low > 1:
        middle = (low + high) // 2
        if _answers(model, _extremes(base, 10.0 ** middle)):
            low = middle
        else:
            high = middle
    return 10.0 ** low


def _extremes(base: np.ndarray, magnitude: float) -> np.ndarray:
    """Rows of ``base`` with each feature at +magnitude and -magnitude, then all of them."""
    width = len(base)
    rows = np.tile(base, (2 * width + 2, 1))
    for j in range(width):
        rows[2 * j, j], rows[2 * j + 1, j] = magnitude, -magnitude
    rows[-2, :], rows[-1, :] = magnitude, -magnitude
    return rows


def _answers(model: ServedModel, X: np.ndarray) -> bool:
    """Whether scikit-learn answers every row of ``X`` with finite outputs."""
    estimator = model.model
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # overflow and feature-name warnings
            outputs = [estimator.predict(X)]
            if model.has_probabilities:
                outputs.append(estimator.predict_proba(X))
    except Exception:
        return False
    return all(_finite(np.asarray(output)) for output in outputs)


def _finite(values: np.ndarray) -> bool:
    if values.dtype.kind in "fc":
        return bool(np.isfinite(values).all())
    if values.dtype.kind == "O":  # labels of any type: only float ones can be non-finite
        return not any(isinstance(v, float) and not math.isfinite(v) for v in values.ravel())
    return True
