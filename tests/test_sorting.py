"""``stable_argsort``: numpy's stable argsort, by other means."""

from __future__ import annotations

import numpy as np
import pytest

from router.sorting import stable_argsort


@pytest.mark.parametrize("values", [
    np.zeros(0, np.int64),
    np.array([7]),
    np.array([3, 1, 3, 1, 2, 3]),
    np.full(1000, -4),
    np.random.default_rng(0).integers(0, 50, 10_000),
    np.random.default_rng(1).integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, 5_000),
    np.repeat(np.random.default_rng(2).integers(-10**12, 10**12, 3_000), 4),
])
def test_equals_numpys_stable_argsort(values: np.ndarray) -> None:
    assert stable_argsort(values).tolist() == np.argsort(values, kind="stable").tolist()
