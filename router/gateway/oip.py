"""Open Inference Protocol (KServe V2) payloads: tensors in, tensors out (pure, HTTP-free).

An inference request carries the rows either as one ``[rows, features]`` tensor named
``input`` or as one 1-D tensor per feature, named as the feature (MLServer's pandas-style
request), each of datatype ``FP32``, ``FP64``, ``INT32`` or ``INT64``, with its data flat in
row-major order or nested. Every fault is collected with the field it concerns, as for
``/predict``. The answer is at most two output tensors: ``label`` (``BYTES`` for a classifier,
``FP64`` for a regressor) and, for a classifier with probabilities, ``probabilities``
(``FP64``, ``[rows, classes]``, the class names in the output's ``parameters``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.errors import InputValidationError, PayloadTooLargeError, UnsupportedMediaError
from router.serving.model import ServedModel
from router.strings import MAX_ID_LENGTH, text_problem

INPUT = "input"
LABEL = "label"
PROBABILITIES = "probabilities"
# What each accepted datatype holds: (element check, lowest, highest); FP32 data is rounded
# to float32 as a server holding the tensor would, then handed to the model as float64.
_DATATYPES: dict[str, tuple[str, float, float]] = {
    "FP32": ("float", -math.inf, math.inf),
    "FP64": ("float", -math.inf, math.inf),
    "INT32": ("int", -(2**31), 2**31 - 1),
    "INT64": ("int", -(2**63), 2**63 - 1),
}
_FP32_MAX = float(np.finfo(np.float32).max)
_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_MAX_SHOWN = 5


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A validated inference request: the rows in the model's feature order and the rest."""

    rows: np.ndarray  # (n, n_features) float64
    id: str | None
    parameters: dict[str, Any]
    outputs: tuple[str, ...]  # the outputs asked for, in the order of the answer


def output_names(models: Sequence[ServedModel]) -> tuple[str, ...]:
    """The outputs every one of ``models`` produces (a request may be served by any of them)."""
    with_probabilities = all(m.has_probabilities for m in models)
    return (LABEL, PROBABILITIES) if with_probabilities else (LABEL,)


def parse_infer_request(body: Any, feature_names: Sequence[str], available: Sequence[str], *,
                        max_batch: int) -> InferRequest:
    """Validate an ``$inference_request`` against the features; every fault named."""
    if not isinstance(body, dict):
        raise _invalid("(body)", "expected an inference request object with \"inputs\"")
    unknown = sorted(k for k in body if k not in _REQUEST_KEYS)
    if unknown:
        raise InputValidationError(
            f"unknown top-level field(s): {', '.join(unknown)}",
            [{"field": k, "message": "unknown field"} for k in unknown])
    request_id = body.get("id")
    if request_id is not None:
        problem = "must be a string" if not isinstance(request_id, str) else \
            text_problem(request_id, max_length=MAX_ID_LENGTH)
        if problem is not None:
            raise _invalid("id", problem)
    parameters = body.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise _invalid("parameters", "must be an object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _invalid("inputs", "must be a non-empty list of tensors")
    return InferRequest(_rows(inputs, feature_names, max_batch), request_id, parameters,
                        _requested_outputs(body.get("outputs"), available))


def _invalid(field: str, message: str) -> InputValidationError:
    return InputValidationError(f"{field}: {message}", [{"field": field, "message": message}])


def _requested_outputs(outputs: Any, available: Sequence[str]) -> tuple[str, ...]:
    if outputs is None or outputs == []:
        return tuple(available)
    if not isinstance(outputs, list):
        raise _invalid("outputs", "must be a list of {\"name\": ...} objects")
    names: list[str] = []
    problems = []
    for i, output in enumerate(outputs):
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str) or name not in available:
            problems.append({"field": f"outputs[{i}].name",
                             "message": f"no output {name!r}; this model gives "
                                        f"{', '.join(available)}"})
        elif name not in names:
            names.append(name)
    if problems:
        raise InputValidationError(f"invalid outputs: {problems[0]['message']}", problems)
    # The answer keeps the model's order, whatever order they were asked in.
    return tuple(n for n in available if n in names)


# -- inputs ------------------------------------------------------------------------------------


