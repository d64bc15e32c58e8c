"""ONNX graphs of a fitted estimator, and the ONNX Runtime sessions that run them.

skl2onnx converts most estimators (in float64, or float32); for forests and single trees the
graph is built here from the fitted trees, so that its probabilities are scikit-learn's bit for
bit (:func:`exact_forest`). Which conversion serves, if any, is :mod:`router.serving.engines`'s
choice, made on the model's reference sample.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from sklearn import __version__ as sklearn_version

EXACT_TREES = "float64, exact forest"


def session(onx: Any) -> Any:
    return session_of(onx.SerializeToString())


def session_of(graph: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread: the gateway's event loop needs the other core, and batches are small.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def convert(final: Any, n_features: int, precision: str) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    if precision == EXACT_TREES:
        return exact_forest(final, n_features)
    tensor = DoubleTensorType if precision == "float64" else FloatTensorType
    return convert_sklearn(final, initial_types=[("X", tensor([None, n_features]))],
                           options={id(final): {"zipmap": False}})


# What a fitted classifier tree stores changed in scikit-learn 1.4 (see leaf_values).
_SKLEARN_STORES_FRACTIONS = \
    tuple(int(part) for part in re.findall(r"\d+", sklearn_version)[:2]) >= (1, 4)

# Above this many trees times classes, the leaf table's intermediate arrays (a float64 per tree,
# class and row, twice) would grow past 16 KB a row, 16 MB for a request of limits.max_batch's
# default 1,000 rows (ONNX Runtime's arena keeps its peak); the graph then repeats the trees
# per class instead.
LEAF_TABLE_MAX_VALUES = 1024


def exact_forest(final: Any, n_features: int) -> Any:
    """An ONNX graph that computes a forest's ``predict_proba`` as scikit-learn does.

    scikit-learn compares float32-rounded inputs with float64 thresholds, adds each tree's
    leaf values (:func:`leaf_values`) in float64 in tree order and divides by the number of
    trees. ONNX-ML opset 5 ``TreeEnsemble`` walks the trees in float64 (the caller rounds the
    input), but gives each leaf one target only. So each tree is one target whose leaves answer
    their index in a table of the leaves' class values: one walk a tree gives a row its leaves,
    ``Gather`` their values, ``CumSum`` adds them in tree order and a ``Div`` node divides. On a
    100-tree iris forest that costs 2.9 µs a row at 32 rows a call against 5.0 with a walk per
    tree and class. A forest whose trees times classes pass :data:`LEAF_TABLE_MAX_VALUES` has
    its trees repeated once per class instead, each leaf answering its class's value.
    """
    from onnx import TensorProto, helper

    trees = [e.tree_ for e in getattr(final, "estimators_", [final])]
    n_classes = int(trees[0].value.shape[2])
    values = [leaf_values(tree) for tree in trees]
    fits = len(trees) * n_classes <= LEAF_TABLE_MAX_VALUES
    votes, initializers = (_by_leaf_table if fits else _by_class)(trees, values)
    average = helper.make_node("Div", ["votes", "n_trees"], ["probabilities"])
    # scikit-learn's trees see their input rounded to float32 (and compare it in float64).
    rounding = [helper.make_node("Cast", ["X"], ["X32"], to=TensorProto.FLOAT),
                helper.make_node("Cast", ["X32"], ["X64"], to=TensorProto.DOUBLE)]
    graph = helper.make_graph(
        [*rounding, *votes, average], "forest",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [None, n_classes])],
        initializer=[*initializers, _constant(float(len(trees)), np.float64, "n_trees")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                   helper.make_opsetid("ai.onnx.ml", 5)])


def _by_leaf_table(trees: list[Any], values: list[np.ndarray]) -> tuple[list[Any], list[Any]]:
    """The nodes that make ``votes`` with one walk a tree: each tree is a target whose leaves
    answer their row in a table of leaf values, summed over the trees in order; and the
    initializers they read."""
    from onnx import TensorProto, helper

    table: list[np.ndarray] = []

    def table_row(index: int, node: int) -> tuple[int, float]:
        table.append(values[index][node])
        return index, float(len(table) - 1)

    forest = _tree_ensemble(_ensemble(trees, range(len(trees)), table_row), len(trees),
                            "leaf_ids")
    nodes = [forest,
             helper.make_node("Cast", ["leaf_ids"], ["leaves"], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "leaves"], ["values"], axis=0),
             helper.make_node("CumSum", ["values", "tree_axis"], ["running"]),
             helper.make_node("Gather", ["running", "last_tree"], ["votes"], axis=1)]
    return nodes, [_constant(table, np.float64, "table"), _constant(1, np.int64, "tree_axis"),
                   _constant(len(trees) - 1, np.int64, "last_tree")]


def _by_class(trees: list[Any], values: list[np.ndarray]) -> tuple[list[Any], list[Any]]:
    """The node that makes ``votes`` with the trees repeated once per class, each leaf
    answering its class's value; no initializer."""
    n_trees, n_classes = len(trees), values[0].shape[1]

    def class_value(index: int, node: int) -> tuple[int, float]:
        target = index // n_trees
        return target, float(values[index % n_trees][node, target])

    columns = _ensemble(trees * n_classes, range(n_trees * n_classes), class_value)
    return [_tree_ensemble(columns, n_classes, "votes")], []


