"""The one way tests wait: poll until a condition holds, or fail saying what never happened.

A gateway applies a reload, writes its log and refreshes its gauges a little after the request
that caused it; tests poll for the effect instead of sleeping a fixed time. When time runs out
the test fails here, naming what it waited for and the last value seen, rather than going on
with a stale value and failing later on an assertion that hides the cause.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T], until: Callable[[T], object] = bool, *,
               what: str, timeout: float = 30.0, interval: float = 0.1) -> T:
    """``probe()``'s first value for which ``until(value)`` is true.

    Raises AssertionError naming ``what`` and the last value when ``timeout`` seconds pass
    first. The timeouts are generous on purpose: a loaded CI machine is slow, and a passing
    test never waits longer than the effect takes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s; last seen: {value!r}")
        time.sleep(interval)
