"""The targets for the serving benchmark, judged from its points: each a row of
(target, what was measured, met?)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "MLSERVER_ADAPTIVE_RPS",
    "CeilingPairs",
    "Pairs",
    "Row",
    "ceiling_targets",
    "cpu_over_ceiling",
    "earlier_targets",
    "find",
    "logging_and_tail_targets",
    "mlserver_targets",
    "rps_of_ceiling",
    "serving_cpu_added",
    "targets",
    "throughput_cost",
]

# MLServer 1.7 with adaptive batching 64 / 1 ms in an earlier run on this kind of machine: the
# reference for the target against it when a run leaves MLServer out.
MLSERVER_ADAPTIVE_RPS = 1_107
MLSERVER_LABELS = {"mlserver": "MLServer, no batching",
                   "mlserver-batch": "MLServer, adaptive batching"}
OVER_MLSERVER_BATCHING = 8.0
OVER_MLSERVER_PLAIN = 40.0
P50_UNDER_MLSERVER = 0.2
# ab on ONNX Runtime against the bare-Starlette ceiling, at 64 connections.
RPS_OF_CEILING = 0.6
SERVING_CPU_OVER_CEILING = 1.6
# What logging may cost, and how far the tail may be from the framework's.
LOG_THROUGHPUT_COST = 0.05
LOG_SERVING_CPU_US = 5.0
P99_OVER_CEILING = 3.0
ENGINES = (("fast", "ONNX Runtime"), ("sklearn", "scikit-learn"))

Row = tuple[str, str, bool | None]
# Logging's cost measured in interleaved pairs, by engine ("fast", "sklearn"): each pair's
# "on" and "off" points (``bench.serving.log_pairs``), as plain dicts of a point's fields.
Pairs = Mapping[str, Sequence[Mapping[str, Mapping[str, Any]]]]
# ab on ONNX Runtime with its log against the ceiling in interleaved pairs: each pair's "router"
# and "ceiling" points (``bench.serving.ceiling_pairs``).
CeilingPairs = Sequence[Mapping[str, Mapping[str, Any]]]


class Point(Protocol):
    """What a target reads of a measured point (``bench.serving.Point``)."""

    server: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float | None
    serving_cpu_us_per_request: float | None


def find(points: Sequence[Point], key: str, n: int) -> Point | None:
    return next((p for p in points if p.server == key and p.connections == n), None)


def targets(points: Sequence[Point], pairs: Pairs | None = None,
            ceiling: CeilingPairs | None = None) -> list[Row]:
    """Every target the run measured: the current ones, then those of earlier rounds that
    they do not replace. Logging's cost comes from ``pairs``, and the ratios to the ceiling
    from ``ceiling``, where the run measured them."""
    return [*mlserver_targets(points), *ceiling_targets(points, ceiling),
            *logging_and_tail_targets(points, pairs), *earlier_targets(points)]


def mlserver_targets(points: Sequence[Point]) -> list[Row]:
    """ab on scikit-learn with its log against MLServer: throughput at 64 connections (against
    an earlier run's adaptive-batching figure when this run left MLServer out) and p50 at one."""
    rows: list[Row] = []
    sk64, batch64, plain64 = (find(points, k, 64) for k in ("ab-sklearn", "mlserver-batch",
                                                             "mlserver"))
    if sk64 is not None:
        reference = batch64.rps if batch64 is not None else MLSERVER_ADAPTIVE_RPS
        ratio = sk64.rps / reference
        rows.append(("scikit-learn, ab + log, 64 conns: >= 8x MLServer's best adaptive "
                     f"batching{'' if batch64 else ' (an earlier run)'}",
                     f"{ratio:.1f}x ({sk64.rps:,.0f} vs {reference:,.0f} req/s)",
                     ratio >= OVER_MLSERVER_BATCHING))
    if sk64 is not None and plain64 is not None:
        ratio = sk64.rps / plain64.rps
        rows.append(("scikit-learn, ab + log, 64 conns: >= 40x MLServer without batching",
                     f"{ratio:.1f}x ({sk64.rps:,.0f} vs {plain64.rps:,.0f} req/s)",
                     ratio >= OVER_MLSERVER_PLAIN))
    sk1 = find(points, "ab-sklearn", 1)
    for key in ("mlserver", "mlserver-batch"):
        other = find(points, key, 1)
        if sk1 is not None and other is not None:
            ratio = sk1.p50_ms / other.p50_ms
            rows.append((f"scikit-learn, ab + log, 1 conn: p50 <= 1/5 of "
                         f"{MLSERVER_LABELS[key]}'s",
                         f"{ratio:.2f}x ({sk1.p50_ms:.2f} vs {other.p50_ms:.2f} ms)",
                         ratio <= P50_UNDER_MLSERVER))
    return rows


def ceiling_targets(points: Sequence[Point], pairs: CeilingPairs | None = None) -> list[Row]:
    """ab on ONNX Runtime with its log against the bare-Starlette ceiling at 64 connections:
    its requests/s, and its serving process's CPU per request. Each is the median over
    ``pairs`` when the run measured them (``bench.serving.ceiling_pairs``): the run's own two
    points are minutes apart, and on a shared machine the ceiling alone read 28 to 50 µs a
    request on one day. Without pairs, those two points."""
    if pairs:
        return _from_pairs(_ceiling_rows(pairs), len(pairs))
    fast, ceiling = find(points, "ab-fast", 64), find(points, "ceiling", 64)
    if fast is None or ceiling is None:
        return []
    return _ceiling_rows([{"router": vars(fast), "ceiling": vars(ceiling)}])


def rps_of_ceiling(pair: Mapping[str, Mapping[str, Any]]) -> float:
    """The router's requests/s over the ceiling's in a pair."""
    return float(pair["router"]["rps"] / pair["ceiling"]["rps"])


def cpu_over_ceiling(pair: Mapping[str, Mapping[str, Any]]) -> float:
    """The router's serving process CPU per request over the ceiling's in a pair."""
    return float(pair["router"]["serving_cpu_us_per_request"]
                 / pair["ceiling"]["serving_cpu_us_per_request"])


def _ceiling_rows(pairs: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[Row]:
    ratio, middle = _median(pairs, rps_of_ceiling)
    rows: list[Row] = [("ONNX Runtime, ab + log, 64 conns: >= 0.6x the ceiling's req/s",
                        f"{ratio:.2f}x ({middle['router']['rps']:,.0f} vs "
                        f"{middle['ceiling']['rps']:,.0f} req/s)", ratio >= RPS_OF_CEILING)]
    # Zero: a point too short for one tick of the process's CPU clock measured nothing.
    cpu = [p for p in pairs if p["router"].get("serving_cpu_us_per_request") is not None
           and p["ceiling"].get("serving_cpu_us_per_request")]
    if cpu:
        ratio, middle = _median(cpu, cpu_over_ceiling)
        rows.append(("ONNX Runtime, ab + log, 64 conns: serving process CPU per request "
                     "<= 1.6x the ceiling's",
                     f"{ratio:.2f}x ({middle['router']['serving_cpu_us_per_request']:.0f} vs "
                     f"{middle['ceiling']['serving_cpu_us_per_request']:.0f} µs)",
                     ratio <= SERVING_CPU_OVER_CEILING))
    return rows


def logging_and_tail_targets(points: Sequence[Point], pairs: Pairs | None = None
                             ) -> list[Row]:
    """What logging costs, and the tail against the ceiling's, for each engine measured.

    Logging's cost is the median over ``pairs`` when the run measured that engine's pairs: the
    run's own log-on and log-off points are minutes apart, and on a shared machine two points
    that far apart differed by up to a fifth. Without pairs, those two points."""
    rows: list[Row] = []
    ceiling = find(points, "ceiling", 64)
    for engine, name in ENGINES:
        on, off = find(points, f"ab-{engine}", 64), find(points, f"ab-{engine}-nolog", 64)
        measured = (pairs or {}).get(engine)
        if measured:
            rows += _paired_logging_rows(name, measured)
        elif on is not None and off is not None:
            rows += _logging_rows(name, [{"on": vars(on), "off": vars(off)}])
        if on is not None and ceiling is not None:
            ratio = on.p99_ms / ceiling.p99_ms
            rows.append((f"{name}, ab + log, 64 conns: p99 <= 3x the ceiling's",
                         f"{ratio:.1f}x ({on.p99_ms:.1f} vs {ceiling.p99_ms:.1f} ms)",
                         ratio <= P99_OVER_CEILING))
    return rows


def _paired_logging_rows(name: str, pairs: Sequence[Mapping[str, Mapping[str, Any]]]
                         ) -> list[Row]:
    return _from_pairs(_logging_rows(name, pairs), len(pairs))


def _from_pairs(rows: list[Row], count: int) -> list[Row]:
    """``rows`` measured on ``count`` interleaved pairs, each saying so."""
    source = "one interleaved pair" if count == 1 else f"the median of {count} interleaved pairs"
    return [(target, f"{measured}, {source}", ok) for target, measured, ok in rows]


def throughput_cost(pair: Mapping[str, Mapping[str, Any]]) -> float:
    """What the log took of a pair's requests/s (0.05: 5 %)."""
    return float(1 - pair["on"]["rps"] / pair["off"]["rps"])


def serving_cpu_added(pair: Mapping[str, Mapping[str, Any]]) -> float:
    """The serving process's CPU per request that the log added in a pair, in µs."""
    return float(pair["on"]["serving_cpu_us_per_request"]
                 - pair["off"]["serving_cpu_us_per_request"])


def _median(pairs: Sequence[Mapping[str, Mapping[str, Any]]],
            of: Callable[[Mapping[str, Mapping[str, Any]]], float]
            ) -> tuple[float, Mapping[str, Mapping[str, Any]]]:
    """The median of ``of`` over ``pairs``, and the pair at it (the upper one of two)."""
    ordered = sorted(pairs, key=of)
    return statistics.median(map(of, ordered)), ordered[len(ordered) // 2]


def _logging_rows(name: str, pairs: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[Row]:
    """Logging's cost in throughput and in serving CPU per request: the median over ``pairs``
    of each pair's cost, shown with the figures of the pair at the median."""
    cost, middle = _median(pairs, throughput_cost)
    rows: list[Row] = [(f"{name}, ab, 64 conns: logging costs <= 5 % of throughput",
                        f"{cost * 100:.1f} % ({middle['on']['rps']:,.0f} vs "
                        f"{middle['off']['rps']:,.0f} req/s)", cost <= LOG_THROUGHPUT_COST)]
    cpu = [p for p in pairs if p["on"].get("serving_cpu_us_per_request") is not None
           and p["off"].get("serving_cpu_us_per_request") is not None]
    if cpu:
        added, middle = _median(cpu, serving_cpu_added)
        rows.append((f"{name}, ab, 64 conns: logging costs <= 5 µs of the serving "
                     "process's CPU per request",
                     f"{added:+.1f} µs ({middle['on']['serving_cpu_us_per_request']:.0f} vs "
                     f"{middle['off']['serving_cpu_us_per_request']:.0f})",
                     added <= LOG_SERVING_CPU_US))
    return rows


def earlier_targets(points: Sequence[Point]) -> list[Row]:
    """Targets of earlier rounds that the current ones neither replace nor contradict."""
    rows: list[Row] = []
    sk, base64 = find(points, "ab-sklearn", 64), find(points, "baseline", 64)
    if sk is not None and base64 is not None:
        ratio = sk.rps / base64.rps
        rows.append(("scikit-learn, ab + log, 64 conns: >= 50x the common way",
                     f"{ratio:.0f}x", ratio >= 50))
    if sk is not None:
        rows.append(("scikit-learn, ab + log, 64 conns: p99 < 30 ms", f"{sk.p99_ms:.1f} ms",
                     sk.p99_ms < 30))
    fast1, base1 = find(points, "single-fast", 1), find(points, "baseline", 1)
    if fast1 is not None and base1 is not None:
        ratio = base1.p50_ms / fast1.p50_ms
        rows.append(("ONNX Runtime, single, 1 conn: p50 <= a tenth of the common way's",
                     f"{fast1.p50_ms:.2f} ms vs {base1.p50_ms:.2f} ms ({ratio:.0f}x lower)",
                     ratio >= 10))
    for engine, name in ENGINES:
        ab, shadow = find(points, f"ab-{engine}", 64), find(points, f"shadow-{engine}", 64)
        if ab is not None and shadow is not None:
            ratio = shadow.rps / ab.rps
            rows.append((f"{name}, 64 conns: shadow (equally costly challenger) >= 0.7x ab",
                         f"{ratio:.2f}x", ratio >= 0.7))
    return rows
