"""Request bodies to a validated 2-D float array, or one error entry per offending field.

Accepted forms (SPEC.md): ``{"features": {name: value}}`` (named), ``{"features": [v, ...]}``
(positional, in the model's feature order) and ``{"instances": [either form, ...]}`` (batch).
A value must be a JSON number (``true``/``false`` and numeric strings are refused: a silent cast
hides client bugs) and finite.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from router.errors import BadJSONError, InputValidationError, PayloadTooLargeError
from router.serving.input_bounds import NO_BOUND
from router.strings import not_utf8

# Top-level body keys besides the feature payload; a body sticky key is added per config.
_ALWAYS_ALLOWED = frozenset({"user_id"})
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(slots=True)  # not frozen: built per request, and frozen costs four times as much
class ParsedRequest:
    rows: np.ndarray  # (n, n_features) float64
    batch: bool
    body: dict[str, Any]


def decode_json(raw: bytes) -> Any:
    """Decode a body; NaN and Infinity literals are let through so validation names the field.

    orjson is strict: nesting past 1,024 levels, an integer past 64 bits that no float holds,
    a lone surrogate or invalid UTF-8 all fail. Only then is the standard library tried, for
    the NaN/Infinity literals that ``json.dumps`` writes; it is held to the same rules, so that
    whatever either decoder returns can be stored and rendered.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        strict_error = exc
    try:
        raw.decode()
    except UnicodeDecodeError as exc:  # which orjson reports as "surrogates not allowed"
        raise BadJSONError(f"body {not_utf8(raw, exc)}") from None
    try:
        # Integers past what a float holds become infinity, which validation names as not
        # finite; the standard library would build a 400-digit int that fails later instead.
        value = json.loads(raw, parse_int=_parse_int)
    except RecursionError:
        raise BadJSONError("body is not valid JSON: nested too deep",
                           [{"field": "(body)", "message": "nested too deep"}]) from None
    except (ValueError, UnicodeDecodeError):
        raise BadJSONError(f"body is not valid JSON: {strict_error}") from None
    if _holds_surrogate(value):
        raise BadJSONError(f"body is not valid JSON: {strict_error}")
    return value


def _parse_int(digits: str) -> int | float:
    # Up to 19 digits always fit in 64 bits, as orjson decodes them.
    return int(digits) if len(digits.lstrip("-")) <= 19 else float(digits)


