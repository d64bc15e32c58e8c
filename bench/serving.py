"""The serving benchmark: the router against the common way, MLServer and the framework's
ceiling, in one run.

One command, from the repository root: ``.venv/bin/python -m bench.serving`` (about 20 minutes;
``--short`` is a 3-minute smoke run, see ``--help``). It installs what it needs (Debian's
``wrk``, the ``fast`` and ``bench`` extras, and MLServer in an environment of its own, see
``bench/mlserver.py``), trains one model (StandardScaler + 100-tree random forest on iris, which
scikit-learn ships) and an equally costly challenger, then measures each server in turn on the
same model:

- ``baseline``: FastAPI, a pydantic body, a sync endpoint calling ``predict`` then
  ``predict_proba`` (``bench/baseline_app.py``), uvicorn's defaults;
- ``ceiling``: a bare Starlette endpoint returning a constant (``bench/ceiling_app.py``);
- ``router serve`` in ``single``, ``ab`` (50 % challenger) and ``shadow`` (100 % mirrored)
  modes with the SQLite outcome log, on each engine (``ROUTER_ENGINE=auto`` picks ONNX Runtime
  when its parity check passes; ``sklearn`` forces scikit-learn), and ``ab`` with the outcome
  log switched off, to price logging;
- ``mlserver``: MLServer 1.7's scikit-learn runtime on the same joblib file, without batching,
  and ``mlserver-batch``: with adaptive batching, the best of a small grid of
  ``max_batch_size`` / ``max_batch_time`` (each tried at 64 connections; every trial recorded).

The server runs alone on core 0 (``taskset``), the load generator on core 1: ``wrk`` (one
thread, keep-alive connections, ``bench/serving.lua``), or, where ``wrk`` cannot be had, the
asyncio client below. Each server gets a warm-up, then 15 s per point at 1, 16 and 64
connections (closed loop). A point reports requests/s, p50, p99, errors (connect, read, write,
timeouts and non-2xx answers) and the server's CPU time per request (its process and children,
from ``/proc``). Results go to ``bench/results.md``, which leads with CPU per request (far
steadier than requests/s on a shared machine) over the ceiling's, then requests/s with ratios
to the baseline and the ceiling, the targets (``bench/targets.py``) and where the time goes,
and ``bench/results.png``. The targets against the ceiling and logging's cost are then
measured again in ten interleaved pairs each, of ``ab`` on ONNX Runtime and the ceiling
(``--ceiling-pairs``) and of ``ab`` with and without its log per engine (``--log-pairs``),
whose medians the targets take: the two servers run side by side and take the load in turn,
5 s each, the idle one paused, since two points minutes apart differ by up to a fifth on a
shared machine. The run ends with a
py-spy profile of ``ab`` on each engine (``bench/profiles.py``; ``--no-profile`` skips them).

``--soak 600`` instead runs the router (``ab``, default engine) for 600 s at 16 connections and
records its resident memory; ``--profile KEY`` runs one server at 64 connections under py-spy
and prints where its time goes. Everything targets 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import mlserver, profiles
from bench.targets import (
    ENGINES,
    MLSERVER_ADAPTIVE_RPS,
    CeilingPairs,
    Pairs,
    Row,
    cpu_over_ceiling,
    find,
    rps_of_ceiling,
    serving_cpu_added,
    targets,
    throughput_cost,
)

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
LUA_SCRIPT = BENCH / "serving.lua"
HOST = "127.0.0.1"
SERVER_CPU, CLIENT_CPU = "0", "1"
CONNECTIONS = (1, 16, 64)
# Interleaved pairs of ab with and without its log, per engine (log_pairs), and the load each
# point of a pair gets: two servers warm side by side, given the load in turn.
LOG_PAIRS = 10
LOG_SLICE_S = 5.0
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SOAK_MARK_BEGIN, SOAK_MARK_END = "<!-- soak:begin -->", "<!-- soak:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- what is measured ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    key: str
    label: str
    kind: str  # baseline | ceiling | router | mlserver
    mode: str | None = None
    engine: str | None = None  # ROUTER_ENGINE: auto | sklearn
    logging: bool = True
    # MLServer's adaptive batching, (max_batch_size, max_batch_time in ms); None: off. For
    # mlserver-batch, the best of mlserver.GRID replaces it at run time.
    batching: tuple[int, float] | None = None

    @property
    def path(self) -> str:
        """Where requests go."""
        return mlserver.INFER_PATH if self.kind == "mlserver" else "/predict"

    @property
    def config(self) -> str:
        """The key of a router server's YAML in ``prepare``'s paths: a log-off server has its
        own store, so that it can run beside its log-on pair (``log_pairs``)."""
        assert self.mode is not None
        return self.mode if self.logging else f"{self.mode}-nolog"

    @property
    def bodies(self) -> str:
        """The key of its request bodies in ``prepare``'s paths."""
        return "bodies-v2" if self.kind == "mlserver" else "bodies"


SERVERS: tuple[Server, ...] = (
    Server("baseline", "common way (FastAPI + pydantic, sync)", "baseline"),
    Server("ceiling", "bare Starlette, constant", "ceiling"),
    Server("single-fast", "router single, ONNX Runtime", "router", "single", "auto"),
    Server("ab-fast", "router ab, ONNX Runtime", "router", "ab", "auto"),
    Server("shadow-fast", "router shadow, ONNX Runtime", "router", "shadow", "auto"),
    Server("ab-fast-nolog", "router ab, ONNX Runtime, log off", "router", "ab", "auto", False),
    Server("single-sklearn", "router single, scikit-learn", "router", "single", "sklearn"),
    Server("ab-sklearn", "router ab, scikit-learn", "router", "ab", "sklearn"),
    Server("shadow-sklearn", "router shadow, scikit-learn", "router", "shadow", "sklearn"),
    Server("ab-sklearn-nolog", "router ab, scikit-learn, log off", "router", "ab", "sklearn",
           False),
    Server("mlserver", "MLServer, no batching", "mlserver"),
    Server("mlserver-batch", "MLServer, adaptive batching", "mlserver", batching=mlserver.GRID[1]),
)
BY_KEY = {s.key: s for s in SERVERS}


@dataclass
class Point:
    server: str
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    cpu_us_per_request: float | None
    error_kinds: dict[str, int] = field(default_factory=dict)
    # The server's own process alone: for the router, the gateway (the core that serves),
    # without its writer process and shadow worker. None for MLServer, whose main process
    # does not serve, and in runs before it was measured.
    serving_cpu_us_per_request: float | None = None
    # The router's serving process thread by thread (``Running.thread_seconds``), per request
    # answered; None for other servers and in runs before it was read.
    thread_cpu_us_per_request: dict[str, float] | None = None


# -- tools --------------------------------------------------------------------------------------


def ensure_python_extras() -> None:
    """Install the ``fast`` and ``bench`` extras into this interpreter when one is missing."""
    wanted = ("fastapi", "pydantic", "matplotlib", "skl2onnx", "onnxruntime")
    missing = [m for m in wanted if importlib.util.find_spec(m) is None]
    if not missing:
        return
    print(f"installing the fast and bench extras (missing: {', '.join(missing)})", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{REPO}[fast,bench]"],
                   check=True)


def ensure_wrk() -> str | None:
    """The path of ``wrk``, installed with apt-get when missing and possible; else None."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    print("installing wrk (apt-get install -y wrk)", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, **quiet)
    return shutil.which("wrk")


def pinned(cpus: str, command: list[str]) -> list[str]:
    """``command`` under ``taskset -c cpus`` when taskset exists and there are two cores."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", cpus, *command]
    return command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# -- the models and configurations --------------------------------------------------------------


