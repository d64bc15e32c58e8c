"""Instructions per request of the serving process, counted by callgrind: a measure of the
request path that does not move with whatever else the machine runs.

Timed runs on a shared machine swing by a third from one 10-second run to the next, more than
most changes to the request path are worth. This runs the real gateway behind the real
connection protocol (``router.gateway.connections``) in one process, with in-memory transports
in place of sockets: 64 connections, each sending its next request as soon as its answer is
written (a closed loop, as ``wrk`` makes, without the kernel's TCP). After a warm-up it counts,
under valgrind's callgrind, the instructions each thread of the process runs while it answers
``--requests`` predictions, and prints them per request. The outcome log's writer process runs
outside valgrind and is not counted.

    .venv/bin/python -m bench.instructions                        # this checkout, both engines
    .venv/bin/python -m bench.instructions --tree ../before --tree .   # two checkouts
    .venv/bin/python -m bench.instructions --engine auto --cache       # and each thread's misses

It needs valgrind (``apt-get install valgrind``, which brings its headers) and a C compiler:
the counting is switched on and off from inside the process through callgrind's client
requests, which a few lines of C make callable. A run takes about a minute per tree and engine.
``--no-valgrind`` runs the same requests without it, as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONNECTIONS = 64
WARMUP_REQUESTS = 1_000
CPU0_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
_TOGGLE_C = """#include <valgrind/callgrind.h>
void count_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void count_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS; }
"""


# -- the process measured -----------------------------------------------------------------------


def request_bytes(body: bytes) -> bytes:
    """One ``POST /predict`` as ``bench/serving.lua`` sends it: JSON and a random user."""
    return (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"X-User-Id: " + str(random.randint(1, 1_000_000)).encode()
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class MemoryTransport(asyncio.Transport):
    """A connection's socket: what the protocol writes is the answer."""

    def __init__(self, on_write: Any) -> None:
        super().__init__()
        self._on_write = on_write
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._on_write(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class ClosedLoop:
    """``CONNECTIONS`` connections of the connection protocol, each sending its next request
    when its answer is written, until a round's count is answered."""

    def __init__(self, app: Any, bodies: list[bytes]) -> None:
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        from router.gateway.connections import LimitedHttpToolsProtocol

        config = Config(app=app, http="httptools", lifespan="off", access_log=False,
                        log_level="critical", server_header=False)
        config.load()
        state = ServerState()
        state.default_headers = [(b"date", b"Sun, 06 Dec 2026 00:00:00 GMT")]
        self._bodies = bodies
        self._loop = asyncio.get_running_loop()
        self._sent = self._answered = self._target = 0
        self._done = asyncio.Event()
        self._protocols = []
        for _ in range(CONNECTIONS):
            protocol = LimitedHttpToolsProtocol(config=config, server_state=state, app_state={})
            protocol.connection_made(MemoryTransport(self._answer_of(protocol)))
            self._protocols.append(protocol)

    def _answer_of(self, protocol: Any) -> Any:
        def on_write(data: bytes) -> None:
            if not data.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"not answered 200: {data[:300]!r}")
            self._answered += 1
            if self._sent < self._target:
                self._sent += 1  # counted when due, as several answers may come in one turn
                self._loop.call_soon(self._send, protocol, self._sent)
            elif self._answered >= self._target:
                self._done.set()
        return on_write

    def _send(self, protocol: Any, number: int) -> None:
        protocol.data_received(request_bytes(self._bodies[number % len(self._bodies)]))

    async def answer(self, requests: int) -> None:
        self._sent = self._answered = 0
        self._target = requests
        self._done.clear()
        for protocol in self._protocols[:requests]:
            self._sent += 1
            self._send(protocol, self._sent)
        await self._done.wait()


async def serve_rounds(workdir: Path, mode: str, rounds: list[int], counter: Any = None, *,
                       tune_gc: bool = True) -> list[dict[str, Any]]:
    """The gateway of ``workdir/<mode>.yaml``, answering each round's count of requests;
    ``counter`` (callgrind's switch) counts the last round alone. ``tune_gc`` as
    ``router serve`` does."""
    from router.gateway.app import create_app

    app: Any = create_app(workdir / f"{mode}.yaml", base_dir=workdir, tune_gc=tune_gc)
    bodies = [line.encode() for line in (workdir / "bodies.jsonl").read_text().splitlines()]
    out = []
    async with app.router.lifespan_context(app):
        engines = await _engines_chosen(app)
        closed_loop = ClosedLoop(app, bodies)
        for i, requests in enumerate(rounds):
            counting = counter is not None and i == len(rounds) - 1
            if counting:
                counter.count_start()
            started = time.thread_time()
            await closed_loop.answer(requests)
            cpu = time.thread_time() - started
            if counting:
                counter.count_stop()
            out.append({"requests": requests, "engines": engines,
                        "event_loop_cpu_us": cpu / requests * 1e6})
    return out


