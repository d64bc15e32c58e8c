"""Tests for router.artifacts: model directories, their metadata, digests and load errors."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn.base
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

import router
from router.artifacts import (
    HISTOGRAM_BINS,
    METADATA_FILE,
    METADATA_KEYS,
    MODEL_FILE,
    REFERENCE_SAMPLE_FILE,
    REFERENCE_SAMPLE_ROWS,
    LibraryVersionWarning,
    file_sha256,
    load_model,
    save_model,
)
from router.errors import DigestMismatchError, ModelLoadError
from tests.conftest import IRIS_FEATURES

Data = tuple[np.ndarray, np.ndarray]


def _copy(directory: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(directory, tmp_path / "copy"))


def _edit_metadata(directory: Path, **changes: Any) -> None:
    path = directory / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata.update(changes)
    path.write_text(json.dumps(metadata))


def _tree(X: np.ndarray, y: np.ndarray) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("tree", DecisionTreeClassifier())]).fit(X, y)


class _Table:
    """A DataFrame stand-in: columns and an array view, nothing else."""

    def __init__(self, X: np.ndarray, columns: list[str]) -> None:
        self._X = X
        self.columns = columns

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._X if dtype is None else self._X.astype(dtype)


def test_public_api_is_exported() -> None:
    """router exports save_model, load_model, ModelArtifact, LibraryVersionWarning, __version__."""
    assert router.__version__ == "0.1.0"
    assert router.save_model is save_model
    assert router.load_model is load_model
    assert set(router.__all__) == {
        "LibraryVersionWarning",
        "ModelArtifact",
        "__version__",
        "load_model",
        "save_model",
    }


def test_metadata_has_every_spec_key_with_its_type(champion_dir: Path, iris_data: Data) -> None:
    """metadata.json holds every SPEC key with the right type and training feature ranges."""
    artifact = load_model(champion_dir)
    metadata = artifact.metadata
    assert set(METADATA_KEYS) <= metadata.keys()
    assert metadata["name"] == "iris-rf"
    assert metadata["version"] == "1"
    created = datetime.fromisoformat(metadata["created_at"])
    assert created.utcoffset() is not None
    assert created.astimezone(UTC) <= datetime.now(UTC)
    assert metadata["task"] == "classification"
    assert metadata["model_type"] == "RandomForestClassifier"
    X, _ = iris_data
    assert [f["name"] for f in metadata["features"]] == list(IRIS_FEATURES)
    assert [f["dtype"] for f in metadata["features"]] == ["float64"] * 4
    assert [f["min"] for f in metadata["features"]] == X.min(axis=0).tolist()
    assert [f["max"] for f in metadata["features"]] == X.max(axis=0).tolist()
    assert metadata["classes"] == ["setosa", "versicolor", "virginica"]
    assert isinstance(metadata["metrics"]["accuracy"], float)
    assert metadata["sha256"] == file_sha256(champion_dir / MODEL_FILE)
    assert set(metadata["library_versions"]) == {"python", "scikit-learn", "numpy", "joblib"}
    assert artifact.path == champion_dir
    assert artifact.feature_names == IRIS_FEATURES


def test_classes_follow_predict_proba_columns(tmp_path: Path, iris_data: Data) -> None:
    """classes are JSON-native ints in predict_proba column order (a sure tree finds each)."""
    X, _ = iris_data
    y = np.array([7, 2, 5])[np.arange(len(X)) % 3]
    model = _tree(X, y)
    save_model(model, tmp_path / "m", name="m", version=1, X_train=X)
    metadata = json.loads((tmp_path / "m" / METADATA_FILE).read_text())
    assert metadata["classes"] == [2, 5, 7]
    assert all(type(c) is int for c in metadata["classes"])
    assert metadata["version"] == "1"
    probabilities = model.predict_proba(X)
    sure = probabilities.max(axis=1) == 1.0
    assert sure.any()
    columns = probabilities[sure].argmax(axis=1)
    assert [metadata["classes"][c] for c in columns] == y[sure].tolist()


def test_reference_histograms_sum_to_the_rows(champion_dir: Path, iris_data: Data) -> None:
    """Each feature has a 10-bin histogram whose counts sum to the training rows."""
    X, _ = iris_data
    reference = load_model(champion_dir).metadata["reference"]
    assert reference["bins"] == HISTOGRAM_BINS == 10
    for i, name in enumerate(IRIS_FEATURES):
        histogram = reference["features"][name]
        assert len(histogram["edges"]) == HISTOGRAM_BINS + 1
        assert len(histogram["counts"]) == HISTOGRAM_BINS
        assert sum(histogram["counts"]) == len(X)
        assert histogram["edges"][0] == X[:, i].min()
        assert histogram["edges"][-1] == X[:, i].max()
    predictions = reference["predictions"]
    assert predictions["kind"] == "classes"
    assert predictions["classes"] == ["setosa", "versicolor", "virginica"]
    assert sum(predictions["counts"]) == len(X)
    assert sum(predictions["shares"]) == pytest.approx(1.0)
    assert reference["targets"]["counts"] == [50, 50, 50]


def test_reference_sample_is_capped_seeded_and_digested(tmp_path: Path) -> None:
    """At most 1,000 random training rows, the same on every save, with their sha256."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 3))
    y = (X[:, 0] > 0).astype(int)
    model = _tree(X, y)
    first = load_model(save_model(model, tmp_path / "a", name="m", version="1", X_train=X))
    second = load_model(save_model(model, tmp_path / "b", name="m", version="1", X_train=X))
    assert first.reference_sample is not None and second.reference_sample is not None
    assert first.reference_sample.shape == (REFERENCE_SAMPLE_ROWS, 3)
    np.testing.assert_array_equal(first.reference_sample, second.reference_sample)
    rows = {tuple(r) for r in X.tolist()}
    assert all(tuple(r) in rows for r in first.reference_sample.tolist())
    entry = first.metadata["reference"]["sample"]
    assert entry["file"] == REFERENCE_SAMPLE_FILE
    assert entry["rows"] == REFERENCE_SAMPLE_ROWS
    assert entry["sha256"] == file_sha256(tmp_path / "a" / REFERENCE_SAMPLE_FILE)


