"""How far ahead of its answers a connection's pipelined requests are parsed.

uvicorn queues each pipelined request (one that arrives before the answer to the one ahead of
it) and pauses reading; but every answer, and every body read of a queued request, resumes it,
and one read is parsed whole: 256 KiB of small requests is a thousand or more of them. So a
client that sends requests back to back and never reads its answers had the gateway parse
them as fast as they came: 2 GB in 20 s from one connection, kept by the process after the
client left, and seconds of event loop per read for everyone else.

Here a connection parses at most :data:`MAX_PIPELINED` requests ahead of the one being
answered, and what one piece of :data:`PARSE_PIECE_BYTES` of a read holds: a read is parsed
piece by piece, and once the queue is full the rest of it is kept as bytes and reading stops
until the queue drains (:class:`BoundedReads`). Reading stops too while the client leaves its
answers unread past the transport's high-water mark, since answers written directly
(:mod:`router.gateway.direct_predict`) do not wait for the buffer to drain. Every request is
still answered, in order; what the client sends meanwhile waits in the socket's buffers, and
TCP slows the client down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from uvicorn.protocols.http.flow_control import FlowControl

__all__ = ["MAX_PIPELINED", "PARSE_PIECE_BYTES", "BoundedReads"]

# Requests parsed and queued behind the one being answered: enough to keep a pipelining
# client's answers flowing (each read brings more while these are answered), at some 3 KB of
# memory each.
MAX_PIPELINED = 32
# Parsing stops within this many bytes of the queue filling up: a read of the smallest
# requests (18 bytes) adds at most 228 more to the queue.
PARSE_PIECE_BYTES = 4_096


class BoundedReads(FlowControl):
    """uvicorn's flow control for one connection, whose reading resumes only when
    ``may_read()`` says the connection may parse more: uvicorn resumes it after each answer and
    at each body read of a request, whatever the queue holds."""

    def __init__(self, transport: asyncio.Transport, may_read: Callable[[], bool]) -> None:
        super().__init__(transport)
        self._may_read = may_read

    def resume_reading(self) -> None:
        if self.read_paused and self._may_read():
            super().resume_reading()
