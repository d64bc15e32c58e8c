"""One write per answer: the response's head goes out with the first piece of its body.

uvicorn writes a response's status line and headers when the application sends
``http.response.start``, and its body when it sends ``http.response.body``: two ``write``
system calls per answer. On loopback each costs about 4.5 µs of the serving core (the kernel
runs TCP for both ends in it), and each wakes the client once more. :class:`JoinedWrites` is
the transport a request's cycle writes through: it holds the head back until the body's first
write (or the end of the response, for one without a body) and sends both in one call.

Only what a cycle writes after its response started is held: a ``100 Continue`` goes out at
once, as the client waits for it before it sends its body. What the protocol itself writes
(a 400 on a malformed request, the connection limits' 408 and 503) goes to the transport
directly.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["JoinedWrites"]


class Cycle(Protocol):
    """What :class:`JoinedWrites` reads of uvicorn's ``RequestResponseCycle``."""

    response_started: bool


class JoinedWrites:
    """A connection's transport as its request cycles see it: one per connection, serving one
    cycle at a time (a pipelined request's cycle writes to the transport itself)."""

    __slots__ = ("_cycle", "_head", "_head_seen", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._cycle: Cycle | None = None
        self._head: bytes | None = None  # the current response's head, not yet written
        self._head_seen = False

    def start(self, cycle: Cycle) -> None:
        """A request's cycle begins: its first write once its response started is its head."""
        self.flush()
        self._cycle = cycle
        self._head_seen = False

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif not self._head_seen and self._cycle is not None and self._cycle.response_started:
            self._head_seen = True
            self._head = data
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a held head: the response ended without a body write (a HEAD request)."""
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        # Anything else a cycle might ask of its transport (uvicorn's uses the methods above).
        return getattr(self._transport, name)
