"""Argument checks shared by the statistics modules, so every function fails the same way."""

from __future__ import annotations

import math


def check_count(successes: int, n: int, *, what: str = "successes") -> None:
    """Raise ``ValueError`` unless ``0 <= successes <= n``."""
    if n < 0 or successes < 0:
        raise ValueError(f"{what} and trials must be non-negative, got {successes} of {n}")
    if successes > n:
        raise ValueError(f"{what} ({successes}) cannot exceed trials ({n})")


def check_level(value: float, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` lies strictly between 0 and 1."""
    if not (0.0 < value < 1.0) or math.isnan(value):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")
