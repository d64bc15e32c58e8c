"""Calibration of the decision: how often it says promote or rollback when it should not, and
how soon it says so when it should.

Each cell simulates many experiments and runs them through the statistics ``/stats`` uses
(``router.stats.confidence`` and ``router.stats.guardrails``), looking every ``LOOK`` labelled
outcomes, as a dashboard or the rollout would. An A/A cell (two identical arms) counts the runs
that *ever* said ``promote`` or ``rollback``: that share must stay at most ``alpha`` (within a
binomial margin). A power cell counts how many labelled outcomes per variant a real difference
needed.

Run from the repository root: ``.venv/bin/python -m bench.calibration`` (the full grid, about
ten minutes on two cores; ``--runs`` sets the experiments per cell) writes
``docs/calibration.md``. The test suite runs a few fast cells of the same code
(``tests/stats/test_calibration.py``).

The model of an experiment:

- requests come from units (users with a sticky key, else each request is its own unit); a unit
  is assigned to the challenger with the configured share and keeps its variant;
- each unit has its own accuracy, drawn from a Beta distribution with the cell's mean and
  intra-class correlation (ICC; 0 without sticky users), and each of its requests is correct
  with that chance;
- the labels arrive in a random interleaving of the units' requests, or, in the session
  cells, a unit's requests one after another;
- with heavy-tailed activity, a user's request count is drawn from a Pareto tail, so that a
  few users send a large share of an arm's outcomes;
- in shadow mode both models answer every request: two models of equal accuracy whose errors
  agree on part of the requests;
- guardrail cells draw each challenger request's failure and latency (log-normal, with the
  cell's true p99) alongside.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import binom, norm

from router.stats.confidence import (
    running_arm,
    running_difference,
    running_paired,
    samples_to_significance,
)
from router.stats.guardrails import rate_p_values

LOOK = 100  # labelled outcomes between two looks
MIN_SAMPLES = 200  # analysis.min_samples: labelled per variant before any decision
ALPHA = 0.05


@dataclass(frozen=True)
class Cell:
    """One setting of the grid."""

    name: str
    accuracy: float = 0.9
    min_effect: float = 0.01
    share: float = 0.5  # the challenger's share of units (ab mode)
    icc: float = 0.0  # intra-class correlation of correctness within a unit
    per_unit: int = 1  # mean requests per unit (1: every request is its own unit)
    effect: float = 0.0  # true accuracy of the challenger minus the champion's
    horizon: int = 5_000  # labelled outcomes of the smaller arm at the end of a run
    mode: str = "ab"
    agreement: float = 0.8  # shadow: share of requests both models get right, or both wrong
    error_rate: float | None = None  # guardrail cells: the challenger's true error rate
    error_limit: float = 0.01
    p99_ms: float | None = None  # guardrail cells: the challenger's true p99 latency
    p99_limit_ms: float = 50.0
    steps: tuple[float, ...] = ()  # rollout: the shares of successive phases
    # Sticky users' activity: "even" draws each user's requests between a fifth of per_unit
    # and 1.8 times it; "heavy" from a Pareto tail of that index (1 + 2 Pareto(index), capped
    # at 5,000), where a few users send most of the traffic.
    heavy_tail: float | None = None
    sessions: bool = False  # a user's requests arrive together, not spread over the run


@dataclass
class Outcome:
    """What one simulated run ended with."""

    action: str = "continue"  # the first non-continue action it reached, else continue
    at: int | None = None  # labelled outcomes of the smaller arm when it did


@dataclass
class CellResult:
    cell: Cell
    runs: int
    promote: int = 0
    rollback: int = 0
    stops: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def either(self) -> int:
        return self.promote + self.rollback

    def rate(self) -> float:
        return self.either / self.runs

    def median_stop(self) -> float | None:
        return float(np.median(self.stops)) if self.stops else None


def allowed(runs: int, alpha: float = ALPHA) -> float:
    """The largest A/A share of false decisions consistent with a true rate of ``alpha``:
    the upper end of a one-sided 99 % binomial margin."""
    return float(binom.ppf(0.99, runs, alpha)) / runs


# -- drawing experiments -----------------------------------------------------------------------


def _unit_accuracies(rng: np.random.Generator, mean: float, icc: float, size: int
                     ) -> np.ndarray:
    if icc <= 0:
        return np.full(size, mean)
    concentration = (1.0 - icc) / icc
    return rng.beta(mean * concentration, (1.0 - mean) * concentration, size)


def _ab_sequence(rng: np.random.Generator, cell: Cell, share: float, needed: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(y, is_challenger, unit)`` in label order, until the smaller arm has ``needed``."""
    smaller = min(share, 1.0 - share)
    total = int(needed / smaller * 1.15) + 200
    if cell.per_unit <= 1:
        is_b = rng.random(total) < share
        p = np.where(is_b, cell.accuracy + cell.effect, cell.accuracy)
        y = (rng.random(total) < p).astype(float)
        return y, is_b, None
    if cell.heavy_tail is None:
        users = int(total / cell.per_unit) + 10
        low = max(1, cell.per_unit // 5)
        counts = rng.integers(low, 2 * cell.per_unit - low + 1, users)
    else:
        users = total  # more than enough: the sequence is cut at total requests
        counts = np.minimum(1 + np.floor(2 * rng.pareto(cell.heavy_tail, users)), 5_000
                            ).astype(int)
    assigned = rng.random(users) < share
    base = _unit_accuracies(rng, cell.accuracy, cell.icc, users)
    accuracy = np.clip(base + np.where(assigned, cell.effect, 0.0), 0.0, 1.0)
    if cell.sessions:
        order = rng.permutation(users)
        unit = np.repeat(order, counts[order])[:total]
    else:
        unit = np.repeat(np.arange(users), counts)
        rng.shuffle(unit)
        unit = unit[:total]
    y = (rng.random(unit.size) < accuracy[unit]).astype(float)
    return y, assigned[unit], unit


def _looks(count_a: np.ndarray, count_b: np.ndarray) -> np.ndarray:
    """Positions (in the sequence) of the looks, every LOOK labelled outcomes."""
    return np.arange(LOOK - 1, count_a.size, LOOK)


def _judge_ab(cell: Cell, y: np.ndarray, is_b: np.ndarray, unit: np.ndarray | None,
              needed: int) -> tuple[str, int | None, bool]:
    """The first action at a look: ``(action, smaller arm's labelled then, reached needed)``."""
    a = running_arm(y, ~is_b, unit, bounded=True)
    b = running_arm(y, is_b, unit, bounded=True)
    difference = running_difference(a, b, cell.min_effect**2, ALPHA)
    smaller = np.minimum(a.n, b.n)
    for at in _looks(a.n, b.n):
        if smaller[at] < MIN_SAMPLES:
            continue
        # Judged before the phase ends: the look that reaches a rollout step's min_samples is
        # the one the rollout acts on.
        if difference.low[at] > 0:
            return "promote", int(smaller[at]), False
        if difference.high[at] < 0:
            return "rollback", int(smaller[at]), False
        if smaller[at] >= needed:
            return "continue", None, True
    return "continue", None, True


def _run_ab(rng: np.random.Generator, cell: Cell) -> Outcome:
    shares = cell.steps or (cell.share,)
    for index, share in enumerate(shares):
        last = index == len(shares) - 1
        needed = cell.horizon if last else MIN_SAMPLES
        y, is_b, unit = _ab_sequence(rng, cell, share, needed)
        action, at, _ = _judge_ab(cell, y, is_b, unit, needed)
        if action != "continue":
            return Outcome(action, at)
    return Outcome()


def _run_shadow(rng: np.random.Generator, cell: Cell) -> Outcome:
    n = cell.horizon
    p = cell.accuracy
    both_right = p - (1.0 - cell.agreement) / 2.0  # equal accuracies, disagreeing half each way
    u = rng.random(n)
    y_a = (u < p).astype(float)
    y_b = ((u < both_right) | ((u >= p) & (u < p + (p - both_right)))).astype(float)
    if cell.effect:
        flip = rng.random(n) < abs(cell.effect)
        y_b = np.where(flip, float(cell.effect > 0), y_b)
    difference = running_paired(y_b - y_a, cell.min_effect**2, ALPHA, bounded=True)
    for at in range(LOOK - 1, n, LOOK):
        if at + 1 < MIN_SAMPLES:
            continue
        if difference.low[at] > 0:
            return Outcome("promote", at + 1)
        if difference.high[at] < 0:
            return Outcome("rollback", at + 1)
    return Outcome()


def _run_guardrails(rng: np.random.Generator, cell: Cell) -> Outcome:
    n = cell.horizon
    limits = []
    if cell.error_rate is not None:
        limits.append((rng.random(n) < cell.error_rate, cell.error_limit))
    if cell.p99_ms is not None:
        sigma = 0.5
        mu = math.log(cell.p99_ms) - sigma * float(norm.ppf(0.99))
        latency = np.exp(rng.normal(mu, sigma, n))
        limits.append((latency > cell.p99_limit_ms, 0.01))
    level = ALPHA / max(len(limits), 1)
    for bad, limit in limits:
        p = rate_p_values(bad, limit)
        hit = np.flatnonzero(p <= level)
        if hit.size:
            return Outcome("rollback", int(hit[0]) + 1)
    return _run_ab(rng, cell)


def simulate(cell: Cell, runs: int, seed: int = 0) -> CellResult:
    """``runs`` experiments of ``cell``, each with its own stream of random numbers."""
    started = time.perf_counter()
    result = CellResult(cell, runs)
    for run in range(runs):
        rng = np.random.default_rng([seed, run])
        if cell.mode == "shadow":
            outcome = _run_shadow(rng, cell)
        elif cell.error_rate is not None or cell.p99_ms is not None:
            outcome = _run_guardrails(rng, cell)
        else:
            outcome = _run_ab(rng, cell)
        if outcome.action == "promote":
            result.promote += 1
        elif outcome.action == "rollback":
            result.rollback += 1
        if outcome.at is not None:
            result.stops.append(outcome.at)
    result.seconds = time.perf_counter() - started
    return result


# -- the grid ----------------------------------------------------------------------------------


def aa_grid() -> Iterator[Cell]:
    """Every A/A cell the decision must hold alpha in."""
    for accuracy in (0.5, 0.9, 0.99):
        for min_effect in (0.01, 0.05, 0.1, 0.2):
            yield Cell(f"accuracy {accuracy}, min_effect {min_effect}", accuracy=accuracy,
                       min_effect=min_effect)
    for share in (0.05, 0.25):
        for min_effect in (0.01, 0.1):
            yield Cell(f"share {share:.0%}, min_effect {min_effect}", share=share,
                       min_effect=min_effect)
    yield Cell("rollout steps 5, 25, 50 %", steps=(0.05, 0.25, 0.5), min_effect=0.05)
    for icc in (0.03, 0.09, 0.25):
        for per_unit in (10, 20, 100):
            yield Cell(f"sticky users, ICC {icc}, ~{per_unit} requests a user", icc=icc,
                       per_unit=per_unit, min_effect=0.05 if per_unit < 100 else 0.01)
    for index in (1.2, 1.5):
        for sessions in (False, True):
            arrival = "in sessions" if sessions else "spread over the run"
            yield Cell(f"sticky users, heavy-tailed activity (Pareto {index}), {arrival}",
                       icc=0.1, per_unit=2, heavy_tail=index, sessions=sessions,
                       min_effect=0.05, horizon=10_000)
    for min_effect in (0.01, 0.1):
        yield Cell(f"shadow, min_effect {min_effect}", mode="shadow", min_effect=min_effect)
    yield Cell("guardrails: error 0.5 % (limit 1 %), p99 40 ms (limit 50 ms)",
               error_rate=0.005, p99_ms=40.0)


def power_grid() -> Iterator[Cell]:
    """Cells with a real difference: how soon, and how surely, the decision finds it."""
    yield Cell("0.92 against 0.90", accuracy=0.90, effect=0.02, horizon=20_000)
    yield Cell("0.86 against 0.90", accuracy=0.90, effect=-0.04, horizon=12_000)


def plan_table(runs: int) -> list[str]:
    """How honest ``samples_needed_per_variant`` is: with a true effect equal to ``min_effect``,
    the share of runs that had promoted by the planned size (it aims at 80 %)."""
    lines = ["| champion accuracy | min_effect = true effect | planned per variant | "
             "promoted by then | median at promotion |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for accuracy, effect in ((0.9, 0.02), (0.5, 0.05), (0.9, 0.05)):
        sd_a = math.sqrt(accuracy * (1 - accuracy))
        sd_b = math.sqrt((accuracy + effect) * (1 - accuracy - effect))
        planned = samples_to_significance(sd_a, sd_b, effect, effect**2, ALPHA)
        assert planned is not None
        result = simulate(Cell("plan", accuracy=accuracy, effect=effect, min_effect=effect,
                               horizon=int(planned * 1.5)), runs, seed=5)
        by_plan = sum(stop <= planned for stop in result.stops) / runs
        median = result.median_stop()
        lines.append(f"| {accuracy} | {effect} | {planned:,} | {by_plan:.0%} | "
                     f"{'-' if median is None else f'{median:,.0f}'} |")
    return lines


def _table(results: Sequence[CellResult]) -> list[str]:
    lines = ["| cell | runs | promote | rollback | either | allowed | holds |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        limit = allowed(r.runs)
        lines.append(f"| {r.cell.name} | {r.runs} | {r.promote} | {r.rollback} | "
                     f"{r.rate():.1%} | {limit:.1%} | {'yes' if r.rate() <= limit else 'NO'} |")
    return lines


def _power_table(results: Sequence[CellResult]) -> list[str]:
    lines = ["| cell | runs | promote | rollback | median labelled per variant at the decision |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        median = r.median_stop()
        lines.append(f"| {r.cell.name} | {r.runs} | {r.promote} | {r.rollback} | "
                     f"{'-' if median is None else f'{median:,.0f}'} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="experiments per cell")
    parser.add_argument("--out", default="docs/calibration.md")
    args = parser.parse_args(argv)
    aa = []
    for cell in aa_grid():
        aa.append(simulate(cell, args.runs))
        print(_table(aa[-1:])[-1], f"({aa[-1].seconds:.1f} s)", flush=True)
    power = [simulate(cell, args.runs // 2) for cell in power_grid()]
    for line in _power_table(power):
        print(line)
    plan = plan_table(args.runs // 5)
    for line in plan:
        print(line)
    text = "\n".join([
        "# Calibration of the decision",
        "",
        f"Written by `python -m bench.calibration --runs {args.runs}` on "
        f"{time.strftime('%Y-%m-%d')} ({platform.python_implementation()} "
        f"{platform.python_version()}, {sys.platform}). Each A/A cell simulates {args.runs} "
        "experiments of two identical arms, looked at every 100 labelled outcomes from "
        f"{MIN_SAMPLES} labelled per variant on, until the smaller arm has its horizon "
        "(5,000 labelled outcomes unless said). *either* is the share of runs that ever said "
        "promote or rollback; *allowed* is alpha = 0.05 plus a one-sided 99 % binomial margin "
        "for the number of runs. The model of an experiment is described in "
        "`bench/calibration.py`.",
        "",
        "## A/A: no difference",
        "",
        *_table(aa),
        "",
        "## Power: a real difference",
        "",
        "Default settings (`min_effect` 0.01, alpha 0.05, 50 % share), independent requests. "
        "The fixed-horizon two-proportion test needs 3,211 labelled per variant for 0.92 "
        "against 0.90 at 80 % power.",
        "",
        *_power_table(power),
        "",
        "## Planning: `samples_needed_per_variant`",
        "",
        "With a true effect equal to `min_effect` (50 % share, alpha 0.05), the share of "
        f"{args.runs // 5} runs that had promoted by the labelled samples per variant the "
        "report planned for; the plan aims at 80 % and counts one look, so it errs long.",
        "",
        *plan,
        "",
    ])
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
