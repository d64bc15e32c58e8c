"""Rolling quality per variant over the latest labelled outcomes, against sklearn.metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    mean_absolute_error,
    precision_recall_fscore_support,
    root_mean_squared_error,
)

from router.monitoring import rolling_report
from router.serving.model import ServedModel
from router.serving.registry import ModelRegistry

CLASSES = ("setosa", "versicolor", "virginica")


@pytest.fixture
def iris_models(champion_dir: Path, challenger_dir: Path) -> dict[str, ServedModel]:
    registry = ModelRegistry()
    return {"champion": registry.load(champion_dir), "challenger": registry.load(challenger_dir)}


def _classifier_columns(n: int, seed: int) -> dict[str, np.ndarray]:
    """n rows: a third challenger, some failed calls, a third unlabelled, a few labels that are
    no class (-2), labels arriving in a shuffled order."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    correct = rng.random(n) < np.where(label == 2, 0.6, 0.9)
    predicted = np.where(correct, label, (label + rng.integers(1, 3, n)) % 3)
    error = rng.random(n) < 0.02
    predicted[error] = -1
    label[rng.random(n) < 0.3] = -1
    label[rng.random(n) < 0.01] = -2
    return {"challenger": rng.random(n) < 0.3, "error": error, "predicted": predicted,
            "label": label, "feedback_id": rng.permutation(n).astype(np.int64)}


def test_classifier_window_matches_sklearn(iris_models: dict[str, ServedModel]) -> None:
    """Accuracy and per-class precision/recall/F1 of each variant's latest 500 labels (by
    arrival) equal sklearn's on the same predictions and labels."""
    columns = _classifier_columns(4000, seed=1)
    masks = {"champion": ~columns["challenger"], "challenger": columns["challenger"]}
    report = rolling_report(columns, masks, iris_models, CLASSES, window=500)
    assert report["window"] == 500
    names = np.array([*CLASSES, "no-class"])
    for role, mask in masks.items():
        rows = np.flatnonzero(mask & (columns["label"] != -1) & ~columns["error"])
        rows = rows[np.argsort(columns["feedback_id"][rows])][-500:]
        # -2, a label outside the classes, reads as "no-class".
        truth = names[np.where(columns["label"][rows] == -2, 3, columns["label"][rows])]
        predicted = names[columns["predicted"][rows]]
        got = report["variants"][role]
        assert got["labelled"] == 500
        assert got["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
        precision, recall, f1, support = precision_recall_fscore_support(
            truth, predicted, labels=list(CLASSES), zero_division=0)
        for i, name in enumerate(CLASSES):
            assert got["classes"][name] == pytest.approx(
                {"precision": precision[i], "recall": recall[i], "f1": f1[i],
                 "support": support[i]})
        assert got["macro_f1"] == pytest.approx(float(np.mean(f1)))
        assert got["recorded"] == iris_models[role].metadata["metrics"]


def test_a_window_larger_than_the_labels_takes_them_all(
        iris_models: dict[str, ServedModel]) -> None:
    """With fewer labels than the window, every labelled outcome counts; none gives None."""
    columns = _classifier_columns(300, seed=2)
    masks = {"champion": ~columns["challenger"], "challenger": columns["challenger"]}
    report = rolling_report(columns, masks, iris_models, CLASSES, window=1000)
    labelled = (columns["label"] != -1) & ~columns["error"]
    assert report["variants"]["champion"]["labelled"] == int((labelled & masks["champion"]).sum())
    empty = {name: values[:0] for name, values in columns.items()}
    nothing = rolling_report(empty, {"champion": empty["challenger"]}, iris_models, CLASSES, 10)
    assert nothing["variants"]["champion"]["labelled"] == 0
    assert nothing["variants"]["champion"]["accuracy"] is None


def test_regressor_window_matches_sklearn(regressor_dir: Path) -> None:
    """MAE, RMSE and mean error of the latest 200 labelled outcomes equal sklearn's."""
    rng = np.random.default_rng(3)
    n = 1000
    value = rng.normal(150, 50, n)
    label_value = value + rng.normal(5, 20, n)
    label_value[rng.random(n) < 0.2] = math.nan
    columns = {"challenger": np.zeros(n, bool), "error": np.zeros(n, bool), "value": value,
               "label_value": label_value, "feedback_id": rng.permutation(n)}
    models = {"champion": ModelRegistry().load(regressor_dir)}
    got = rolling_report(columns, {"champion": ~columns["challenger"]}, models, None,
                         window=200)["variants"]["champion"]
    rows = np.flatnonzero(np.isfinite(label_value))
    rows = rows[np.argsort(columns["feedback_id"][rows])][-200:]
    assert got["labelled"] == 200
    assert got["mae"] == pytest.approx(mean_absolute_error(label_value[rows], value[rows]))
    assert got["rmse"] == pytest.approx(root_mean_squared_error(label_value[rows], value[rows]))
    assert got["mean_error"] == pytest.approx(float(np.mean(value[rows] - label_value[rows])))
