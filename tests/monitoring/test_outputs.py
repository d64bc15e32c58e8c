"""Output monitoring without labels: predicted shares and the constant_output flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from router.artifacts import save_model
from router.monitoring import output_report
from router.monitoring.outputs import CONSTANT_ALPHA
from router.serving.model import ServedModel
from router.serving.registry import ModelRegistry

CLASSES = ("setosa", "versicolor", "virginica")


def _columns(predicted: np.ndarray) -> dict[str, np.ndarray]:
    n = predicted.size
    return {"challenger": np.zeros(n, bool), "error": predicted < 0, "predicted": predicted}


def _report(columns: dict[str, np.ndarray], model: ServedModel, classes: tuple[str, ...] | None,
            window: int = 1000) -> dict[str, object]:
    variants = output_report(columns, {"champion": ~columns["challenger"]},
                             {"champion": model}, classes, window)["variants"]
    return dict(variants["champion"])


@pytest.fixture
def iris_model(champion_dir: Path) -> ServedModel:
    return ModelRegistry().load(champion_dir)


def test_shares_of_the_latest_window_next_to_the_reference(iris_model: ServedModel) -> None:
    """The window is the latest predictions in log order; failed calls are left out."""
    rng = np.random.default_rng(4)
    predicted = np.r_[np.zeros(500, np.int64), rng.integers(0, 3, 1000), -np.ones(7, np.int64)]
    got = _report(_columns(predicted), iris_model, CLASSES, window=1000)
    latest = predicted[predicted >= 0][-1000:]
    assert got["predictions"] == 1000
    for i, name in enumerate(CLASSES):
        assert got["shares"][name] == pytest.approx(np.mean(latest == i))
    reference = iris_model.metadata["reference"]["predictions"]
    assert got["reference_shares"] == pytest.approx(
        dict(zip(reference["classes"], reference["shares"], strict=True)))
    assert got["constant_output"] is False


def test_one_class_taking_everything_is_flagged_when_training_was_mixed(
        iris_model: ServedModel) -> None:
    """995 of 1,000 predictions setosa, a third of them in training: constant_output; the same
    with only 50 predictions, or at 98 %, is not."""
    flagged = _report(_columns(np.r_[np.zeros(995, np.int64), np.ones(5, np.int64)]),
                      iris_model, CLASSES)
    assert (flagged["top_class"], flagged["top_share"]) == ("setosa", 0.995)
    assert flagged["constant_output"] is True
    short = _report(_columns(np.zeros(50, np.int64)), iris_model, CLASSES)
    assert short["constant_output"] is False
    mixed = _report(_columns(np.r_[np.zeros(980, np.int64), np.ones(20, np.int64)]),
                    iris_model, CLASSES)
    assert mixed["constant_output"] is False


def test_a_model_that_was_nearly_constant_in_training_is_not_flagged(tmp_path: Path) -> None:
    """A rare-positive model predicted "no" for 99.7 % of its training rows: the same share live
    is no alarm, since binomially it is no surprise."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 3))
    y = np.where(X[:, 0] > 2.75, "yes", "no")
    model = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]).fit(X, y)
    directory = save_model(model, tmp_path / "rare" / "1", name="rare", version="1",
                           X_train=X, y_train=y, feature_names=["a", "b", "c"])
    served = ModelRegistry().load(directory)
    reference = served.metadata["reference"]["predictions"]
    no_share = reference["shares"][reference["classes"].index("no")]
    assert no_share > 0.99
    got = _report(_columns(np.r_[np.zeros(997, np.int64), np.ones(3, np.int64)]), served,
                  ("no", "yes"))
    assert got["top_share"] == 0.997
    assert binom.sf(996, 1000, no_share) > CONSTANT_ALPHA
    assert got["constant_output"] is False


def test_regressor_outputs_mean_and_quantiles(regressor_dir: Path) -> None:
    """A regressor's window: mean and quantiles as numpy computes them, the reference's from its
    saved histogram; one value repeated 99.5 % of the time is constant_output."""
    model = ModelRegistry().load(regressor_dir)
    rng = np.random.default_rng(6)
    value = rng.normal(150, 40, 1500)
    columns = {"challenger": np.zeros(1500, bool), "error": np.zeros(1500, bool), "value": value}
    got = _report(columns, model, None)
    latest = value[-1000:]
    assert got["mean"] == pytest.approx(latest.mean())
    assert got["quantiles"] == pytest.approx(
        dict(zip(("p5", "p25", "p50", "p75", "p95"),
                 np.percentile(latest, [5, 25, 50, 75, 95]), strict=True)))
    reference = model.metadata["reference"]["predictions"]
    edges, counts = np.array(reference["edges"]), np.array(reference["counts"])
    assert got["reference"]["mean"] == pytest.approx(
        float(np.sum((edges[:-1] + edges[1:]) / 2 * counts) / counts.sum()))
    assert edges[0] <= got["reference"]["quantiles"]["p50"] <= edges[-1]
    assert got["constant_output"] is False

    stuck = np.r_[value[:5], np.full(995, 140.0)]
    columns = {"challenger": np.zeros(1000, bool), "error": np.zeros(1000, bool), "value": stuck}
    assert _report(columns, model, None)["constant_output"] is True
