"""End to end: HTTP/1.1 pipelining. A client that pipelines requests and never reads the answers
holds a bounded part of the gateway's memory; a client that reads gets every answer, in order,
the refusal of malformed bytes included."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.configs import write_config
from tests.e2e.server import Server, serve

pytestmark = pytest.mark.e2e

# Requests the flooding client offers: 17 MB of them. Before the gateway bounded what it
# parses ahead, it took them in as fast as they came (15 MB in 2 s, 205 MiB once parsed).
FLOOD = 100_000
# The server's growth while it is flooded: what it parses ahead, its write buffer, allocator
# slack. Far under what the flood would take if it were read in.
GROWTH_BOUND_MIB = 40
# No byte taken for this long: the gateway stopped reading, as it should.
STALL_S = 2.0
READ_TIMEOUT_S = 120.0


def _predict(request_id: str) -> bytes:
    body = json.dumps({"features": [5.1, 3.5, 1.4, 0.2]}).encode()
    return (b"POST /predict HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            b"x-request-id: " + request_id.encode() + b"\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)))


def _answers(sock: socket.socket, count: int) -> list[tuple[int, str]]:
    """``count`` answers read from ``sock``: each one's status and X-Request-Id."""
    sock.settimeout(READ_TIMEOUT_S)
    buffer, at = b"", 0
    found: list[tuple[int, str]] = []
    while len(found) < count:
        end = buffer.find(b"\r\n\r\n", at)
        if end >= 0:
            status_line, *lines = buffer[at:end].decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines)
            after = end + 4 + int(headers["content-length"])
            if after <= len(buffer):
                found.append((int(status_line.split()[1]), headers.get("x-request-id", "")))
                at = after
                continue
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {len(found)} answers of {count}"
        buffer, at = buffer[at:] + chunk, 0
    return found


def _sent_without_reading(sock: socket.socket, data: bytes) -> int:
    """Sends ``data`` without reading anything, until all of it is sent or the peer has taken
    nothing for :data:`STALL_S`; how many bytes were sent."""
    sock.setblocking(False)
    view = memoryview(data)
    sent = 0
    while sent < len(data):
        try:
            sent += sock.send(view[sent:sent + (1 << 20)])
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], STALL_S)
            if not writable:
                break
    sock.setblocking(True)
    return sent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, champion_dir: Path) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("pipelining")
    config = write_config(directory, champion=champion_dir, mode="single",
                          store="sqlite:///outcomes.db")
    with serve(config, directory) as running:
        yield running


def test_a_client_pipelining_without_reading_holds_bounded_memory(server: Server) -> None:
    """One connection offers 100,000 pipelined predictions and reads nothing: the gateway's
    memory grows by a bounded amount, not by what the client offers, and it serves others."""
    with httpx.Client(base_url=server.url) as client:
        for _ in range(200):  # the prediction path's first allocations are not the flood's
            assert client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}
                               ).status_code == 200
    before = _rss_mib(server.process.pid)
    with _connect(server) as sock:
        sent = _sent_without_reading(
            sock, b"".join(_predict(f"flood-{i:06d}") for i in range(FLOOD)))
        growth = _rss_mib(server.process.pid) - before
        assert growth < GROWTH_BOUND_MIB, \
            f"{growth:.0f} MiB more while {sent} bytes were offered and no answer read"
        assert httpx.get(f"{server.url}/health").status_code == 200


def test_a_client_reading_only_once_it_has_sent_all_gets_every_answer_in_order(
    server: Server
) -> None:
    """The gateway stops reading while the queue is full and the answers go unread, and goes
    on where it stopped once they are read: nothing lost, nothing out of order."""
    count = 5_000
    requests = b"".join(_predict(f"late-{i:05d}") for i in range(count))
    with _connect(server) as sock:
        sender = threading.Thread(target=sock.sendall, args=(requests,))
        sender.start()
        sender.join(STALL_S)  # all sent, or the socket's buffers are full
        answers = _answers(sock, count)
        sender.join()
    assert answers == [(200, f"late-{i:05d}") for i in range(count)]


def test_a_client_pipelining_and_reading_gets_every_answer_in_order(server: Server) -> None:
    """5,000 pipelined requests whose answers are read as they come: all answered, in order."""
    count = 5_000
    requests = b"".join(_predict(f"read-{i:05d}") for i in range(count))
    with _connect(server) as sock:
        sender = threading.Thread(target=sock.sendall, args=(requests,))
        sender.start()
        answers = _answers(sock, count)
        sender.join()
    assert answers == [(200, f"read-{i:05d}") for i in range(count)]



def _until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(READ_TIMEOUT_S)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_requests_ahead_of_a_malformed_one_are_answered_before_its_400(server: Server) -> None:
    """HTTP/1.1 answers in order: the three whole requests get their answers, then the bytes
    the parser refuses get a 400, then the connection closes."""
    with _connect(server) as sock:
        sock.sendall(b"".join(_predict(f"bad-{i}") for i in range(3)) + b"GARBAGE\x00\r\n\r\n")
        received = _until_closed(sock)
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert [answer[:3] for answer in answers] == [b"200", b"200", b"200", b"400"], received
    assert [b"\r\nx-request-id: bad-%d\r\n" % i in answer for i, answer in
            enumerate(answers[:3])] == [True] * 3
    assert json.loads(received.rpartition(b"\r\n\r\n")[2])["error"] == "bad_request"


def test_clients_leaving_with_pipelined_requests_under_way_log_no_error(server: Server) -> None:
    """The request under way was not told of the disconnect, and wrote to the closed socket:
    an error and its traceback in the log for every such client."""
    for i in range(20):
        with _connect(server) as sock:
            sock.sendall(b"".join(_predict(f"gone-{i}-{j}") for j in range(3)))
    assert httpx.get(f"{server.url}/health").status_code == 200
    time.sleep(1)  # the answers under way end; the server's stop checks its log again
    assert "Traceback" not in server.output()
