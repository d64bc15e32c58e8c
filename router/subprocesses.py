"""The environment of the router's own helper processes (the shadow worker, the log writer)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["child_environment"]

_ROUTER_ROOT = str(Path(__file__).resolve().parent.parent)


def child_environment(**defaults: str) -> dict[str, str]:
    """This process's environment for a ``python -m router.…`` child, with ``defaults`` set
    where the variable is unset. Its import path starts with this copy of the router: the
    child must run the code its parent runs, whatever else is installed."""
    env = dict(os.environ)
    for name, value in defaults.items():
        env.setdefault(name, value)
    env["PYTHONPATH"] = os.pathsep.join(
        [_ROUTER_ROOT, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    return env