def test_feature_names_argument_wins(tmp_path: Path, iris_data: Data) -> None:
    """Feature names come first from the feature_names argument."""
    X, y = iris_data
    table = _Table(X, ["a", "b", "c", "d"])
    save_model(_tree(X, y), tmp_path, name="m", version="1", X_train=table, feature_names="wxyz")
    assert load_model(tmp_path).feature_names == ("w", "x", "y", "z")


def test_feature_names_from_x_train_columns(tmp_path: Path, iris_data: Data) -> None:
    """Without feature_names, the columns of X_train (duck-typed .columns) name the features."""
    X, y = iris_data
    save_model(_tree(X, y), tmp_path, name="m", version="1", X_train=_Table(X, list("abcd")))
    assert load_model(tmp_path).feature_names == ("a", "b", "c", "d")


def test_feature_names_from_a_pandas_dataframe(tmp_path: Path, iris_data: Data) -> None:
    """A pandas DataFrame's columns and dtypes are recorded (pandas is optional)."""
    pd = pytest.importorskip("pandas")
    X, y = iris_data
    frame = pd.DataFrame(X, columns=list(IRIS_FEATURES)).astype({"sepal_length": "float32"})
    save_model(_tree(frame.to_numpy(), y), tmp_path, name="m", version="1", X_train=frame)
    metadata = load_model(tmp_path).metadata
    assert [f["name"] for f in metadata["features"]] == list(IRIS_FEATURES)
    assert [f["dtype"] for f in metadata["features"]] == ["float32"] + ["float64"] * 3


def test_feature_names_from_the_model(tmp_path: Path, iris_data: Data) -> None:
    """A model fitted on a DataFrame names the features when X_train is a plain array."""
    pd = pytest.importorskip("pandas")
    X, y = iris_data
    model = _tree(pd.DataFrame(X, columns=list(IRIS_FEATURES)), y)
    save_model(model, tmp_path, name="m", version="1", X_train=X)
    assert load_model(tmp_path).feature_names == IRIS_FEATURES


def test_feature_names_default_to_f0_f1(tmp_path: Path, iris_data: Data) -> None:
    """With no other source, features are named f0, f1, ..."""
    X, y = iris_data
    save_model(_tree(X, y), tmp_path, name="m", version="1", X_train=X)
    assert load_model(tmp_path).feature_names == ("f0", "f1", "f2", "f3")


def test_feature_names_that_contradict_the_model_are_refused(
    tmp_path: Path, iris_data: Data
) -> None:
    """Names other than the model's feature_names_in_ (here reordered) are a ValueError."""
    pd = pytest.importorskip("pandas")
    X, y = iris_data
    model = _tree(pd.DataFrame(X, columns=list(IRIS_FEATURES)), y)
    with pytest.raises(ValueError, match="differ from the names the model was fitted with"):
        save_model(
            model, tmp_path, name="m", version="1", X_train=X, feature_names=IRIS_FEATURES[::-1]
        )


def test_wrong_number_of_feature_names_is_refused(tmp_path: Path, iris_data: Data) -> None:
    """feature_names must name every column of X_train."""
    X, y = iris_data
    with pytest.raises(ValueError, match="3 feature names for 4 columns"):
        save_model(_tree(X, y), tmp_path, name="m", version="1", X_train=X, feature_names="abc")


