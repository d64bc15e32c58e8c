"""skops model files: saved with format="skops", loaded with an explicit list of trusted types."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from router.artifacts import (
    METADATA_FILE,
    MODEL_FILE,
    SIGNATURE_FILE,
    SKOPS_FILE,
    file_sha256,
    load_model,
    save_model,
)
from router.errors import DigestMismatchError, ModelLoadError
from tests.conftest import IRIS_FEATURES
from tests.fixture_models import FAIL_ENV, FailingClassifier

pytest.importorskip("skops")

Data = tuple[np.ndarray, np.ndarray]


def _swap_function(node: Any) -> Any:
    """The schema with numpy.log1p replaced by shutil.rmtree wherever it is named."""
    if isinstance(node, dict):
        if node.get("__class__") == "log1p" and node.get("__module__") == "numpy":
            return {**node, "__class__": "rmtree", "__module__": "shutil"}
        return {key: _swap_function(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_swap_function(value) for value in node]
    return node


def _rewrite_schema(path: Path, edit: Callable[[Any], Any]) -> None:
    """Edit the JSON schema inside a skops file (a zip), as someone tampering with it would."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(entries["schema.json"])
    edited = edit(schema)
    assert edited != schema
    entries["schema.json"] = json.dumps(edited).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def _pipeline(final: Any, X: np.ndarray, y: np.ndarray) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("model", final)]).fit(X, y)


@pytest.mark.parametrize("final", [
    RandomForestClassifier(n_estimators=20, random_state=0),
    GradientBoostingClassifier(n_estimators=20, random_state=0),
    LogisticRegression(max_iter=1000),
], ids=["forest", "boosting", "logistic"])
def test_skops_and_joblib_directories_answer_alike(
    final: Any, iris_data: Data, tmp_path: Path
) -> None:
    """One pipeline saved both ways loads both ways, with identical probabilities."""
    X, y = iris_data
    model = _pipeline(final, X, y)
    kwargs = {"name": "iris", "version": "1", "X_train": X, "y_train": y,
              "feature_names": IRIS_FEATURES}
    as_joblib = save_model(model, tmp_path / "joblib", **kwargs)
    as_skops = save_model(model, tmp_path / "skops", format="skops", **kwargs)

    assert (as_skops / SKOPS_FILE).exists() and not (as_skops / MODEL_FILE).exists()
    metadata = json.loads((as_skops / METADATA_FILE).read_text())
    assert metadata["format"] == "skops"
    assert metadata["sha256"] == file_sha256(as_skops / SKOPS_FILE)
    assert json.loads((as_joblib / METADATA_FILE).read_text())["format"] == "joblib"

    from_joblib, from_skops = load_model(as_joblib), load_model(as_skops)
    assert type(from_skops.model) is Pipeline
    np.testing.assert_array_equal(from_skops.model.predict_proba(X),
                                  from_joblib.model.predict_proba(X))
    assert from_skops.metadata["classes"] == from_joblib.metadata["classes"]


def test_skops_regressor_round_trip(diabetes_data: Data, tmp_path: Path) -> None:
    """A regression pipeline in skops predicts what it predicted before saving."""
    X, y = diabetes_data
    model = _pipeline(Ridge(), X, y)
    directory = save_model(model, tmp_path / "m", name="d", version="1", X_train=X,
                           format="skops")
    np.testing.assert_array_equal(load_model(directory).model.predict(X), model.predict(X))


def test_directory_without_format_key_is_joblib(champion_dir: Path, tmp_path: Path) -> None:
    """Model directories saved before formats existed (no "format" key) still load."""
    directory = Path(shutil.copytree(champion_dir, tmp_path / "old"))
    path = directory / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata.pop("format", None)
    path.write_text(json.dumps(metadata))
    assert load_model(directory).metadata["task"] == "classification"


def test_unknown_format_is_refused(iris_data: Data, tmp_path: Path) -> None:
    X, y = iris_data
    with pytest.raises(ValueError, match="format must be one of joblib, skops"):
        save_model(_pipeline(LogisticRegression(), X, y), tmp_path, name="m", version="1",
                   X_train=X, format="pickle")


def test_untrusted_type_is_refused_naming_it_until_trusted(
    iris_data: Data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A skops file needing a type outside the trusted list is refused before it is built."""
    monkeypatch.setenv(FAIL_ENV, "0")
    X, y = iris_data
    model = _pipeline(FailingClassifier(), X, y)
    directory = save_model(model, tmp_path / "m", name="m", version="1", X_train=X,
                           format="skops")
    with pytest.raises(ModelLoadError) as caught:
        load_model(directory)
    assert str(directory / SKOPS_FILE) in caught.value.message
    assert "tests.fixture_models.FailingClassifier" in caught.value.message
    assert caught.value.detail[0]["untrusted_types"] == ["tests.fixture_models.FailingClassifier"]
    loaded = load_model(directory, trusted_types=["tests.fixture_models.FailingClassifier"])
    np.testing.assert_array_equal(loaded.model.predict(X), model.predict(X))


def test_function_of_an_unknown_module_is_not_run(iris_data: Data, tmp_path: Path) -> None:
    """A FunctionTransformer naming a function skops does not trust is refused, not called."""
    X, y = iris_data
    model = Pipeline([("f", FunctionTransformer(np.log1p)),
                      ("m", LogisticRegression(max_iter=1000))]).fit(X, y)
    directory = save_model(model, tmp_path / "m", name="m", version="1", X_train=X,
                           format="skops")
    load_model(directory)  # numpy's ufuncs are on skops' default list
    # The same file with the function swapped for one from a module nobody trusts.
    _rewrite_schema(directory / SKOPS_FILE, _swap_function)
    path = directory / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata["sha256"] = file_sha256(directory / SKOPS_FILE)
    path.write_text(json.dumps(metadata))
    with pytest.raises(ModelLoadError, match=r"shutil\.rmtree"):
        load_model(directory)


def test_changed_skops_file_fails_its_digest(iris_data: Data, tmp_path: Path) -> None:
    X, y = iris_data
    directory = save_model(_pipeline(LogisticRegression(), X, y), tmp_path / "m", name="m",
                           version="1", X_train=X, format="skops")
    with open(directory / SKOPS_FILE, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(DigestMismatchError, match=re.escape(str(directory / SKOPS_FILE))):
        load_model(directory)


def test_overwrite_in_another_format_leaves_one_model_file(
    iris_data: Data, tmp_path: Path
) -> None:
    """Re-saving as skops removes model.joblib and a signature of the old files."""
    X, y = iris_data
    model = _pipeline(LogisticRegression(), X, y)
    directory = save_model(model, tmp_path / "m", name="m", version="1", X_train=X)
    (directory / SIGNATURE_FILE).write_text("{}")
    save_model(model, directory, name="m", version="1", X_train=X, format="skops",
               overwrite=True)
    assert sorted(p.name for p in directory.iterdir()) == [
        METADATA_FILE, SKOPS_FILE, "reference_sample.npy"]
    assert load_model(directory).metadata["format"] == "skops"
