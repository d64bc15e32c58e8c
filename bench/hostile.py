"""The hostile soak: valid traffic's latency with and without hostile clients beside it.

One command, from the repository root: ``.venv/bin/python -m bench.hostile`` (about four
minutes; ``--seconds`` sets each run's length). It trains the serving benchmark's models
(``bench.serving.prepare``: two 100-tree forests on iris), serves them with ``router serve`` in
ab mode on SQLite (core 0), and drives it from this process (core 1) with 64 keep-alive
connections in runs of the same length, alternated (``--repeats`` pairs, 2 by default):

- clean: every connection sends valid ``/predict`` requests, closed loop;
- hostile: 10 % of the connections send the requests of :data:`HOSTILE` instead, one after
  another (JSON nested 2,000 deep, a 400-digit integer, lone surrogates, 1e300 features, a
  repeated request id, bodies and headers that stall, a body over the limit, wrong content
  types ...), each answered with its own 4xx; the other 90 % send valid requests.

It reports p50 and p99 of the valid requests in each run, and over all clean and all hostile
runs with their ratio (the target:
p99 within 1.5x), every status counted (no 5xx may appear), and the machine's load, in
``bench/hostile-results.md``. ``tests/e2e/test_hostile_soak.py`` runs a few seconds of the
hostile run and checks the statuses, never a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HOST = "127.0.0.1"
OUT = Path(__file__).resolve().parent / "hostile-results.md"
# Short timeouts, so that a stalled body or header is answered within a run of seconds.
LIMITS = {"header_timeout_s": 1.0, "body_timeout_s": 1.0}
MAX_BODY_BYTES = 1_048_576  # the gateway's default limits.max_body_bytes
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
# How long an exchange may take before the client gives up on it (a stall is answered by the
# gateway's own timeouts, a second or two at LIMITS).
ANSWER_TIMEOUT_S = 30.0


def _post(path: str, body: bytes, content_type: str = "application/json",
          extra: str = "", length: int | None = None) -> bytes:
    declared = len(body) if length is None else length
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {declared}\r\n\r\n").encode() + body


def _features(values: str) -> bytes:
    return b'{"features": [' + values.encode() + b"]}"


@dataclass(frozen=True)
class Hostile:
    """One hostile request: the bytes sent (the first part only, for a stall) and the statuses
    it must be answered with. ``request`` takes the connection's token (for repeated ids)."""

    name: str
    request: Callable[[str], bytes]
    expected: frozenset[int]


HOSTILE: tuple[Hostile, ...] = (
    Hostile("deep JSON (2,000 levels)",
            lambda _: _post("/predict", b"[" * 2000 + b"]" * 2000), frozenset({400})),
    Hostile("400-digit integer feature",
            lambda _: _post("/predict", _features("9" * 400 + ", 1, 1, 1")), frozenset({422})),
    Hostile("1e300 feature", lambda _: _post("/predict", _features("1e300, 1, 1, 1")),
            frozenset({422})),
    Hostile("NaN feature", lambda _: _post("/predict", _features("NaN, 1, 1, 1")),
            frozenset({422})),
    Hostile("lone surrogate in a feature name",
            lambda _: _post("/predict", b'{"features": {"\\udc00": 1}}'), frozenset({400})),
    Hostile("lone surrogate in feedback",
            lambda _: _post("/feedback", b'{"request_id": "\\udc00x", "label": "setosa"}'),
            frozenset({400})),
    Hostile("400-digit integer label",
            lambda _: _post("/feedback", b'{"request_id": "r", "label": ' + b"9" * 400 + b"}"),
            frozenset({422})),
    Hostile("unknown feature",
            lambda _: _post("/predict", b'{"features": {"petal": 1}}'), frozenset({422})),
    Hostile("a list for a body", lambda _: _post("/predict", b"[1, 2, 3, 4]"),
            frozenset({422})),
    Hostile("wrong content type",
            lambda _: _post("/predict", json.dumps({"features": ROW}).encode(), "text/plain"),
            frozenset({415})),
    Hostile("request id of 300 characters",
            lambda _: _post("/predict", json.dumps({"features": ROW}).encode(),
                            extra=f"X-Request-Id: {'r' * 300}\r\n"), frozenset({400})),
    Hostile("repeated request id",
            lambda token: _post("/predict", json.dumps({"features": ROW}).encode(),
                                extra=f"X-Request-Id: hostile-{token}\r\n"),
            frozenset({200, 409})),
    Hostile("huge history limit",
            lambda _: f"GET /history?limit={'9' * 20} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
            .encode(), frozenset({422})),
    Hostile("oversized body (2 MB declared)",
            lambda _: _post("/predict", b"[" * 65_536, length=2 * MAX_BODY_BYTES),
            frozenset({413})),
    Hostile("slow body (stalls after a byte)",
            lambda _: _post("/predict", b"{", length=200), frozenset({408})),
    Hostile("slow headers (stall mid-header)",
            lambda _: f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Ty".encode(),
            frozenset({408})),
)


