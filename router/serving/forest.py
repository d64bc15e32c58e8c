"""A random forest's ``predict_proba`` without joblib's per-call dispatch.

scikit-learn's ``ForestClassifier.predict_proba`` hands each tree to ``joblib.Parallel``, even
with ``n_jobs=None``: on a 100-tree forest that dispatch costs about 6 ms a call, where the
trees themselves take 0.4 ms for one row or for 64. :class:`DirectForest` does what that
method does, in the same order and the same arithmetic (each fitted tree's leaf values for the
float32 input, as ``Tree.predict`` reads them, summed in float64 in tree order, divided by the
number of trees), with the joblib layer left out. A ``StandardScaler`` step is applied here too,
with the arithmetic of its ``transform`` and without its input validation, which costs about
90 µs a call in scikit-learn 1.9 whatever the batch (:class:`_Scaling`). It is used only when,
on the model's reference sample, its probabilities are bitwise equal to the pipeline's
``predict_proba`` (:func:`direct_forest`); otherwise the pipeline is called as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from sklearn.preprocessing import StandardScaler

from router.serving.engines import split_pipeline, transform_steps
from router.serving.onnx_graphs import leaf_values

__all__ = ["DirectForest", "direct_forest"]

# The forests whose predict_proba is the average of their trees' (ensemble/_forest.py).
_FORESTS = ("RandomForestClassifier", "ExtraTreesClassifier")


class _Scaling(NamedTuple):
    """What a fitted ``StandardScaler`` subtracts and divides by (``None``: that step is off).

    Its ``transform`` on dense float64 rows is ``X -= mean_`` then ``X /= scale_`` on a copy;
    ``X - mean`` then ``/ scale`` gives the same bits. Other rows (another dtype, another width)
    go through the step's own ``transform``, which scales float32 in float32 or refuses.
    """

    mean: np.ndarray | None
    scale: np.ndarray | None
    width: int

    @classmethod
    def of(cls, step: Any) -> _Scaling | None:
        if type(step) is not StandardScaler:
            return None
        return cls(step.mean_ if step.with_mean else None,
                   step.scale_ if step.with_std else None, int(step.n_features_in_))

    def applies(self, X: np.ndarray) -> bool:
        return X.dtype == np.float64 and X.ndim == 2 and X.shape[1] == self.width

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if self.mean is not None:
            X = X - self.mean
        if self.scale is not None:
            X = X / self.scale
        return X


class DirectForest:
    """The preprocessing steps, then the forest's trees called one after the other.

    Thread-safe: fitted transformers and trees are read-only, and ``Tree.apply`` releases
    the GIL while it walks a tree.
    """

    def __init__(self, transformers: list[Any], forest: Any, quiet: bool) -> None:
        self._steps = [(step, _Scaling.of(step)) for step in transformers]
        self._quiet = quiet
        self._n_classes = n_classes = int(forest.n_classes_)
        # Each tree with its leaves' values for the classes, as its predict_proba answers them:
        # made once (``Tree.value`` builds a new array at every access), a view of the tree's
        # own array where scikit-learn stores them as they are answered.
        self._trees = [(tree, leaf_values(tree)[:, :n_classes])
                       for tree in (estimator.tree_ for estimator in forest.estimators_)]
        self.n_trees = len(self._trees)
        self.checked_rows = 0  # rows of the reference sample it was found identical on

    def transform(self, X: np.ndarray) -> Any:
        """The preprocessing steps' output for ``X``."""
        for step, scaling in self._steps:
            if scaling is not None and scaling.applies(X):
                X = scaling(X)
            else:
                X = transform_steps([step], X, self._quiet)
        return X

    def predict_proba(self, X: np.ndarray) -> np.ndarray | None:
        """The forest's probabilities for ``X``; None when the transformed input is not finite
        (the pipeline itself must then answer, or refuse, as scikit-learn does)."""
        # What the forest's input validation does: float32, C order (trees split on float32).
        Z = np.ascontiguousarray(self.transform(X), dtype=np.float32)
        if Z.ndim != 2 or not np.isfinite(Z).all():
            return None
        total = np.zeros((Z.shape[0], self._n_classes), dtype=np.float64)
        for tree, values in self._trees:
            total += values.take(tree.apply(Z), axis=0)
        total /= self.n_trees
        return total


def direct_forest(model: Any, sample: np.ndarray | None, quiet: bool,
                  expected: Callable[[np.ndarray], np.ndarray]) -> DirectForest | None:
    """A :class:`DirectForest` for ``model`` when its final step is a single-output forest
    classifier and, on ``sample``, its probabilities equal ``expected`` (the pipeline's own
    ``predict_proba``) bit for bit; None otherwise."""
    transformers, final = split_pipeline(model)
    if (type(final).__name__ not in _FORESTS or getattr(final, "n_outputs_", 1) != 1
            or not hasattr(final, "estimators_") or sample is None or len(sample) == 0):
        return None
    try:
        direct = DirectForest(transformers, final, quiet)
        got = direct.predict_proba(sample)
        reference = np.asarray(expected(sample), dtype=np.float64)
    except Exception:
        return None
    if got is None or got.shape != reference.shape or not np.array_equal(got, reference):
        return None
    direct.checked_rows = len(sample)
    return direct
