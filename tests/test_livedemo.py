"""`router demo` as a user runs it: trains, serves, simulates, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from router.demo.live import (
    DemoError,
    DemoOptions,
    _Gateway,
    _interrupts,
    _simulate,
    admin_token,
)
from router.demo.simulate import SimulationResult
from router.demo.training import CONFIG_PATH, train_demo
from router.outcomes import open_store
from tests.e2e.server import REPO_ROOT, free_port, serve

pytestmark = pytest.mark.e2e

DEADLINE_S = 300.0  # only guards against a hang: training and starting take a few seconds


class Demo:
    """A `router demo` process whose output lines are read as they come."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None,
                 path: tuple[Path, ...] = ()) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "router.cli", "demo", "--dir", str(root),
                   "--port", str(self.port), "--seed", "1", *args]
        environ = {**(os.environ if env is None else env),
                   "PYTHONPATH": os.pathsep.join(map(str, (*path, REPO_ROOT)))}
        self.process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=environ)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str) -> str:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))

    def interrupt(self) -> int:
        """Ctrl-C, as a terminal sends it; the rest of the output is read."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(DEADLINE_S)
        while (line := self._queue.get(timeout=DEADLINE_S)) is not None:
            self.lines.append(line)
        self.close()
        return code

    def close(self) -> None:
        """End the process if a failed test left it running, and close its pipe."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


def stored(root: Path) -> tuple[int, int]:
    """Predictions and feedback in the demo's SQLite file."""
    store = open_store("sqlite:///var/outcomes.db", root)
    try:
        return len(store.prediction_records()), len(store.feedback_records())
    finally:
        store.close()


def answered_at_stop(demo: Demo) -> int:
    found = re.search(r"stopped cleanly: (\d+) answered predictions, (\d+) new",
                      "\n".join(demo.lines))
    assert found, "\n".join(demo.lines)
    assert found.group(1) == found.group(2)
    return int(found.group(1))


@pytest.fixture
def start_demo() -> Iterator[Callable[..., Demo]]:
    demos: list[Demo] = []

    def start(root: Path, *args: str, env: dict[str, str] | None = None,
              path: tuple[Path, ...] = ()) -> Demo:
        demos.append(Demo(root, *args, env=env, path=path))
        return demos[-1]

    yield start
    for demo in demos:
        demo.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo directory with its models trained once, to copy."""
    root = tmp_path_factory.mktemp("trained")
    train_demo(root)
    return root


def test_demo_trains_serves_and_stops_on_ctrl_c(start_demo: Callable[..., Demo],
                                                tmp_path: Path) -> None:
    """From an empty directory: trains, answers every request, serves on; Ctrl-C loses nothing."""
    demo = start_demo(tmp_path, "--max-requests", "300", "--round", "150")
    demo.wait_for(r"^training the demo models")
    demo.wait_for(r"until Ctrl-C$")
    text = "\n".join(demo.lines)
    assert "300/300 requests answered" in text and "300 labels sent" in text
    assert "/stats" in text and "/metrics" in text
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/dashboard$", text, re.MULTILINE)
    assert demo.interrupt() == 0, "\n".join(demo.lines)
    assert answered_at_stop(demo) == 300
    assert stored(tmp_path) == (300, 300)
    assert "Traceback" not in "\n".join(demo.lines)
    log = (tmp_path / "var" / "demo-server.log").read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log


def test_ctrl_c_during_the_traffic_logs_every_answer(start_demo: Callable[..., Demo],
                                                     trained: Path, tmp_path: Path) -> None:
    """Interrupted mid-traffic: the store holds every answered request and each one's label."""
    root = tmp_path / "demo"
    shutil.copytree(trained, root)
    demo = start_demo(root, "--max-requests", "100000", "--round", "100")
    demo.wait_for(r"^using the demo models")  # already trained: not again
    demo.wait_for(r"^\d+ answered, \d+ labelled")
    assert demo.interrupt() == 0, "\n".join(demo.lines)
    answered = answered_at_stop(demo)
    assert 100 <= answered < 100_000
    assert stored(root) == (answered, answered), "\n".join(demo.lines)
    assert "Traceback" not in "\n".join(demo.lines)


