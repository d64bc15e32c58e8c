"""Limits on the connection that uvicorn leaves to the application: header timeout, a cap on
open connections, and a shutdown that does not wait for clients that stalled.

uvicorn (its httptools protocol, which ``router serve`` uses) arms a timer only between two
requests (``timeout_keep_alive``), and every byte received disarms it: a client that opens a
connection and sends nothing, or sends its headers a byte at a time, holds it for ever; and
``limit_concurrency`` answers 503 only once a request's headers are in, so connections that
never finish their headers are never counted out. :class:`LimitedHttpToolsProtocol` adds:

* a header timer, from the connection's start (or a request's first byte, on a kept-alive
  connection) to the end of that request's headers: past ``limits.header_timeout_s`` the
  connection is closed, with a 408 answer when a request had begun;
* a cap of ``limits.max_connections`` open connections per worker process: the next one gets
  a 503 answer and is closed at once;
* a cap of :data:`MAX_HEADER_BYTES` on a request's line and headers: the HTTP parser keeps a
  header it has not seen the end of, so one that never ends would take memory without bound;
  past the cap the request gets a 431 answer and the connection is closed;
* a request the HTTP parser refuses (a control character in a header, a malformed chunk) is
  answered with the JSON error every other refusal gets, naming the parser's reason, where
  uvicorn answers plain text; and, as the 431, after the answers of the whole requests
  pipelined ahead of it, where uvicorn wrote it at once and closed the connection under them;
* at shutdown, a connection whose request body is still arriving is closed (uvicorn would
  wait up to its graceful timeout for it): the request was never answered, so nothing it
  carried is lost, and the client may retry on another replica;
* pipelined requests parsed at most :data:`~router.gateway.pipelining.MAX_PIPELINED` ahead
  of their answers, and no more read while the client leaves its answers unread
  (:mod:`router.gateway.pipelining`); when a client leaves with requests pipelined, the one
  being answered learns of it too (uvicorn tells only the one parsed last, and the other
  wrote to the closed socket: an error logged per such client);
* one write per answer, head and body together (:mod:`router.gateway.response_writes`);
* ``POST /predict`` with its whole body in hand answered without the ASGI exchange
  (:mod:`router.gateway.direct_predict`).

The body timeout is the application's (:mod:`router.gateway.body_deadline`). The settings are
read once per process from :data:`LIMITS_ENV`, which ``router serve`` sets from the YAML's
``limits:`` before uvicorn starts its workers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass
from functools import cache
from typing import Any

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from router.gateway.body_deadline import BODY_ARRIVED
from router.gateway.direct_predict import Predicting, direct_gateway, response_bytes
from router.gateway.driven import Driven
from router.gateway.pipelining import MAX_PIPELINED, PARSE_PIECE_BYTES, BoundedReads
from router.gateway.response_writes import JoinedWrites

__all__ = ["LIMITS_ENV", "SHUTDOWN_GRACE_S", "ConnectionLimits", "LimitedHttpToolsProtocol",
           "connection_limits"]

LIMITS_ENV = "ROUTER_CONNECTION_LIMITS"
# How long a SIGTERM waits for requests whose body is in (their model calls take milliseconds;
# a /stats over a large log may take seconds) before uvicorn cancels them; then the app stops:
# shadow work for up to shadow.drain_s, the outcome log's flush for up to 10 s (a writer process
# that reads nothing is then given up on, what it was not handed spilled). So a shutdown ends
# within shadow.drain_s + 15 s and a little: 25 s with the defaults, under Kubernetes' grace
# period (deploy/kubernetes sets 45 s).
SHUTDOWN_GRACE_S = 5
# A request's line and headers, at most: four times nginx's default header buffers (4 x 8 KiB),
# so that a thousand connections (limits.max_connections) hold at most 64 MiB of them.
MAX_HEADER_BYTES = 65_536
log = logging.getLogger("router.gateway.connections")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    max_connections: int = 1_000

    def to_env(self) -> str:
        return json.dumps({"header_timeout_s": self.header_timeout_s,
                           "max_connections": self.max_connections})


@cache
def connection_limits() -> ConnectionLimits:
    """This process's limits: :data:`LIMITS_ENV`'s, else the defaults."""
    raw = os.environ.get(LIMITS_ENV)
    if not raw:
        return ConnectionLimits()
    values = json.loads(raw)
    return ConnectionLimits(float(values["header_timeout_s"]), int(values["max_connections"]))


def _answer(status: bytes, code: str, message: str) -> bytes:
    body = json.dumps({"error": code, "message": message, "detail": []}).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


class _HeadersTooLarge(Exception):
    """Raised in the parser's callback for headers over :data:`MAX_HEADER_BYTES`."""


