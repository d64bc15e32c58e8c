"""ONNX graphs of a fitted estimator, and the ONNX Runtime sessions that run them.

skl2onnx converts most estimators (in float64, or float32); for forests and single trees the
graph is built here from the fitted trees, so that its probabilities are scikit-learn's bit for
bit (:func:`exact_forest`). Which conversion serves, if any, is :mod:`router.serving.engines`'s
choice, made on the model's reference sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def exact_forest(final: Any, n_features: int) -> Any:
    """An ONNX graph that computes a forest's ``predict_proba`` as scikit-learn does.

    scikit-learn compares float32-rounded inputs with float64 thresholds, adds each tree's
    normalised leaf values in float64 in tree order and divides by the number of trees. ONNX-ML
    opset 5 ``TreeEnsemble`` does the same in float64 (the caller rounds the input), but gives each
    leaf one target only, so the trees are repeated once per class; a ``Div`` node divides.
    """
    from onnx import TensorProto, helper, numpy_helper

    trees = [e.tree_ for e in getattr(final, "estimators_", [final])]
    n_classes = int(trees[0].value.shape[2])
    columns: dict[str, list[Any]] = {k: [] for k in (
        "feature", "split", "true", "false", "true_leaf", "false_leaf", "root", "target",
        "weight")}
    for target in range(n_classes):
        for tree in trees:
            values = tree.value[:, 0, :]
            proba = values / values.sum(axis=1, keepdims=True)
            left, right = tree.children_left, tree.children_right
            columns["root"].append(len(columns["feature"]))
            if left[0] == -1:  # a single leaf: one node whose branches both reach it
                leaf = len(columns["target"])
                columns["target"].append(target)
                columns["weight"].append(proba[0, target])
                for key, value in (("feature", 0), ("split", 0.0), ("true", leaf),
                                   ("false", leaf), ("true_leaf", 1), ("false_leaf", 1)):
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
                        columns[ids].append(len(columns["target"]))
                        columns[leafs].append(1)
                        columns["target"].append(target)
                        columns["weight"].append(proba[child, target])
                    else:
                        columns[ids].append(position[int(child)])
                        columns[leafs].append(0)
    n_nodes = len(columns["feature"])
    forest = helper.make_node(
        "TreeEnsemble", ["X64"], ["votes"], domain="ai.onnx.ml", n_targets=n_classes,
        aggregate_function=1, post_transform=0, tree_roots=columns["root"],
        nodes_featureids=columns["feature"],
        nodes_splits=numpy_helper.from_array(np.array(columns["split"], dtype=np.float64)),
        nodes_modes=numpy_helper.from_array(np.zeros(n_nodes, dtype=np.uint8)),  # x <= split
        nodes_truenodeids=columns["true"], nodes_falsenodeids=columns["false"],
        nodes_trueleafs=columns["true_leaf"], nodes_falseleafs=columns["false_leaf"],
        leaf_targetids=columns["target"],
        leaf_weights=numpy_helper.from_array(np.array(columns["weight"], dtype=np.float64)))
    average = helper.make_node("Div", ["votes", "n_trees"], ["probabilities"])
    # scikit-learn's trees see their input rounded to float32 (and compare it in float64).
    rounding = [helper.make_node("Cast", ["X"], ["X32"], to=TensorProto.FLOAT),
                helper.make_node("Cast", ["X32"], ["X64"], to=TensorProto.DOUBLE)]
    graph = helper.make_graph(
        [*rounding, forest, average], "forest",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [None, n_classes])],
        initializer=[numpy_helper.from_array(np.array(float(len(trees))), "n_trees")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                   helper.make_opsetid("ai.onnx.ml", 5)])
