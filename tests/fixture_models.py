"""Estimators for test fixtures that misbehave on purpose (fail, sleep, disagree with themselves).

They live in a real module so that pickles of them load in any process that can import
``tests.fixture_models`` (run from the repository root).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

FAIL_ENV = "ROUTER_TEST_FAIL"
SLEEP_ENV = "ROUTER_TEST_SLEEP_MS"
DEFAULT_SLEEP_MS = 50.0


class _WrappedClassifier(ClassifierMixin, BaseEstimator):
    """A logistic regression behind a thin shell the subclasses bend."""

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, X: Any, y: Any) -> _WrappedClassifier:
        self.estimator_ = LogisticRegression(C=self.C, max_iter=1000).fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = self.estimator_.n_features_in_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.estimator_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return self.estimator_.predict(X)


class FailingClassifier(_WrappedClassifier):
    """Raises RuntimeError from predict and predict_proba unless ``ROUTER_TEST_FAIL=0``.

    The variable is read at each call, so a test can make a loaded model recover; fixtures set it
    to 0 while saving, because save_model predicts on the training data.
    """

    def _maybe_fail(self) -> None:
        if os.environ.get(FAIL_ENV, "1") != "0":
            raise RuntimeError("FailingClassifier: deliberate failure")

    def predict_proba(self, X: Any) -> np.ndarray:
        self._maybe_fail()
        return super().predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        self._maybe_fail()
        return super().predict(X)


def _sleep() -> None:
    time.sleep(float(os.environ.get(SLEEP_ENV, DEFAULT_SLEEP_MS)) / 1000.0)


class SlowClassifier(_WrappedClassifier):
    """Sleeps ``ROUTER_TEST_SLEEP_MS`` (read at each call, default 50) per predict call."""

    def predict_proba(self, X: Any) -> np.ndarray:
        _sleep()
        return super().predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        _sleep()
        return super().predict(X)


class DisagreeingClassifier(_WrappedClassifier):
    """Its predict names the least likely class: argmax of predict_proba never agrees."""

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmin(self.predict_proba(X), axis=1)]
