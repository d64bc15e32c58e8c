"""``GET /stats``, ``/stats/timeline`` and ``/history``: the experiment read from the store.

Each is computed off the event loop. The report reads the outcome log as it is: the background
writer keeps it at most about a second behind the answers, so the routes do not wait for a
flush. ``?alpha=`` and ``?metric=`` replay the verdict under other settings, like
``router stats --alpha --metric``; the timeline takes the same parameters.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from router.errors import InputValidationError
from router.gateway.endpoints import json_response, state_of
from router.live.switch import history_document
from router.stats.loader import compute_report
from router.stats.timeline import compute_timeline
from router.strings import printable

HISTORY_LIMIT = 100  # switches answered by default: the latest ones
MAX_HISTORY_LIMIT = 10_000


# A decimal number in ASCII: float() would also take other scripts' digits, underscores and
# surrounding spaces, which ?limit= refuses.
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def _alpha(raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        if not _DECIMAL.fullmatch(raw):
            raise ValueError(raw)
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
    shadow_calls = None
    if shadow is not None and snapshot.config.mode == "shadow":
        # With several challengers, each one's mirror counts apart.
        shadow_calls = shadow.counts_by_variant() if snapshot.config.multi_challenger \
            else shadow.counts()
    report = await asyncio.to_thread(
        compute_report, state.columns, snapshot.config, snapshot.models,
        config_revision=snapshot.revision, alpha=alpha, metric=metric,
        shadow_calls=shadow_calls)
    return json_response(report)


async def timeline(request: Request) -> Response:
    """The report's figures at up to 50 checkpoints of the labels (``router.stats.timeline``)."""
    state = state_of(request)
    snapshot = state.snapshots.current
    payload = await asyncio.to_thread(
        compute_timeline, state.columns, snapshot.config, snapshot.models,
        alpha=_alpha(request.query_params.get("alpha")),
        metric=request.query_params.get("metric") or None)
    return json_response(payload)


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return HISTORY_LIMIT
    # isdecimal alone would let other scripts' digits through ("٣"), and int() of a huge one
    # would reach the store as an integer it cannot bind.
    if not (raw.isascii() and raw.isdecimal() and len(raw) <= 6) \
            or not 1 <= int(raw) <= MAX_HISTORY_LIMIT:
        message = f"a whole number from 1 to {MAX_HISTORY_LIMIT:,}"
        raise InputValidationError(f"limit must be {message}, got {printable(raw)[:40]!r}",
                                   [{"field": "limit", "message": message}])
    return int(raw)


async def history(request: Request) -> Response:
    """The latest switches (promote, rollback, rollout steps), oldest first."""
    state = state_of(request)
    entries = await asyncio.to_thread(state.store.history,
                                      _limit(request.query_params.get("limit")),
                                      state.snapshots.current.config.experiment)
    return json_response(history_document(entries))