def _parsed_size(protocol: HttpToolsProtocol) -> int:
    """The request's target and headers as parsed so far, in bytes (each header's name, value,
    ": " and line end)."""
    return len(protocol.url) + sum(len(name) + len(value) + 4 for name, value in protocol.headers)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a connection cap and a shutdown
    that drops stalled uploads (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = connection_limits()
        self._header_timer: asyncio.TimerHandle | None = None
        self._request_begun = False
        self._writes: JoinedWrites | None = None
        self._direct: Predicting | None = None  # the gateway, when it may answer /predict
        self._receiving = False  # within data_received
        self._held: RequestResponseCycle | None = None  # a /predict, until its body is in
        self._answering: RequestResponseCycle | None = None  # the one being answered
        self._idle_since: float | None = None  # when the last answer went, while no request
        self._idle_timer: asyncio.TimerHandle | None = None
        self._in_body = False  # between a request's headers and its end
        self._header_bytes = 0  # received since the current request's headers began
        self._unparsed = b""  # read while the pipeline was full; parsed as it drains
        self._parse_due = False  # a turn of the loop will parse self._unparsed
        self._refusal: bytes | None = None  # a 400 or 431, once the answers ahead of it went

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = BoundedReads(transport, self._may_read)
        self._writes = JoinedWrites(transport)
        self._direct = None if self.access_log else direct_gateway(self.app)
        if len(self.connections) > self._limits.max_connections:
            log.warning("refused a connection: %d open, limits.max_connections = %d",
                        len(self.connections) - 1, self._limits.max_connections)
            transport.write(_answer(
                b"503 Service Unavailable", "too_many_connections",
                f"the gateway holds limits.max_connections = {self._limits.max_connections} "
                "connections; retry later"))
            transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        answering = self._answering
        if answering is not None and not answering.response_complete:
            # uvicorn tells only the request parsed last: one pipelined ahead of it, under
            # way, would write to the closed transport, which uvloop's refuses with an error.
            answering.disconnected = True
            answering.message_event.set()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._unparsed:  # a read that came as reading was paused: after what is kept
            self._unparsed += data
            return
        if self._refusal is not None:
            return  # nothing after bytes the parser refused is read
        self._receiving = True
        try:
            if len(data) <= PARSE_PIECE_BYTES:  # most reads: a request or a few
                # _parse, inlined: this is every request's path.
                if not self._in_body:
                    self._header_bytes += len(data)
                super().data_received(data)
            else:
                self._parse_in_pieces(data)
        finally:
            self._receiving = False
        held, self._held = self._held, None
        if held is not None:
            if held.more_body or held.disconnected:
                # The rest of its body is to come: the app reads it under its deadline, and
                # its first read must not wait for the part already here (on_body).
                held.message_event.set()
                self._join_writes(held)
                super()._start_asgi_task(held, self.app)
            else:
                self._start_direct(held)
        cycle = self.cycle
        if cycle is not None and not cycle.more_body and not cycle.response_started:
            # Its app has not run yet (it starts on a later turn of the loop), and its body
            # is all here: no body deadline to keep (router.gateway.body_deadline).
            cycle.scope[BODY_ARRIVED] = True  # type: ignore[literal-required]
        if self._refusal is not None:
            return
        if self._request_begun and self._header_timer is None:
            # A kept-alive connection's next request began and its headers are not all in.
            # Armed here rather than at its first byte: most requests arrive whole, and a
            # timer armed and cancelled per request was about 3 % of the gateway's time.
            self._arm_header_timer()
        if not self._in_body and self._header_bytes > MAX_HEADER_BYTES:
            self._refuse_headers()

    def _parse(self, data: bytes | memoryview) -> None:
        if not self._in_body:
            # A read (or a piece of one) that begins in a request's headers; the count starts
            # again where they end (on_headers_complete), so that a read holding the end of
            # the headers and the start of a large body is no fault. What the parser holds of
            # headers not yet complete is thus at most the cap and one read.
            self._header_bytes += len(data)
        super().data_received(data)  # type: ignore[arg-type]  # httptools reads a view too

    def _parse_in_pieces(self, data: bytes) -> None:
        """Parse ``data`` until the pipeline is full; keep the rest and stop reading."""
        view = memoryview(data)
        for start in range(0, len(data), PARSE_PIECE_BYTES):
            if len(self.pipeline) >= MAX_PIPELINED:
                self._unparsed = bytes(view[start:])
                self.flow.pause_reading()
                return
            self._parse(view[start:start + PARSE_PIECE_BYTES])
            if self._refusal is not None or self not in self.connections:
                return  # refused (400, 431), or handed to a WebSocket protocol

    def _may_parse(self) -> bool:
        """Room in the pipeline, the client takes its answers, and the parser refused none."""
        return len(self.pipeline) < MAX_PIPELINED and not self.flow.write_paused \
            and self._refusal is None

    def _may_read(self) -> bool:
        return not self._unparsed and self._may_parse()

    def _read_more(self) -> None:
        """Go on parsing, if the bound allows: first what was kept, then the socket."""
        if not self._may_parse():
            return
        if not self._unparsed:
            self.flow.resume_reading()
        elif not self._parse_due:
            # On the loop's next turn, as a read would come: parsed here, a request answered
            # at once would be back in this method before the one that let it in returned.
            self._parse_due = True
            self.loop.call_soon(self._parse_kept)

    def _parse_kept(self) -> None:
        self._parse_due = False
        kept, self._unparsed = self._unparsed, b""
        if self.transport.is_closing() or self._refusal is not None:
            return
        self.data_received(kept)
        self._read_more()

    def pause_writing(self) -> None:
        # The client leaves its answers unread: what it sends next waits in the socket. The
        # answers of requests already parsed are still written (a direct one without waiting
        # for the buffer to drain): at most the pipeline's.
        super().pause_writing()
        self.flow.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._read_more()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle is self._held:
            # Held for a direct answer, which reads the body as a whole: uvicorn's event that
            # wakes an app waiting for more is set only if it goes to the app after all
            # (data_received). Its three sets cost about 0.4 µs a request.
            cycle.body += body
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        cycle = self.cycle
        if cycle is not None and cycle is self._held:
            cycle.more_body = False
            return
        super().on_message_complete()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._idle_since = None

    def on_headers_complete(self) -> None:
        # The count is of whole reads: the last one may hold the start of a body too. Only
        # past the cap are the headers themselves measured (a sum over them, too dear for
        # every request).
        if self._header_bytes > MAX_HEADER_BYTES and _parsed_size(self) > MAX_HEADER_BYTES:
            raise _HeadersTooLarge  # stops the parser; answered by send_400_response
        if self._header_timer is not None:
            self._disarm_header_timer()
        self._request_begun = False
        self._in_body = True
        self._header_bytes = 0
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        # A pipelined request waits its turn: its cycle keeps the transport itself. A
        # /predict held for a direct answer is written by this protocol in one call; its
        # writes are joined only if it goes to the app after all (data_received).
        if cycle is not before and (before is None or before.response_complete) \
                and cycle is not self._held:
            self._join_writes(cycle)

    def _join_writes(self, cycle: RequestResponseCycle) -> None:
        if self._writes is not None:
            self._writes.start(cycle)
            cycle.transport = self._writes  # type: ignore[assignment]

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._answering = cycle
        direct = self._direct
        if self._receiving and direct is not None and app is self.app \
                and cycle.scope["path"] == "/predict" and cycle.scope["method"] == "POST" \
                and not cycle.waiting_for_100_continue and direct.direct_predict_open():
            # Decided once this data_received has parsed what it holds of the body.
            self._held = cycle
            return
        super()._start_asgi_task(cycle, app)

    def _start_direct(self, cycle: RequestResponseCycle) -> None:
        # Stepped without a task (router.gateway.driven), listed where uvicorn's shutdown
        # waits for the requests under way.
        Driven(self._answer_direct(cycle), self.loop, self.tasks)

    async def _answer_direct(self, cycle: RequestResponseCycle) -> None:
        """Answer a whole ``POST /predict`` through the gateway and write it in one call."""
        assert self._direct is not None
        try:
            status, headers, body = await self._direct.answer_predict(
                cycle.scope, bytes(cycle.body))
            answer = response_bytes(status, headers, self.server_state.default_headers, body,
                                    keep_alive=cycle.keep_alive)
        except Exception as exc:
            # Past the error renderer (which answers every failure of the route): a bug.
            log.exception("unexpected error answering POST /predict")
            answer = _answer(b"500 Internal Server Error", "internal_error",
                             f"unexpected error: {type(exc).__name__}")
            cycle.keep_alive = False
        except BaseException:  # cancelled at shutdown: nobody is answered
            self.transport.close()
            raise
        if cycle.disconnected:
            return
        cycle.response_started = True
        self.transport.write(answer)
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def on_response_complete(self) -> None:
        # uvicorn's own, but for the keep-alive timeout: uvicorn arms a timer after every
        # answer and cancels it at the next request's first byte (about 1.5 µs a request).
        # Here one timer per connection looks, when it fires, at how long it has been idle.
        if self._writes is not None:
            self._writes.flush()
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        # Reading is paused only while requests are pipelined or kept: a connection of one
        # request at a time (nearly all) skips the look at the bound.
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            if self.flow.read_paused or self._unparsed:
                self._read_more()
            return
        if self._refusal is not None:
            self._send_refusal()
            return
        if self.flow.read_paused or self._unparsed:
            self._read_more()
            if self._unparsed:
                return  # more requests are on their way in: not idle
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle_timer = None
        since = self._idle_since
        if since is None or self.transport.is_closing():
            return  # a request is under way: its answer arms the timer again
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._idle_timeout)
        else:
            self.transport.close()

    def shutdown(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            # Still receiving its body: close now rather than hold shutdown for it. The app
            # sees the disconnect and answers no one.
            self.transport.close()
            return
        super().shutdown()

    def _refuse_headers(self) -> None:
        self._refuse(_answer(
            b"431 Request Header Fields Too Large", "headers_too_large",
            f"the request line and headers are over {MAX_HEADER_BYTES} bytes (64 KiB)"))

    def _refuse(self, answer: bytes) -> None:
        """Answer bytes the parser refused, and close: after the answers of the whole requests
        ahead of them, since HTTP/1.1 answers in order. Nothing after them is read."""
        self._disarm_header_timer()
        self._refusal = answer
        self._unparsed = b""
        self.flow.pause_reading()
        # A queued request waits behind one under way; a whole one under way (or held for a
        # direct answer) is answered first too.
        cycle = self.cycle
        answers_due = bool(self.pipeline)
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body:
                answers_due = True
            elif self.pipeline and self.pipeline[0][0] is cycle:
                # The refused bytes are in its body (a malformed chunk): the refusal is its
                # answer. (Under way, its app sees the disconnect.)
                self.pipeline.popleft()
        if not answers_due:
            self._send_refusal()  # else on_response_complete sends it after the last of them

    def _send_refusal(self) -> None:
        if self._refusal is not None and not self.transport.is_closing():
            self.transport.write(self._refusal)
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its HTTP parser refuses, as JSON; called while the
        parser's error is being handled, which says what it refused."""
        refused = sys.exc_info()[1]
        if refused is not None and isinstance(refused.__context__, _HeadersTooLarge):
            self._refuse_headers()
            return
        reason = str(refused).strip() if refused is not None and str(refused).strip() else msg
        self._refuse(_answer(b"400 Bad Request", "bad_request", f"not valid HTTP/1.1: {reason}"))

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self._limits.header_timeout_s,
                                                  self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._request_begun:
            self.transport.write(_answer(
                b"408 Request Timeout", "request_timeout",
                "request headers not received within limits.header_timeout_s = "
                f"{self._limits.header_timeout_s:g} s"))
        self.transport.close()
