"""A loaded model ready to serve: its features and classes, and one-pass predictions through
the engine chosen for it."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.svm import SVC, NuSVC

from router.artifacts import (
    ModelArtifact,
    final_estimator,
    has_predict_proba,
    predict_quietly,
    to_native,
)
from router.serving.engines import SKLEARN, EngineChoice, OnnxRunner, choose_engine
from router.serving.forest import DirectForest, direct_forest

__all__ = ["Prediction", "ServedModel"]

log = logging.getLogger("router.serving.model")

ENGINE_PENDING = "scikit-learn while ONNX Runtime's parity is being checked"
LABELS_FROM_PROBABILITIES = "predict_proba"
LABELS_FROM_PREDICT = "predict"


@dataclass(slots=True)
class Prediction:
    """The answer for a batch of rows (not frozen: a frozen dataclass sets each field through
    ``object.__setattr__``, four times the cost of a plain one's ``__init__``, and a request
    makes two).

    ``labels`` holds one JSON-native scalar per row (the class label, or the value for a
    regressor); ``probabilities`` is ``(n_rows, n_classes)`` float64 in ``classes`` order, or
    ``None`` when the model has no ``predict_proba``.
    """

    labels: list[Any]
    probabilities: np.ndarray | None


def _labels(values: Any) -> list[Any]:
    array = np.asarray(values)
    if array.dtype.kind in "biufU":
        return array.tolist()
    return [to_native(v) for v in array.tolist()]


class ServedModel:
    """A verified model plus what serving needs to know about it.

    Built from a :class:`~router.artifacts.ModelArtifact`. At construction it decides where
    labels come from (``label_source``): ``"predict_proba"`` when the model has probabilities
    and the argmax of ``predict_proba`` mapped through ``classes`` equals ``model.predict`` on the
    whole reference sample, so one model pass gives both; ``"predict"`` otherwise (no
    probabilities, a disagreement, no reference sample, a model that failed the check, or an SVC,
    whose Platt-scaled probabilities are known to disagree with its decision function on some
    inputs even when the sample happens to agree).

    It then picks the engine (``engine``, ``engine_reason``; see :mod:`router.serving.engines`):
    ``"onnxruntime"`` when the ``fast`` extra is installed and ONNX Runtime matches
    scikit-learn on the reference sample, ``"scikit-learn"`` otherwise. With
    ``choose_engine_now=False`` that check waits for :meth:`choose_engine` (or its background
    form, which the gateway uses so that a model serves while the check runs);
    ``engine_chosen`` is set once it has run.

    Exceptions raised by the model during :meth:`predict` propagate unchanged; the caller
    decides how a failed model call is reported.
    """

    def __init__(self, artifact: ModelArtifact, *, choose_engine_now: bool = True) -> None:
        metadata = artifact.metadata
        self.model: Any = artifact.model
        self.metadata: dict[str, Any] = metadata
        self.path: Path = artifact.path
        self.name: str = str(metadata["name"])
        self.version: str = str(metadata["version"])
        self.sha256: str = str(metadata["sha256"])
        self.task: str = str(metadata["task"])
        self.model_type: str = str(metadata["model_type"])
        self.feature_names: tuple[str, ...] = artifact.feature_names
        self.n_features: int = len(self.feature_names)
        classes = metadata["classes"] if self.task == "classification" else None
        self.classes: tuple[Any, ...] | None = tuple(classes) if classes is not None else None
        self.has_probabilities: bool = self.classes is not None and has_predict_proba(self.model)
        self.reference_sample: np.ndarray | None = artifact.reference_sample
        # Fitted on a DataFrame: every array call would warn that X has no feature names.
        self._quiet: bool = hasattr(self.model, "feature_names_in_")
        self._class_array = np.array(self.classes or (), dtype=object)
        # A forest's trees called without joblib, when that is bitwise scikit-learn's answer.
        self._direct: DirectForest | None = direct_forest(
            self.model, self.reference_sample, self._quiet,
            lambda X: self._call("predict_proba", X)) if self.has_probabilities else None
        self.label_source: str = self._choose_label_source()
        # Chosen after label_source: the fast engine must reproduce labels from probabilities.
        # Until then (the parity check takes seconds), scikit-learn serves.
        self.engine: str = SKLEARN  # "scikit-learn" or "onnxruntime"; /config and /metrics
        self.engine_reason: str = ENGINE_PENDING
        self._runner: OnnxRunner | None = None
        self.engine_chosen = threading.Event()
        if choose_engine_now:
            self.choose_engine()

    @property
    def quiet(self) -> bool:
        """Whether scikit-learn's feature-names warning is silenced (fitted on a DataFrame)."""
        return self._quiet

    def engine_choice(self) -> EngineChoice:
        """ONNX Runtime's parity check on the reference sample (blocking), as a choice."""
        return choose_engine(
            self.model, key=self.sha256, task=self.task,
            has_probabilities=self.has_probabilities, label_source=self.label_source,
            classes=self.classes, sample=self.reference_sample, quiet=self._quiet,
            sklearn_proba=self._sklearn_probabilities,
            sklearn_labels=lambda X: _labels(self._call("predict", X)))

    def use_engine(self, choice: EngineChoice) -> None:
        """Serve with ``choice`` from now on; requests in flight finish on the engine they
        started with."""
        reason = choice.reason
        if choice.engine == SKLEARN and self._direct is not None:
            reason += (
                f"; its {self._direct.n_trees} trees are called one by one, without joblib's "
                "dispatch (probabilities identical to predict_proba on the "
                f"{self._direct.checked_rows} reference rows)")
        # The runner first: a request reads it once, and the names follow what serves.
        self._runner = choice.runner
        self.engine, self.engine_reason = choice.engine, reason
        self.engine_chosen.set()

    def choose_engine(self) -> None:
        """Check ONNX Runtime's parity (blocking) and switch to the engine it picks."""
        self.use_engine(self.engine_choice())

    def __repr__(self) -> str:
        return (
            f"ServedModel(name={self.name!r}, version={self.version!r}, task={self.task!r}, "
            f"label_source={self.label_source!r}, engine={self.engine!r}, path='{self.path}')"
        )

    def _call(self, method: str, X: np.ndarray) -> Any:
        bound = getattr(self.model, method)
        return predict_quietly(bound, X) if self._quiet else bound(X)

    def _probabilities(self, X: np.ndarray) -> np.ndarray:
        runner = self._runner
        if runner is not None:
            return runner.predict_proba(X, self._sklearn_probabilities)
        return self._sklearn_probabilities(X)

    def _sklearn_probabilities(self, X: np.ndarray) -> np.ndarray:
        direct = self._direct.predict_proba(X) if self._direct is not None else None
        probabilities = direct if direct is not None else np.asarray(
            self._call("predict_proba", X), dtype=np.float64)
        if probabilities.shape != (X.shape[0], len(self._class_array)):
            raise ValueError(
                f"{self.name}: predict_proba gave shape {probabilities.shape}, expected "
                f"({X.shape[0]}, {len(self._class_array)})"
            )
        return probabilities

    def _choose_label_source(self) -> str:
        sample = self.reference_sample
        if (
            not self.has_probabilities
            or isinstance(final_estimator(self.model), SVC | NuSVC)
            or sample is None
            or len(sample) == 0
        ):
            return LABELS_FROM_PREDICT
        try:
            from_probabilities = self._class_array[
                self._sklearn_probabilities(sample).argmax(axis=1)]
            predicted = _labels(self._call("predict", sample))
        except Exception:
            # A model that fails here may fail per request too; calling predict as well keeps
            # its labels exactly what the model says whenever it does answer.
            return LABELS_FROM_PREDICT
        if from_probabilities.tolist() == predicted:
            return LABELS_FROM_PROBABILITIES
        return LABELS_FROM_PREDICT

    def predict_inline(self, X: np.ndarray) -> Prediction | None:
        """What :meth:`predict` answers, when ONNX Runtime alone can answer it (tens of
        microseconds, so the batcher may call it on the event loop); None when the model is
        served by scikit-learn or a row is on a near tie that scikit-learn must settle."""
        runner = self._runner
        if runner is None or X.ndim != 2 or X.shape[1] != self.n_features:
            return None
        probabilities = runner.try_predict_proba(X)
        if probabilities is None:
            return None
        return Prediction(labels=self._class_array[probabilities.argmax(axis=1)].tolist(),
                          probabilities=probabilities)

    def predict(self, X: np.ndarray) -> Prediction:
        """Labels (and probabilities when available) for ``X``, a 2-D float64 array in
        ``feature_names`` order."""
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"{self.name}: expected a 2-D array with {self.n_features} columns, "
                f"got shape {X.shape}"
            )
        if self.task == "regression":
            values = np.asarray(self._call("predict", X), dtype=np.float64)
            return Prediction(labels=values.ravel().tolist(), probabilities=None)
        if not self.has_probabilities:
            return Prediction(labels=_labels(self._call("predict", X)), probabilities=None)
        probabilities = self._probabilities(X)
        if self.label_source == LABELS_FROM_PROBABILITIES:
            labels = self._class_array[probabilities.argmax(axis=1)].tolist()
        else:
            labels = _labels(self._call("predict", X))
        return Prediction(labels=labels, probabilities=probabilities)
