"""``router demo``: train the demo models if missing, serve them, simulate traffic, serve on.

The gateway is a real ``router serve`` child process rather than uvicorn inside this one: it
is then exactly what a user deploys (its startup checks, its graceful SIGTERM drain), and the
simulator's threads do not share a GIL with it, which on two cores would halve the rate and
lengthen the very latencies the guardrails judge. The child runs in its own session, so a
Ctrl-C reaches only this process, which stops in an order that loses nothing: stop sending,
let the requests in flight be answered, send the labels still held back, then SIGTERM the
gateway and wait while it drains its outcome log into the store.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from router.demo.client import SimulationError, get_json
from router.demo.progress import ProgressBar
from router.demo.simulate import (
    Simulator,
    holdout_rows,
)
from router.demo.training import (
    CHALLENGER_NAME,
    CHAMPION_NAME,
    CONFIG_PATH,
    HOLDOUT_PATH,
    train_demo,
)
from router.listening import cannot_listen

__all__ = ["DemoError", "DemoOptions", "admin_token", "run_demo"]

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
SERVER_LOG = Path("var/demo-server.log")
VERDICTS = ("promote", "rollback")
TOKEN_ENV = "ROUTER_ADMIN_TOKEN"  # as router.gateway.admin reads it; not imported: no Starlette
# What uvicorn logs once its socket listens; it exits instead when it cannot bind.
LISTENING_LINE = "Uvicorn running on "


def admin_token(environ: Mapping[str, str]) -> tuple[str, bool]:
    """The token the demo's admin routes take, and whether it was made here.

    A ``ROUTER_ADMIN_TOKEN`` already set is kept, so the user's own scripts keep working; else
    a random one is made for this run (the gateway disables its admin routes without one).
    """
    given = environ.get(TOKEN_ENV, "").strip()
    if given:
        return given, False
    return secrets.token_urlsafe(32), True


class DemoError(Exception):
    """The demo cannot go on (the gateway did not start, or died)."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``router demo`` takes on its command line."""

    root: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_requests: int = 30_000
    round_size: int = 500
    concurrency: int = 8
    fresh: bool = False
    seed: int | None = None


def _demo_files(root: Path) -> list[Path]:
    return [root / CONFIG_PATH, root / HOLDOUT_PATH,
            *(root / "models" / name / "1" / "model.joblib"
              for name in (CHAMPION_NAME, CHALLENGER_NAME))]


def _prepare(options: DemoOptions, out: TextIO) -> Path:
    """Train the demo when any of its files is missing (or ``fresh``); the config's path."""
    root = options.root
    files = _demo_files(root)
    if options.fresh or not all(path.exists() for path in files):
        print("training the demo models …", file=out, flush=True)
        result = train_demo(root, force=any(path.exists() for path in files))
        for role in ("champion", "challenger"):
            model = result[role]
            print(f"  {role}: {model['name']} (held-out accuracy "
                  f"{model['metrics']['accuracy']:.3f}) in {model['path']}", file=out)
    else:
        print(f"using the demo models in {root / 'models'} and {root / CONFIG_PATH}", file=out)
    if options.fresh:
        _remove_store(root)
    return root / CONFIG_PATH


def _store_url(root: Path) -> str:
    from router.config import load_config

    return load_config(root / CONFIG_PATH, base_dir=root).store


def _open_store(root: Path) -> Any:
    from router.outcomes import open_store

    return open_store(_store_url(root), root)


def _remove_store(root: Path) -> None:
    store = _open_store(root)
    path = getattr(store, "path", None)
    store.close()
    if path is not None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def _count_predictions(root: Path) -> int:
    store = _open_store(root)
    try:
        return int(store.count_predictions())
    finally:
        store.close()


