"""Start ``router serve`` as a real process on a free loopback port, and stop it with SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx

# Test models (tests.fixture_models) must be importable by the server process.
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    killed: bool = False

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as an orchestrator sends it, then wait for the process to end.

        uvicorn shuts down gracefully and then re-raises the signal, so a clean stop of a
        single process ends with -SIGTERM (a supervisor of several workers exits 0).
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it; no clean shutdown is expected."""
        self.killed = True
        self.process.kill()
        self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve(config: Path, cwd: Path, *, workers: int = 1, ready_timeout: float = 60,
          extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """A running gateway; on exit it is stopped with SIGTERM and must shut down cleanly."""
    port = free_port()
    log = cwd / f"server-{port}.log"
    command = [sys.executable, "-m", "router.cli", "serve", "--config", str(config),
               "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": str(REPO_ROOT),
                                        **(extra_env or {})})
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_ready(server, ready_timeout)
        yield server
    finally:
        if not server.killed:  # a killed server has no clean exit to check
            code = server.stop()
            output = server.output()
            assert code in (0, -signal.SIGTERM), f"server exited {code}:\n{output}"
            assert "Application shutdown complete" in output, output
            assert "Traceback" not in output, output


def wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server died at start:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not ready after {timeout} s:\n{server.output()}")