def _rows(inputs: list[Any], feature_names: Sequence[str], max_batch: int) -> np.ndarray:
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise _invalid(f"inputs[{i}]", "expected a tensor object")
        parameters = tensor.get("parameters")
        if isinstance(parameters, dict) and "binary_data_size" in parameters:
            # tritonclient's set_data_from_numpy(..., binary_data=True): not JSON at all.
            raise UnsupportedMediaError(
                f"inputs[{i}]: binary tensor data is not supported; send the data as JSON "
                "(tritonclient: set_data_from_numpy(array, binary_data=False))",
                [{"field": f"inputs[{i}].parameters.binary_data_size",
                  "message": "binary tensor extension not supported"}])
        unknown = sorted(k for k in tensor if k not in _INPUT_KEYS)
        if unknown:
            raise _invalid(f"inputs[{i}].{unknown[0]}", "unknown field")
        if not isinstance(tensor.get("name"), str):
            # A name is compared with the features' (a set): an object or a list cannot be.
            raise _invalid(f"inputs[{i}].name", "must be a string: input, or a feature's name")
    names = [t.get("name") for t in inputs]
    if names == [INPUT]:
        return _matrix(inputs[0], feature_names, max_batch)
    if INPUT in names:  # beside another tensor: named as what it is, not as an unknown name
        at = [i for i, name in enumerate(names) if name == INPUT]
        if len(at) > 1:
            raise _invalid(f"inputs[{at[1]}].name", f"{INPUT!r} given twice")
        raise _invalid(f"inputs[{at[0]}].name", f"the {INPUT!r} tensor holds every feature: "
                       "send it alone, or one tensor per feature without it")
    return _columns(inputs, names, feature_names, max_batch)


def _matrix(tensor: dict[str, Any], feature_names: Sequence[str], max_batch: int
            ) -> np.ndarray:
    """The ``input`` tensor, ``[rows, features]``."""
    shape = _shape(tensor, "inputs[0]")
    width = len(feature_names)
    if len(shape) != 2 or shape[1] != width:
        raise _invalid("inputs[0].shape",
                       f"expected [rows, {width}] ({', '.join(feature_names)}), got {shape}")
    _check_rows(shape[0], max_batch, "inputs[0].shape")
    values = _values(tensor, "inputs[0]", shape[0] * width,
                     lambda k: f"row {k // width}, {feature_names[k % width]}")
    return values.reshape(shape[0], width)


def _columns(inputs: list[dict[str, Any]], names: list[Any], feature_names: Sequence[str],
             max_batch: int) -> np.ndarray:
    """One 1-D tensor per feature, named as the feature, in any order."""
    known = set(feature_names)
    problems = [{"field": f"inputs[{i}].name",
                 "message": f"unknown input {name!r}: send one tensor named {INPUT!r} "
                            f"[rows, features], or one per feature ({', '.join(feature_names)})"}
                for i, name in enumerate(names) if name not in known]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in known and name in seen:
            problems.append({"field": f"inputs[{i}].name", "message": f"{name!r} given twice"})
        seen.setdefault(name, i)
    problems += [{"field": f"inputs.{name}", "message": "missing"}
                 for name in feature_names if name not in seen]
    if problems:
        shown = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:_MAX_SHOWN])
        raise InputValidationError(f"invalid inputs: {shown}", problems)
    shapes = {name: _shape(inputs[i], f"inputs[{i}]") for name, i in seen.items()}
    rows = {s[0] if s else -1 for s in shapes.values()}
    for name, shape in shapes.items():
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise _invalid(f"inputs[{seen[name]}].shape",
                           f"a feature's tensor is [rows] or [rows, 1], got {shape}")
    if len(rows) != 1:
        raise _invalid("inputs", "every feature's tensor must have the same number of rows, "
                                 f"got {sorted(rows)}")
    (n,) = rows
    _check_rows(n, max_batch, f"inputs[{seen[feature_names[0]]}].shape")
    out = np.empty((n, len(feature_names)), dtype=np.float64)
    for j, name in enumerate(feature_names):
        i = seen[name]
        out[:, j] = _values(inputs[i], f"inputs[{i}]", n, lambda k, name=name: f"{name}, row {k}")
    return out


def _shape(tensor: dict[str, Any], field: str) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(
            type(d) is int and d >= 0 for d in shape):
        raise _invalid(f"{field}.shape", f"must be a list of non-negative integers, got {shape!r}")
    return shape


def _check_rows(n: int, max_batch: int, field: str) -> None:
    if n == 0:
        raise _invalid(field, "a tensor of no rows has nothing to predict")
    if n > max_batch:
        raise PayloadTooLargeError(f"batch of {n} rows is over limits.max_batch = {max_batch}",
                                   [{"field": field, "message": f"at most {max_batch} rows"}])


