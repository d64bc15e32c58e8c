"""The engine choice: ONNX Runtime only where it matches scikit-learn, else scikit-learn."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from starlette.testclient import TestClient

from router.gateway.app import create_app
from router.serving import engine_check, engines, registry
from router.serving.engines import ONNXRUNTIME, SKLEARN, OnnxRunner
from router.serving.model import ENGINE_PENDING, ServedModel
from router.serving.registry import ENGINES_IN_BACKGROUND, ENGINES_UNCHOSEN, ModelRegistry
from tests.configs import write_config

Data = tuple[np.ndarray, np.ndarray]


def _fast_extra() -> None:
    pytest.importorskip("onnxruntime", reason="the fast extra (onnxruntime) is not installed")
    pytest.importorskip("skl2onnx", reason="the fast extra (skl2onnx) is not installed")


def _load(directory: Path) -> ServedModel:
    return ModelRegistry().load(directory)


def _noisy(X: np.ndarray) -> np.ndarray:
    return X + np.random.default_rng(0).normal(0, 0.3, X.shape)


@pytest.fixture(autouse=True)
def _fresh_engine_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test decides its own engine: no conversion carried over from another test."""
    monkeypatch.setattr(engines, "_cache", type(engines._cache)())
    monkeypatch.delenv(engines.ENGINE_ENV, raising=False)


def test_a_forest_runs_in_onnx_runtime_with_scikit_learns_exact_answers(
        champion_dir: Path, iris_data: Data) -> None:
    """A forest pipeline passes parity and serves scikit-learn's labels and probabilities."""
    _fast_extra()
    served = _load(champion_dir)
    assert served.engine == ONNXRUNTIME
    assert "0 labels differ" in served.engine_reason
    assert "StandardScaler in ONNX Runtime" in served.engine_reason
    for X in (iris_data[0], _noisy(iris_data[0])):
        prediction = served.predict(X)
        assert prediction.labels == served.model.predict(X).tolist()
        np.testing.assert_array_equal(prediction.probabilities, served.model.predict_proba(X))


def test_gradient_boosting_falls_to_float32_within_tolerance(
        challenger_dir: Path, iris_data: Data) -> None:
    """A model without an exact graph is served by the most precise conversion that passes."""
    _fast_extra()
    served = _load(challenger_dir)
    assert served.engine == ONNXRUNTIME
    X = _noisy(iris_data[0])
    prediction = served.predict(X)
    assert prediction.labels == served.model.predict(X).tolist()
    np.testing.assert_allclose(prediction.probabilities, served.model.predict_proba(X),
                               rtol=0, atol=engines.PARITY_TOLERANCE)