async def _engines_chosen(app: Any, timeout_s: float = 600.0) -> dict[str, str]:
    """Each model's engine once ONNX Runtime's parity check (run in the background) ended."""
    from router.serving.model import ENGINE_PENDING

    deadline = time.monotonic() + timeout_s
    while True:
        models = app.gateway.snapshots.current.models
        if all(m.engine_reason != ENGINE_PENDING for m in models.values()):
            return {role: m.engine for role, m in models.items()}
        if time.monotonic() > deadline:
            raise RuntimeError("engines still unchosen")
        await asyncio.sleep(0.1)


# Under callgrind the process runs about fifty times slower, while the outcome log hands records
# over and reports its counts by the clock: at their usual intervals a hand-over would carry one
# record where it carries a hundred at full speed, and its fixed costs would be counted per
# record. Stretched fifty times, they carry about as many as at full speed.
CLOCK_STRETCH = 50


def slow_log_clock() -> None:
    from router.outcomes import writer_process

    defaults = writer_process.WriterProcess.__init__.__kwdefaults__
    defaults["handoff_interval_s"] = writer_process.HANDOFF_INTERVAL_S * CLOCK_STRETCH
    defaults["status_interval_s"] = writer_process.STATUS_INTERVAL_S * CLOCK_STRETCH


def worker_main(workdir: Path, mode: str, requests: int, counted: bool, logged: bool) -> None:
    if not logged:  # as bench/serving.py's log-off servers: no records built at all
        from router.serving import batching
        from router.serving.service import PredictionService

        PredictionService._log = lambda *args, **kwargs: None  # type: ignore[method-assign]
        if hasattr(batching.Predictor, "log_to"):  # answers logged by the batcher
            batching.Predictor.log_to = lambda self, log: None  # type: ignore[method-assign]
    counter = None
    if counted:
        counter = ctypes.CDLL(str(workdir.parent / "count.so"))
        slow_log_clock()
    import uvloop

    uvloop.install()
    rounds = asyncio.run(serve_rounds(workdir, mode, [WARMUP_REQUESTS, requests], counter))
    print("RESULT " + json.dumps(rounds[-1]), flush=True)


# -- the runs -----------------------------------------------------------------------------------