def _flatten(data: list[Any]) -> list[Any]:
    if not any(type(v) is list for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if type(value) is list:
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _values(tensor: dict[str, Any], field: str, count: int, where: Any) -> np.ndarray:
    """The tensor's ``count`` numbers as float64, after the checks its datatype asks for."""
    datatype = tensor.get("datatype")
    if datatype not in _DATATYPES:
        raise _invalid(f"{field}.datatype",
                       f"must be one of {', '.join(_DATATYPES)}, got {datatype!r}")
    data = tensor.get("data")
    if not isinstance(data, list):
        raise _invalid(f"{field}.data", "must be a list of numbers")
    flat = _flatten(data)
    if len(flat) != count:
        raise _invalid(f"{field}.data",
                       f"holds {len(flat)} values where its shape needs {count}")
    kind, low, high = _DATATYPES[datatype]
    problems = []
    for k, value in enumerate(flat):
        message = _value_problem(value, kind, low, high, datatype)
        if message is not None:
            problems.append({"field": f"{field}.data[{k}] ({where(k)})", "message": message})
    if problems:
        shown = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:_MAX_SHOWN])
        more = f" (and {len(problems) - _MAX_SHOWN} more)" if len(problems) > _MAX_SHOWN else ""
        raise InputValidationError(f"invalid tensor data: {shown}{more}", problems)
    values = np.array(flat, dtype=np.float64)
    if datatype == "FP32":
        values = values.astype(np.float32).astype(np.float64)
    return values


def _value_problem(value: Any, kind: str, low: float, high: float, datatype: str
                   ) -> str | None:
    if type(value) is float:
        if kind == "int":
            return f"{datatype} needs an integer, got {value!r}"
        if not math.isfinite(value):
            return f"must be finite, got {value}"
        if datatype == "FP32" and abs(value) > _FP32_MAX:
            return f"is out of FP32's range, got {value!r}"
        return None
    if type(value) is int:
        if not low <= value <= high:
            return f"is out of {datatype}'s range, got {value}"
        return None
    shown = "null" if value is None else f"a {type(value).__name__}"
    return f"must be a number, got {shown}"


# -- outputs -----------------------------------------------------------------------------------


def output_tensors(labels: Sequence[Any], probabilities: Sequence[dict[str, float]] | None,
                   model: ServedModel, requested: Sequence[str]) -> list[dict[str, Any]]:
    """The ``$response_output`` tensors asked for, from one answer of ``model``."""
    n = len(labels)
    tensors: list[dict[str, Any]] = []
    for name in requested:
        if name == LABEL and model.classes is not None:
            tensors.append({"name": LABEL, "datatype": "BYTES", "shape": [n],
                            "data": [str(label) for label in labels]})
        elif name == LABEL:
            tensors.append({"name": LABEL, "datatype": "FP64", "shape": [n],
                            "data": [float(value) for value in labels]})
        elif probabilities is not None and model.classes is not None:
            classes = [str(c) for c in model.classes]
            tensors.append({"name": PROBABILITIES, "datatype": "FP64",
                            "shape": [n, len(classes)],
                            "parameters": {"classes": classes},
                            "data": [row[c] for row in probabilities for c in classes]})
    return tensors


def model_metadata(name: str, versions: Sequence[str], models: Sequence[ServedModel]
                   ) -> dict[str, Any]:
    """``$metadata_model_response`` for requests any of ``models`` may serve (the first one's
    features, which every served model shares)."""
    first = models[0]
    features = list(first.feature_names)
    outputs: list[dict[str, Any]] = [
        {"name": LABEL, "datatype": "BYTES" if first.classes is not None else "FP64",
         "shape": [-1]}]
    parameters: dict[str, Any] = {"task": first.task, "features": features,
                                  "input_datatypes": list(_DATATYPES)}
    if PROBABILITIES in output_names(models) and first.classes is not None:
        classes = [str(c) for c in first.classes]
        outputs.append({"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, len(classes)],
                        "parameters": {"classes": classes}})
        parameters["classes"] = classes
    return {"name": name, "versions": list(versions), "platform": "scikit-learn",
            "inputs": [{"name": INPUT, "datatype": "FP64", "shape": [-1, len(features)],
                        "parameters": {"features": features}}],
            "outputs": outputs, "parameters": parameters}
