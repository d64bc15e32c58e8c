"""The exact forest graph: scikit-learn's probabilities bit for bit, each tree walked once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

pytest.importorskip("onnxruntime", reason="the fast extra (onnxruntime) is not installed")

from router.serving import onnx_graphs  # after the extra's check
from router.serving.onnx_graphs import exact_forest, session


def _walks(graph: Any) -> int:
    """The targets of the graph's tree ensemble: one per walk of a tree for each row."""
    (forest,) = [node for node in graph.graph.node if node.op_type == "TreeEnsemble"]
    (targets,) = [a.i for a in forest.attribute if a.name == "n_targets"]
    return int(targets)


def _answers(graph: Any, X: np.ndarray) -> np.ndarray:
    return np.asarray(session(graph).run(None, {"X": X})[0])


def _wide(X: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(X.mean(axis=0), 3 * X.std(axis=0) + 1e-3,
                                              (3000, X.shape[1]))


MODELS = [
    ("iris", RandomForestClassifier(n_estimators=100, random_state=0)),
    ("wine", RandomForestClassifier(n_estimators=60, random_state=1)),
    ("wine", ExtraTreesClassifier(n_estimators=40, max_depth=3, random_state=0)),
    ("digits", RandomForestClassifier(n_estimators=30, random_state=2)),
    ("iris", DecisionTreeClassifier(random_state=0)),
    ("wine", RandomForestClassifier(n_estimators=20, max_depth=1, random_state=3)),
]
DATA = {"iris": load_iris, "wine": load_wine, "digits": load_digits}


@pytest.mark.parametrize(("data", "model"), MODELS)
def test_each_tree_is_walked_once_and_the_answers_are_scikit_learns_bits(
        data: str, model: Any) -> None:
    """One walk a tree gives each row its leaves; their class values, summed in tree order
    and divided by the number of trees, are predict_proba's, on the training rows and on
    rows far outside them."""
    X, y = DATA[data](return_X_y=True)
    model.fit(X, y)
    graph = exact_forest(model, X.shape[1])
    assert _walks(graph) == len(getattr(model, "estimators_", [model]))
    for rows in (X, _wide(X, 4), _wide(X, 5)[:1]):
        np.testing.assert_array_equal(_answers(graph, rows), model.predict_proba(rows))


def test_a_single_leaf_tree_is_answered_too() -> None:
    """A tree that never splits (one class in its sample) answers its one leaf."""
    X, _ = load_iris(return_X_y=True)
    model = DecisionTreeClassifier().fit(X, np.zeros(len(X), dtype=int))
    np.testing.assert_array_equal(_answers(exact_forest(model, 4), X), model.predict_proba(X))


def test_a_forest_too_wide_for_a_leaf_table_walks_its_trees_once_per_class(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the table's bound (trees times classes), each class gets its own copy of the
    trees, which keeps the intermediate arrays small: the same bits."""
    X, y = load_wine(return_X_y=True)
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y)
    monkeypatch.setattr(onnx_graphs, "LEAF_TABLE_MAX_VALUES", 30 * 3 - 1)
    graph = exact_forest(model, X.shape[1])
    assert _walks(graph) == 3
    for rows in (X, _wide(X, 6)):
        np.testing.assert_array_equal(_answers(graph, rows), model.predict_proba(rows))
