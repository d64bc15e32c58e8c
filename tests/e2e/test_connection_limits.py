"""End to end: slow and stalled clients meet the header and body timeouts, the connection cap,
and a SIGTERM that does not wait for them."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.configs import write_config
from tests.e2e.server import Server, serve

pytestmark = pytest.mark.e2e

CLIENTS = 100
# Generous: a stalled connection is either closed by the limit or held for ever.
CLOSED_WITHIN_S = 30.0
# SHUTDOWN_GRACE_S + the outcome log's flush bound (router/gateway/connections.py); a shutdown ends
# within shadow.drain_s plus this.
SHUTDOWN_BOUND_S = 15.0


def _config(tmp_path: Path, champion: Path, **limits: float) -> Path:
    return write_config(tmp_path, champion=champion, mode="single",
                        store="sqlite:///outcomes.db", limits=limits)


@contextmanager
def _connections(server: Server, count: int) -> Iterator[list[socket.socket]]:
    host, port = server.url.removeprefix("http://").split(":")
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection((host, int(port))))
            sock.settimeout(CLOSED_WITHIN_S)
            sockets.append(sock)
        yield sockets


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a socket.timeout if it never does."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _stalled_body(host: str) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            "content-length: 100\r\n\r\n{\"features\": ").encode()


def test_stalled_bodies_get_408_and_are_closed(tmp_path: Path, champion_dir: Path) -> None:
    """100 connections that send their headers and stall the body: each gets a 408 JSON
    answer naming limits.body_timeout_s and is closed; the gateway still answers others."""
    path = _config(tmp_path, champion_dir, body_timeout_s=1)
    with serve(path, tmp_path) as server, _connections(server, CLIENTS) as sockets:
        for sock in sockets:
            sock.sendall(_stalled_body("gateway"))
        answers = [_read_until_closed(sock) for sock in sockets]
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), answer
            assert b"connection: close" in head.lower()
            error = json.loads(body)
            assert error["error"] == "request_timeout"
            assert "limits.body_timeout_s = 1 s" in error["message"]
        body = {"features": [5.1, 3.5, 1.4, 0.2]}
        assert httpx.post(f"{server.url}/predict", json=body).status_code == 200


def test_stalled_headers_are_closed(tmp_path: Path, champion_dir: Path) -> None:
    """Connections that send half their headers get a 408 and are closed; connections that
    send nothing at all are closed without an answer."""
    path = _config(tmp_path, champion_dir, header_timeout_s=1)
    with serve(path, tmp_path) as server, _connections(server, CLIENTS) as sockets:
        half, silent = sockets[: CLIENTS // 2], sockets[CLIENTS // 2:]
        for sock in half:
            sock.sendall(b"POST /predict HTTP/1.1\r\nhost: gateway\r\ncontent-ty")
        for sock in half:
            answer = _read_until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"limits.header_timeout_s = 1 s" in answer
        for sock in silent:
            assert _read_until_closed(sock) == b""
        assert httpx.get(f"{server.url}/health").status_code == 200


def test_a_kept_alive_connection_stalling_its_next_headers_is_closed(
    tmp_path: Path, champion_dir: Path
) -> None:
    """The header timer also runs for a kept-alive connection's second request, whether it
    stalls in its first packet or after a byte at a time."""
    path = _config(tmp_path, champion_dir, header_timeout_s=1)
    with serve(path, tmp_path) as server, _connections(server, 2) as [whole, trickle]:
        for sock in (whole, trickle):
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: gateway\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        whole.sendall(b"POST /predict HTTP/1.1\r\nhost: gateway\r\ncontent-ty")
        for byte in b"GET /hea":
            trickle.sendall(bytes([byte]))
            time.sleep(0.05)
        for sock in (whole, trickle):
            answer = _read_until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"limits.header_timeout_s = 1 s" in answer


def test_connections_over_the_cap_are_refused(tmp_path: Path, champion_dir: Path) -> None:
    """With limits.max_connections open, the next connection gets a 503 and is closed."""
    cap = 20
    path = _config(tmp_path, champion_dir, max_connections=cap, header_timeout_s=600)
    with serve(path, tmp_path) as server, _connections(server, cap) as held:
        # Each held connection completes a request, so the server has surely counted it,
        # then begins another and stalls: neither the keep-alive timer nor (at 600 s) the
        # header timer closes it, however slow the machine.
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: gateway\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"GET /hea")
        with _connections(server, 1) as [extra]:
            answer = _read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "too_many_connections"
        for sock in held:
            sock.close()
        deadline = time.monotonic() + CLOSED_WITHIN_S
        while httpx.get(f"{server.url}/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_sigterm_with_stalled_clients_ends_within_the_bound(
    tmp_path: Path, champion_dir: Path
) -> None:
    """SIGTERM while 100 clients stall (50 mid-body, 50 mid-headers, the timeouts far off):
    the gateway stops cleanly within shadow.drain_s + the documented bound."""
    drain_s = 2
    path = _config(tmp_path, champion_dir, header_timeout_s=600, body_timeout_s=600)
    config = json.loads(path.read_text())
    config["shadow"] = {"drain_s": drain_s}
    path.write_text(json.dumps(config))
    with serve(path, tmp_path) as server, _connections(server, CLIENTS) as sockets:
        for i, sock in enumerate(sockets):
            sock.sendall(_stalled_body("gateway") if i % 2 else b"GET /stats HTTP/1.1\r\nho")
        assert httpx.post(f"{server.url}/predict",
                          json={"features": [5.1, 3.5, 1.4, 0.2]}).status_code == 200
        time.sleep(0.5)  # every stalled request has reached the server
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(drain_s + SHUTDOWN_BOUND_S + 5)
        elapsed = time.monotonic() - started
        assert code in (0, -signal.SIGTERM)
        assert elapsed < drain_s + SHUTDOWN_BOUND_S, f"shutdown took {elapsed:.1f} s"
        for sock in sockets:
            assert not _read_until_closed(sock).startswith(b"HTTP/1.1 200")
