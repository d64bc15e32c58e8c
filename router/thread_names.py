"""Native names for the router's own threads, so that ``top -H``, ``ps -L``, ``perf`` and
``/proc/PID/task/*/comm`` tell them apart: Python 3.11 names a thread for Python alone, and the
kernel shows every thread of a gateway under the process's name.

Linux only (``prctl(PR_SET_NAME)``, 15 bytes kept); elsewhere, or where libc cannot be loaded,
nothing happens.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["NAME_BYTES", "name_native_thread"]

_PR_SET_NAME = 15
NAME_BYTES = 15  # the kernel keeps 16 bytes with the terminating NUL


def _prctl() -> Callable[..., Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., Any] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _prctl()


def name_native_thread(name: str | None = None) -> None:
    """Give the calling thread ``name`` (its Python name by default) where the OS shows it.

    Not for the main thread: its native name is the process's, which ``ps`` and ``pkill``
    users know it by.
    """
    if _PRCTL is None or threading.current_thread() is threading.main_thread():
        return
    text = (name or threading.current_thread().name).encode("utf-8", "replace")[:NAME_BYTES]
    _PRCTL(_PR_SET_NAME, ctypes.c_char_p(text), 0, 0, 0)