# Set by Ctrl-C or SIGTERM. Python drops the KeyboardInterrupt a signal raises while a weakref
# callback or a __del__ runs (it prints "Exception ignored in ..."), as when a finished traffic
# thread is freed: the demo then sent traffic to a verdict and served on. Its loops look here too.
_STOP = threading.Event()


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the demo, in the same careful order: each raises
    KeyboardInterrupt and sets ``_STOP``."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        _STOP.set()
        raise KeyboardInterrupt

    shown = sys.unraisablehook

    def unraisable(dropped: Any) -> None:
        # An interrupt Python dropped is _STOP's to carry: no "Exception ignored … Traceback"
        # on the terminal of a demo that stops cleanly.
        if not (isinstance(dropped.exc_value, KeyboardInterrupt) and _STOP.is_set()):
            shown(dropped)

    _STOP.clear()
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = shown
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_if_asked() -> None:
    """Raise the KeyboardInterrupt of a signal Python dropped."""
    if _STOP.is_set():
        raise KeyboardInterrupt


class _Gateway:
    """A ``router serve`` child process in its own session, its output in a log file."""

    def __init__(self, options: DemoOptions, config: Path, token: str) -> None:
        self.url = f"http://{options.host}:{options.port}"
        self.log = options.root / SERVER_LOG
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "router.cli", "serve", "--config", str(config),
                   "--host", options.host, "--port", str(options.port)]
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(command, cwd=options.root, stdout=sink,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True,
                                            env={**os.environ, TOKEN_ENV: token})

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def listening(self) -> bool:
        """Whether this gateway's own log says it listens on its port."""
        return LISTENING_LINE in self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Until this gateway answers ``/ready``. A server that took the port after the demo
        checked it answers too, while this one loads its models and then fails to bind: an
        answer counts only once this one's log says it listens."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(f"the gateway exited with {self.process.returncode} at start; "
                                f"its log ({self.log}) ends:\n{self.tail()}")
            if self.listening():
                with contextlib.suppress(SimulationError):
                    if get_json(self.url, "/ready")[0] == 200:
                        return
            time.sleep(0.2)
        raise DemoError(f"the gateway was not ready after {READY_TIMEOUT_S:g} s; see {self.log}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        """SIGTERM and wait for the drain; the exit status (uvicorn re-raises SIGTERM)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise DemoError(f"the gateway did not stop within {STOP_TIMEOUT_S:g} s; killed. "
                            f"See {self.log}") from None


def _fetch_stats(url: str) -> dict[str, Any] | None:
    """``GET /stats``, or None when this gateway has no such route (yet) or it failed."""
    try:
        status, payload = get_json(url, "/stats")
    except SimulationError:
        return None
    return payload if status == 200 and isinstance(payload, dict) else None


def _decision(stats: dict[str, Any] | None) -> tuple[str, str]:
    if stats is None:
        return "unknown", "/stats not available"
    decision = stats.get("decision") or {}
    reasons = decision.get("reasons") or [""]
    return str(decision.get("action", "unknown")), str(reasons[0])


def _mode(url: str) -> str | None:
    """The running configuration's mode, or None when ``/config`` does not say."""
    status, payload = get_json(url, "/config")
    if status != 200 or not isinstance(payload, dict):
        return None
    return str((payload.get("config") or {}).get("mode"))


def _print_stats(url: str, out: TextIO) -> None:
    from router.stats.console import render_report

    stats = _fetch_stats(url)
    if stats is None:
        print("(the gateway did not answer /stats: no table to show)", file=out)
        return
    print(render_report(stats), file=out)


def _simulate(simulator: Simulator, options: DemoOptions, out: TextIO) -> str:
    """Rounds of traffic until ``/stats`` gives a verdict or the cap is reached."""
    bar = ProgressBar(options.max_requests)
    action = "unknown"
    started = time.monotonic()
    while simulator.result.sent < options.max_requests:
        _stop_if_asked()
        simulator.run(min(options.round_size, options.max_requests - simulator.result.sent),
                      bar.update)
        action, reason = _decision(_fetch_stats(simulator.url))
        bar.note = f"{action}: {reason}"
        if not bar.tty:
            print(f"{simulator.result.answered} answered, {simulator.result.labels_sent} "
                  f"labelled: {action} ({reason})", file=out, flush=True)
        bar.update(simulator.result, force=True)
        if action in VERDICTS:
            break
    bar.close(simulator.result)
    simulator.flush_feedback()
    seconds = time.monotonic() - started
    if action in VERDICTS:
        print(f"verdict: {action} after {simulator.result.answered} requests and "
              f"{seconds:.0f} s of traffic", file=out)
    else:
        print(f"no verdict after {simulator.result.answered} requests ({seconds:.0f} s); "
              "the gateway keeps serving, send more with `router simulate`", file=out)
    print(simulator.result.summary(), file=out, flush=True)
    return action


def run_demo(options: DemoOptions, out: TextIO | None = None) -> int:
    """The whole demo; returns the exit code. Blocks until Ctrl-C (or SIGTERM)."""
    out = out if out is not None else sys.stdout
    # Before training, and before the gateway's log is rewritten: a port another server holds
    # (another demo's, say) is one line, as `router serve` says it.
    problem = cannot_listen(options.host, options.port)
    if problem:
        raise DemoError(problem)
    with _interrupts():
        config = _prepare(options, out)
        X, y, names = holdout_rows(options.root / HOLDOUT_PATH)
        before = _count_predictions(options.root)
        token, generated = admin_token(os.environ)
        gateway = _Gateway(options, config, token)
        simulator: Simulator | None = None
        try:
            print(f"starting the gateway on {gateway.url} (log: {gateway.log})", file=out,
                  flush=True)
            gateway.wait_ready()
            simulator = Simulator(gateway.url, X, y, names, concurrency=options.concurrency,
                                  seed=options.seed)
            if _mode(gateway.url) == "single":
                # After a promotion the file serves one model: traffic could never give a
                # verdict, so say how to start a new experiment instead of sending it.
                print(f"{config} serves one model (mode single, as a promotion or rollback "
                      "leaves it): there is nothing to compare. `router demo --fresh` (or "
                      "`make demo DEMO_ARGS=--fresh`) trains anew and starts a new experiment",
                      file=out, flush=True)
            else:
                print(f"sending traffic (at most {options.max_requests} requests, labels "
                      "arriving late) until /stats gives a verdict …", file=out, flush=True)
                _simulate(simulator, options, out)
            time.sleep(0.5)  # the gateway's writer flushes every 0.2 s: the table sees it all
            _print_stats(gateway.url, out)
            print(f"dashboard: {gateway.url}/dashboard", file=out)
            print(f"results: {gateway.url}/stats (JSON), `router stats --url {gateway.url}`; "
                  f"metrics: {gateway.url}/metrics", file=out)
            if generated:
                # Printed last, beside the address: the README's admin examples read it.
                print("admin routes (POST /admin/promote, /admin/rollback) take a token made "
                      f"for this run; in another shell: export {TOKEN_ENV}={token}", file=out)
            else:
                print(f"admin routes take the {TOKEN_ENV} set in this shell", file=out)
            print(f"serving on {gateway.url} until Ctrl-C", file=out, flush=True)
            while gateway.alive():
                _stop_if_asked()
                time.sleep(0.2)
            raise DemoError(f"the gateway exited with {gateway.process.returncode}; its log "
                            f"({gateway.log}) ends:\n{gateway.tail()}")
        except KeyboardInterrupt:
            print("\nstopping …", file=out, flush=True)
        finally:
            # Nothing may interrupt the drain below: that is what keeps every answer logged.
            previous = {sig: signal.signal(sig, signal.SIG_IGN)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                if simulator is not None and gateway.alive():
                    simulator.stop()
                    simulator.flush_feedback()
                code = gateway.stop()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    answered = simulator.result.answered if simulator is not None else 0
    logged = _count_predictions(options.root) - before
    if code not in (0, -signal.SIGTERM):
        raise DemoError(f"the gateway exited with {code}; see {gateway.log}")
    labels = simulator.result.labels_sent if simulator is not None else 0
    print(f"stopped cleanly: {answered} answered predictions, {logged} new in the outcome "
          f"store {_store_url(options.root)} ({labels} labels sent)", file=out, flush=True)
    if logged < answered:
        raise DemoError(f"{answered - logged} answered predictions are missing from the store")
    return 0