def admin_post(port: int, route: str, token: str | None) -> tuple[int, dict[str, Any]]:
    """POST to the demo's gateway with an optional bearer token: (status, JSON body)."""
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{route}", data=b"{}",
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_demo_prints_the_admin_token_its_gateway_takes(start_demo: Callable[..., Demo],
                                                       trained: Path, tmp_path: Path) -> None:
    """Without ROUTER_ADMIN_TOKEN the demo makes one, gives it to its gateway and prints it, so
    the README's admin examples work as written."""
    root = tmp_path / "demo"
    shutil.copytree(trained, root)
    env = {k: v for k, v in os.environ.items() if k != "ROUTER_ADMIN_TOKEN"}
    demo = start_demo(root, "--max-requests", "200", "--round", "200", env=env)
    line = demo.wait_for(r"ROUTER_ADMIN_TOKEN=")
    demo.wait_for(r"until Ctrl-C$")
    token = re.search(r"export ROUTER_ADMIN_TOKEN=(\S+)", line)
    assert token, line
    assert len(token.group(1)) >= 32
    assert admin_post(demo.port, "/admin/rollback", "not-the-token")[0] == 401
    status, body = admin_post(demo.port, "/admin/promote", token.group(1))
    assert status == 200, body
    assert body["action"] == "promote" and body["to"] == "breast-cancer-rf"
    assert demo.interrupt() == 0, "\n".join(demo.lines)


def test_a_token_already_in_the_environment_is_the_one_used() -> None:
    """A ROUTER_ADMIN_TOKEN the user set is kept; a blank one is replaced by a random one."""
    assert admin_token({"ROUTER_ADMIN_TOKEN": "mine"}) == ("mine", False)
    generated, made = admin_token({"ROUTER_ADMIN_TOKEN": "  "})
    assert made and generated.strip() == generated and len(generated) >= 32
    assert admin_token({})[0] != admin_token({})[0]


def modules_of_the_extras() -> set[str]:
    """Top-level modules that only pyproject's optional extras install (dev, postgres, fast...)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\s\[<>=;!~]", r, maxsplit=1)[0].lower().replace("_", "-")
                for r in requirements}

    extras = set().union(*map(names, project["optional-dependencies"].values()))
    extras -= names(project["dependencies"])
    return {module for module, dists in importlib.metadata.packages_distributions().items()
            if any(d.lower().replace("_", "-") in extras for d in dists)}


def test_the_demo_needs_none_of_the_extras(start_demo: Callable[..., Demo], trained: Path,
                                           tmp_path: Path) -> None:
    """`make demo` installs only the runtime: with every extra's modules made unimportable (in
    the demo and in the gateway it starts), the demo still serves, reaches its rounds and stops
    cleanly."""
    blocked = modules_of_the_extras()
    assert {"pytest", "onnxruntime", "psycopg", "mkdocs"} <= blocked
    hook = tmp_path / "hook"
    hook.mkdir()
    # Python imports sitecustomize at start-up, in this process's children too: None in
    # sys.modules makes `import x` fail and importlib.util.find_spec(x) say "not installed".
    (hook / "sitecustomize.py").write_text(
        f"import sys\nfor name in {sorted(blocked)!r}:\n    sys.modules[name] = None\n")
    root = tmp_path / "demo"
    shutil.copytree(trained, root)
    demo = start_demo(root, "--max-requests", "200", "--round", "200", path=(hook,))
    demo.wait_for(r"until Ctrl-C$")
    with urllib.request.urlopen(f"http://127.0.0.1:{demo.port}/config", timeout=30) as answer:
        models = json.loads(answer.read())["models"]
    assert {m["engine"] for m in models.values()} == {"scikit-learn"}, models
    assert all("fast extra is not installed" in m["engine_reason"] for m in models.values())
    assert demo.interrupt() == 0, "\n".join(demo.lines)
    assert answered_at_stop(demo) == 200
    log = (root / "var" / "demo-server.log").read_text()
    assert "Traceback" not in log and "Traceback" not in "\n".join(demo.lines)


def test_after_a_promotion_the_demo_says_how_to_start_again(start_demo: Callable[..., Demo],
                                                           trained: Path, tmp_path: Path) -> None:
    """Once the file serves one model (a promotion leaves mode single), the demo sends no
    traffic that could never reach a verdict: it says so, names --fresh, and serves on."""
    root = tmp_path / "demo"
    shutil.copytree(trained, root)
    promoted = subprocess.run(
        [sys.executable, "-m", "router.cli", "promote", "--config", "configs/router.yaml",
         "--reason", "the demo's challenger won"], cwd=root, capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert promoted.returncode == 0, promoted.stderr
    demo = start_demo(root, "--max-requests", "3000", "--round", "500")
    line = demo.wait_for(r"serves one model")
    assert "--fresh" in line
    demo.wait_for(r"until Ctrl-C$")
    text = "\n".join(demo.lines)
    assert "sending traffic" not in text and "no verdict" not in text
    assert demo.interrupt() == 0, text


def test_a_port_in_use_stops_the_demo_before_it_starts_anything(trained: Path,
                                                                tmp_path: Path) -> None:
    """Another gateway already listens on --port: one line, as `router serve` says it, exit 1,
    before any training, any server log rewritten or any request sent to that other gateway."""
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    root = tmp_path / "demo"  # empty: the demo would train first
    log = root / "var" / "demo-server.log"
    log.parent.mkdir(parents=True)
    log.write_text("another demo's gateway log\n")
    with serve(other / CONFIG_PATH, other) as server:
        port = server.url.rsplit(":", 1)[1]
        done = subprocess.run(
            [sys.executable, "-m", "router.cli", "demo", "--dir", str(root), "--port", port,
             "--max-requests", "200", "--round", "100"], cwd=root, capture_output=True,
            text=True, timeout=DEADLINE_S, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        with urllib.request.urlopen(f"{server.url}/stats", timeout=30) as answer:
            served = json.loads(answer.read())
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", f"router: error: cannot listen on 127.0.0.1:{port}: address already in use\n")
    assert not (root / "models").exists()
    assert log.read_text() == "another demo's gateway log\n"
    assert sum(v["requests"] for v in served["variants"].values()) == 0, served["variants"]


def test_the_demo_waits_for_its_own_gateway_not_the_one_on_its_port(
        trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the port be taken after the demo checked it, its gateway cannot listen there: the
    other gateway's /ready, answered while this one is still starting, is not taken for this
    one's, and the demo stops with this one's log rather than send traffic elsewhere."""
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    root = tmp_path / "demo"
    shutil.copytree(trained, root)
    with serve(other / CONFIG_PATH, other) as server:
        options = DemoOptions(root=root, port=int(server.url.rsplit(":", 1)[1]))
        gateway = _Gateway(options, root / CONFIG_PATH, "a-token")
        try:
            with pytest.raises(DemoError, match="cannot listen on"):
                gateway.wait_ready()
        finally:
            gateway.stop()


