"""Simulated experiments shared by the sequential-test and decision tests, as fixtures."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import binom

Counts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

EXPERIMENTS = 500
SAMPLES_PER_ARM = 2000
LOOK_EVERY = 100


def _simulate_looks(p_a: float, p_b: float, seed: int) -> Counts:
    """``(x_a, n_a, x_b, n_b)`` of 500 experiments (rows), taken every 100 samples per arm."""
    rng = np.random.default_rng(seed)
    shape = (EXPERIMENTS, SAMPLES_PER_ARM)
    take = slice(LOOK_EVERY - 1, None, LOOK_EVERY)
    x_a = np.cumsum(rng.random(shape) < p_a, axis=1)[:, take]
    x_b = np.cumsum(rng.random(shape) < p_b, axis=1)[:, take]
    n = np.broadcast_to(np.arange(LOOK_EVERY, SAMPLES_PER_ARM + 1, LOOK_EVERY), x_a.shape)
    return x_a, n, x_b, n.copy()


@pytest.fixture(scope="session")
def simulate_looks() -> Callable[[float, float, int], Counts]:
    """The simulator itself, for tests that need other proportions or seeds."""
    return _simulate_looks


@pytest.fixture(scope="session")
def aa_looks() -> Counts:
    """500 A/A experiments, both arms at p = 0.5, looked at every 100 samples per arm."""
    return _simulate_looks(0.5, 0.5, seed=20240601)


@pytest.fixture(scope="session")
def false_positive_bound() -> Callable[[float, int], float]:
    """Highest rate over ``trials`` consistent with a true rate ``alpha`` (99.9 % binomial)."""

    def bound(alpha: float, trials: int) -> float:
        return float(binom.ppf(0.999, trials, alpha)) / trials

    return bound