def prepare(workdir: Path, batching: str = "") -> dict[str, Path]:
    """Train the champion and an equally costly challenger; write their directories, one YAML
    file per mode and the request bodies. Returns the paths by name."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from router.artifacts import save_model

    iris = load_iris()
    X = iris.data
    y = np.asarray(iris.target_names)[iris.target]
    paths: dict[str, Path] = {}
    for name, seed in (("iris-rf", 0), ("iris-rf-b", 1)):
        pipeline = Pipeline([("scale", StandardScaler()),
                             ("forest", RandomForestClassifier(n_estimators=100,
                                                               random_state=seed))])
        pipeline.fit(X, y)
        paths[name] = save_model(pipeline, workdir / "models" / name / "1", name=name,
                                 version="1", X_train=X, y_train=y, feature_names=FEATURES)
    for mode in ("single", "ab", "shadow"):
        challenger = "" if mode == "single" else \
            "challenger: {name: iris-rf-b, path: models/iris-rf-b/1}\n"
        text = (
            f"experiment: bench-{mode}\n"
            f"mode: {mode}\n"
            "champion: {name: iris-rf, path: models/iris-rf/1}\n"
            f"{challenger}"
            "traffic: {challenger_percent: 50, sticky_key: header:x-user-id}\n"
            "shadow: {sample_percent: 100, queue_size: 10000, timeout_ms: 1000}\n"
            f"store: sqlite:///var/{mode}.db\n"
            + (f"batching: {{max_batch: {batching.split(',')[0]}, "
               f"max_wait_ms: {batching.split(',')[1]}}}\n" if batching else "")
        )
        paths[mode] = workdir / f"{mode}.yaml"
        paths[mode].write_text(text)
        # A log-off server's, the same but for its store (Server.config).
        paths[f"{mode}-nolog"] = workdir / f"{mode}-nolog.yaml"
        paths[f"{mode}-nolog"].write_text(text.replace(f"var/{mode}.db", f"var/{mode}-nolog.db"))
    paths["bodies"] = workdir / "bodies.jsonl"
    # Every iris row, in a fixed shuffled order, so the forest sees varied inputs.
    order = np.random.default_rng(0).permutation(len(X))
    paths["bodies"].write_text("".join(
        json.dumps({"features": dict(zip(FEATURES, X[i].tolist(), strict=True))}) + "\n"
        for i in order))
    paths["bodies-v2"] = workdir / "bodies-v2.jsonl"
    paths["bodies-v2"].write_text(mlserver.bodies([X[i].tolist() for i in order]))
    return paths


# -- servers ------------------------------------------------------------------------------------


def server_command(server: Server, paths: dict[str, Path], port: int
                   ) -> tuple[list[str], dict[str, str], Path]:
    """The command line, environment and working directory that start ``server``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(port)]
    if server.kind == "baseline":
        env["BENCH_MODEL"] = str(paths["iris-rf"] / "model.joblib")
        return [*uvicorn, "bench.baseline_app:app"], env, REPO
    if server.kind == "ceiling":
        return [*uvicorn, "--no-access-log", "bench.ceiling_app:app"], env, REPO
    if server.kind == "mlserver":
        folder = paths["bodies"].parent / f"mlserver-{port}"
        return mlserver.command(folder, paths["iris-rf"] / "model.joblib", server.batching,
                                port, free_port)
    assert server.mode is not None and server.engine is not None
    env["ROUTER_ENGINE"] = server.engine
    config = str(paths[server.config])
    if server.logging:
        router = Path(sys.executable).with_name("router")
        command = [str(router)] if router.exists() else \
            [sys.executable, "-c", "import sys; from router.cli import main; sys.exit(main())"]
        return [*command, "serve", "--config", config, "--host", HOST, "--port", str(port)], \
            env, paths[server.config].parent
    return [sys.executable, "-m", "bench.serving", "--serve-unlogged", config,
            "--port", str(port)], env, paths[server.config].parent


def engines_chosen(target: Any, timeout: float = 120.0) -> dict[str, Any]:
    """``/config``'s models once each has its engine: the gateway is ready before ONNX
    Runtime's parity check ends, and a figure must price the engine that will serve."""
    from router.serving.model import ENGINE_PENDING

    deadline = time.monotonic() + timeout
    while True:
        models: dict[str, Any] = target.get_json("/config").get("models", {})
        pending = [role for role, m in models.items() if m.get("engine_reason") == ENGINE_PENDING]
        if not pending:
            return models
        if time.monotonic() > deadline:
            raise RuntimeError(f"engine still unchosen after {timeout:g} s: {pending}")
        time.sleep(0.5)


def serve_unlogged(config: str, port: int) -> None:
    """``router serve`` with the outcome log switched off, to measure what logging costs.

    The product has no such switch (an answered prediction is always logged); here neither
    the service nor the models' batchers hand anything to the log (a request still builds the
    tuple it gives its batcher), so nothing reaches the writer or the store. Everything else
    is ``router serve`` itself, run in this process: the same protocol and settings.
    """
    from router.cli import main as router_main
    from router.serving.batching import Predictor
    from router.serving.service import PredictionService

    if not hasattr(PredictionService, "_log") or not hasattr(Predictor, "log_to"):
        raise SystemExit("PredictionService._log or Predictor.log_to is gone: update "
                         "serve_unlogged")
    # Failed calls are logged by the service, answers by the model's batcher.
    PredictionService._log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    Predictor.log_to = lambda self, log: None  # type: ignore[method-assign]
    sys.exit(router_main(["serve", "--config", config, "--host", HOST, "--port", str(port)]))


