"""The body read timeout: a request's body must arrive within ``limits.body_timeout_s``.

uvicorn bounds neither how long a client may take to send a body nor how long it may stall
in the middle of one, so the gateway bounds it where the body is read: every route receives
through :func:`receive_within`, whatever reads the body. The clock starts when the headers
are in (when the app is called) and covers the whole body, so a client that trickles a byte
now and then cannot stretch it.

A timer per request (``asyncio.timeout``) cost about 30 µs a request on the 2-core machine,
more than half of what uvicorn and Starlette spend on one; instead each receive that may wait
is noted in a table (a dict insert), and one sweep every :data:`SWEEP_S`, scheduled only while
the table is not empty, cancels the overdue ones. A timeout so fires between
``body_timeout_s`` and ``body_timeout_s`` + :data:`SWEEP_S` after the headers.

A request whose whole body came with its headers cannot stall: the gateway's connection
protocol marks its scope with :data:`BODY_ARRIVED` before the app runs, and the app then reads
it without this bookkeeping (about 1 µs a request). Under another server, every request is
watched.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import Message, Receive

from router.errors import ClientClosedError, RequestTimeoutError

__all__ = ["BODY_ARRIVED", "SWEEP_S", "receive_within"]

SWEEP_S = 0.5
# A scope key: True when the request's body had all arrived when the app was called.
BODY_ARRIVED = "router.body_arrived"


class _Deadlines:
    """Tasks waiting for a body, with their deadlines; swept while there are any."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[asyncio.Task[object], float] = {}
        self.expired: set[asyncio.Task[object]] = set()
        self._sweep_handle: asyncio.TimerHandle | None = None

    def watch(self, task: asyncio.Task[object], deadline: float) -> None:
        self.waiting[task] = deadline
        if self._sweep_handle is None:
            self._sweep_handle = self.loop.call_later(SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        for task, deadline in list(self.waiting.items()):
            if deadline <= now:
                del self.waiting[task]
                self.expired.add(task)
                task.cancel()
        self._sweep_handle = self.loop.call_later(SWEEP_S, self._sweep) \
            if self.waiting else None


_deadlines: dict[asyncio.AbstractEventLoop, _Deadlines] = {}


def _deadlines_of(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    deadlines = _deadlines.get(loop)
    if deadlines is None:
        # One table per event loop (tests run several loops in one process).
        for closed in [other for other in _deadlines if other.is_closed()]:
            del _deadlines[closed]
        deadlines = _deadlines[loop] = _Deadlines(loop)
    return deadlines


def receive_within(receive: Receive, timeout_s: float) -> Receive:
    """``receive`` that raises :class:`RequestTimeoutError` once ``timeout_s`` have passed
    before the body's last chunk, and :class:`ClientClosedError` when the connection closes
    before it. Once the body is in, messages pass through untouched (a streaming answer
    listens for the disconnect this way)."""
    deadline = time.monotonic() + timeout_s
    body_done = False

    async def receive_body() -> Message:
        nonlocal body_done
        if body_done:
            return await receive()
        task = asyncio.current_task()
        assert task is not None
        deadlines = _deadlines_of(task.get_loop())
        deadlines.watch(task, deadline)
        try:
            message = await receive()
        except asyncio.CancelledError:
            if task not in deadlines.expired:
                raise
            deadlines.expired.discard(task)
            task.uncancel()
            raise RequestTimeoutError(
                f"request body not received within limits.body_timeout_s = {timeout_s:g} s",
                [{"limit_s": timeout_s}]) from None
        finally:
            deadlines.waiting.pop(task, None)
        if message["type"] == "http.disconnect":
            raise ClientClosedError("the client closed the connection before its body arrived")
        if not message.get("more_body", False):
            body_done = True
        return message

    return receive_body
