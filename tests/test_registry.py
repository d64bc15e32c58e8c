"""Tests for router.serving.registry: ServedModel predictions and the ModelRegistry cache."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from router.artifacts import load_model, save_model
from router.errors import ModelLoadError
from router.serving.model import Prediction, ServedModel
from router.serving.registry import ModelRegistry
from tests.conftest import IRIS_FEATURES
from tests.fixture_models import FAIL_ENV, DisagreeingClassifier

Data = tuple[np.ndarray, np.ndarray]


def _served(directory: Path) -> ServedModel:
    return ServedModel(load_model(directory))


def _save_iris(directory: Path, final: Any, X: Any, y: np.ndarray) -> Path:
    model = Pipeline([("scale", StandardScaler()), ("model", final)]).fit(X, y)
    return save_model(model, directory, name="m", version="1", X_train=X)


def _boom(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError("predict must not be called")


def test_one_pass_labels_equal_predict(
    champion_dir: Path, iris_data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A classifier whose argmax agrees with predict serves labels from predict_proba alone."""
    X, _ = iris_data
    served = _served(champion_dir)
    expected_labels = served.model.predict(X).tolist()
    expected_probabilities = served.model.predict_proba(X)
    assert served.label_source == "predict_proba"
    monkeypatch.setattr(served.model, "predict", _boom)
    prediction = served.predict(X)
    assert isinstance(prediction, Prediction)
    assert prediction.labels == expected_labels
    assert all(type(label) is str for label in prediction.labels)
    assert prediction.probabilities is not None
    assert prediction.probabilities.dtype == np.float64
    np.testing.assert_array_equal(prediction.probabilities, expected_probabilities)


def test_served_model_describes_itself(challenger_dir: Path) -> None:
    """ServedModel carries name, version, sha256, task, feature names and classes from metadata."""
    served = _served(challenger_dir)
    assert (served.name, served.version, served.task) == ("iris-gb", "1", "classification")
    assert served.sha256 == served.metadata["sha256"]
    assert served.path == challenger_dir
    assert served.feature_names == IRIS_FEATURES
    assert served.classes == ("setosa", "versicolor", "virginica")
    assert served.has_probabilities
    assert served.reference_sample is not None and served.reference_sample.shape == (150, 4)


def test_disagreeing_argmax_falls_back_to_predict(tmp_path: Path, iris_data: Data) -> None:
    """When argmax of predict_proba disagrees with predict on the sample, predict gives labels."""
    X, y = iris_data
    served = _served(_save_iris(tmp_path, DisagreeingClassifier(), X, y))
    assert served.label_source == "predict"
    prediction = served.predict(X)
    assert prediction.labels == served.model.predict(X).tolist()
    assert prediction.probabilities is not None
    np.testing.assert_array_equal(prediction.probabilities, served.model.predict_proba(X))


@pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")
def test_svc_with_probabilities_uses_predict(tmp_path: Path, iris_data: Data) -> None:
    """SVC's Platt probabilities may disagree with its decision: labels always come from predict."""
    X, y = iris_data
    served = _served(_save_iris(tmp_path, SVC(probability=True, random_state=0), X, y))
    assert served.has_probabilities
    assert served.label_source == "predict"
    assert served.predict(X).labels == served.model.predict(X).tolist()


def test_svc_without_probabilities_has_none(tmp_path: Path, iris_data: Data) -> None:
    """SVC() without probabilities, whose predict_proba property raises, serves labels only."""
    X, y = iris_data
    served = _served(_save_iris(tmp_path, SVC(), X, y))
    assert not served.has_probabilities
    prediction = served.predict(X[:5])
    assert prediction.probabilities is None
    assert prediction.labels == served.model.predict(X[:5]).tolist()


def test_no_proba_model_serves_labels_only(no_proba_dir: Path, iris_data: Data) -> None:
    """A last step without predict_proba serves labels with probabilities None."""
    X, _ = iris_data
    served = _served(no_proba_dir)
    assert not served.has_probabilities
    assert served.label_source == "predict"
    prediction = served.predict(X)
    assert prediction.probabilities is None
    assert prediction.labels == served.model.predict(X).tolist()