class Running:
    """A started server: its process, port and the CPU and memory it uses."""

    def __init__(self, server: Server, paths: dict[str, Path], log_path: Path) -> None:
        self.server = server
        self.port = free_port()
        command, env, cwd = server_command(server, paths, self.port)
        self._log = open(log_path, "wb")  # noqa: SIM115  closed in stop()
        self.process = subprocess.Popen(pinned(SERVER_CPU, command), env=env, cwd=cwd,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.url = f"http://{HOST}:{self.port}"

    def wait_ready(self, body: bytes, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.server.key} exited with {self.process.returncode}; "
                                   f"see {self._log.name}")
            try:
                request = urllib.request.Request(f"{self.url}{self.server.path}", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=5) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise RuntimeError(f"{self.server.key} not ready within {timeout_s:g} s")

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as answer:
            return json.loads(answer.read())

    def pids(self) -> list[int]:
        """The server process and every descendant (the shadow worker, for one)."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                parents[int(stat.parent.name)] = int(fields[1])
        found, frontier = [self.process.pid], [self.process.pid]
        while frontier:
            children = [p for p, parent in parents.items() if parent in frontier]
            found += children
            frontier = children
        return found

    def move_log_writer(self, cpus: str) -> list[int]:
        """Put the router's outcome-log writer process on ``cpus``: it inherits the server's
        core, and on a machine with a core to spare it runs beside the serving one, not on it.
        Returns the processes moved.

        Every thread is moved: ``sched_setaffinity`` on a process id moves its main thread
        alone, and the writer thread, which runs SQLite, is already started by then."""
        moved = []
        for pid in self.pids()[1:]:
            with contextlib.suppress(OSError):
                if b"router.outcomes.writer_child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    for task in os.listdir(f"/proc/{pid}/task"):
                        os.sched_setaffinity(int(task), {int(c) for c in cpus.split(",")})
                    moved.append(pid)
        return moved

    def cpu_seconds(self, *, own: bool = False) -> float:
        """User + system CPU of the server and its descendants (``own``: of the server's
        process alone), all threads."""
        total = 0
        for pid in [self.process.pid] if own else self.pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLK_TCK

    def thread_seconds(self) -> dict[str, float]:
        """CPU seconds of each thread of the server's own process that is alive now, as the
        kernel counts it (``schedstat``, in nanoseconds, where ``stat`` counts 10 ms ticks):
        the main thread as "event loop", the others by the names they gave the OS, a pool's
        numbered threads (``router-model_0``, ``router-model_1``) as one."""
        out: dict[str, float] = {}
        task_dir = Path(f"/proc/{self.process.pid}/task")
        with contextlib.suppress(OSError):
            for task in task_dir.iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    ran_ns = int((task / "schedstat").read_text().split()[0])
                    name = "event loop" if int(task.name) == self.process.pid else \
                        re.sub(r"_\d+$", "", (task / "comm").read_text().strip())
                    out[name] = out.get(name, 0.0) + ran_ns / 1e9
        return out

    def kept_bytes(self) -> int:
        """The router's ``router_stats_kept_bytes`` (0 when it cannot be read)."""
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            return 0
        match = re.search(r"^router_stats_kept_bytes(?:\{[^}]*\})? (\S+)$", text, re.M)
        return int(float(match.group(1))) if match else 0

    def rss_bytes(self) -> dict[int, int]:
        out = {}
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                out[pid] = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        return out

    def pause(self) -> None:
        """Stop every process of the server (SIGSTOP): while another server is measured,
        nothing of this one runs, not its timers, not its log's writer."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, number: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    def stop(self) -> None:
        self.resume()  # a paused server would not act on SIGTERM
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def running(server: Server, paths: dict[str, Path], logs: Path) -> Iterator[Running]:
    started = Running(server, paths, logs / f"{server.key}.log")
    try:
        started.wait_ready(paths[server.bodies].read_text().splitlines()[0].encode())
        if server.kind == "router" and server.logging:
            started.move_log_writer(CLIENT_CPU)
        yield started
    finally:
        started.stop()


# -- load ---------------------------------------------------------------------------------------


class Load:
    """Closed-loop load from core 1: ``wrk`` with the Lua script, or the asyncio client; each
    server gets its own request bodies (``Server.bodies``) at its own path."""

    def __init__(self, wrk: str | None, paths: dict[str, Path]) -> None:
        self.wrk = wrk
        self.paths = paths
        self.name = "wrk " + _wrk_version(wrk) if wrk else "asyncio client (bench.serving)"

    def command(self, url: str, connections: int, seconds: float) -> list[str]:
        if self.wrk:
            # Timeouts far above any latency measured, so slow answers count as latency.
            return pinned(CLIENT_CPU, [self.wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s",
                                       "--timeout", "30s", "-s", str(LUA_SCRIPT), url])
        return pinned(CLIENT_CPU, [sys.executable, "-m", "bench.serving", "--client", url,
                                   "--connections", str(connections),
                                   "--seconds", f"{seconds:g}"])

    def start(self, target: Running, connections: int, seconds: float
              ) -> subprocess.Popen[str]:
        url = target.url
        env = dict(os.environ, BENCH_BODIES=str(self.paths[target.server.bodies]),
                   BENCH_PATH=target.server.path)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        return subprocess.Popen(self.command(url, connections, seconds), env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    @staticmethod
    def result(process: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
        output, _ = process.communicate(timeout=timeout_s)
        for line in output.splitlines():
            if line.startswith("BENCH "):
                return json.loads(line[len("BENCH "):])  # type: ignore[no-any-return]
        raise RuntimeError(f"the load generator printed no result:\n{output[-2000:]}")

    def run(self, target: Running, connections: int, seconds: float) -> Point:
        router = target.server.kind == "router"
        cpu_before, own_before = target.cpu_seconds(), target.cpu_seconds(own=True)
        threads_before = target.thread_seconds() if router else {}
        process = self.start(target, connections, seconds)
        raw = self.result(process, seconds + 90)
        cpu = target.cpu_seconds() - cpu_before
        own = target.cpu_seconds(own=True) - own_before
        threads_after = target.thread_seconds() if router else {}
        requests = int(raw["requests"])
        errors = dict(raw["errors"])
        return Point(
            server=target.server.key, connections=connections, seconds=seconds,
            requests=requests, rps=requests / (raw["duration_us"] / 1e6),
            p50_ms=raw["p50_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
            max_ms=raw["max_us"] / 1000, errors=sum(errors.values()),
            cpu_us_per_request=cpu / requests * 1e6 if requests else None,
            error_kinds={k: v for k, v in errors.items() if v},
            serving_cpu_us_per_request=own / requests * 1e6
            if requests and target.server.kind != "mlserver" else None,
            thread_cpu_us_per_request={
                name: (after - threads_before.get(name, 0.0)) / requests * 1e6
                for name, after in threads_after.items()} if router and requests else None)


def _wrk_version(wrk: str) -> str:
    output = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"wrk (\S+)", output.stdout + output.stderr)
    return match.group(1) if match else "(unknown version)"


# The fallback client: N keep-alive connections, each sending its next request as soon as the
# answer is in; the same BENCH line as the Lua script's done().

async def _client_connection(host: str, port: int, bodies: list[bytes], deadline: float,
                             latencies: list[float], errors: Counter[str], offset: int) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        errors["connect"] += 1
        return
    path = os.environ.get("BENCH_PATH", "/predict")
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\n").encode()
    i = offset
    try:
        while time.perf_counter() < deadline:
            body = bodies[i % len(bodies)]
            i += 1
            started = time.perf_counter()
            writer.write(head + f"X-User-Id: {i}\r\nContent-Length: {len(body)}\r\n\r\n"
                         .encode() + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not status_line.split(b" ", 2)[1].startswith(b"2"):
                errors["status"] += 1
    except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
        errors["read"] += 1
    finally:
        writer.close()


async def _client(url: str, connections: int, seconds: float, bodies: list[bytes]
                  ) -> dict[str, Any]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_client_connection(host, int(port), bodies, deadline, latencies,
                                              errors, k * 7919) for k in range(connections)))
    duration = time.perf_counter() - started
    array = np.array(latencies or [0.0]) * 1e6
    return {"requests": len(latencies), "duration_us": int(duration * 1e6),
            "p50_us": int(np.percentile(array, 50)), "p99_us": int(np.percentile(array, 99)),
            "max_us": int(array.max()),
            "errors": {k: errors.get(k, 0) for k in ("connect", "read", "write", "status",
                                                     "timeout")}}


def client_main(url: str, connections: int, seconds: float) -> None:
    bodies = [line.encode() for line in Path(os.environ["BENCH_BODIES"]).read_text()
              .splitlines()]
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    print("BENCH " + json.dumps(asyncio.run(_client(url, connections, seconds, bodies))))


# -- the run ------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("scikit-learn", "onnxruntime", "skl2onnx", "starlette", "uvicorn",
                    "fastapi", "numpy"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items())}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def logged_rows(paths: dict[str, Path], mode: str) -> int | None:
    """Predictions in a mode's SQLite log: proof that logging was on."""
    db = paths[mode].parent / "var" / f"{mode}.db"
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM predictions").fetchone()[0])


def best_batching(server: Server, grid: Sequence[tuple[int, float]], seconds: float,
                  warmup_s: float, load: Load, paths: dict[str, Path], logs: Path
                  ) -> tuple[Server, list[dict[str, Any]]]:
    """``server`` with the adaptive-batching setting of ``grid`` that gave the most requests/s
    at 64 connections in a ``seconds`` trial each, and every trial's figures."""
    trials = []
    for size, wait_ms in grid:
        trial = replace(server, batching=(size, wait_ms))
        print(f"{server.key}: trying max_batch_size {size}, max_batch_time {wait_ms:g} ms",
              flush=True)
        with running(trial, paths, logs) as target:
            load.run(target, 16, warmup_s)
            point = load.run(target, 64, seconds)
        print(f"  64 conns: {point.rps:9.0f} req/s  p99 {point.p99_ms:8.2f} ms", flush=True)
        trials.append({"max_batch_size": size, "max_batch_time_ms": wait_ms,
                       "rps": point.rps, "p99_ms": point.p99_ms, "errors": point.errors})
    best = max(trials, key=lambda t: t["rps"])
    return replace(server, batching=(best["max_batch_size"], best["max_batch_time_ms"])), trials


