"""The body read timeout, on the receive callable every route reads its body through."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message

from router.errors import ClientClosedError, RequestTimeoutError
from router.gateway.body_deadline import receive_within


def _receiver(*messages: Message) -> tuple[asyncio.Queue[Message], object]:
    queue: asyncio.Queue[Message] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    return queue, queue.get


def test_a_stalled_body_times_out_and_the_task_can_go_on() -> None:
    """A receive that waits past the deadline raises RequestTimeoutError, and the task is not
    left cancelled: it can still await (to send its 408)."""
    async def scenario() -> str:
        _, receive = _receiver({"type": "http.request", "body": b"{", "more_body": True})
        bounded = receive_within(receive, 0.1)  # type: ignore[arg-type]
        assert (await bounded())["body"] == b"{"
        with pytest.raises(RequestTimeoutError, match=r"limits\.body_timeout_s = 0\.1 s"):
            await bounded()
        await asyncio.sleep(0)  # would raise CancelledError if the cancel had leaked
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        return "answered"

    assert asyncio.run(scenario()) == "answered"


def test_a_closed_connection_before_the_body_is_a_client_closed_error() -> None:
    async def scenario() -> None:
        _, receive = _receiver({"type": "http.disconnect"})
        with pytest.raises(ClientClosedError):
            await receive_within(receive, 5)()  # type: ignore[arg-type]

    asyncio.run(scenario())


def test_after_the_body_messages_pass_through() -> None:
    """Once the body is in, a later receive (a streaming answer listening for the client
    leaving) gets the disconnect as a message, and no deadline applies."""
    async def scenario() -> list[Message]:
        _, receive = _receiver({"type": "http.request", "body": b"{}", "more_body": False},
                               {"type": "http.disconnect"})
        bounded = receive_within(receive, 0.01)  # type: ignore[arg-type]
        first = await bounded()
        await asyncio.sleep(0.05)
        return [first, await bounded()]

    assert [m["type"] for m in asyncio.run(scenario())] == ["http.request", "http.disconnect"]


def test_an_outside_cancel_is_not_taken_for_a_timeout() -> None:
    async def scenario() -> None:
        _, receive = _receiver()
        task = asyncio.create_task(receive_within(receive, 60)())  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
