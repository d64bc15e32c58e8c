"""The body read timeout: a request's body must arrive within ``limits.body_timeout_s``.

uvicorn bounds neither how long a client may take to send a body nor how long it may stall
in the middle of one, so the gateway bounds it where the body is read: every route receives
through :func:`receive_within`, whatever reads the body. The clock starts when the headers
are in (when the app is called) and covers the whole body, so a client that trickles a byte
now and then cannot stretch it.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive

from router.errors import ClientClosedError, RequestTimeoutError

__all__ = ["receive_within"]


def receive_within(receive: Receive, timeout_s: float) -> Receive:
    """``receive`` that raises :class:`RequestTimeoutError` once ``timeout_s`` have passed
    before the body's last chunk, and :class:`ClientClosedError` when the connection closes
    before it. Once the body is in, messages pass through untouched (a streaming answer
    listens for the disconnect this way)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    body_done = False

    async def receive_body() -> Message:
        nonlocal body_done
        if body_done:
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise RequestTimeoutError(
                f"request body not received within limits.body_timeout_s = {timeout_s:g} s",
                [{"limit_s": timeout_s}]) from None
        if message["type"] == "http.disconnect":
            raise ClientClosedError("the client closed the connection before its body arrived")
        if not message.get("more_body", False):
            body_done = True
        return message

    return receive_body