def percentiles_ms(latencies: Sequence[float]) -> tuple[float, float]:
    array = np.array(latencies or [0.0]) * 1000
    return float(np.percentile(array, 50)), float(np.percentile(array, 99))


@dataclass
class Tally:
    """What one run saw: latencies and statuses of the valid requests, statuses of each
    hostile kind (``None``: the connection closed without an answer)."""

    latencies: list[float] = field(default_factory=list)
    valid: Counter[int | None] = field(default_factory=Counter)
    hostile: dict[str, Counter[int | None]] = field(default_factory=dict)

    def server_errors(self) -> int:
        answers = [self.valid, *self.hostile.values()]
        return sum(n for c in answers for status, n in c.items() if status and status >= 500)

    def unexpected(self) -> dict[str, dict[str, int]]:
        """Hostile kinds answered with a status they must not get, with every status seen."""
        expected = {h.name: h.expected for h in HOSTILE}
        return {name: {str(s): n for s, n in seen.items()} for name, seen in self.hostile.items()
                if any(s not in expected[name] for s in seen)}

    def summary(self) -> dict[str, Any]:
        p50, p99 = percentiles_ms(self.latencies)
        return {"valid_requests": len(self.latencies), "p50_ms": p50, "p99_ms": p99,
                "valid_statuses": {str(s): n for s, n in sorted(self.valid.items(), key=str)},
                "hostile_statuses": {k: {str(s): n for s, n in v.items()}
                                     for k, v in self.hostile.items()},
                "server_errors": self.server_errors(), "unexpected": self.unexpected()}


# -- the client ---------------------------------------------------------------------------------


async def _answer(reader: asyncio.StreamReader) -> tuple[int | None, bool]:
    """The status of the next answer and whether the connection stays open; (None, False)
    when it closed first."""
    status_line = await reader.readline()
    if not status_line:
        return None, False
    length, keep = 0, True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
            keep = False
    await reader.readexactly(length)
    return int(status_line.split(b" ", 2)[1]), keep


