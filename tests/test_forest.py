"""A forest's trees called directly: bitwise scikit-learn's predict_proba, or not used at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_wine
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from router.artifacts import save_model
from router.serving import engines
from router.serving.forest import direct_forest
from router.serving.registry import ModelRegistry


def _wine() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_wine(return_X_y=True)
    return X, np.asarray(["a", "b", "c"])[y]


@pytest.mark.parametrize("forest", [
    RandomForestClassifier(n_estimators=40, random_state=0),
    ExtraTreesClassifier(n_estimators=40, max_depth=4, random_state=0),
])
def test_identical_to_predict_proba_far_from_the_sample(forest: object) -> None:
    """On the training rows and on 5,000 rows far outside them: the same bits."""
    X, y = _wine()
    model = Pipeline([("scale", StandardScaler()), ("forest", forest)]).fit(X, y)
    direct = direct_forest(model, X[:50], False, model.predict_proba)
    assert direct is not None and direct.checked_rows == 50
    wide = np.random.default_rng(1).normal(X.mean(axis=0), 3 * X.std(axis=0), (5000, 13))
    for rows in (X, wide, wide[:1]):
        got = direct.predict_proba(rows)
        assert got is not None
        np.testing.assert_array_equal(got, model.predict_proba(rows))


@pytest.mark.parametrize("scaler", [
    StandardScaler(), StandardScaler(with_mean=False), StandardScaler(with_std=False),
    StandardScaler(with_mean=False, with_std=False),
])
def test_a_standard_scaler_is_applied_without_its_per_call_validation(
        scaler: StandardScaler, monkeypatch: pytest.MonkeyPatch) -> None:
    """A StandardScaler's arithmetic is done here (scikit-learn's transform spends about 90 µs
    a call validating its input, whatever the batch): the same bits, on every setting, with
    the step's own transform never called for float64 rows."""
    X, y = _wine()
    X[:, 3] = 7.0  # a constant column: its scale is 1, as scikit-learn sets it
    model = Pipeline([("scale", scaler),
                      ("forest", RandomForestClassifier(n_estimators=20, random_state=0))])
    model.fit(X, y)
    direct = direct_forest(model, X[:50], False, model.predict_proba)
    assert direct is not None
    wide = np.random.default_rng(3).normal(X.mean(axis=0), 3 * X.std(axis=0) + 1, (2000, 13))
    expected = model.predict_proba(wide)

    def refused(self: object, *args: object, **kwargs: object) -> None:
        raise AssertionError("StandardScaler.transform was called")

    monkeypatch.setattr(StandardScaler, "transform", refused)
    np.testing.assert_array_equal(direct.predict_proba(wide), expected)
    rows = wide[:3].copy()
    rows[1, 0] = np.inf  # scikit-learn refuses it: left to the pipeline
    assert direct.predict_proba(rows) is None


def test_rows_of_another_dtype_go_through_the_steps_own_transform() -> None:
    """float32 rows are scaled in float32 by scikit-learn: the step's own transform does it."""
    X, y = _wine()
    model = Pipeline([("scale", StandardScaler()),
                      ("forest", RandomForestClassifier(n_estimators=10, random_state=0))])
    model.fit(X, y)
    direct = direct_forest(model, X[:20], False, model.predict_proba)
    assert direct is not None
    rows = X.astype(np.float32)
    np.testing.assert_array_equal(direct.predict_proba(rows), model.predict_proba(rows))


def test_not_used_where_it_is_not_the_same() -> None:
    """Another estimator, no sample, or a sample where the answers differ: None."""
    X, y = _wine()
    forest = Pipeline([("scale", StandardScaler()),
                       ("forest", RandomForestClassifier(n_estimators=5, random_state=0))])
    forest.fit(X, y)
    linear = Pipeline([("scale", StandardScaler()),
                       ("model", LogisticRegression(max_iter=500))]).fit(X, y)
    assert direct_forest(linear, X[:20], False, linear.predict_proba) is None
    assert direct_forest(forest, None, False, forest.predict_proba) is None
    assert direct_forest(forest, X[:20], False,
                         lambda rows: forest.predict_proba(rows) + 1e-12) is None


def test_non_finite_input_is_left_to_the_pipeline() -> None:
    """A NaN reaching the trees is not scored here: scikit-learn answers it (or refuses)."""
    X, y = _wine()
    model = Pipeline([("forest", RandomForestClassifier(n_estimators=5, random_state=0))])
    model.fit(X, y)
    direct = direct_forest(model, X[:20], False, model.predict_proba)
    assert direct is not None
    rows = X[:3].copy()
    rows[1, 2] = np.nan
    assert direct.predict_proba(rows) is None


def test_served_model_uses_it_with_the_scikit_learn_engine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ONNX Runtime off, a forest pipeline is served through its trees, says so in its
    engine reason, and answers exactly what the pipeline answers."""
    monkeypatch.setenv(engines.ENGINE_ENV, "sklearn")
    monkeypatch.setattr(engines, "_cache", type(engines._cache)())
    X, y = _wine()
    model = Pipeline([("scale", StandardScaler()),
                      ("forest", RandomForestClassifier(n_estimators=30, random_state=0))])
    model.fit(X, y)
    directory = tmp_path / "wine" / "1"
    save_model(model, directory, name="wine", version="1", X_train=X, y_train=y,
               feature_names=tuple(f"f{i}" for i in range(13)))
    served = ModelRegistry().load(directory)
    assert served.engine == engines.SKLEARN
    assert "30 trees are called one by one" in served.engine_reason
    rows = np.random.default_rng(2).normal(X.mean(axis=0), X.std(axis=0), (300, 13))
    prediction = served.predict(rows)
    assert prediction.labels == model.predict(rows).tolist()
    np.testing.assert_array_equal(prediction.probabilities, model.predict_proba(rows))