def _constant(value: Any, dtype: Any, name: str) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def leaf_values(tree: Any) -> np.ndarray:
    """Each node's class values as the tree's ``predict_proba`` answers them. scikit-learn 1.4
    and later store them as fractions and answer them as they are (dividing them by their sum
    again moved some by one unit in the last place); 1.3 stored weighted counts and divided
    them by their sum."""
    values: np.ndarray = tree.value[:, 0, :]
    if _SKLEARN_STORES_FRACTIONS:
        return values
    sums = values.sum(axis=1, keepdims=True)
    sums[sums == 0] = 1.0
    return values / sums


def _ensemble(trees: list[Any], indices: Iterable[int],
              leaf: Callable[[int, int], tuple[int, float]]) -> dict[str, list[Any]]:
    """``TreeEnsemble``'s node and leaf columns for ``trees``, in order; ``leaf(index, node)``
    gives the target and weight of leaf ``node`` of the tree at ``index``."""
    columns: dict[str, list[Any]] = {k: [] for k in (
        "feature", "split", "true", "false", "true_leaf", "false_leaf", "root", "target",
        "weight")}

    def add_leaf(index: int, node: int) -> int:
        target, weight = leaf(index, node)
        columns["target"].append(target)
        columns["weight"].append(weight)
        return len(columns["target"]) - 1

    for index, tree in zip(indices, trees, strict=True):
        left, right = tree.children_left, tree.children_right
        columns["root"].append(len(columns["feature"]))
        if left[0] == -1:  # a single leaf: one node whose branches both reach it
            only = add_leaf(index, 0)
            for key, value in (("feature", 0), ("split", 0.0), ("true", only),
                               ("false", only), ("true_leaf", 1), ("false_leaf", 1)):
                columns[key].append(value)
            continue
        internal = np.flatnonzero(left != -1)
        position = {int(n): len(columns["feature"]) + i for i, n in enumerate(internal)}
        for n in internal:
            columns["feature"].append(int(tree.feature[n]))
            columns["split"].append(float(tree.threshold[n]))
            for child, ids, leafs in ((left[n], "true", "true_leaf"),
                                      (right[n], "false", "false_leaf")):
                if left[child] == -1:
                    columns[ids].append(add_leaf(index, int(child)))
                    columns[leafs].append(1)
                else:
                    columns[ids].append(position[int(child)])
                    columns[leafs].append(0)
    return columns


def _tree_ensemble(columns: dict[str, list[Any]], n_targets: int, output: str) -> Any:
    """The ``TreeEnsemble`` node: leaf weights summed per target, float64 throughout."""
    from onnx import helper, numpy_helper

    n_nodes = len(columns["feature"])
    return helper.make_node(
        "TreeEnsemble", ["X64"], [output], domain="ai.onnx.ml", n_targets=n_targets,
        aggregate_function=1, post_transform=0, tree_roots=columns["root"],
        nodes_featureids=columns["feature"],
        nodes_splits=numpy_helper.from_array(np.array(columns["split"], dtype=np.float64)),
        nodes_modes=numpy_helper.from_array(np.zeros(n_nodes, dtype=np.uint8)),  # x <= split
        nodes_truenodeids=columns["true"], nodes_falsenodeids=columns["false"],
        nodes_trueleafs=columns["true_leaf"], nodes_falseleafs=columns["false_leaf"],
        leaf_targetids=columns["target"],
        leaf_weights=numpy_helper.from_array(np.array(columns["weight"], dtype=np.float64)))