class Connection:
    """One keep-alive connection, opened again whenever the gateway closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: bytes) -> int | None:
        if self.streams is None:
            self.streams = await asyncio.open_connection(HOST, self.port)
        reader, writer = self.streams
        try:
            writer.write(request)
            await writer.drain()
            status, keep = await asyncio.wait_for(_answer(reader), ANSWER_TIMEOUT_S)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            status, keep = None, False
        if not keep:
            self.close()
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _valid_client(port: int, bodies: Sequence[bytes], deadline: float, tally: Tally,
                        offset: int) -> None:
    connection = Connection(port)
    i = offset
    while time.perf_counter() < deadline:
        body = bodies[i % len(bodies)]
        i += 1
        started = time.perf_counter()
        status = await connection.exchange(_post("/predict", body, extra=f"X-User-Id: u{i}\r\n"))
        tally.latencies.append(time.perf_counter() - started)
        tally.valid[status] += 1
    connection.close()


async def _hostile_client(port: int, deadline: float, tally: Tally, offset: int) -> None:
    """Every hostile kind in turn, at least once each, then on until the deadline."""
    connection = Connection(port)
    token = uuid.uuid4().hex
    sent = 0
    while sent < len(HOSTILE) or time.perf_counter() < deadline:
        hostile = HOSTILE[(offset + sent) % len(HOSTILE)]
        sent += 1
        status = await connection.exchange(hostile.request(token))
        tally.hostile.setdefault(hostile.name, Counter())[status] += 1
        if hostile.name.startswith(("slow", "oversized")):
            connection.close()  # the rest of that request is never sent
    connection.close()


async def soak(port: int, connections: int, seconds: float, hostile_connections: int,
               bodies: Sequence[bytes]) -> Tally:
    """``connections`` clients for ``seconds``, the first ``hostile_connections`` hostile."""
    tally = Tally()
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(
        _hostile_client(port, deadline, tally, k) if k < hostile_connections else
        _valid_client(port, bodies, deadline, tally, k * 7919) for k in range(connections)))
    return tally


def valid_bodies() -> list[bytes]:
    """Every iris row as a named /predict body, in a fixed shuffled order."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    order = np.random.default_rng(0).permutation(len(iris.data))
    return [json.dumps({"features": dict(zip(ROW, iris.data[i].tolist(), strict=True))})
            .encode() for i in order]


# -- the run ------------------------------------------------------------------------------------


def _run_loop(coroutine: Any) -> Tally:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)  # type: ignore[no-any-return]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)  # type: ignore[no-any-return]


def measure(seconds: float, connections: int, share: float, warmup: float, repeats: int
            ) -> dict[str, Any]:
    """Train, serve, warm up, then ``repeats`` pairs of a clean and a hostile run (alternated,
    so that a burst of other work on the machine does not fall on one kind only)."""
    from bench import serving

    hostile_connections = max(1, round(connections * share))
    with tempfile.TemporaryDirectory(prefix="router-hostile-") as tmp:
        workdir = Path(tmp)
        (workdir / "logs").mkdir()
        print(f"training the models in {workdir}", flush=True)
        paths = serving.prepare(workdir)
        limits = ", ".join(f"{k}: {v}" for k, v in LIMITS.items())
        paths["ab"].write_text(paths["ab"].read_text() + f"limits: {{{limits}}}\n")
        bodies = [line.encode() for line in paths["bodies"].read_text().splitlines()]
        if (os.cpu_count() or 1) >= 2:  # the gateway runs on core 0, this client on core 1
            os.sched_setaffinity(0, {int(serving.CLIENT_CPU)})
        with serving.running(serving.BY_KEY["ab-fast"], paths, workdir / "logs") as target:
            models = serving.engines_chosen(target)  # the engine that serves, not the interim
            _run_loop(soak(target.port, connections, warmup, 0, bodies))
            runs, pooled = {}, {"clean": [], "hostile": []}
            for repeat in range(1, repeats + 1):
                for kind, hostile in (("clean", 0), ("hostile", hostile_connections)):
                    load_before = serving.load_average()
                    print(f"{kind} run {repeat}: {seconds:g} s, {connections} connections, "
                          f"{hostile} hostile", flush=True)
                    tally = _run_loop(soak(target.port, connections, seconds, hostile, bodies))
                    pooled[kind] += tally.latencies
                    runs[f"{kind} {repeat}"] = {
                        **tally.summary(), "hostile_connections": hostile,
                        "load_before": load_before, "load_after": serving.load_average()}
            log = (workdir / "logs" / "ab-fast.log").read_text(errors="replace")
    return {"date": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            "machine": serving.machine(), "seconds": seconds, "connections": connections,
            "engines": {role: m["engine"] for role, m in models.items()}, "runs": runs,
            "pooled_ms": {kind: percentiles_ms(values) for kind, values in pooled.items()},
            "tracebacks": log.count("Traceback"),
            "command": " ".join(["python -m bench.hostile", *sys.argv[1:]])}


