"""Fast cells of the calibration suite (``bench/calibration.py`` runs the whole grid and writes
``docs/calibration.md``): the decision's false alarms stay at most alpha under continuous looks,
and its power is kept."""

from __future__ import annotations

import numpy as np
import pytest

from bench.calibration import Cell, allowed, simulate

RUNS = 300

AA_CELLS = [
    Cell("accuracy 0.5, min_effect 0.2", accuracy=0.5, min_effect=0.2, horizon=2_000),
    Cell("accuracy 0.99, min_effect 0.01", accuracy=0.99, min_effect=0.01, horizon=2_000),
    Cell("5 % canary, min_effect 0.1", share=0.05, min_effect=0.1, horizon=600),
    Cell("sticky users, ICC 0.09, ~20 requests a user", icc=0.09, per_unit=20,
         min_effect=0.05, horizon=2_000),
    Cell("sticky users, ICC 0.03, ~100 requests a user", icc=0.03, per_unit=100,
         min_effect=0.05, horizon=3_000),
    Cell("sticky users, heavy-tailed activity (Pareto 1.2), in sessions", icc=0.1, per_unit=2,
         heavy_tail=1.2, sessions=True, min_effect=0.05, horizon=5_000),
    Cell("shadow, min_effect 0.1", mode="shadow", min_effect=0.1, horizon=2_000),
    Cell("guardrails inside their limits", error_rate=0.005, p99_ms=40.0, horizon=2_000),
]


@pytest.mark.parametrize("cell", AA_CELLS, ids=[c.name for c in AA_CELLS])
def test_no_difference_is_called_at_most_alpha_of_the_time(cell: Cell) -> None:
    """A/A, looked at every 100 labelled outcomes: the share of runs that ever said promote or
    rollback is within alpha's one-sided 99 % binomial margin."""
    result = simulate(cell, RUNS, seed=1)
    assert result.rate() <= allowed(RUNS), (result.promote, result.rollback)


def test_a_two_point_gain_is_promoted_within_4500_per_variant() -> None:
    """0.92 against 0.90 with the defaults: promoted in every run, at a median of at most
    4,500 labelled outcomes per variant (the fixed-horizon test needs 3,211)."""
    result = simulate(Cell("0.92 vs 0.90", accuracy=0.90, effect=0.02, horizon=20_000), 60,
                      seed=2)
    assert result.rollback == 0 and result.promote >= 57
    median = result.median_stop()
    assert median is not None and median <= 4_500


def test_a_four_point_loss_is_rolled_back_and_never_promoted() -> None:
    """0.86 against 0.90: rolled back in at least 90 % of runs by 12,000 per variant."""
    result = simulate(Cell("0.86 vs 0.90", accuracy=0.90, effect=-0.04, horizon=12_000), 60,
                      seed=3)
    assert result.promote == 0 and result.rollback >= 54
    assert np.max(result.stops) <= 12_000
