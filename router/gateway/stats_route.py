"""``GET /stats``: the experiment's report, computed from the store off the event loop.

The report reads the outcome log as it is: the background writer keeps it at most about a
second behind the answers, so the route does not wait for a flush. ``?alpha=`` and
``?metric=`` replay the verdict under other settings, like ``router stats --alpha --metric``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from router.errors import InputValidationError
from router.gateway.endpoints import json_response, state_of
from router.stats.loader import compute_report


def _alpha(raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise InputValidationError(f"alpha must be a number, got {raw!r}",
                                   [{"field": "alpha", "message": "a number"}]) from None


async def stats(request: Request) -> Response:
    state = state_of(request)
    snapshot = state.snapshots.current
    alpha = _alpha(request.query_params.get("alpha"))
    metric = request.query_params.get("metric") or None
    shadow: Any = getattr(state, "shadow", None)
    shadow_calls = shadow.counts() if shadow is not None and snapshot.config.mode == "shadow" \
        else None
    report = await asyncio.to_thread(
        compute_report, state.store, snapshot.config, snapshot.models,
        config_revision=snapshot.revision, alpha=alpha, metric=metric,
        shadow_calls=shadow_calls)
    return json_response(report)