def start_empty_log(server: Server, paths: dict[str, Path]) -> None:
    """Remove a router server's SQLite log: each server starts on an empty one, so every
    figure prices the same work."""
    if server.kind == "router" and server.mode:
        with contextlib.suppress(FileNotFoundError):
            (paths[server.config].parent / "var" / f"{server.config}.db").unlink()


def measure(servers: list[Server], connections: tuple[int, ...], seconds: float,
            warmup_s: float, load: Load, paths: dict[str, Path], logs: Path,
            grid: Sequence[tuple[int, float]] = mlserver.GRID, grid_seconds: float = 5.0
            ) -> tuple[list[Point], dict[str, Any]]:
    points: list[Point] = []
    notes: dict[str, Any] = {}
    for server in servers:
        note: dict[str, Any] = {}
        if server.kind == "mlserver" and server.batching is not None:
            server, note["batching_trials"] = best_batching(server, grid, grid_seconds,
                                                            warmup_s, load, paths, logs)
        if server.kind == "mlserver":
            note["batching"] = server.batching
        start_empty_log(server, paths)
        print(f"{server.key}: starting", flush=True)
        with running(server, paths, logs) as target:
            if server.kind == "router":
                models = engines_chosen(target)
                note["engines"] = {role: {"engine": m.get("engine"),
                                          "reason": m.get("engine_reason")}
                                   for role, m in models.items()}
            # The shadow worker process starts and loads (converts) the challenger meanwhile.
            load.run(target, 16, warmup_s if server.mode != "shadow" else max(warmup_s, 8.0))
            for n in connections:
                point = load.run(target, n, seconds)
                points.append(point)
                print(f"  {n:>3} conns: {point.rps:9.0f} req/s  p50 {point.p50_ms:8.2f} ms  "
                      f"p99 {point.p99_ms:8.2f} ms  errors {point.errors}  "
                      f"cpu {point.cpu_us_per_request or 0:7.0f} us/req (serving process "
                      f"{point.serving_cpu_us_per_request or 0:.0f})", flush=True)
            answered = sum(p.requests for p in points if p.server == server.key)
        if server.kind == "router" and server.logging and server.mode:
            note["logged_rows"] = logged_rows(paths, server.mode)
            note["answered_in_points"] = answered
        notes[server.key] = note
    return points, notes


def alternated(first: Server, second: Server, rounds: int, seconds: float, warmup_s: float,
               load: Load, paths: dict[str, Path], logs: Path) -> list[tuple[dict[str, Any],
                                                                             dict[str, Any]]]:
    """``rounds`` interleaved pairs of points of two servers, ``first``'s point and
    ``second``'s: both started (a router on an empty log) and warmed, then given the load in
    turn, ``seconds`` at 64 connections each, the order alternating from pair to pair. The
    server not under load is paused (``Running.pause``), so nothing of it runs beside the
    other. A pair's two points are seconds apart, and every pair prices servers that have run
    as long: two points minutes apart read the machine's drift over the minutes between them
    (up to a fifth on a shared machine) as much as the servers' difference."""
    pairs = []
    with contextlib.ExitStack() as servers:
        targets: dict[str, Running] = {}
        for server in (first, second):
            start_empty_log(server, paths)
            target = servers.enter_context(running(server, paths, logs))
            if server.kind == "router":
                engines_chosen(target)
            load.run(target, 16, warmup_s)
            target.pause()
            targets[server.key] = target
        for turn in range(rounds):
            pair: dict[str, dict[str, Any]] = {}
            for server in (first, second) if turn % 2 == 0 else (second, first):
                target = targets[server.key]
                target.resume()
                point = load.run(target, 64, seconds)
                target.pause()
                pair[server.key] = asdict(point)
                print(f"{server.key} (pair {turn + 1}): {point.rps:9.0f} req/s  serving "
                      f"process {point.serving_cpu_us_per_request or 0:.1f} us/req",
                      flush=True)
            pairs.append((pair[first.key], pair[second.key]))
    return pairs


def log_pairs(rounds: int, seconds: float, warmup_s: float, load: Load,
              paths: dict[str, Path], logs: Path, keys: Sequence[str]) -> dict[str, Any]:
    """Logging's cost in interleaved pairs (:func:`alternated`), for each engine whose ``ab``
    servers are in ``keys``: ``ab`` with its log ("on") and without ("off")."""
    pairs: dict[str, Any] = {}
    for engine, _ in ENGINES:
        on, off = BY_KEY[f"ab-{engine}"], BY_KEY[f"ab-{engine}-nolog"]
        if on.key in keys and off.key in keys:
            pairs[engine] = [{"on": a, "off": b} for a, b in
                             alternated(on, off, rounds, seconds, warmup_s, load, paths, logs)]
    return pairs


def ceiling_pairs(rounds: int, seconds: float, warmup_s: float, load: Load,
                  paths: dict[str, Path], logs: Path, keys: Sequence[str]
                  ) -> list[dict[str, Any]]:
    """``ab`` on ONNX Runtime with its log against the ceiling in interleaved pairs
    (:func:`alternated`), when both are in ``keys``: what the targets against the ceiling
    take, for the same reason logging's cost does."""
    router, ceiling = BY_KEY["ab-fast"], BY_KEY["ceiling"]
    if router.key not in keys or ceiling.key not in keys:
        return []
    return [{"router": a, "ceiling": b} for a, b in
            alternated(router, ceiling, rounds, seconds, warmup_s, load, paths, logs)]


# The threads of the router's serving process, in the order the reports show them; any other
# comes after, the busiest first.
THREAD_ORDER = ("event loop", "router-model", "outcome-handoff", "outcome-status", "router-io",
                "shadow-dispatch")
THREAD_SHOWN_US = 0.05  # a thread below this (at every point, or in the median) is left out


def ordered_threads(us: Mapping[str, float]) -> list[str]:
    """The threads of ``us`` (µs per request each) at or above :data:`THREAD_SHOWN_US`, in
    :data:`THREAD_ORDER`, then the others, the busiest first."""
    shown = {name for name, value in us.items() if abs(value) >= THREAD_SHOWN_US}
    return [n for n in THREAD_ORDER if n in shown] + sorted(
        shown - set(THREAD_ORDER), key=lambda n: -abs(us[n]))


def pairs_section(pairs: Pairs | None, seconds: float | None = None) -> str:
    """The table of logging's interleaved pairs, measured ``seconds`` a point on two servers
    side by side (None: a run that started each point's server anew); empty when the run
    measured none."""
    if not pairs:
        return ""
    lines = []
    for engine, name in ENGINES:
        for i, pair in enumerate(pairs.get(engine, ()), 1):
            on, off = pair["on"], pair["off"]
            cpu_on, cpu_off = (on.get("serving_cpu_us_per_request"),
                               off.get("serving_cpu_us_per_request"))
            extra = "-" if cpu_on is None or cpu_off is None else \
                f"{cpu_on:.1f} / {cpu_off:.1f} ({serving_cpu_added(pair):+.1f})"
            lines.append(f"| {name} | {i} | {on['rps']:,.0f} | {off['rps']:,.0f} | "
                         f"{throughput_cost(pair) * 100:.1f} % | {extra} |")
    by_thread = [line for engine, name in ENGINES
                 if (line := pairs_by_thread(name, pairs.get(engine, ())))]
    spreads = [line for engine, name in ENGINES
               if (line := pairs_spread(name, pairs.get(engine, ())))]
    return ("## Logging's cost, in interleaved pairs\n\n"
            + (f"`ab` at 64 connections with its log and without, {seconds:g} s each: two servers "
               "started side by side on an empty log, warmed, then given the load in turn, the "
               "other one paused (SIGSTOP), the order alternating from pair to pair"
               if seconds else "`ab` at 64 connections with its log and without, each on a "
               "fresh server, the order alternating from pair to pair")
            + "; the targets above take each engine's median.\n\n"
            "| engine | pair | log on, req/s | log off, req/s | throughput cost | serving CPU "
            "µs/req, on / off |\n| --- | ---: | ---: | ---: | ---: | ---: |\n"
            + "\n".join(lines) + "\n\n" + "".join(f"{line}\n\n" for line in spreads + by_thread))


