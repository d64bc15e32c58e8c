"""Benchmark of shadow mode: the champion's throughput and latency with the shadow off and on.

Run from the repository root: ``.venv/bin/python bench/shadow.py`` (about 15 minutes).

It trains a champion (StandardScaler + 100-tree random forest on iris, as in PERF-NOTES) and two
challengers, one about as costly per call as the champion (another 100-tree forest) and one
about 10x as costly (1,000 trees), and prints the measured cost ratios. Then, for each scenario
(``single`` mode; shadow with each challenger in the worker process at niceness 10, as shipped;
and, to compare where and how the challenger runs, each in a thread of the gateway, each in a
worker under SCHED_IDLE, and the 10x one in a worker at niceness 0), it starts a real
``router serve`` (one worker, SQLite store) and drives it from this process with a small
keep-alive HTTP/1.1 client:

- ``1 conn``: one connection, requests back to back: the client's p50 and p99;
- ``N conns``: then N connections, closed loop: requests per second and p99;

and, for each phase, the share of the champion's answers that got a shadow prediction.

The client runs on core 1 and the gateway where the kernel puts it (``--client-cpus``,
``--server-cpus``; the shadow worker inherits the gateway's cores). Every model runs on
scikit-learn (``--engine sklearn``, the engine of an install without the ``fast`` extra), so
that the challengers' costs are what their tree counts say. Scenarios run in rounds,
interleaved, and each figure is the median over rounds; ratios are against ``single`` measured
in the same run, because absolute figures on a shared 2-core machine move by a third between
runs. Shares are counted in the store after the gateway's exit (with ``drain_s: 0.5``, so
they say what was scored during the phase).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

# This checkout's router, whatever the virtualenv has installed (the gateways get it too).
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from router.artifacts import save_model  # noqa: E402
from router.serving.registry import ModelRegistry  # noqa: E402

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
BODY = json.dumps({"features": [5.1, 3.5, 1.4, 0.2]}).encode()


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str
    challenger: str  # "1x" or "10x"
    env: dict[str, str] = field(default_factory=dict)


SCENARIOS = (
    Scenario("off (single)", "single", "1x"),
    Scenario("shadow 1x, process", "shadow", "1x"),
    Scenario("shadow 10x, process", "shadow", "10x"),
    Scenario("shadow 1x, thread", "shadow", "1x", {"ROUTER_SHADOW_RUNNER": "thread"}),
    Scenario("shadow 10x, thread", "shadow", "10x", {"ROUTER_SHADOW_RUNNER": "thread"}),
    Scenario("shadow 10x, process nice 0", "shadow", "10x", {"ROUTER_SHADOW_PRIORITY": "0"}),
    Scenario("shadow 1x, process idle", "shadow", "1x", {"ROUTER_SHADOW_PRIORITY": "idle"}),
    Scenario("shadow 10x, process idle", "shadow", "10x", {"ROUTER_SHADOW_PRIORITY": "idle"}),
)


# -- models -----------------------------------------------------------------------------------


def train(directory: Path) -> dict[str, Path]:
    data = load_iris()
    X = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target_names)[data.target]
    paths = {}
    for role, trees, seed in (("champion", 100, 0), ("1x", 100, 1), ("10x", 1000, 2)):
        model = Pipeline([("scale", StandardScaler()),
                          ("model", RandomForestClassifier(n_estimators=trees,
                                                           random_state=seed))]).fit(X, y)
        paths[role] = save_model(model, directory / f"iris-{role}" / "1", name=f"iris-{role}",
                                 version="1", X_train=X, y_train=y, feature_names=FEATURES)
    return paths


def call_cost_ms(path: Path, rows: int, repeats: int = 30) -> float:
    model = ModelRegistry().load(path)
    X = np.tile(np.array([[5.1, 3.5, 1.4, 0.2]]), (rows, 1))
    model.predict(X)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict(X)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


# -- the gateway ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gateway(workdir: Path, scenario: Scenario, models: dict[str, Path],
            cpus: str | None) -> Iterator[int]:
    """A ``router serve`` process for one scenario; yields its port."""
    config = {
        "experiment": "bench-shadow", "mode": scenario.mode,
        "champion": {"name": "champ", "path": str(models["champion"])},
        "challenger": {"name": "chall", "path": str(models[scenario.challenger])},
        "store": "sqlite:///outcomes.db",
        # Little drain at exit: a phase's share is then what was scored during it.
        "shadow": {"drain_s": 0.5},
    }
    for stale in workdir.glob("outcomes.db*"):
        stale.unlink()
    (workdir / "router.yaml").write_text(json.dumps(config))
    port = free_port()
    log = workdir / f"server-{port}.log"
    command = [sys.executable, "-m", "router.cli", "serve", "--config", "router.yaml",
               "--host", "127.0.0.1", "--port", str(port)]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": str(REPO), **scenario.env})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gateway did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        if scenario.mode == "shadow":
            wait_for_shadow(port, workdir / "outcomes.db")
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def wait_for_shadow(port: int, db: Path, timeout: float = 60) -> None:
    """Measure the steady state: wait until the worker has loaded the challenger and scored.

    The worker loads the challenger at low priority after the gateway is ready; on a busy
    machine that takes a while, and until then shadow work is only queued and dropped. (Under
    SCHED_IDLE on a machine that other work keeps busy it may never come: then its shares say
    so.)
    """
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=BODY,
                                     headers={"Content-Type": "application/json"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        urllib.request.urlopen(request, timeout=10).close()
        if db.exists():
            with sqlite3.connect(db) as connection:
                if connection.execute(
                        "SELECT count(*) FROM predictions WHERE shadow = 1").fetchone()[0]:
                    return
        time.sleep(0.5)
    print(f"#   the shadow worker scored nothing in {timeout:g} s")


# -- the client -------------------------------------------------------------------------------


async def _connection(port: int, stop_at: float, latencies: list[float],
                      failures: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                failures.append(1)
    finally:
        writer.close()


async def _load(port: int, connections: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures: list[int] = []
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(*(_connection(port, stop_at, latencies, failures)
                           for _ in range(connections)))
    return latencies, len(failures)


def load(port: int, connections: int, seconds: float) -> dict[str, float]:
    started = time.time()
    latencies, failures = asyncio.run(_load(port, connections, seconds))
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    ms = np.array(latencies) * 1000
    return {"rps": len(ms) / seconds, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "from": started, "to": time.time()}


def shadow_share(db: Path, phase: dict[str, float]) -> float:
    """Percent of the champion's answers in a phase that got a shadow prediction in the store
    (after the drain at exit); prints any shadow errors."""
    with sqlite3.connect(db) as connection:
        answered, paired = connection.execute(
            "SELECT count(*), sum(EXISTS (SELECT 1 FROM predictions s WHERE s.shadow = 1 "
            "AND s.error IS NULL AND s.request_id = c.request_id)) "
            "FROM predictions c WHERE c.shadow = 0 AND c.ts BETWEEN ? AND ?",
            (phase["from"], phase["to"])).fetchone()
        for error, count in connection.execute(
                "SELECT error, count(*) FROM predictions WHERE shadow = 1 AND error IS NOT NULL "
                "GROUP BY error"):
            print(f"#   {count} shadow rows failed: {error}")
    return 100.0 * (paired or 0) / answered if answered else 0.0


# -- the run ----------------------------------------------------------------------------------


def run_scenario(workdir: Path, scenario: Scenario, models: dict[str, Path],
                 args: argparse.Namespace) -> dict[str, float]:
    with gateway(workdir, scenario, models, args.server_cpus) as port:
        # One connection first: a backlog left by many would hide the shadow's share at one.
        load(port, 1, args.warmup)
        one = load(port, 1, args.seconds)
        many = load(port, args.connections, args.seconds)
    db = workdir / "outcomes.db"
    shadow = scenario.mode == "shadow"
    return {"p50_1": one["p50"], "p99_1": one["p99"], "rps_n": many["rps"],
            "p99_n": many["p99"], "shadow_1": shadow_share(db, one) if shadow else 0.0,
            "shadow_n": shadow_share(db, many) if shadow else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="per load phase")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--server-cpus", default=None, help="taskset list, e.g. 0")
    parser.add_argument("--client-cpus", default="1", help="cores of this client ('' for any)")
    parser.add_argument("--engine", default="sklearn",
                        help="ROUTER_ENGINE for every gateway and the cost figures")
    parser.add_argument("--only", default=None, help="run scenarios whose name contains this")
    args = parser.parse_args(argv)
    if args.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    # Inherited by the gateways (and their shadow workers) and used by the cost figures.
    os.environ["ROUTER_ENGINE"] = args.engine
    scenarios = [s for s in SCENARIOS if args.only is None or args.only in s.name
                 or s.mode == "single"]
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp:
        workdir = Path(tmp)
        models = train(workdir / "models")
        print(f"# {os.cpu_count()} cores; server cpus {args.server_cpus or 'any'}, client cpus "
              f"{args.client_cpus or 'any'}; engine {args.engine}; {args.rounds} rounds of "
              f"{args.seconds:g} s phases, {args.connections} connections; load average "
              f"{os.getloadavg()[0]:.1f} at start")
        for rows in (1, 64):
            costs = {role: call_cost_ms(path, rows) for role, path in models.items()}
            print(f"# cost of one call of {rows} row(s): champion {costs['champion']:.2f} ms, "
                  f"1x {costs['1x']:.2f} ms ({costs['1x'] / costs['champion']:.1f}x), "
                  f"10x {costs['10x']:.2f} ms ({costs['10x'] / costs['champion']:.1f}x)")
        results: dict[str, list[dict[str, float]]] = {s.name: [] for s in scenarios}
        for round_ in range(args.rounds):
            for scenario in scenarios:
                result = run_scenario(workdir, scenario, models, args)
                results[scenario.name].append(result)
                print(f"# round {round_ + 1} {scenario.name}: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in result.items()), flush=True)
    median = {name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
              for name, runs in results.items()}
    base = median["off (single)"]
    print()
    n = args.connections
    print(f"| scenario | 1 conn p50 ms | 1 conn p99 ms | {n} conns req/s | {n} conns p99 ms | "
          f"req/s ratio | p99 ratio ({n} conns) | shadow scored, 1 conn | shadow scored, "
          f"{n} conns |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, m in median.items():
        scored = ("-", "-") if name == "off (single)" else \
            (f"{m['shadow_1']:.0f} %", f"{m['shadow_n']:.0f} %")
        print(f"| {name} | {m['p50_1']:.2f} | {m['p99_1']:.2f} | {m['rps_n']:.0f} | "
              f"{m['p99_n']:.1f} | {m['rps_n'] / base['rps_n']:.2f} | "
              f"{m['p99_n'] / base['p99_n']:.2f} | {scored[0]} | {scored[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
