"""The gateway's end of the pipe to its writer process: a message in one system call, and a
wait on a full pipe that looks up every few milliseconds, so that a writer process that stops
reading (stopped, stuck) never holds the hand-over thread beyond what its caller allows.

A blocking write on a full pipe would return only once the writer process reads again: while
it waited, the backlog's cap could not be enforced and a shutdown could not end.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

__all__ = ["WAIT_STEP_S", "PipeSender", "frame"]

# How often a wait on a full pipe asks its caller whether to go on: the caller's bound on how
# stale its view of the backlog is while the writer process does not read.
WAIT_STEP_S = 0.05

# multiprocessing.connection's framing: a message's length as a 4-byte signed big-endian int,
# or -1 and an 8-byte unsigned length for a message over 2 GiB.
_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")
_LONGEST_SHORT_FRAME = 0x7FFFFFFF


def frame(body: bytes) -> list[memoryview]:
    """``body`` with the header ``Connection.recv_bytes`` reads, as buffers to send in order."""
    if len(body) > _LONGEST_SHORT_FRAME:
        header = _LENGTH.pack(-1) + _LONG_LENGTH.pack(len(body))
    else:
        header = _LENGTH.pack(len(body))
    return [memoryview(header), memoryview(body)]


class PipeSender:
    """Sends messages down the gateway's end of a writer process's pipe (a socket pair).

    The descriptor stays blocking: the status thread reads the other direction of the same
    socket with ``Connection.recv_bytes``, which fails on a non-blocking one. Each send asks
    the kernel not to wait instead (``MSG_DONTWAIT``), on a socket object of its own over a
    copy of the descriptor.
    """

    def __init__(self, connection: Connection) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM,
                                     fileno=os.dup(connection.fileno()))
        self._writable = select.poll()
        self._writable.register(self._socket.fileno(), select.POLLOUT)

    def send(self, body: bytes, keep_waiting: Callable[[], bool]) -> bool:
        """Write one message: one system call (``sendmsg``) unless the pipe is full.

        Not ``Connection.send_bytes``: it writes a message over 16 KiB in two calls, and lets
        go of the interpreter lock around each, so that on a busy core each is one more switch
        between this thread and the event loop (docs/performance.md).

        While it is full, ``keep_waiting`` is asked every ``WAIT_STEP_S``; when it answers
        False, gives up and returns False. Part of the message may then be in the pipe: the
        writer process can no longer read it as messages, so the caller hangs up
        (:meth:`hang_up`). True once the whole message is written. Raises ``OSError`` when the
        writer process is gone.
        """
        unsent = frame(body)
        next_look = time.monotonic() + WAIT_STEP_S
        while True:
            try:
                sent = self._socket.sendmsg(unsent, (), socket.MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            unsent = _after(unsent, sent)
            if not unsent:
                return True
            now = time.monotonic()
            if now >= next_look:
                if not keep_waiting():
                    return False
                next_look = now + WAIT_STEP_S
            self._writable.poll((next_look - now) * 1000)

    def hang_up(self) -> None:
        """No more messages: the writer process reads what was written whole, then the end of
        the pipe (a message cut short is dropped there), and stops after writing the rest."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Close this copy of the descriptor (the connection keeps its own)."""
        self._socket.close()


def _after(buffers: list[memoryview], sent: int) -> list[memoryview]:
    """What is left of ``buffers`` once their first ``sent`` bytes are written."""
    while buffers and sent >= len(buffers[0]):
        sent -= len(buffers[0])
        buffers = buffers[1:]
    if buffers and sent:
        buffers = [buffers[0][sent:], *buffers[1:]]
    return buffers
