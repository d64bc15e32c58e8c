"""The values the ``router`` command's options take, checked by argparse: a bad one is a usage
mistake (exit 2) naming the option, before any command runs."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

__all__ = ["any_port", "drift_spec", "non_negative_float", "non_negative_int", "percent",
           "port", "positive_int", "share", "significance"]

Number = TypeVar("Number", int, float)


def positive_int(text: str) -> int:
    return _at_least(_parsed(text, int, "not a whole number"), 1)


def non_negative_int(text: str) -> int:
    return _at_least(_parsed(text, int, "not a whole number"), 0)


def non_negative_float(text: str) -> float:
    return _at_least(_parsed(text, float, "not a finite number"), 0)


def share(text: str) -> float:
    """A share in [0, 1): of rows, for instance."""
    value = _parsed(text, float, "not a finite number")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {value:g}")
    return value


def percent(text: str) -> float:
    """A share of traffic in percent, 0 to 100."""
    value = _parsed(text, float, "not a finite number")
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 100, got {value:g}")
    return value


def significance(text: str) -> float:
    """A significance level, strictly between 0 and 1."""
    value = _parsed(text, float, "not a finite number")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value:g}")
    return value


def port(text: str) -> int:
    """A TCP port, 1 to 65535 (an address a client must know: the demo sends traffic there)."""
    return _port(text, 1)


def any_port(text: str) -> int:
    """A TCP port to listen on, or 0 for a free one the system picks (the server's log names
    it)."""
    return _port(text, 0)


def _port(text: str, low: int) -> int:
    # A port past 65535 would otherwise be bound modulo 65536, another port than asked.
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not low <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from {low} to 65535, got {text!r}")
    return value


def _parsed(text: str, kind: Callable[[str], Number], problem: str) -> Number:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{problem}: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{problem}: {text!r}")
    return value


def _at_least(value: Number, low: int) -> Number:
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value:g}")
    return value


def drift_spec(text: str) -> tuple[str, float]:
    """``FEATURE=SHIFT``: a feature's name and a number of standard deviations."""
    name, _, shift = text.partition("=")
    try:
        value = float(shift)
    except ValueError:
        value = math.nan
    if not name or not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f"expected FEATURE=SHIFT with SHIFT a number of standard deviations, got {text!r}")
    return name, value