def _holds_surrogate(value: Any) -> bool:
    """Whether any key or string in the decoded document holds a lone surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def parse_predict_body(body: Any, feature_names: Sequence[str], *, max_batch: int,
                       extra_keys: frozenset[str] = frozenset(),
                       max_abs: float = NO_BOUND) -> ParsedRequest:
    """Validate a ``/predict`` body against the champion's features; ``max_abs`` is the
    largest absolute value the served models take (``router.serving.input_bounds``)."""
    fast = _single_row(body, feature_names, extra_keys, max_abs)
    if fast is not None:
        return ParsedRequest(fast, False, body)
    if not isinstance(body, dict):
        raise InputValidationError(
            'body must be a JSON object with "features" or "instances"',
            [{"field": "(body)", "message": f"expected an object, got {_json_type(body)}"}])
    payload_keys = [k for k in ("features", "instances") if k in body]
    if len(payload_keys) != 1:
        message = ('body needs exactly one of "features" (one row) or "instances" (a batch)')
        raise InputValidationError(message, [{"field": "(body)", "message": message}])
    refuse_unknown_fields(body, payload_keys[0], extra_keys)
    if payload_keys[0] == "features":
        rows, batch = [body["features"]], False
        prefixes = ["features"]
    else:
        rows, batch = body["instances"], True
        if not isinstance(rows, list) or not rows:
            raise InputValidationError(
                '"instances" must be a non-empty list of rows',
                [{"field": "instances", "message": "expected a non-empty list"}])
        prefixes = [f"instances[{i}]" for i in range(len(rows))]
    return ParsedRequest(rows_to_array(rows, feature_names, prefixes, max_batch=max_batch,
                                       max_abs=max_abs), batch, body)


def refuse_unknown_fields(body: dict[str, Any], payload_key: str,
                          extra_keys: frozenset[str]) -> None:
    """Refuse a top-level field besides the rows (``payload_key``), ``user_id`` and the
    configured body keys, naming each: one that is ignored may be a misspelt sticky key, and
    its request would be assigned at random without a word."""
    unknown = [k for k in body if k != payload_key and k not in _ALWAYS_ALLOWED
               and k not in extra_keys]
    if unknown:
        raise InputValidationError(
            f"unknown top-level field(s): {', '.join(unknown)}",
            [{"field": k, "message": "unknown field"} for k in unknown])


def _single_row(body: Any, feature_names: Sequence[str], extra_keys: frozenset[str],
                max_abs: float) -> np.ndarray | None:
    """The common case, a valid single row, checked in a few microseconds; None for anything
    else (a batch, an error, an unusual body), which the full path below then handles."""
    if type(body) is not dict or "instances" in body:
        return None
    features = body.get("features")
    if len(body) > 1 and any(k != "features" and k not in _ALWAYS_ALLOWED and k not in extra_keys
                             for k in body):
        return None
    if type(features) is dict:
        if len(features) != len(feature_names):
            return None
        try:
            values = [features[name] for name in feature_names]
        except KeyError:
            return None
    elif type(features) is list and len(features) == len(feature_names):
        values = features
    else:
        return None
    low = -max_abs
    for value in values:
        kind = type(value)
        # One comparison each: NaN fails it, and so do infinities and values out of bounds.
        if (kind is not float and kind is not int) or not low <= value <= max_abs:
            return None
    return np.array([values], dtype=np.float64)


def rows_to_array(rows: list[Any], feature_names: Sequence[str], prefixes: list[str], *,
                  max_batch: int, max_abs: float = NO_BOUND) -> np.ndarray:
    """Each row (named dict or positional list) to one float64 row; collect every fault."""
    if len(rows) > max_batch:
        raise PayloadTooLargeError(
            f"batch of {len(rows)} rows is over limits.max_batch = {max_batch}",
            [{"field": "instances", "message": f"at most {max_batch} rows"}])
    width = len(feature_names)
    out = np.empty((len(rows), width), dtype=np.float64)
    problems: list[dict[str, str]] = []
    for i, (row, prefix) in enumerate(zip(rows, prefixes, strict=True)):
        if isinstance(row, dict):
            _named_row(row, feature_names, prefix, out[i], problems, max_abs)
        elif isinstance(row, list):
            if len(row) != width:
                problems.append({"field": prefix, "message":
                                 f"expected {width} values in feature order "
                                 f"({', '.join(feature_names)}), got {len(row)}"})
                continue
            for j, value in enumerate(row):
                _store(value, f"{prefix}[{j}] ({feature_names[j]})", out[i], j, problems,
                       max_abs)
        else:
            problems.append({"field": prefix, "message":
                             f"expected an object of features or a list, got {_json_type(row)}"})
    if problems:
        shown = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InputValidationError(f"invalid features: {shown}{more}", problems)
    return out


def check_within(rows: np.ndarray, feature_names: Sequence[str], max_abs: float) -> None:
    """Refuse an already decoded array holding a value past ``max_abs``, naming row and feature
    (for protocols whose bodies are decoded elsewhere)."""
    if max_abs >= NO_BOUND or not rows.size:
        return
    beyond = np.argwhere(np.abs(rows) > max_abs)
    if not len(beyond):
        return
    message = f"is beyond what the served models take (at most {max_abs:.3g} in absolute value)"
    problems = [{"field": f"row {i} ({feature_names[j]})",
                 "message": f"{rows[i, j]:.3g} {message}"} for i, j in beyond.tolist()]
    shown = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    raise InputValidationError(f"invalid features: {shown}", problems)


def _named_row(row: dict[str, Any], feature_names: Sequence[str], prefix: str,
               target: np.ndarray, problems: list[dict[str, str]], max_abs: float) -> None:
    for j, name in enumerate(feature_names):
        if name not in row:
            problems.append({"field": f"{prefix}.{name}", "message": "missing"})
        else:
            _store(row[name], f"{prefix}.{name}", target, j, problems, max_abs)
    if len(row) > len(feature_names) or any(k not in feature_names for k in row):
        known = set(feature_names)
        problems.extend({"field": f"{prefix}.{k}", "message": "unknown feature"}
                        for k in row if k not in known)


def _store(value: Any, field: str, target: np.ndarray, j: int,
           problems: list[dict[str, str]], max_abs: float) -> None:
    if type(value) is float or type(value) is int:
        if -max_abs <= value <= max_abs:  # the common case: one comparison
            target[j] = value
        elif type(value) is float and not math.isfinite(value):
            problems.append({"field": field, "message": f"must be finite, got {value}"})
        elif type(value) is int and not abs(value) < 1e308:
            problems.append({"field": field, "message": "must be finite, got a huge integer"})
        else:
            problems.append({"field": field, "message": (
                f"{float(value):.3g} is beyond what the served models take "
                f"(at most {max_abs:.3g} in absolute value)")})
    elif value is None:
        problems.append({"field": field, "message": "must be a number, got null"})
    else:
        problems.append({"field": field,
                         "message": f"must be a number, got {_json_type(value)}"})


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)