class _Dropped:
    """An object whose death runs a weakref callback, as a freed thread's does."""


# The dropped KeyboardInterrupt is what this test makes happen.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_python_drops_prints_no_traceback() -> None:
    """Python prints "Exception ignored in … Traceback … KeyboardInterrupt" for the interrupt
    it drops in a weakref callback, on the terminal of a demo that then stops cleanly. Run
    outside pytest, whose own hook takes such exceptions."""
    script = """if True:
        import os, signal, sys, weakref
        from router.demo.live import _interrupts, _stop_if_asked

        class Freed:
            pass

        with _interrupts():
            freed = Freed()
            watch = weakref.ref(freed, lambda _: os.kill(os.getpid(), signal.SIGINT))
            del freed  # the callback runs; Python drops the KeyboardInterrupt it raises
            try:
                _stop_if_asked()
            except KeyboardInterrupt:
                print("stopped")
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert (done.returncode, done.stdout, done.stderr) == (0, "stopped\n", "")


def test_a_ctrl_c_python_drops_still_stops_the_demos_traffic() -> None:
    """A signal that lands while a weakref callback runs (a finished thread being freed) raises
    its KeyboardInterrupt there, where Python prints "Exception ignored" and drops it: the
    demo kept sending traffic to a verdict and served on. It must stop at the next round."""

    class DroppingSimulator:
        url = "http://127.0.0.1:9"  # nothing there: /stats is not available

        def __init__(self) -> None:
            self.result = SimulationResult()
            self.rounds = 0

        def run(self, requests: int, progress: Any = None) -> SimulationResult:
            self.rounds += 1
            if self.rounds == 1:
                dropped = _Dropped()
                watch = weakref.ref(dropped, lambda _: (os.kill(os.getpid(), signal.SIGINT),
                                                        sum(range(1000))))
                del dropped  # the callback runs, and swallows the KeyboardInterrupt
                assert watch() is None
            self.result.sent += requests
            return self.result

        def flush_feedback(self) -> None:
            """Nothing held back."""

    simulator = DroppingSimulator()
    options = DemoOptions(root=Path("."), max_requests=1_000, round_size=100)
    with pytest.raises(KeyboardInterrupt), _interrupts():
        _simulate(simulator, options, io.StringIO())  # type: ignore[arg-type]
    assert simulator.rounds == 1
