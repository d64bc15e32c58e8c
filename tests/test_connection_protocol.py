"""The gateway's HTTP protocol: one write per answer, and the mark on a request whose body
came whole."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from router.gateway.body_deadline import BODY_ARRIVED
from router.gateway.connections import LimitedHttpToolsProtocol

SCOPES: list[dict[str, Any]] = []


class RecordingTransport(asyncio.Transport):
    """What the protocol wrote, one entry per write call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes the body; ``/stream`` answers in three pieces, ``/fail`` fails after its head."""
    SCOPES.append(dict(scope))  # as the app saw it when called
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for piece in (b"one", b"two"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body) or 2).encode())]})
    if scope["path"] == "/fail":
        raise RuntimeError("after the head")
    await send({"type": "http.response.body", "body": body or b"ok"})


async def exchange(*requests: bytes) -> RecordingTransport:
    SCOPES.clear()
    config = Config(app=answer, http="httptools", lifespan="off", access_log=False,
                    log_level="critical")
    config.load()
    protocol = LimitedHttpToolsProtocol(config=config, server_state=ServerState(),
                                        app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for request in requests:
        protocol.data_received(request)
        for _ in range(20):  # the ASGI task's turns
            await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


def post(path: str, body: bytes, *extra: bytes) -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n" + b"".join(extra) + b"\r\n" + body)


def test_an_answer_is_one_write_with_its_head_and_body() -> None:
    transport = asyncio.run(exchange(post("/predict", b'{"a":1}')))
    [written] = transport.writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert written.endswith(b'\r\n\r\n{"a":1}')


def test_each_answer_on_a_kept_alive_connection_is_one_write() -> None:
    transport = asyncio.run(exchange(post("/a", b"first"), post("/b", b"second")))
    assert [w.split(b"\r\n\r\n")[1] for w in transport.writes] == [b"first", b"second"]


def test_pipelined_requests_are_answered_in_order() -> None:
    transport = asyncio.run(exchange(post("/a", b"first") + post("/b", b"second")))
    joined = b"".join(transport.writes)
    assert joined.count(b"HTTP/1.1 200 OK") == 2
    assert joined.index(b"first") < joined.index(b"second")


def test_a_streamed_answer_sends_its_head_with_the_first_piece() -> None:
    transport = asyncio.run(exchange(post("/stream", b"")))
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n3\r\none\r\n")
    assert transport.writes[1:] == [b"3\r\ntwo\r\n", b"0\r\n\r\n"]


def test_a_head_request_gets_its_head_though_no_body_is_written() -> None:
    request = b"HEAD /x HTTP/1.1\r\nhost: x\r\n\r\n"
    transport = asyncio.run(exchange(request))
    [written] = transport.writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n") and written.endswith(b"\r\n\r\n")


def test_continue_goes_out_before_the_body_is_sent() -> None:
    """A client that sent ``Expect: 100-continue`` waits for it: it is not held."""
    config_request = post("/e", b"", b"expect: 100-continue\r\n").replace(
        b"content-length: 0", b"content-length: 4")
    transport = asyncio.run(exchange(config_request, b"body"))
    assert transport.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert transport.writes[1].endswith(b"\r\n\r\nbody")


@pytest.mark.filterwarnings("ignore")
def test_an_application_failing_after_its_head_gets_the_head_and_a_closed_connection() -> None:
    transport = asyncio.run(exchange(post("/fail", b"")))
    assert transport.writes == [transport.writes[0]]
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.closed


def test_a_request_whose_body_came_with_its_headers_is_marked_so() -> None:
    asyncio.run(exchange(post("/a", b"whole"), post("/b", b"")))
    assert [scope.get(BODY_ARRIVED) for scope in SCOPES] == [True, True]


def test_a_request_whose_body_is_still_coming_is_not_marked() -> None:
    """Its app starts before the rest arrives: the body deadline must watch it."""
    request = post("/a", b"0123456789")
    transport = asyncio.run(exchange(request[:-4], request[-4:]))
    assert BODY_ARRIVED not in SCOPES[0]
    assert transport.writes[0].endswith(b"0123456789")