def report(result: dict[str, Any]) -> str:
    runs = result["runs"]
    (clean_p50, clean_p99), (hostile_p50, hostile_p99) = (result["pooled_ms"]["clean"],
                                                          result["pooled_ms"]["hostile"])
    ratio = hostile_p99 / clean_p99 if clean_p99 else float("inf")
    errors = sum(run["server_errors"] for run in runs.values())
    unexpected = [run["unexpected"] for run in runs.values() if run["unexpected"]]
    machine = result["machine"]
    limits = ", ".join(f"{k} {v:g} s" for k, v in LIMITS.items())
    lines = [
        "# Hostile soak: valid latency beside hostile clients",
        "",
        f"`{result['command']}` on {result['date']}: `router serve` (ab mode, SQLite, engines "
        f"{', '.join(f'{r} {e}' for r, e in result['engines'].items())}; "
        f"limits {limits}) on core 0, the asyncio client of `bench/hostile.py` on core 1, "
        f"{result['connections']} keep-alive connections, {result['seconds']:g} s per run, "
        "clean and hostile runs alternated. "
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}.",
        "",
        "| run | hostile connections | valid requests | valid req/s | p50 (ms) | p99 (ms) | 5xx "
        "| load average before → after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, run in runs.items():
        lines.append(
            f"| {name} | {run['hostile_connections']} | {run['valid_requests']:,} | "
            f"{run['valid_requests'] / result['seconds']:,.0f} | {run['p50_ms']:.2f} | "
            f"{run['p99_ms']:.2f} | {run['server_errors']} | {run['load_before']} → "
            f"{run['load_after']} |")
    met = ratio <= 1.5 and errors == 0 and not unexpected
    lines += [
        "",
        f"Every valid request of the clean runs: p50 {clean_p50:.2f} ms, p99 {clean_p99:.2f} ms; "
        f"of the hostile runs: p50 {hostile_p50:.2f} ms, p99 {hostile_p99:.2f} ms.",
        "",
        f"**p99 of the valid requests, hostile / clean: {ratio:.2f}x** (target: at most 1.5x); "
        f"5xx answers: {errors}; tracebacks in the gateway's log: {result['tracebacks']}; "
        f"hostile requests answered otherwise than expected: {len(unexpected)}. "
        f"Target {'met' if met else 'MISSED'}.",
        "",
        "Statuses of the valid requests: "
        + "; ".join(f"{name} {run['valid_statuses']}" for name, run in runs.items()) + ".",
        "",
        "| hostile request (every hostile run) | expected | answered (status: count) |",
        "| --- | --- | --- |",
    ]
    expected = {h.name: h.expected for h in HOSTILE}
    seen: dict[str, Counter[str]] = {}
    for run in runs.values():
        for name, statuses in run["hostile_statuses"].items():
            seen.setdefault(name, Counter()).update(statuses)
    for name, statuses in seen.items():
        lines.append(f"| {name} | {', '.join(map(str, sorted(expected[name])))} | "
                     f"{', '.join(f'{s}: {n:,}' for s, n in statuses.items())} |")
    lines += ["", "A load average far above 2 means other work shared the two cores: compare "
                  "the runs with each other, not with other files of bench/.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="per run (30)")
    parser.add_argument("--connections", type=int, default=64, help="(64)")
    parser.add_argument("--hostile-share", type=float, default=0.1,
                        help="share of the connections that are hostile in the second run (0.1)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds (5)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="pairs of a clean and a hostile run (2)")
    parser.add_argument("--out", type=Path, default=OUT, help="the report (%(default)s)")
    args = parser.parse_args(argv)
    if not 0 < args.hostile_share < 1 or args.connections < 2 or args.seconds <= 0 \
            or args.repeats < 1:
        parser.error("--hostile-share must lie between 0 and 1, --connections be at least 2, "
                     "--seconds positive and --repeats at least 1")
    result = measure(args.seconds, args.connections, args.hostile_share, args.warmup,
                     args.repeats)
    args.out.write_text(report(result))
    print(report(result))
    return 0 if all(run["server_errors"] == 0 for run in result["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