def ceiling_pairs_section(pairs: CeilingPairs | None, seconds: float | None) -> str:
    """The table of the interleaved pairs of ``ab`` on ONNX Runtime and the ceiling; empty
    when the run measured none."""
    if not pairs:
        return ""
    lines = []
    for i, pair in enumerate(pairs, 1):
        router, ceiling = pair["router"], pair["ceiling"]
        cpu = "-" if not router.get("serving_cpu_us_per_request") or \
            not ceiling.get("serving_cpu_us_per_request") else \
            (f"{router['serving_cpu_us_per_request']:.1f} / "
             f"{ceiling['serving_cpu_us_per_request']:.1f} ({cpu_over_ceiling(pair):.2f}x)")
        lines.append(f"| {i} | {router['rps']:,.0f} | {ceiling['rps']:,.0f} | "
                     f"{rps_of_ceiling(pair):.2f}x | {cpu} |")
    return ("## Against the ceiling, in interleaved pairs\n\n"
            f"`ab` on ONNX Runtime with its log and the ceiling at 64 connections, {seconds:g} s "
            "each: two servers started side by side and warmed, then given the load in turn, "
            "the other one paused (SIGSTOP), the order alternating from pair to pair; the "
            "targets above take the medians.\n\n"
            "| pair | ab, req/s | ceiling, req/s | x ceiling | serving CPU µs/req, ab / "
            "ceiling |\n| ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(lines) + "\n\n")


def pairs_spread(name: str, pairs: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: the middle half of an engine's pairs' throughput costs, how far one
    pair is from the next on this machine; empty under four pairs."""
    if len(pairs) < 4:
        return ""
    low, _, high = statistics.quantiles([throughput_cost(p) * 100 for p in pairs], n=4,
                                        method="inclusive")
    return (f"{name}: the middle half of the {len(pairs)} pairs cost {low:.1f} to {high:.1f} % "
            "of throughput.")


def pairs_by_thread(name: str, pairs: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: the median over an engine's pairs of each thread's CPU per request with
    the log less without it (``Running.thread_seconds``); empty for pairs measured before
    threads were read."""
    read = [(p["on"].get("thread_cpu_us_per_request"), p["off"].get("thread_cpu_us_per_request"))
            for p in pairs]
    if not read or any(on is None or off is None for on, off in read):
        return ""
    names = {n for on, _ in read for n in on}
    added = {n: statistics.median([on.get(n, 0.0) - off.get(n, 0.0) for on, off in read])
             for n in names}
    parts = [f"{n} {added[n]:+.1f}" for n in ordered_threads(added)]
    return (f"By thread, log on less log off, the median of {name}'s pairs (µs per request): "
            + ", ".join(parts) + ".")


# -- the report ---------------------------------------------------------------------------------


def mlserver_ratios(points: list[Point]) -> str:
    """Each router server's requests/s over MLServer's (both ways), and its p50 over theirs,
    at every connection count measured."""
    lines = ["| server | conns | x MLServer batching, req/s | x MLServer no batching, req/s "
             "| p50 / MLServer batching's | p50 / MLServer no batching's |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for p in points:
        if BY_KEY[p.server].kind != "router":
            continue
        batch, plain = find(points, "mlserver-batch", p.connections), \
            find(points, "mlserver", p.connections)
        if batch is None and plain is None:
            continue
        cells = [f"{p.rps / o.rps:.1f}" if o else "-" for o in (batch, plain)]
        cells += [f"{p.p50_ms / o.p50_ms:.2f}" if o else "-" for o in (batch, plain)]
        lines.append(f"| {BY_KEY[p.server].label} | {p.connections} | {' | '.join(cells)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def cpu_table(points: list[Point]) -> str:
    """Server CPU per request at each point, all processes and the serving one alone, each
    with its ratio to the ceiling's at the same connection count."""
    lines = ["| server | conns | server CPU µs/req | x ceiling | serving process CPU µs/req "
             "| x ceiling |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for p in points:
        ceil = find(points, "ceiling", p.connections)
        cells = []
        for ours, theirs in ((p.cpu_us_per_request, ceil and ceil.cpu_us_per_request),
                             (p.serving_cpu_us_per_request,
                              ceil and ceil.serving_cpu_us_per_request)):
            cells.append(f"{ours:,.1f}" if ours is not None else "-")
            cells.append(f"{ours / theirs:.2f}" if ours is not None and theirs else "-")
        lines.append(f"| {BY_KEY[p.server].label} | {p.connections} | {' | '.join(cells)} |")
    return "\n".join(lines)


def thread_table(points: list[Point]) -> str:
    """The router's serving process thread by thread, µs of CPU per request, for each router
    server at the run's most connections; empty when no point read its threads."""
    most = max((p.connections for p in points), default=0)
    rows = [p for p in points if p.thread_cpu_us_per_request is not None
            and p.connections == most]
    if not rows:
        return ""
    largest: dict[str, float] = {}
    for p in rows:
        for name, us in (p.thread_cpu_us_per_request or {}).items():
            largest[name] = max(largest.get(name, 0.0), us)
    names = ordered_threads(largest)
    lines = ["| server | conns | " + " | ".join(names) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
    for p in rows:
        threads = p.thread_cpu_us_per_request or {}
        cells = [f"{threads[n]:.1f}" if threads.get(n, 0.0) >= THREAD_SHOWN_US else "-"
                 for n in names]
        lines.append(f"| {BY_KEY[p.server].label} | {p.connections} | {' | '.join(cells)} |")
    return "\n".join(lines)


def thread_section(points: list[Point]) -> str:
    """The by-thread table with what it says; empty without it."""
    rows = thread_table(points)
    if not rows:
        return ""
    return f"""### The serving process, thread by thread

µs of CPU per request of each thread of the router's serving process, as the kernel counts it
(`/proc/PID/task/*/schedstat`), at the run's most connections: the event loop (the main
thread), the model pool (`router-model`), the outcome log's hand-over and the reader of its
counts (`outcome-handoff`, `outcome-status`), the default executor that refreshes the
monitoring gauges (`router-io`) and the shadow dispatcher; a thread under
{THREAD_SHOWN_US} µs at every point is left out. The rows with the log and without it show
what the log costs, thread by thread.

{rows}

"""


def table(points: list[Point]) -> str:
    """Requests/s and latency at each point, with ratios to the common way and the ceiling."""
    lines = ["| server | conns | req/s | p50 ms | p99 ms | errors | req/s x common way "
             "| req/s x ceiling |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in points:
        base, ceil = find(points, "baseline", p.connections), find(points, "ceiling",
                                                                      p.connections)
        ratios = (f"{p.rps / base.rps:.1f}" if base else "-",
                  f"{p.rps / ceil.rps:.2f}" if ceil else "-")
        lines.append(
            f"| {BY_KEY[p.server].label} | {p.connections} | {p.rps:,.0f} | {p.p50_ms:.2f} "
            f"| {p.p99_ms:.2f} | {p.errors} | {ratios[0]} | {ratios[1]} |")
    return "\n".join(lines)


# A server's CPU per request at 64 connections above its own at 16 by more than this is the
# machine's doing: more connections put more requests in each turn of the loop, so a server
# costs less a request at 64, or about as much (the common way and MLServer, 1.12x, on
# 2026-12-06 08:31 UTC, when the ceiling cost 1.44x).
OUT_OF_LINE = 1.25


def out_of_line(points: list[Point]) -> list[str]:
    """One line for each server whose serving CPU per request at 64 connections is over
    :data:`OUT_OF_LINE` times its own at 16: a ratio to such a point says more about the
    machine than about the servers."""
    by_key = {(p.server, p.connections): p for p in points}
    lines = []
    for (key, connections), high in by_key.items():
        low = by_key.get((key, 16))
        if connections != 64 or low is None:
            continue
        cost_high = high.serving_cpu_us_per_request or high.cpu_us_per_request
        cost_low = low.serving_cpu_us_per_request or low.cpu_us_per_request
        if cost_high and cost_low and cost_high > OUT_OF_LINE * cost_low:
            lines.append(f"- {BY_KEY[key].label}: {cost_high:,.1f} µs per request at 64 "
                         f"connections against {cost_low:,.1f} at 16 "
                         f"({cost_high / cost_low:.2f}x)")
    return lines


def out_of_line_section(points: list[Point]) -> str:
    lines = out_of_line(points)
    if not lines:
        return ""
    return ("\nPoints out of line: CPU per request at 64 connections more than "
            f"{OUT_OF_LINE:g}x the same server's at 16, where more connections should cost "
            "less. A target that takes its ratio to such a point reads the machine, not the "
            "servers; compare at 16 connections too.\n\n" + "\n".join(lines) + "\n")


def targets_table(rows: list[Row]) -> str:
    met = {True: "yes", False: "NO", None: "-"}
    return "| target | measured | met |\n| --- | --- | --- |\n" + "".join(
        f"| {target} | {measured} | {met[ok]} |\n" for target, measured, ok in rows)


def write_chart(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(p.server for p in points))
    conns = sorted({p.connections for p in points})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5),
                                      gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(conns)
    for j, n in enumerate(conns):
        values = [(find(points, k, n).rps if find(points, k, n) else 0) for k in keys]
        bars = left.bar([i + j * width for i in range(len(keys))], values, width,
                        label=f"{n} conn{'s' if n > 1 else ''}")
        if n == max(conns):
            left.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=7,
                           rotation=90, padding=2)
    left.set_yscale("log")
    left.set_ylabel("requests/s (log scale)")
    left.set_xticks([i + width * (len(conns) - 1) / 2 for i in range(len(keys))])
    left.set_xticklabels([BY_KEY[k].label for k in keys], rotation=35, ha="right", fontsize=8)
    left.legend(fontsize=8)
    left.set_title("throughput")
    top = max(conns)
    p99 = [(find(points, k, top).p99_ms if find(points, k, top) else 0) for k in keys]
    p50 = [(find(points, k, top).p50_ms if find(points, k, top) else 0) for k in keys]
    ys = range(len(keys))
    right.barh([y + 0.2 for y in ys], p99, 0.4, label="p99")
    right.barh([y - 0.2 for y in ys], p50, 0.4, label="p50")
    right.set_xscale("log")
    right.set_yticks(list(ys))
    right.set_yticklabels([BY_KEY[k].label for k in keys], fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("latency, ms (log scale)")
    right.set_title(f"latency at {top} connections")
    right.legend(fontsize=8)
    fig.suptitle("router vs the common way and the framework's ceiling "
                 "(1 core for the server, StandardScaler + 100-tree forest)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mlserver_lines(notes: dict[str, Any], info: dict[str, Any]) -> str:
    """The setup paragraph on MLServer: measured here, or the reference figure."""
    if "mlserver" not in notes and "mlserver-batch" not in notes:
        return ("- The MLServer figure in the targets is from an earlier run (MLServer 1.7, "
                f"adaptive batching 64 / 1 ms: {MLSERVER_ADAPTIVE_RPS:,} req/s on this kind "
                "of machine), not re-measured here.")
    return (f"- MLServer ({info.get('mlserver', 'its own environment')}, in "
            "`var/mlserver-venv`) serves the same joblib pipeline with its scikit-learn "
            "runtime, started as `mlserver start` with its defaults (inference in one worker "
            "process, access log and metrics on) on the same core; requests are Open Inference "
            "Protocol (V2) bodies of one row and it answers the label (`predict`). Adaptive "
            "batching: the best of a grid tried for a few seconds each at 64 connections.")


def mlserver_section(points: list[Point], notes: dict[str, Any]) -> str:
    """The comparison with MLServer, when the run measured it."""
    ratios = mlserver_ratios(points)
    if not ratios:
        return ""
    text = "## Against MLServer\n\n" + ratios + "\n\n"
    trials = notes.get("mlserver-batch", {}).get("batching_trials")
    if trials:
        size, wait_ms = notes["mlserver-batch"]["batching"]
        text += (f"MLServer's adaptive batching, trials at 64 connections (chosen: "
                 f"max_batch_size {size}, max_batch_time {wait_ms:g} ms):\n\n"
                 "| max_batch_size | max_batch_time ms | req/s | p99 ms | errors |\n"
                 "| ---: | ---: | ---: | ---: | ---: |\n"
                 + "".join(f"| {t['max_batch_size']} | {t['max_batch_time_ms']:g} "
                           f"| {t['rps']:,.0f} | {t['p99_ms']:.1f} | {t['errors']} |\n"
                           for t in trials) + "\n")
    return text


def report_text(points: list[Point], notes: dict[str, Any], info: dict[str, Any],
                found: list[profiles.Profile]) -> str:
    """results.md without the soak section: CPU per request first, then requests/s and
    latency, the targets, where the time goes (``found``), MLServer, how it was measured."""
    engines = []
    by_server = {key: note for key, note in notes.items() if key in BY_KEY}  # not the pairs
    for key, note in by_server.items():
        for role, engine in note.get("engines", {}).items():
            reason = str(engine["reason"]).replace("|", "\\|")  # |Δp| inside a table cell
            engines.append(f"| {BY_KEY[key].label} | {role} | {engine['engine']} | {reason} |")
    logged = [f"| {BY_KEY[k].label} | {n['answered_in_points']:,} | {n['logged_rows']:,} |"
              for k, n in by_server.items() if n.get("logged_rows") is not None]
    pairs, ceiling = notes.get("log_pairs"), notes.get("ceiling_pairs")
    after_targets = ceiling_pairs_section(ceiling, info.get("log_pair_seconds")) \
        + pairs_section(pairs, info.get("log_pair_seconds")) + profiles.section(found) \
        + mlserver_section(points, notes)
    return f"""# Serving benchmark

Written by `{info['command']}` on {info['date']}. Do not edit by hand: run it again.
{SHORT_NOTE if info.get('short') else ''}
## Server CPU per request

CPU time per request answered, of the server's processes (server CPU) and of the process that
serves alone (for the router, its gateway; MLServer's main process does not serve), each over
the ceiling's at the same connection count. On a machine shared with other work it is far
steadier than requests/s, which move with whatever else runs.

{cpu_table(points)}

{thread_section(points)}## Requests per second and latency

{table(points)}

![throughput and latency](results.png)

## Targets

{targets_table(targets(points, pairs, ceiling))}{out_of_line_section(points)}
{after_targets}## How it was measured

- Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores; Python
  {info['machine']['python']}; {info['machine']['versions']}.
- Load average (1, 5, 15 min) before the run: {info['load_before']}; after: {info['load_after']}.
  Other work on the machine during the run shows up here and makes absolute figures noisy;
  compare figures within one run.
- Server on core {SERVER_CPU} (`taskset`), load generator on core {CLIENT_CPU}, and so is the
  router's outcome-log writer process (on a machine with a core to spare it runs beside the
  serving core; on one core it would take its CPU from serving):
  {info['client']}, one thread, closed loop, keep-alive; {info['seconds']:g} s per point after
  a {info['warmup']:g} s warm-up; errors are connect, read, write, timeout (30 s) and
  non-2xx answers.
- Model: StandardScaler + 100-tree RandomForestClassifier on iris (150 rows, shuffled, sent in
  turn as `{{"features": {{name: value}}}}`); the challenger is another 100-tree forest (another
  seed), so it costs the same. `ab` sends 50 % of users (random `X-User-Id`) to the challenger;
  `shadow` mirrors 100 % of requests to it. The log is SQLite (`store: sqlite:///…`); "log off"
  builds no records at all (a benchmark-only switch).
- Server CPU is user + system time of the server process and its children (the router's
  shadow worker and outcome-log writer) over the point, divided by the requests answered;
  serving process CPU counts the server's process alone (the router's gateway, the core that
  serves).
{mlserver_lines(notes, info)}

## Engines

What `/config` reported for each router server:

| server | model | engine | reason |
| --- | --- | --- | --- |
""" + "\n".join(engines) + """

## Logging really on

Predictions in each logged server's SQLite file after it stopped, against the requests it
answered in the measured points (the warm-up adds a few more):

| server | answered in points | rows logged |
| --- | ---: | ---: |
""" + "\n".join(logged) + "\n"


def write_report(points: list[Point], notes: dict[str, Any], info: dict[str, Any],
                 out: Path) -> None:
    """results.md (keeping its soak section), results.json and results.png in ``out``, with
    the profiles found there."""
    # The figures first: a report that fails to render can be written again from them.
    (out / "results.json").write_text(json.dumps(
        {"info": info, "points": [asdict(p) for p in points], "notes": notes}, indent=1))
    text = report_text(points, notes, info, profiles.load(out, PROFILED))
    # The reading of a run's misses is a person's: kept in its own file, shown with the figures.
    gaps = Path(__file__).with_name("gaps.md")
    if gaps.exists():
        text += "\n" + gaps.read_text()
    previous = out / "results.md"
    soak = ""
    if previous.exists():
        old = previous.read_text()
        if SOAK_MARK_BEGIN in old and SOAK_MARK_END in old:
            soak = old[old.index(SOAK_MARK_BEGIN):old.index(SOAK_MARK_END)
                       + len(SOAK_MARK_END)] + "\n"
    previous.write_text(text + "\n" + soak)
    write_chart(points, out / "results.png")


# -- soak and profile ---------------------------------------------------------------------------


def soak(seconds: float, load: Load, paths: dict[str, Path], logs: Path, out: Path) -> None:
    """Router ``ab`` (default engine, log on) at 16 connections for ``seconds``; its resident
    memory sampled every 5 s, beside what it keeps of the log for ``/stats`` and the monitoring
    gauges (``router_stats_kept_bytes``, which grows with the log by design, up to its bound);
    written to the soak section of results.md."""
    server = BY_KEY["ab-fast"]
    samples: list[tuple[float, int, int]] = []  # seconds, RSS, kept analysis columns
    with running(server, paths, logs) as target:
        process = load.start(target, 16, seconds)
        started = time.monotonic()
        while process.poll() is None:
            samples.append((time.monotonic() - started, sum(target.rss_bytes().values()),
                            target.kept_bytes()))
            time.sleep(5)
        raw = Load.result(process, 60)
    section = soak_section(seconds, raw, samples)
    path = out / "results.md"
    old = path.read_text() if path.exists() else "# Serving benchmark\n\n"
    if SOAK_MARK_BEGIN in old and SOAK_MARK_END in old:
        old = old[:old.index(SOAK_MARK_BEGIN)] + old[old.index(SOAK_MARK_END)
                                                     + len(SOAK_MARK_END) + 1:]
    path.write_text(old.rstrip("\n") + "\n\n" + section)
    print(section)


def soak_section(seconds: float, raw: dict[str, Any],
                 samples: list[tuple[float, int, int]]) -> str:
    """The soak's part of results.md: the memory other than the kept analysis columns must stay
    within +10 % of what it was after the first minute."""
    mb = 1024 * 1024
    after_minute = [(rss, kept) for t, rss, kept in samples if t >= 60] or [samples[-1][1:]]
    (base_rss, base_kept), (last_rss, last_kept) = after_minute[0], after_minute[-1]
    rest_base, rest_last = base_rss - base_kept, last_rss - last_kept
    growth = (rest_last - rest_base) / rest_base
    peak = max(rss - kept for rss, kept in after_minute)
    return (
        f"{SOAK_MARK_BEGIN}\n## Soak: {seconds:g} s at 16 connections\n\n"
        f"`{sys.executable.rsplit('/', 1)[-1]} -m bench.serving --soak {seconds:g}` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {BY_KEY['ab-fast'].label}, log on: "
        f"{raw['requests']:,} requests ({raw['requests'] / seconds:,.0f}/s), "
        f"{sum(raw['errors'].values())} errors, p99 {raw['p99_us'] / 1000:.2f} ms.\n\n"
        f"Resident memory of the server and its children: {samples[0][1] / mb:.1f} MB at start, "
        f"{base_rss / mb:.1f} MB after the first minute, {last_rss / mb:.1f} MB at the end. Of "
        f"it, the analysis columns the gateway keeps so that `/stats` and the monitoring gauges "
        f"read only what was logged since (`router_stats_kept_bytes`: about 110 bytes a logged "
        f"row, up to 5 million rows) went from {base_kept / mb:.1f} to {last_kept / mb:.1f} MB. "
        f"Everything else: {rest_base / mb:.1f} MB after the first minute, peak "
        f"{peak / mb:.1f} MB, {rest_last / mb:.1f} MB at the end: **{growth * 100:+.1f} %** "
        f"(target: at most +10 %, {'met' if growth <= 0.10 else 'NOT met'}).\n\n"
        "| s | RSS MB | kept columns MB | the rest MB |\n| ---: | ---: | ---: | ---: |\n"
        + "".join(f"| {t:.0f} | {rss / mb:.1f} | {kept / mb:.1f} | {(rss - kept) / mb:.1f} |\n"
                  for t, rss, kept in samples[:: max(1, len(samples) // 20)])
        + f"{SOAK_MARK_END}\n")


PROFILED = ("ab-fast", "ab-sklearn")
PROFILE_CONNECTIONS = 64


def profile(key: str, seconds: float, load: Load, paths: dict[str, Path], logs: Path,
            out: Path) -> profiles.Profile:
    """Run one server at 64 connections under py-spy; keep its raw stacks and what was
    measured meanwhile in ``out`` (``profile-KEY.txt`` and ``.json``), and print where its
    time goes."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists() and not shutil.which("py-spy"):
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)
    server = BY_KEY[key]
    raw_path = profiles.raw_path(out, key)
    start_empty_log(server, paths)
    with running(server, paths, logs) as target:
        if server.kind == "router":
            engines_chosen(target)  # a profile of the engine that serves, not of the check
        load.run(target, PROFILE_CONNECTIONS, 2)
        # The GIL's holder only: bench/profiles.py says why.
        spy = subprocess.Popen(pinned(CLIENT_CPU, [py_spy, "record", "--pid",
                                                   str(target.process.pid), "--duration",
                                                   f"{seconds:g}", "--rate", "100", "--gil",
                                                   "--format", "raw", "--output",
                                                   str(raw_path)]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        point = load.run(target, PROFILE_CONNECTIONS, seconds)
        spy.wait(60)
    text = raw_path.read_text()
    samples, shares = profiles.breakdown(text)
    measured = profiles.Profile(
        key=key, label=server.label, taken=f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        seconds=seconds, connections=PROFILE_CONNECTIONS, rps=point.rps,
        serving_cpu_us_per_request=point.serving_cpu_us_per_request or 0.0, samples=samples,
        shares=shares)
    profiles.save(measured, out)
    print(f"{key} at {PROFILE_CONNECTIONS} conns: {point.rps:,.0f} req/s, p99 "
          f"{point.p99_ms:.1f} ms, serving process {measured.serving_cpu_us_per_request:.0f} "
          f"us CPU/req; stacks in {raw_path}")
    print(profiles.summarize(text))
    print("by part:")
    for part, share in shares.items():
        print(f"  {share * 100:5.1f} %  {measured.us_per_request(part):6.1f} us/req  {part}")
    return measured


# -- entry point --------------------------------------------------------------------------------


USAGE = """\
the full run (on a quiet machine; about 25 minutes; writes bench/results.md, results.json and
results.png, and ends with a py-spy profile of ab on each engine, which --no-profile skips):
  .venv/bin/python -m bench.serving

the short smoke run (about 4 minutes; checks that every server starts and answers and that the
profiles are taken, figures too short and too few to quote; writes var/bench-short/):
  .venv/bin/python -m bench.serving --short

one server under py-spy (its profile goes beside the report, which shows it when written
again, for example with --rewrite-report):
  .venv/bin/python -m bench.serving --profile ab-sklearn --seconds 20

one server, or a few (keys: see --only), with a report elsewhere:
  .venv/bin/python -m bench.serving --only ceiling,ab-sklearn,mlserver-batch --out var/bench
"""

SHORT_SERVERS = "ceiling,ab-fast,ab-sklearn,mlserver,mlserver-batch"
SHORT_NOTE = ("\n**A short smoke run** (`--short`): it shows that every server starts and "
              "answers; its points are too short and too few to quote.\n")


def apply_short(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``--short``: the smoke run's settings, where the command line left the defaults."""
    for name, value in (("seconds", 3.0), ("warmup", 1.0), ("connections", "1,64"),
                        ("profile_seconds", 3.0),
                        ("only", SHORT_SERVERS), ("grid_seconds", 2.0),
                        ("mlserver_grid", ",".join(f"{s}:{t:g}" for s, t in mlserver.GRID[:2])),
                        ("out", REPO / "var" / "bench-short")):
        if getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=USAGE)
    parser.add_argument("--seconds", type=float, default=15.0, help="per point (15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="per server (3)")
    parser.add_argument("--connections", default=",".join(map(str, CONNECTIONS)),
                        help="comma-separated (1,16,64)")
    parser.add_argument("--only", default="", help="comma-separated server keys: "
                        + ", ".join(BY_KEY))
    parser.add_argument("--out", type=Path, default=BENCH, help="where results go (bench/)")
    parser.add_argument("--soak", type=float, metavar="SECONDS",
                        help="instead: the memory soak run at 16 connections")
    parser.add_argument("--profile", metavar="KEY", help="instead: py-spy one server at 64 "
                        "connections for --seconds")
    parser.add_argument("--profile-seconds", type=float, default=20.0,
                        help="the full run's profiles of ab on each engine, each (20)")
    parser.add_argument("--log-pairs", type=int, default=LOG_PAIRS, metavar="N",
                        help=f"logging's cost: N interleaved pairs of ab with and without its "
                        f"log per engine whose log-off server the run has ({LOG_PAIRS}; "
                        "0: none)")
    parser.add_argument("--ceiling-pairs", type=int, default=LOG_PAIRS, metavar="N",
                        help=f"the targets against the ceiling: N interleaved pairs of ab on "
                        f"ONNX Runtime and the ceiling, when the run has both ({LOG_PAIRS}; "
                        "0: none)")
    parser.add_argument("--no-profile", action="store_true",
                        help="the full run without its profiles")
    parser.add_argument("--batching", metavar="MAX_BATCH,MAX_WAIT_MS", default="",
                        help="batching settings for the router (default: the router's own)")
    parser.add_argument("--mlserver-grid", metavar="SIZE:MS,...",
                        default=",".join(f"{s}:{t:g}" for s, t in mlserver.GRID),
                        help="MLServer's adaptive-batching settings to try (max_batch_size:"
                        "max_batch_time in ms; default %(default)s)")
    parser.add_argument("--grid-seconds", type=float, default=5.0,
                        help="per trial of the grid, at 64 connections (5)")
    parser.add_argument("--short", action="store_true",
                        help="the smoke run: 3 s per point, 1 and 64 connections, the ceiling, "
                        "ab on each engine and MLServer, two batching settings, 3 s profiles; "
                        "results go to var/bench-short/ unless --out says otherwise")
    parser.add_argument("--rewrite-report", action="store_true",
                        help="write results.md and results.png again from results.json")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--serve-unlogged", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.short:
        apply_short(args, parser)
    connections = tuple(int(c) for c in args.connections.split(","))
    try:
        grid = [(int(size), float(ms)) for size, ms in
                (item.split(":") for item in args.mlserver_grid.split(",") if item)]
    except ValueError:
        parser.error(f"--mlserver-grid: {args.mlserver_grid!r} is not SIZE:MS,... "
                     "(for example 64:1,64:5)")
    if args.client:
        client_main(args.client, connections[0], args.seconds)
        return 0
    if args.serve_unlogged:
        serve_unlogged(args.serve_unlogged, args.port)
        return 0

    if args.rewrite_report:
        saved = json.loads((args.out / "results.json").read_text())
        write_report([Point(**p) for p in saved["points"]], saved["notes"], saved["info"],
                     args.out)
        return 0
    ensure_python_extras()
    wrk = ensure_wrk()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp:
        workdir = Path(tmp)
        logs = workdir / "logs"
        logs.mkdir()
        print(f"training the models in {workdir}", flush=True)
        paths = prepare(workdir, args.batching)
        load = Load(wrk, paths)
        print(f"load generator: {load.name}", flush=True)
        if args.soak:
            soak(args.soak, load, paths, logs, args.out)
            return 0
        if args.profile:
            if args.profile not in BY_KEY:
                parser.error(f"--profile: unknown server {args.profile!r}")
            profile(args.profile, args.seconds, load, paths, logs, args.out)
            return 0
        keys = [k for k in args.only.split(",") if k] or list(BY_KEY)
        unknown = [k for k in keys if k not in BY_KEY]
        if unknown:
            parser.error(f"unknown server(s): {', '.join(unknown)}")
        info = {"command": "python -m bench.serving " + " ".join(argv or sys.argv[1:]),
                "date": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
                "machine": machine(), "load_before": load_average(), "client": load.name,
                "seconds": args.seconds, "warmup": args.warmup, "short": args.short}
        if any(BY_KEY[k].kind == "mlserver" for k in keys):
            mlserver.ensure_environment()
            info["mlserver"] = mlserver.installed_version()
        points, notes = measure([BY_KEY[k] for k in keys], connections, args.seconds,
                                args.warmup, load, paths, logs, grid, args.grid_seconds)
        info["log_pair_seconds"] = min(args.seconds, LOG_SLICE_S)
        if args.ceiling_pairs:
            notes["ceiling_pairs"] = ceiling_pairs(args.ceiling_pairs, info["log_pair_seconds"],
                                                   args.warmup, load, paths, logs, keys)
        if args.log_pairs:
            notes["log_pairs"] = log_pairs(args.log_pairs, info["log_pair_seconds"],
                                           args.warmup, load, paths, logs, keys)
        info["load_after"] = load_average()
        write_report(points, notes, info, args.out)
        # The whole run (not a choice of servers) ends with where ab's time goes.
        if (args.short or not args.only) and not args.no_profile:
            for key in PROFILED:
                profile(key, args.profile_seconds, load, paths, logs, args.out)
            write_report(points, notes, info, args.out)
    print(f"\nwrote {args.out / 'results.md'} and {args.out / 'results.png'}")
    for target, measured, ok in targets(points, notes.get("log_pairs"),
                                        notes.get("ceiling_pairs")):
        print(f"  [{'met' if ok else 'MISSED'}] {target}: {measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