def test_parity_failure_falls_back_to_scikit_learn(
        save_iris_model: Callable[..., Path], iris_data: Data,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When ONNX Runtime's answers differ on the reference sample, scikit-learn serves."""
    _fast_extra()
    directory = save_iris_model("iris-lr", LogisticRegression(max_iter=500))
    X, y = iris_data
    impostor = LogisticRegression(C=0.01, max_iter=500).fit(X, y)  # other answers, same shape
    convert = engines.convert
    monkeypatch.setattr(engines, "convert",
                        lambda final, n, precision: convert(impostor, n, precision))
    served = _load(directory)
    assert served.engine == SKLEARN
    assert "no conversion of LogisticRegression matched" in served.engine_reason
    assert "labels differ" in served.engine_reason
    np.testing.assert_array_equal(served.predict(X).probabilities,
                                  served.model.predict_proba(X))


def test_a_model_that_cannot_be_converted_is_served_by_scikit_learn(
        save_iris_model: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversion that raises leaves the model on scikit-learn, saying why."""
    _fast_extra()

    def refuse(final: Any, n: int, precision: str) -> Any:
        raise NotImplementedError(f"no converter for {type(final).__name__}")

    monkeypatch.setattr(engines, "convert", refuse)
    served = _load(save_iris_model("iris-rf-3", RandomForestClassifier(3, random_state=0)))
    assert served.engine == SKLEARN
    assert "NotImplementedError: no converter for RandomForestClassifier" in served.engine_reason


def test_the_environment_variable_turns_the_fast_engine_off(
        champion_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ROUTER_ENGINE=sklearn serves with scikit-learn whatever is installed."""
    monkeypatch.setenv(engines.ENGINE_ENV, "sklearn")
    served = _load(champion_dir)
    assert served.engine == SKLEARN
    assert served.engine_reason.startswith("ROUTER_ENGINE=sklearn;")


def test_without_the_fast_extra_scikit_learn_serves_and_says_how_to_install_it(
        champion_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing extra is a reason, not an error."""
    monkeypatch.setattr(engines, "fast_extra_installed", lambda: False)
    served = _load(champion_dir)
    assert served.engine == SKLEARN
    assert "pip install 'router[fast]'" in served.engine_reason


def test_regressors_and_predict_labelled_models_stay_on_scikit_learn(
        regressor_dir: Path, no_proba_dir: Path) -> None:
    """Only classifiers whose labels come from their probabilities are converted."""
    assert _load(regressor_dir).engine_reason == "only classifiers are converted"
    assert _load(no_proba_dir).engine == SKLEARN


class _Session:
    """A stand-in ONNX Runtime session that answers fixed probabilities."""

    def __init__(self, probabilities: np.ndarray) -> None:
        self.probabilities = probabilities

    def get_inputs(self) -> list[Any]:
        return [SimpleNamespace(name="X")]

    def get_outputs(self) -> list[Any]:
        return [SimpleNamespace(name="label"), SimpleNamespace(name="probabilities")]

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.probabilities.copy()]


def test_near_ties_of_a_float32_graph_are_settled_by_scikit_learn() -> None:
    """Rows whose top two float32 probabilities nearly tie take scikit-learn's answer."""
    answers = np.array([[0.6, 0.4], [0.50001, 0.49999], [0.5, 0.5]])
    runner = OnnxRunner([], None, _Session(answers), "float32", quiet=False)
    exact = np.array([[0.499995, 0.500005]])
    X = np.zeros((3, 2))
    got = runner.predict_proba(X, lambda rows: exact if len(rows) == 1 else answers)
    np.testing.assert_array_equal(got, [[0.6, 0.4], [0.499995, 0.500005], [0.5, 0.5]])
    assert runner.try_predict_proba(X) is None
    without_near_ties = OnnxRunner([], None, _Session(answers[[0, 2]]), "float32", quiet=False)
    assert without_near_ties.try_predict_proba(X[[0, 2]]) is not None


def test_config_shows_each_models_engine_and_reason(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> None:
    """GET /config reports the engine serving each model and why."""
    path = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir)
    with TestClient(create_app(path, base_dir=tmp_path)) as client:
        models = client.get("/config").json()["models"]
    for role in ("champion", "challenger"):
        assert models[role]["engine"] in (SKLEARN, ONNXRUNTIME)
        assert models[role]["engine_reason"]


def test_the_parity_check_runs_beside_serving_and_the_engine_switches_after(
        champion_dir: Path, iris_data: Data, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the background mode the gateway uses, a load returns before the parity check ends:
    scikit-learn answers meanwhile, and ONNX Runtime takes over once the check passes."""
    _fast_extra()
    release = threading.Event()
    check = engine_check.choice_apart

    held: list[str] = []

    def held_check(served: ServedModel) -> engines.EngineChoice:
        held.append(served.name)
        assert release.wait(60)
        return check(served)

    # Patched where the background choice looks it up: the registry imports it by name.
    monkeypatch.setattr(registry, "choice_apart", held_check)
    served = ModelRegistry(engines=ENGINES_IN_BACKGROUND).load(champion_dir)
    assert (served.engine, served.engine_reason) == (SKLEARN, ENGINE_PENDING)
    assert not served.engine_chosen.is_set()
    X = iris_data[0]
    assert served.predict(X).labels == served.model.predict(X).tolist()
    release.set()
    assert served.engine_chosen.wait(600)
    assert held == [served.name]  # the choice went through the held check, not around it
    assert served.engine == ONNXRUNTIME and "0 labels differ" in served.engine_reason
    for rows in (X, _noisy(X)):
        np.testing.assert_array_equal(served.predict(rows).probabilities,
                                      served.model.predict_proba(rows))


@pytest.mark.parametrize("model", ["champion_dir", "challenger_dir"])
def test_the_child_process_chooses_as_this_process_would(
        model: str, request: pytest.FixtureRequest, iris_data: Data) -> None:
    """The check in a child process gives the engine, the reason and the answers that the
    same check in this process gives."""
    _fast_extra()
    directory = request.getfixturevalue(model)
    here = _load(directory)
    apart = ModelRegistry(engines=ENGINES_UNCHOSEN).load(directory)
    apart.use_engine(engine_check.choice_apart(apart))
    assert (apart.engine, apart.engine_reason) == (here.engine, here.engine_reason)
    X = _noisy(iris_data[0])
    np.testing.assert_array_equal(apart.predict(X).probabilities, here.predict(X).probabilities)


def test_the_child_check_runs_once_per_model_directory_and_digest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateways rebuilt on the same files reuse the child's answer; a failed check (a crash,
    a time-out) is tried again at the next load; another digest is checked anew."""
    calls: list[tuple[str, str]] = []
    answers = iter([{"engine": SKLEARN, "reason": "crashed", "failed": True},
                    {"engine": SKLEARN, "reason": "no conversion matched"},
                    {"engine": SKLEARN, "reason": "other content"}])

    def check(directory: str, sha256: str) -> dict[str, object]:
        calls.append((directory, sha256))
        return next(answers)

    monkeypatch.setattr(engine_check, "_check_in_child", check)
    monkeypatch.setattr(engine_check, "_answers", {})
    assert engine_check._answer("/m/1", "aa")["reason"] == "crashed"
    assert engine_check._answer("/m/1", "aa")["reason"] == "no conversion matched"
    assert engine_check._answer("/m/1", "aa")["reason"] == "no conversion matched"
    assert engine_check._answer("/m/1", "bb")["reason"] == "other content"
    assert calls == [("/m/1", "aa"), ("/m/1", "aa"), ("/m/1", "bb")]
