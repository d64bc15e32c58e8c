"""How large a feature value each served model takes, probed through scikit-learn at load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router.errors import InputValidationError
from router.serving.input_bounds import NO_BOUND, common_bound, input_bound
from router.serving.inputs import parse_predict_body, rows_to_array
from router.serving.registry import ModelRegistry

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def test_a_float32_forest_is_bounded_below_float32s_range(champion_dir: Path) -> None:
    """Scaler + random forest: the forest casts to float32, so the bound is a power of ten
    under 3.4e38 that scikit-learn answers for, and ten times it is refused."""
    model = ModelRegistry().load(champion_dir)
    bound = input_bound(model)
    assert 1e30 <= bound < 3.5e38
    row = np.array([[bound, 3.5, 1.4, 0.2]])
    model.model.predict(row)  # answered
    with np.errstate(over="ignore"), pytest.raises(ValueError):
        model.model.predict(row * 1000)  # float32 cannot hold it: scikit-learn refuses


def test_a_float64_pipeline_takes_more_than_float32(no_proba_dir: Path,
                                                    regressor_dir: Path) -> None:
    """Scaler + linear models stay in float64: their bound is far above float32's range."""
    for directory in (no_proba_dir, regressor_dir):
        assert input_bound(ModelRegistry().load(directory)) > 1e100


def test_a_model_that_always_fails_gets_no_bound(failing_dir: Path) -> None:
    """Failures unrelated to size are the model's own, counted as its errors."""
    assert input_bound(ModelRegistry().load(failing_dir)) == NO_BOUND


def test_the_common_bound_is_the_smallest(champion_dir: Path, no_proba_dir: Path) -> None:
    registry = ModelRegistry()
    models = [registry.load(champion_dir), registry.load(no_proba_dir)]
    assert common_bound(models) == min(input_bound(m) for m in models)
    assert common_bound([]) == NO_BOUND


@pytest.mark.parametrize("body", [
    {"features": [1e300, 3.5, 1.4, 0.2]},
    {"features": {"sepal_length": 5.1, "sepal_width": -1e39, "petal_length": 1.4,
                  "petal_width": 0.2}},
    {"instances": [[5.1, 3.5, 1.4, 0.2], [5.1, 3.5, 10**50, 0.2]]},
])
def test_values_past_the_bound_are_named(body: dict[str, object]) -> None:
    """A value past the bound is a 422 naming the field and the bound, on every body form."""
    with pytest.raises(InputValidationError) as raised:
        parse_predict_body(body, FEATURES, max_batch=10, max_abs=1e38)
    (problem,) = raised.value.detail
    assert "beyond what the served models take (at most 1e+38" in problem["message"]


def test_values_within_the_bound_pass_and_huge_integers_stay_named() -> None:
    """At the bound exactly is accepted; a 400-digit integer is still "not finite"."""
    rows = rows_to_array([[1e38, -1e38, 0, 1]], FEATURES, ["r"], max_batch=1, max_abs=1e38)
    assert rows.tolist() == [[1e38, -1e38, 0.0, 1.0]]
    with pytest.raises(InputValidationError) as raised:
        rows_to_array([[10**400, 0, 0, 0]], FEATURES, ["r"], max_batch=1, max_abs=1e38)
    assert "huge integer" in raised.value.detail[0]["message"]
