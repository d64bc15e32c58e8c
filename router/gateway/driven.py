"""``Driven``: a coroutine stepped by the futures it awaits, without an ``asyncio.Task``.

Each direct ``POST /predict`` answer (:mod:`router.gateway.connections`) was a task of its
own. A task costs, per request: its creation, its entry in asyncio's set of all tasks (a
Python ``WeakSet.add``, and a weak-reference callback into Python when it is freed), a turn of
the loop before its first step, and a done callback. None of it serves a request whose whole
body is in hand. A :class:`Driven` steps its coroutine itself: the first step at once, each
later one when the future it awaits is done (a bare ``yield``, as ``asyncio.sleep(0)``
makes, on the loop's next turn), every step in one context of its own as a task's are.

What a task gives and this does not: ``asyncio.current_task()`` is None inside, so
``asyncio.timeout`` cannot be used there (the prediction path does not use it), and nothing
awaits its end. It takes a task's place in uvicorn's set of running requests, which a
graceful shutdown waits on and, past its timeout, cancels.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Driven"]

log = logging.getLogger("router.gateway.connections")


class Driven:
    """Runs ``coroutine`` to its end on ``loop``, listed in ``running`` meanwhile.

    An exception that escapes the coroutine ends it and is logged: the coroutine is expected
    to answer its own failures (the direct answer renders every error it catches).
    """

    __slots__ = ("_awaited", "_cancel_message", "_context", "_coroutine", "_loop", "_running")

    def __init__(self, coroutine: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop,
                 running: set[Any]) -> None:
        self._coroutine = coroutine
        self._loop = loop
        self._running = running
        self._context = contextvars.copy_context()
        self._awaited: asyncio.Future[Any] | None = None
        self._cancel_message: str | None = None  # set once cancelled: thrown in at the next step
        running.add(self)
        self._context.run(self._step)

    def cancel(self, msg: str | None = None) -> bool:
        """Cancel as a task is cancelled: the awaited future is cancelled, so the coroutine's
        ``await`` raises ``CancelledError``. False when it has already ended."""
        if self not in self._running:
            return False
        awaited = self._awaited
        if awaited is None or not awaited.cancel(msg):
            self._cancel_message = msg or ""  # between steps: thrown in at the next one
        return True

    def _step(self, _done: Any = None) -> None:
        self._awaited = None
        message = self._cancel_message
        try:
            if message is None:
                yielded = self._coroutine.send(None)
            else:
                self._cancel_message = None
                yielded = self._coroutine.throw(asyncio.CancelledError(message or None))
        except (StopIteration, asyncio.CancelledError):  # its end, or cancelled at shutdown
            self._running.discard(self)
            return
        except BaseException:
            self._running.discard(self)
            log.exception("unexpected error escaped a direct answer")
            return
        if yielded is None:  # a bare yield: the loop turns once
            self._loop.call_soon(self._step, context=self._context)
        elif getattr(yielded, "_asyncio_future_blocking", None) is not None:
            # The handshake a task makes with a future it awaits (asyncio.Future.__await__).
            yielded._asyncio_future_blocking = False
            self._awaited = yielded
            yielded.add_done_callback(self._step, context=self._context)
        else:  # only an asyncio future can wake it
            self._running.discard(self)
            self._coroutine.close()
            log.error("a direct answer awaited %r, which is not an asyncio future", yielded)
