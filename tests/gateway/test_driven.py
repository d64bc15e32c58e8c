"""``Driven``: a coroutine stepped by the futures it awaits, as a task would be, without one."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import pytest

from router.gateway.driven import Driven

REQUEST = contextvars.ContextVar[str]("request", default="none")


def test_it_runs_through_futures_and_bare_yields_to_the_end_without_a_task() -> None:
    seen: list[Any] = []

    async def coroutine(future: asyncio.Future[int]) -> None:
        seen.append(("first step", asyncio.current_task()))
        await asyncio.sleep(0)
        seen.append(("after a bare yield", asyncio.current_task()))
        seen.append(("result", await future))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        running: set[Any] = set()
        tasks_before = asyncio.all_tasks()
        driven = Driven(coroutine(future), loop, running)
        # The first step ran at once, inside this task: nothing was scheduled for it.
        assert seen == [("first step", asyncio.current_task())]
        assert running == {driven} and asyncio.all_tasks() == tasks_before
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert seen[1] == ("after a bare yield", None)  # stepped by the loop, in no task
        assert running == {driven}  # waiting on the future
        future.set_result(7)
        await asyncio.sleep(0)
        assert seen[2] == ("result", 7) and running == set()

    asyncio.run(main())


def test_its_steps_share_one_context_of_their_own() -> None:
    seen: list[str] = []

    async def coroutine(future: asyncio.Future[None]) -> None:
        REQUEST.set("mine")
        await future
        seen.append(REQUEST.get())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        Driven(coroutine(future), loop, set())
        assert REQUEST.get() == "none"  # what it set stays in its own context
        future.set_result(None)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert seen == ["mine"]


@pytest.mark.parametrize("when", ["awaiting a future", "between steps"])
def test_cancelling_it_raises_cancelled_error_where_it_waits(when: str) -> None:
    """As uvicorn cancels what still runs when its graceful shutdown times out."""
    seen: list[str] = []

    async def coroutine(future: asyncio.Future[None]) -> None:
        try:
            if when == "between steps":
                await asyncio.sleep(0)
            await future
        except asyncio.CancelledError as exc:
            seen.append(f"cancelled: {exc}")
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        running: set[Any] = set()
        driven = Driven(coroutine(future), loop, running)
        assert driven.cancel(msg="shutting down")
        for _ in range(3):
            await asyncio.sleep(0)
        assert running == set()
        assert not driven.cancel()  # it has ended

    asyncio.run(main())
    assert seen == ["cancelled: shutting down"]


def test_an_exception_that_escapes_it_is_logged_and_ends_it(
        caplog: pytest.LogCaptureFixture) -> None:
    async def coroutine(future: asyncio.Future[None]) -> None:
        await future
        raise RuntimeError("a bug")

    async def main() -> set[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        running: set[Any] = set()
        Driven(coroutine(future), loop, running)
        future.set_result(None)
        await asyncio.sleep(0)
        return running

    with caplog.at_level(logging.ERROR, logger="router.gateway.connections"):
        assert asyncio.run(main()) == set()
    assert "RuntimeError: a bug" in caplog.text