def test_regressor_serves_floats(regressor_dir: Path, diabetes_data: Data) -> None:
    """A regressor's labels are Python floats equal to predict; probabilities None."""
    X, _ = diabetes_data
    served = _served(regressor_dir)
    assert served.task == "regression"
    assert served.classes is None
    assert not served.has_probabilities
    prediction = served.predict(X)
    assert prediction.probabilities is None
    assert all(type(v) is float for v in prediction.labels)
    np.testing.assert_array_equal(prediction.labels, served.model.predict(X))


def test_integer_labels_are_plain_ints(tmp_path: Path, iris_data: Data) -> None:
    """Integer class labels come out as Python ints, not numpy scalars."""
    X, y = iris_data
    codes = np.unique(y, return_inverse=True)[1]
    served = _served(_save_iris(tmp_path, RandomForestClassifier(5, random_state=0), X, codes))
    labels = served.predict(X).labels
    assert all(type(label) is int for label in labels)
    assert labels == served.model.predict(X).tolist()


def test_failing_model_loads_and_raises_on_predict(
    failing_dir: Path, iris_data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that fails still loads; its predict errors propagate unchanged."""
    X, _ = iris_data
    monkeypatch.delenv(FAIL_ENV, raising=False)
    served = _served(failing_dir)
    assert served.label_source == "predict"
    with pytest.raises(RuntimeError, match="deliberate failure"):
        served.predict(X[:2])
    monkeypatch.setenv(FAIL_ENV, "0")
    assert len(served.predict(X[:2]).labels) == 2


def test_wrong_shape_is_a_value_error(champion_dir: Path) -> None:
    """predict needs a 2-D array with one column per feature."""
    served = _served(champion_dir)
    with pytest.raises(ValueError, match="4 columns"):
        served.predict(np.zeros((2, 3)))


def test_model_fitted_on_a_dataframe_serves_arrays_quietly(tmp_path: Path, iris_data: Data) -> None:
    """A pipeline fitted with feature names predicts on arrays without sklearn's name warning."""
    pd = pytest.importorskip("pandas")
    X, y = iris_data
    frame = pd.DataFrame(X, columns=list(IRIS_FEATURES))
    served = _served(_save_iris(tmp_path, RandomForestClassifier(5, random_state=0), frame, y))
    assert served.label_source == "predict_proba"
    prediction = served.predict(X)  # a warning would fail this suite
    assert prediction.labels == served.model.predict(frame).tolist()


def test_cache_returns_the_same_object(champion_dir: Path) -> None:
    """Loading one unchanged directory twice (any spelling of its path) returns one object."""
    registry = ModelRegistry()
    first = registry.load(champion_dir)
    again = registry.load(str(champion_dir / ".." / champion_dir.name))
    assert again is first
    assert len(registry) == 1


def test_changed_file_reloads(champion_dir: Path, challenger_dir: Path, tmp_path: Path) -> None:
    """A directory whose model.joblib changed is loaded again; the cache keeps the newest."""
    directory = Path(shutil.copytree(champion_dir, tmp_path / "m"))
    registry = ModelRegistry()
    first = registry.load(directory)
    other = load_model(challenger_dir)
    save_model(
        other.model,
        directory,
        name="iris-rf",
        version="2",
        X_train=other.reference_sample,
        feature_names=IRIS_FEATURES,
        overwrite=True,
    )
    second = registry.load(directory)
    assert second is not first
    assert second.sha256 != first.sha256
    assert second.version == "2"
    assert registry.load(directory) is second
    assert len(registry) == 1


def test_registry_load_errors_name_the_path(tmp_path: Path) -> None:
    """A directory that does not load raises ModelLoadError from the registry too."""
    with pytest.raises(ModelLoadError, match="does not exist"):
        ModelRegistry().load(tmp_path / "missing")


def test_slow_model_sleeps_as_configured(
    slow_dir: Path, iris_data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slow fixture reads ROUTER_TEST_SLEEP_MS at call time and otherwise predicts normally."""
    X, _ = iris_data
    monkeypatch.setenv("ROUTER_TEST_SLEEP_MS", "0")
    served = _served(slow_dir)
    assert served.label_source == "predict_proba"
    assert served.predict(X).labels == served.model.predict(X).tolist()