def test_unfitted_model_is_refused(tmp_path: Path, iris_data: Data) -> None:
    """save_model refuses an unfitted model with a message saying so."""
    X, _ = iris_data
    with pytest.raises(NotFittedError, match="not fitted: call fit"):
        save_model(LogisticRegression(), tmp_path, name="m", version="1", X_train=X)
    assert not (tmp_path / MODEL_FILE).exists()


def test_existing_directory_needs_overwrite(champion_dir: Path, tmp_path: Path) -> None:
    """Saving into a model directory again needs overwrite=True."""
    directory = _copy(champion_dir, tmp_path)
    artifact = load_model(directory)
    X = artifact.reference_sample
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(artifact.model, directory, name="iris-rf", version="1", X_train=X)
    save_model(artifact.model, directory, name="iris-rf", version="2", X_train=X, overwrite=True)
    assert load_model(directory).version == "2"
    assert not list(directory.glob(".*.tmp"))


def test_regressor_round_trip(regressor_dir: Path, diabetes_data: Data) -> None:
    """A regression pipeline saves as task regression, no classes, a prediction histogram."""
    X, y = diabetes_data
    artifact = load_model(regressor_dir)
    metadata = artifact.metadata
    assert metadata["task"] == "regression"
    assert metadata["model_type"] == "Ridge"
    assert metadata["classes"] is None
    predictions = metadata["reference"]["predictions"]
    assert predictions["kind"] == "histogram"
    assert sum(predictions["counts"]) == len(X)
    assert sum(metadata["reference"]["targets"]["counts"]) == len(y)
    np.testing.assert_allclose(artifact.model.predict(X[:5]), artifact.model.predict(X)[:5])


def test_changed_model_file_is_refused(champion_dir: Path, tmp_path: Path) -> None:
    """One changed byte in model.joblib: DigestMismatchError naming the file and both digests."""
    directory = _copy(champion_dir, tmp_path)
    model_path = directory / MODEL_FILE
    expected = file_sha256(model_path)
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_path.write_bytes(bytes(data))
    actual = file_sha256(model_path)
    with pytest.raises(DigestMismatchError) as caught:
        load_model(directory)
    message = str(caught.value)
    assert str(model_path) in message
    assert f"expected sha256 {expected}" in message
    assert f"actual {actual}" in message
    assert caught.value.detail == [
        {"file": str(model_path), "expected": expected, "actual": actual}
    ]


def test_changed_reference_sample_is_refused(champion_dir: Path, tmp_path: Path) -> None:
    """The reference sample is digest-checked too."""
    directory = _copy(champion_dir, tmp_path)
    np.save(directory / REFERENCE_SAMPLE_FILE, np.zeros((3, 4)))
    with pytest.raises(DigestMismatchError, match=REFERENCE_SAMPLE_FILE):
        load_model(directory)


def test_missing_directory_names_the_path(tmp_path: Path) -> None:
    """A missing model directory is a ModelLoadError naming it."""
    missing = tmp_path / "models" / "nope" / "1"
    with pytest.raises(ModelLoadError, match="does not exist") as caught:
        load_model(missing)
    assert str(missing) in str(caught.value)


def test_directory_without_metadata_names_the_file(tmp_path: Path) -> None:
    """A directory with no metadata.json is a ModelLoadError naming the file."""
    with pytest.raises(ModelLoadError, match="missing") as caught:
        load_model(tmp_path)
    assert str(tmp_path / METADATA_FILE) in str(caught.value)


def test_corrupt_metadata_names_the_file(champion_dir: Path, tmp_path: Path) -> None:
    """metadata.json that is not JSON is a ModelLoadError naming the file."""
    directory = _copy(champion_dir, tmp_path)
    (directory / METADATA_FILE).write_text('{"name": "iris-rf", ')
    with pytest.raises(ModelLoadError, match="not JSON") as caught:
        load_model(directory)
    assert str(directory / METADATA_FILE) in str(caught.value)
    assert caught.value.__cause__ is None


def test_metadata_missing_keys_are_named(champion_dir: Path, tmp_path: Path) -> None:
    """metadata.json without a SPEC key is a ModelLoadError naming the keys."""
    directory = _copy(champion_dir, tmp_path)
    metadata = json.loads((directory / METADATA_FILE).read_text())
    del metadata["sha256"], metadata["features"]
    (directory / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ModelLoadError, match="missing keys features, sha256"):
        load_model(directory)


