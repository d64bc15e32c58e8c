"""The gateway's HTTP protocol: one write per answer, the mark on a request whose body came
whole, and pipelined requests parsed a bounded way ahead of their answers."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from router.gateway.body_deadline import BODY_ARRIVED
from router.gateway.connections import LimitedHttpToolsProtocol

SCOPES: list[dict[str, Any]] = []


class RecordingTransport(asyncio.Transport):
    """What the protocol wrote, one entry per write call; a write once closed never reaches
    the client, and is kept apart (uvloop's transport raises for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.open_at_end = False  # still open when the client hung up
        self.reading = True
        self.written_once_closed: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        (self.written_once_closed if self.closed else self.writes).append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


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


def connected(transport: RecordingTransport, **options: Any) -> LimitedHttpToolsProtocol:
    """The gateway's protocol over ``transport``, serving the test app."""
    SCOPES.clear()
    config = Config(app=answer, http="httptools", lifespan="off", access_log=False,
                    log_level="critical", **options)
    config.load()
    protocol = LimitedHttpToolsProtocol(config=config, server_state=ServerState(),
                                        app_state={})
    protocol.connection_made(transport)
    return protocol


async def exchange(*requests: bytes) -> RecordingTransport:
    transport = RecordingTransport()
    protocol = connected(transport)
    for request in requests:
        protocol.data_received(request)
        for _ in range(20):  # the ASGI task's turns
            await asyncio.sleep(0)
    transport.open_at_end = not transport.closed
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


class DirectGateway:
    """Stands for the router's gateway: answers ``/predict`` itself, everything else by ASGI."""

    def __init__(self, *, open_: bool = True, fail: bool = False) -> None:
        self.open = open_
        self.fail = fail
        self.direct: list[bytes] = []
        self.by_asgi: list[str] = []
        self.tasks_seen: list[asyncio.Task[Any] | None] = []

    def direct_predict_open(self) -> bool:
        return self.open

    async def answer_predict(self, scope: dict[str, Any], body: bytes
                             ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if self.fail:
            raise RuntimeError("a bug")
        self.direct.append(body)
        await asyncio.sleep(0)  # as the micro-batcher's future makes it wait
        self.tasks_seen.append(asyncio.current_task())
        return 200, [(b"content-length", str(len(body)).encode()),
                     (b"x-request-id", scope["path"].encode())], body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.by_asgi.append(scope["path"])
        await answer(scope, receive, send)


def _config(app: Any) -> Config:
    config = Config(app=app, http="httptools", lifespan="off", access_log=False,
                    log_level="critical", proxy_headers=True)
    config.load()
    return config


async def exchange_with(app: Any, *requests: bytes) -> RecordingTransport:
    config = _config(app)
    state = ServerState()
    state.default_headers = [(b"date", b"Sat, 05 Dec 2026 00:00:00 GMT")]  # as the server keeps
    protocol = LimitedHttpToolsProtocol(config=config, server_state=state, app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for request in requests:
        protocol.data_received(request)
        for _ in range(20):
            await asyncio.sleep(0)
    transport.open_at_end = not transport.closed
    protocol.connection_lost(None)
    return transport


def test_a_whole_predict_is_answered_by_the_gateway_in_one_write() -> None:
    """Behind uvicorn's proxy-headers wrapper too; kept alive, with the server's date."""
    gateway = DirectGateway()
    transport = asyncio.run(exchange_with(gateway, post("/predict", b'{"features":[1]}'),
                                          post("/predict", b"second")))
    assert gateway.direct == [b'{"features":[1]}', b"second"] and gateway.by_asgi == []
    first, second = transport.writes
    assert first.startswith(b"HTTP/1.1 200 OK\r\ndate: ")
    assert b"\r\nx-request-id: /predict\r\n" in first and b"connection: close" not in first
    assert first.endswith(b'\r\n\r\n{"features":[1]}') and second.endswith(b"\r\n\r\nsecond")
    assert transport.open_at_end


def test_a_whole_predict_runs_in_no_task_and_is_counted_while_it_runs() -> None:
    """A task per answer cost its creation, asyncio's registry of tasks and a turn of the
    loop (router.gateway.driven); uvicorn's shutdown still sees the answer under way."""
    gateway = DirectGateway()
    state = ServerState()
    running: list[int] = []

    async def main() -> None:
        protocol = LimitedHttpToolsProtocol(config=_config(gateway), server_state=state,
                                            app_state={})
        protocol.connection_made(RecordingTransport())
        protocol.data_received(post("/predict", b"x"))
        running.append(len(state.tasks))
        for _ in range(5):
            await asyncio.sleep(0)
        running.append(len(state.tasks))

    asyncio.run(main())
    assert gateway.direct == [b"x"] and gateway.tasks_seen == [None]
    assert running == [1, 0]


@pytest.mark.parametrize("first_read", [-4, -10], ids=["part of the body", "no body"])
def test_a_predict_whose_body_is_still_coming_goes_through_the_app(first_read: int) -> None:
    gateway = DirectGateway()
    request = post("/predict", b"0123456789")
    transport = asyncio.run(exchange_with(gateway, request[:first_read], request[first_read:]))
    assert gateway.direct == [] and gateway.by_asgi == ["/predict"]
    assert transport.writes[0].endswith(b"0123456789")


@pytest.mark.parametrize(("request_bytes", "reason"), [
    (post("/feedback", b"{}"), "another route"),
    (post("/predict", b"", b"expect: 100-continue\r\n"), "a client waiting to send"),
    (b"GET /predict HTTP/1.1\r\nhost: x\r\n\r\n", "another method"),
])
def test_other_requests_go_through_the_app(request_bytes: bytes, reason: str) -> None:
    gateway = DirectGateway()
    asyncio.run(exchange_with(gateway, request_bytes))
    assert gateway.direct == [] and len(gateway.by_asgi) == 1, reason


def test_a_gateway_closed_to_the_direct_path_gets_every_request() -> None:
    """As when a middleware was added: it must see /predict too."""
    gateway = DirectGateway(open_=False)
    asyncio.run(exchange_with(gateway, post("/predict", b"x")))
    assert gateway.direct == [] and gateway.by_asgi == ["/predict"]


def test_pipelined_predictions_are_answered_in_order() -> None:
    gateway = DirectGateway()
    transport = asyncio.run(exchange_with(gateway, post("/predict", b"first")
                                          + post("/predict", b"second")))
    joined = b"".join(transport.writes)
    assert joined.count(b"HTTP/1.1 200 OK") == 2
    assert joined.index(b"first") < joined.index(b"second")


def test_a_client_that_asks_to_close_gets_its_answer_then_the_close() -> None:
    gateway = DirectGateway()
    request = post("/predict", b"x", b"connection: close\r\n")
    transport = asyncio.run(exchange_with(gateway, request))
    [written] = transport.writes
    assert b"\r\nconnection: close\r\n" in written and written.endswith(b"\r\n\r\nx")
    assert transport.closed


def test_a_failure_outside_the_error_renderer_is_a_500_and_a_close() -> None:
    gateway = DirectGateway(fail=True)
    transport = asyncio.run(exchange_with(gateway, post("/predict", b"x")))
    [written] = transport.writes
    head, _, body = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") and transport.closed
    assert json.loads(body)["error"] == "internal_error"


async def kept_alive(timeout_s: int, *sends_at: float, until: float) -> list[float]:
    """Requests sent at ``sends_at`` seconds on one connection; when it was closed, if."""
    transport = RecordingTransport()
    protocol = connected(transport, timeout_keep_alive=timeout_s)
    loop = asyncio.get_running_loop()
    start = loop.time()
    closed_at: list[float] = []
    pending = list(sends_at)
    while loop.time() - start < until and not closed_at:
        if pending and loop.time() - start >= pending[0]:
            pending.pop(0)
            protocol.data_received(post("/a", b"x"))
        await asyncio.sleep(0.01)
        if transport.closed:
            closed_at.append(loop.time() - start)
    protocol.connection_lost(None)
    return closed_at


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout() -> None:
    [closed_at] = asyncio.run(kept_alive(1, 0.0, until=3))
    assert 0.95 <= closed_at <= 1.5


def test_a_connection_in_use_stays_open_until_idle_for_the_timeout() -> None:
    """Requests every 0.6 s hold it open past 1 s; it closes 1 s after the last answer."""
    [closed_at] = asyncio.run(kept_alive(1, 0.0, 0.6, 1.2, until=4))
    assert 2.15 <= closed_at <= 2.7


def test_an_answers_head_is_what_uvicorn_writes_and_a_bad_header_value_is_refused() -> None:
    from router.gateway.direct_predict import response_bytes

    date = [(b"date", b"Sat, 05 Dec 2026 00:00:00 GMT")]
    headers = [(b"content-length", b"2"), (b"x-request-id", b"a\tb")]
    assert response_bytes(200, headers, date, b"{}", keep_alive=False) == (
        b"HTTP/1.1 200 OK\r\ndate: Sat, 05 Dec 2026 00:00:00 GMT\r\ncontent-length: 2\r\n"
        b"x-request-id: a\tb\r\nconnection: close\r\n\r\n{}")
    with pytest.raises(ValueError, match="x-variant"):
        response_bytes(200, [*headers, (b"x-variant", b"a\r\nset-cookie: x")], date, b"{}",
                       keep_alive=True)
    with pytest.raises(ValueError, match="date"):
        response_bytes(200, headers, [(b"date", b"\x00")], b"{}", keep_alive=True)
    # Byte by byte, the values refused are those uvicorn's own check refuses.
    from uvicorn.protocols.http.httptools_impl import HEADER_VALUE_RE

    for byte in range(256):
        value = b"a" + bytes([byte]) + b"b"
        try:
            response_bytes(200, [(b"x-variant", value)], date, b"{}", keep_alive=True)
            refused = False
        except ValueError:
            refused = True
        assert refused == (HEADER_VALUE_RE.search(value) is not None), byte


def test_a_read_of_thousands_of_pipelined_requests_is_parsed_a_few_at_a_time() -> None:
    """One read of 5,000 pipelined requests: reading stops, and what is parsed of them holds
    well under a megabyte (each parsed request is about 2 KB); then every one is answered in
    order, and reading goes on once they are."""
    count = 5_000
    flood = b"".join(post("/r", b"%05d" % i) for i in range(count))
    transport = RecordingTransport()
    parsed: list[int] = []

    async def main() -> None:
        protocol = connected(transport)
        tracemalloc.start()
        try:
            protocol.data_received(flood)
            parsed.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
        parsed.append(transport.reading)
        for _ in range(count):
            for _ in range(100):  # the ASGI tasks' turns
                await asyncio.sleep(0)
            if b"".join(transport.writes).count(b"HTTP/1.1 200 OK") == count:
                break
        protocol.connection_lost(None)

    asyncio.run(main())
    held, reading_while_flooded = parsed
    assert held < 1_000_000 and not reading_while_flooded
    answers = b"".join(transport.writes).split(b"HTTP/1.1 200 OK")[1:]
    assert [a.rpartition(b"\r\n\r\n")[2] for a in answers] == [b"%05d" % i for i in range(count)]
    assert transport.reading


def test_reading_stops_while_the_client_leaves_its_answers_unread() -> None:
    """Past the transport's high-water mark nothing more is read, since a direct answer is
    written without waiting for the buffer to drain; below it again, reading goes on."""
    reading: list[bool] = []

    async def main() -> None:
        protocol = LimitedHttpToolsProtocol(config=_config(DirectGateway()),
                                            server_state=ServerState(), app_state={})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.pause_writing()
        reading.append(transport.reading)
        protocol.resume_writing()
        reading.append(transport.reading)
        protocol.connection_lost(None)

    asyncio.run(main())
    assert reading == [False, True]


MALFORMED = b"GARBAGE\x00\r\n\r\n"


@pytest.mark.parametrize("app", [answer, DirectGateway()], ids=["by ASGI", "direct"])
def test_requests_ahead_of_malformed_bytes_are_answered_before_the_400(app: Any) -> None:
    """HTTP/1.1 answers in order: the three whole requests get theirs, then the 400, then
    the connection closes."""
    requests = b"".join(post("/predict", b"%d" % i) for i in range(3))
    transport = asyncio.run(exchange_with(app, requests + MALFORMED))
    answers = b"".join(transport.writes).split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200", b"200", b"200", b"400"]
    assert [a.rpartition(b"\r\n\r\n")[2] for a in answers[:3]] == [b"0", b"1", b"2"]
    assert json.loads(answers[3].partition(b"\r\n\r\n")[2])["error"] == "bad_request"
    assert transport.closed


def test_headers_too_large_after_whole_requests_get_their_431_after_those_answers() -> None:
    oversized = b"GET /x HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n"
    transport = asyncio.run(exchange_with(DirectGateway(), post("/predict", b"0") + oversized))
    answers = b"".join(transport.writes).split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200", b"431"] and transport.closed


def test_a_malformed_chunk_of_a_queued_request_gets_the_400_after_the_answers_ahead() -> None:
    """The refused bytes are that request's own: it gets the 400, not an answer."""
    bad_chunk = (b"POST /stream HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                 b"zz\r\n")
    transport = asyncio.run(exchange_with(DirectGateway(), post("/predict", b"0") + bad_chunk))
    answers = b"".join(transport.writes).split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200", b"400"] and transport.closed


def test_a_malformed_chunk_of_the_request_under_way_gets_the_400_at_once() -> None:
    request = post("/a", b"").replace(b"content-length: 0", b"transfer-encoding: chunked")
    transport = asyncio.run(exchange_with(DirectGateway(), request + b"zz\r\n"))
    [written] = transport.writes
    assert written.startswith(b"HTTP/1.1 400 ") and transport.closed


@pytest.mark.parametrize("app", [answer, DirectGateway()], ids=["by ASGI", "direct"])
def test_a_client_leaving_with_pipelined_requests_gets_nothing_written_after_the_close(
    app: Any
) -> None:
    """uvicorn marks only the request parsed last as disconnected: the one under way wrote
    to the closed transport, and uvloop's raises (an error logged for every such client)."""
    transport = RecordingTransport()

    async def main() -> None:
        protocol = LimitedHttpToolsProtocol(config=_config(app), server_state=ServerState(),
                                            app_state={})
        protocol.connection_made(transport)
        protocol.data_received(b"".join(post("/predict", b"%d" % i) for i in range(3)))
        protocol.connection_lost(None)
        for _ in range(20):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert transport.closed and transport.written_once_closed == []
