"""The targets for the serving benchmark, judged from its points: each a row of
(target, what was measured, met?)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["MLSERVER_ADAPTIVE_RPS", "find", "issue17_targets", "mlserver_targets", "targets"]

# MLServer 1.7 with adaptive batching 64 / 1 ms in an earlier run on this kind of machine: the
# reference for issue 6's target when a run leaves MLServer out.
MLSERVER_ADAPTIVE_RPS = 1_107
MLSERVER_LABELS = {"mlserver": "MLServer, no batching",
                   "mlserver-batch": "MLServer, adaptive batching"}
# What logging may cost, and how far the tail may be from the framework's.
LOG_THROUGHPUT_COST = 0.05
LOG_SERVING_CPU_US = 5.0
P99_OVER_CEILING = 3.0


class Point(Protocol):
    """What a target reads of a measured point (``bench.serving.Point``)."""

    server: str
    connections: int
    rps: float
    p99_ms: float
    cpu_us_per_request: float | None
    serving_cpu_us_per_request: float | None


def find(points: Sequence[Point], key: str, n: int) -> Point | None:
    return next((p for p in points if p.server == key and p.connections == n), None)


def targets(points: Sequence[Point]) -> list[tuple[str, str, bool | None]]:
    """Issue 6's targets: (target, what was measured, met?); None when not measured."""
    rows: list[tuple[str, str, bool | None]] = []

    def get(key: str, n: int) -> Point | None:
        return find(points, key, n)

    base64, ceil64 = get("baseline", 64), get("ceiling", 64)
    sk = get("ab-sklearn", 64)
    if sk is not None:
        measured = get("mlserver-batch", 64)
        reference = measured.rps if measured is not None else MLSERVER_ADAPTIVE_RPS
        floor = 4 * reference
        rows.append(("64 conns, scikit-learn, ab + log: >= 4x MLServer adaptive batching "
                     f"({floor:,.0f} req/s{'' if measured else ', an earlier run'})",
                     f"{sk.rps:,.0f} req/s ({sk.rps / reference:.1f}x)",
                     sk.rps >= floor))
        if base64 is not None:
            ratio = sk.rps / base64.rps
            rows.append(("64 conns, scikit-learn, ab + log: >= 50x the common way",
                         f"{ratio:.0f}x", ratio >= 50))
        rows.append(("64 conns, scikit-learn, ab + log: p99 < 30 ms", f"{sk.p99_ms:.1f} ms",
                     sk.p99_ms < 30))
    fast = get("ab-fast", 64)
    if fast is not None and ceil64 is not None:
        ratio = fast.rps / ceil64.rps
        rows.append(("64 conns, fast backend, ab + log: >= 0.5x the bare-Starlette ceiling",
                     f"{fast.rps:,.0f} of {ceil64.rps:,.0f} req/s ({ratio:.2f}x)", ratio >= 0.5))
    fast1, base1 = get("single-fast", 1), get("baseline", 1)
    if fast1 is not None and base1 is not None:
        ratio = base1.p50_ms / fast1.p50_ms
        rows.append(("1 conn, fast backend: p50 <= a tenth of the common way's",
                     f"{fast1.p50_ms:.2f} ms vs {base1.p50_ms:.2f} ms ({ratio:.0f}x lower)",
                     ratio >= 10))
    for engine in ("fast", "sklearn"):
        on, off = get(f"ab-{engine}", 64), get(f"ab-{engine}-nolog", 64)
        if on is not None and off is not None:
            cost = 1 - on.rps / off.rps
            rows.append((f"logging costs <= 10 % of throughput ({engine}, ab, 64 conns)",
                         f"{cost * 100:.1f} % ({on.rps:,.0f} vs {off.rps:,.0f} req/s)",
                         cost <= 0.10))
        ab, shadow = get(f"ab-{engine}", 64), get(f"shadow-{engine}", 64)
        if ab is not None and shadow is not None:
            ratio = shadow.rps / ab.rps
            rows.append((f"shadow (equally costly challenger) >= 0.7x ab ({engine}, 64 conns)",
                         f"{ratio:.2f}x", ratio >= 0.7))
    return rows


def mlserver_targets(points: Sequence[Point]) -> list[tuple[str, str, bool | None]]:
    """The targets against MLServer measured in the same run."""
    rows: list[tuple[str, str, bool | None]] = []
    sk64, batch64, plain64 = (find(points, k, 64) for k in ("ab-sklearn", "mlserver-batch",
                                                             "mlserver"))
    if sk64 is not None and batch64 is not None:
        ratio = sk64.rps / batch64.rps
        rows.append(("64 conns, scikit-learn, ab + log: >= 8x MLServer's best adaptive batching",
                     f"{ratio:.1f}x ({sk64.rps:,.0f} vs {batch64.rps:,.0f} req/s)", ratio >= 8))
    if sk64 is not None and plain64 is not None:
        ratio = sk64.rps / plain64.rps
        rows.append(("64 conns, scikit-learn, ab + log: >= 40x MLServer without batching",
                     f"{ratio:.1f}x ({sk64.rps:,.0f} vs {plain64.rps:,.0f} req/s)", ratio >= 40))
    sk1 = find(points, "ab-sklearn", 1)
    for key in ("mlserver", "mlserver-batch"):
        other = find(points, key, 1)
        if sk1 is not None and other is not None:
            ratio = sk1.p50_ms / other.p50_ms
            rows.append((f"1 conn, scikit-learn, ab + log: p50 <= 1/5 of {MLSERVER_LABELS[key]}'s",
                         f"{sk1.p50_ms:.2f} vs {other.p50_ms:.2f} ms ({ratio:.2f}x)",
                         ratio <= 0.2))
    return rows


def issue17_targets(points: Sequence[Point]) -> list[tuple[str, str, bool | None]]:
    """The targets on logging and the tail, for each engine measured."""
    rows: list[tuple[str, str, bool | None]] = []
    ceiling = find(points, "ceiling", 64)
    for engine, name in (("fast", "ONNX Runtime"), ("sklearn", "scikit-learn")):
        on, off = find(points, f"ab-{engine}", 64), find(points, f"ab-{engine}-nolog", 64)
        if on is not None and off is not None:
            cost = 1 - on.rps / off.rps
            rows.append((f"{name}, ab, 64 conns: logging costs <= 5 % of throughput",
                         f"{cost * 100:.1f} % ({on.rps:,.0f} vs {off.rps:,.0f} req/s)",
                         cost <= LOG_THROUGHPUT_COST))
            if on.serving_cpu_us_per_request is not None \
                    and off.serving_cpu_us_per_request is not None:
                extra = on.serving_cpu_us_per_request - off.serving_cpu_us_per_request
                rows.append((f"{name}, ab, 64 conns: logging costs <= 5 µs of the serving "
                             "process's CPU per request",
                             f"{extra:+.1f} µs ({on.serving_cpu_us_per_request:.0f} vs "
                             f"{off.serving_cpu_us_per_request:.0f})",
                             extra <= LOG_SERVING_CPU_US))
        if on is not None and ceiling is not None:
            ratio = on.p99_ms / ceiling.p99_ms
            rows.append((f"{name}, ab + log, 64 conns: p99 <= 3x the ceiling's",
                         f"{ratio:.1f}x ({on.p99_ms:.1f} vs {ceiling.p99_ms:.1f} ms)",
                         ratio <= P99_OVER_CEILING))
    return rows
