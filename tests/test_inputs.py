"""Request bodies: accepted forms, and one error entry naming each bad field."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from router.errors import BadJSONError, InputValidationError, PayloadTooLargeError
from router.serving.inputs import decode_json, parse_predict_body

NAMES = ("a", "b", "c")


def parse(body: Any, max_batch: int = 10, extra: frozenset[str] = frozenset()) -> Any:
    return parse_predict_body(body, NAMES, max_batch=max_batch, extra_keys=extra)


def test_named_positional_and_batch_forms_give_the_same_rows() -> None:
    """Named, positional and batch bodies become float64 rows in feature order."""
    named = parse({"features": {"c": 3, "a": 1.5, "b": 2}})
    positional = parse({"features": [1.5, 2, 3]})
    batch = parse({"instances": [{"a": 1.5, "b": 2, "c": 3}, [4, 5, 6]]})
    assert named.rows.tolist() == [[1.5, 2.0, 3.0]] and not named.batch
    assert positional.rows.tolist() == named.rows.tolist()
    assert batch.batch and batch.rows.tolist() == [[1.5, 2, 3], [4, 5, 6]]
    assert batch.rows.dtype == np.float64


def test_user_id_and_body_sticky_key_are_allowed() -> None:
    """user_id (SPEC) and the configured body sticky key are not features: the rows are the
    features alone, and any other unknown key is refused."""
    assert parse({"features": [1, 2, 3], "user_id": "u1"}).rows.tolist() == [[1, 2, 3]]
    with_key = parse({"features": [1, 2, 3], "account": 7}, extra=frozenset({"account"}))
    assert with_key.rows.tolist() == [[1, 2, 3]]
    assert fields_of({"features": [1, 2, 3], "account": 7}) == ["account"]


def fields_of(body: Any) -> list[str]:
    with pytest.raises(InputValidationError) as info:
        parse(body)
    return [d["field"] for d in info.value.detail]


@pytest.mark.parametrize(("body", "fields"), [
    ({"features": {"a": 1, "b": 2}}, ["features.c"]),
    ({"features": {"a": 1, "b": 2, "c": 3, "d": 4}}, ["features.d"]),
    ({"features": {"a": "1", "b": 2, "c": 3}}, ["features.a"]),
    ({"features": {"a": None, "b": 2, "c": 3}}, ["features.a"]),
    ({"features": {"a": True, "b": 2, "c": 3}}, ["features.a"]),
    ({"features": {"a": math.nan, "b": 2, "c": 3}}, ["features.a"]),
    ({"features": {"a": math.inf, "b": -math.inf, "c": 3}}, ["features.a", "features.b"]),
    ({"features": [1, 2]}, ["features"]),
    ({"features": [1, "x", 3]}, ["features[1] (b)"]),
    ({"instances": [[1, 2, 3], {"a": 1, "b": 2}]}, ["instances[1].c"]),
    ({"instances": []}, ["instances"]),
    ({"instances": [[1, 2, 3], 5]}, ["instances[1]"]),
    ({"features": [1, 2, 3], "extra": 1}, ["extra"]),
    ({}, ["(body)"]),
    ({"features": [1, 2, 3], "instances": [[1, 2, 3]]}, ["(body)"]),
    ([1, 2, 3], ["(body)"]),
])
def test_each_bad_field_is_named(body: Any, fields: list[str]) -> None:
    """Missing, extra, non-numeric, null, boolean, NaN and infinite values name their field."""
    assert fields_of(body) == fields


def test_batch_over_limit_is_too_large() -> None:
    """A batch over limits.max_batch is a 413, not a 422."""
    with pytest.raises(PayloadTooLargeError, match="max_batch"):
        parse({"instances": [[1, 2, 3]] * 11})


def test_nan_literal_reaches_validation_and_garbage_is_bad_json() -> None:
    """NaN/Infinity literals decode (so the 422 can name the field); garbage is a 400."""
    body = decode_json(b'{"features": [NaN, 1, Infinity]}')
    with pytest.raises(InputValidationError) as info:
        parse(body)
    assert [d["field"] for d in info.value.detail] == ["features[0] (a)", "features[2] (c)"]
    with pytest.raises(BadJSONError):
        decode_json(b'{"features": [1, 2')