def build_counter(directory: Path) -> Path:
    """The shared library whose two functions switch callgrind's counting."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not Path("/usr/include/valgrind/callgrind.h").exists():
        raise SystemExit("needs a C compiler and valgrind's headers: apt-get install valgrind")
    source = directory / "count.c"
    source.write_text(_TOGGLE_C)
    library = directory / "count.so"
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(source)],
                   check=True)
    return library


def thread_totals(prefix: Path) -> dict[int, dict[str, int]]:
    """Each thread's counts by event (``Ir``, and with ``--cache`` the simulated misses) in
    callgrind's dumps, threads by number (1 is the event loop); threads that ran nothing
    counted are left out."""
    totals: dict[int, dict[str, int]] = {}
    for dump in prefix.parent.glob(prefix.name + "*"):
        match = re.search(r"-(\d+)$", dump.name)
        if match is None:
            continue
        events: list[str] = []
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("totals:"):
                counts = totals.setdefault(int(match.group(1)), {})
                for event, value in zip(events, line.split()[1:], strict=False):
                    counts[event] = counts.get(event, 0) + int(value)
    return {thread: counts for thread, counts in totals.items() if counts.get("Ir")}


def misses_by_level(counts: dict[str, int]) -> tuple[int, int]:
    """Misses of the first level (instructions, data read and written), then of the last level
    callgrind simulates."""
    return (sum(counts.get(e, 0) for e in ("I1mr", "D1mr", "D1mw")),
            sum(counts.get(e, 0) for e in ("ILmr", "DLmr", "DLmw")))


def cache_options(cpu_caches: Path = CPU0_CACHES) -> list[str]:
    """callgrind's cache simulation shaped as this core's caches, the last level simulated
    being the core's own (its L2 where it has one): the cache a second thread of the serving
    process shares with the event loop and evicts. callgrind otherwise simulates the shared
    L3 as the last level, which holds both threads' data at once. Empty when the caches
    cannot be read (valgrind then asks the CPU itself)."""
    found: dict[tuple[int, str], str] = {}
    for folder in sorted(cpu_caches.glob("index*")):
        try:
            level = int((folder / "level").read_text())
            kind = (folder / "type").read_text().strip()
            size = (folder / "size").read_text().strip()
            ways = (folder / "ways_of_associativity").read_text().strip()
            line = (folder / "coherency_line_size").read_text().strip()
        except (OSError, ValueError):
            continue
        factor = {"K": 1024, "M": 1024 * 1024}.get(size[-1:], 1)
        found[(level, kind)] = f"{int(size.rstrip('KM')) * factor},{ways},{line}"
    wanted = {"--I1": (1, "Instruction"), "--D1": (1, "Data"), "--LL": (2, "Unified")}
    if not all(cache in found for cache in wanted.values()):
        return []
    return [f"{option}={found[cache]}" for option, cache in wanted.items()]


def run_one(tree: Path, engine: str, mode: str, requests: int, workdir: Path,
            valgrind: bool, logged: bool, cache: bool = False) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree), ROUTER_ENGINE=engine)
    # This file run as a script: an older checkout under test has no such module.
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(workdir), mode,
               str(requests), *([] if logged else ["--log-off"])]
    prefix = workdir / f"callgrind-{engine}"
    if valgrind:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   "--separate-threads=yes", f"--callgrind-out-file={prefix}",
                   *(["--cache-sim=yes", *cache_options()] if cache else []), *command,
                   "--counted"]
    output = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True,
                            check=False)
    lines = [ln for ln in output.stdout.splitlines() if ln.startswith("RESULT ")]
    if output.returncode != 0 or not lines:
        raise SystemExit(f"{tree} ({engine}) failed:\n{output.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    if valgrind:
        totals = sorted(thread_totals(prefix).items())
        result["instructions_per_request"] = {t: c["Ir"] / requests for t, c in totals}
        if cache:
            result["misses_per_request"] = {
                t: [m / requests for m in misses_by_level(c)] for t, c in totals}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path,
                        help="a checkout to measure (repeat to compare; default: this one)")
    parser.add_argument("--engine", action="append", choices=["auto", "sklearn"],
                        help="ROUTER_ENGINE (repeat; default: auto and sklearn)")
    parser.add_argument("--mode", default="ab", choices=["single", "ab", "shadow"])
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--log-off", action="store_true",
                        help="build no outcome records, to price the log")
    parser.add_argument("--cache", action="store_true",
                        help="also simulate this core's caches and count each thread's misses "
                             "(about three times slower)")
    parser.add_argument("--no-valgrind", action="store_true",
                        help="answer the requests without counting (a check of the harness)")
    parser.add_argument("--worker", nargs=3, metavar=("DIR", "MODE", "REQUESTS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--counted", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(Path(args.worker[0]), args.worker[1], int(args.worker[2]), args.counted,
                    logged=not args.log_off)
        return 0
    from bench.serving import prepare

    valgrind = not args.no_valgrind
    if valgrind and shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: apt-get install valgrind")
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        prepare(base)
        if valgrind:
            build_counter(base)
        log = ", log off" if args.log_off else ""
        print(f"{args.mode}{log}, {args.requests} requests after {WARMUP_REQUESTS}, "
              f"{CONNECTIONS} in-memory connections; instructions per request by thread "
              "(1: the event loop)")
        for engine in args.engine or ["auto", "sklearn"]:
            for tree in args.tree or [REPO]:
                workdir = base / f"{tree.resolve().name}-{engine}"
                workdir.mkdir()
                for name in ("models", "bodies.jsonl", f"{args.mode}.yaml"):
                    (workdir / name).symlink_to(base / name)
                (workdir / "var").mkdir()  # the YAML's SQLite log
                result = run_one(tree.resolve(), engine, args.mode, args.requests, workdir,
                                 valgrind, logged=not args.log_off, cache=args.cache)
                misses = result.get("misses_per_request", {})
                counts = ", ".join(
                    f"{thread}: {count:,.0f}" + (
                        " ({:,.0f} L1 and {:,.0f} L2 misses)".format(*misses[thread])
                        if thread in misses else "")
                    for thread, count in result.get("instructions_per_request", {}).items())
                print(f"{tree} {engine} {result['engines']}: {counts or 'not counted'}; "
                      f"event loop CPU {result['event_loop_cpu_us']:.1f} us/request",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