def test_garbage_model_file_with_matching_digest(champion_dir: Path, tmp_path: Path) -> None:
    """A model.joblib that does not unpickle is a ModelLoadError naming it, no pickle traceback."""
    directory = _copy(champion_dir, tmp_path)
    model_path = directory / MODEL_FILE
    model_path.write_bytes(b"this is not a pickle at all")
    _edit_metadata(directory, sha256=file_sha256(model_path))
    with pytest.raises(ModelLoadError, match="cannot unpickle") as caught:
        load_model(directory)
    assert str(model_path) in str(caught.value)
    assert not isinstance(caught.value, DigestMismatchError)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_pickle_of_something_else_is_not_a_model(champion_dir: Path, tmp_path: Path) -> None:
    """A model.joblib holding no estimator is a ModelLoadError."""
    directory = _copy(champion_dir, tmp_path)
    joblib.dump({"weights": [1, 2, 3]}, directory / MODEL_FILE)
    _edit_metadata(directory, sha256=file_sha256(directory / MODEL_FILE))
    with pytest.raises(ModelLoadError, match="holds a dict, not a model"):
        load_model(directory)


def test_library_version_mismatch_warns(champion_dir: Path, tmp_path: Path) -> None:
    """Another major.minor of scikit-learn in metadata gives a LibraryVersionWarning naming both."""
    directory = _copy(champion_dir, tmp_path)
    versions = load_model(directory).metadata["library_versions"]
    _edit_metadata(directory, library_versions={**versions, "scikit-learn": "0.24.2"})
    with pytest.warns(LibraryVersionWarning, match="scikit-learn 0.24.2") as caught:
        artifact = load_model(directory)
    assert len(caught) == 1
    assert sklearn.__version__ in str(caught[0].message)
    assert str(directory) in str(caught[0].message)
    assert artifact.model is not None


def test_patch_version_difference_does_not_warn(champion_dir: Path, tmp_path: Path) -> None:
    """Only major.minor matters: another patch release loads silently."""
    directory = _copy(champion_dir, tmp_path)
    versions = load_model(directory).metadata["library_versions"]
    major, minor, *_ = versions["numpy"].split(".")
    _edit_metadata(directory, library_versions={**versions, "numpy": f"{major}.{minor}.999"})
    load_model(directory)  # warnings are errors in this suite


def test_sklearn_inconsistent_version_becomes_library_warning(
    champion_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sklearn's InconsistentVersionWarning on unpickling becomes one LibraryVersionWarning."""
    directory = _copy(champion_dir, tmp_path)
    model = load_model(directory).model
    with monkeypatch.context() as patch:
        patch.setattr(sklearn.base, "__version__", "1.0.0")
        joblib.dump(model, directory / MODEL_FILE)
    _edit_metadata(directory, sha256=file_sha256(directory / MODEL_FILE))
    with pytest.warns(LibraryVersionWarning, match=r"scikit-learn 1\.0\.0 pickled") as caught:
        load_model(directory)
    assert len(caught) == 1


def test_model_that_cannot_take_an_array_is_refused(tmp_path: Path, iris_data: Data) -> None:
    """A pipeline that needs a DataFrame (string column selectors) cannot be served: ValueError."""
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer

    X, y = iris_data
    frame = pd.DataFrame(X, columns=list(IRIS_FEATURES))
    select = ColumnTransformer([("keep", "passthrough", ["petal_length", "petal_width"])])
    model = Pipeline([("select", select), ("tree", DecisionTreeClassifier())]).fit(frame, y)
    with pytest.raises(ValueError, match="cannot predict on X_train as a float array"):
        save_model(model, tmp_path, name="m", version="1", X_train=frame)


def test_list_models_reports_each_directory(
    champion_dir: Path, challenger_dir: Path, tmp_path: Path
) -> None:
    """list_models finds model directories by name and version and flags a changed file."""
    models = tmp_path / "models"
    for version in ("10", "2"):
        shutil.copytree(champion_dir, models / "iris-rf" / version)
        _edit_metadata(models / "iris-rf" / version, version=version)
    shutil.copytree(challenger_dir, models / "iris-gb" / "1")
    (models / "iris-gb" / "1" / MODEL_FILE).write_bytes(b"changed")
    (models / ".hidden" / "1").mkdir(parents=True)
    (models / ".hidden" / "1" / MODEL_FILE).write_bytes(b"x")
    rows = router.artifacts.list_models(tmp_path)
    assert [(r["name"], r["version"], r["status"]) for r in rows] == [
        ("iris-gb", "1", "digest mismatch"),
        ("iris-rf", "2", "ok"),
        ("iris-rf", "10", "ok"),
    ]
    assert rows[1]["model_type"] == "RandomForestClassifier"
    assert rows[1]["sha256"] == file_sha256(champion_dir / MODEL_FILE)


def test_metrics_must_be_finite_json(tmp_path: Path, iris_data: Data) -> None:
    """A NaN metric is refused before any file is written."""
    X, y = iris_data
    with pytest.raises(ValueError, match=r"metrics.accuracy is nan"):
        save_model(
            _tree(X, y), tmp_path, name="m", version="1", X_train=X, metrics={"accuracy": np.nan}
        )
    assert list(tmp_path.iterdir()) == []
