"""Blue-green switches over HTTP: POST /admin/promote and /admin/rollback, token-guarded.

The routes need ``Authorization: Bearer $ROUTER_ADMIN_TOKEN``; without the variable they are
disabled (403), a wrong or missing token is a 401. The gateway edits its own YAML file, applies
it at once (other workers and replicas follow through their file watch), and records the switch
in the store's history.
"""

from __future__ import annotations

import asyncio
import os
import socket

from starlette.requests import Request
from starlette.responses import Response

from router.config.challengers import arm_named, describe_challengers
from router.errors import (
    AdminDisabledError,
    ConfigError,
    InputValidationError,
    StoreError,
    SwitchConflictError,
    UnauthorizedError,
)
from router.gateway.endpoints import json_response, read_json, state_of
from router.gateway.override import TOKEN_ENV, admin_token, bearer_token_matches
from router.live.rollout_plan import figures_now
from router.live.switch import switch
from router.live.yamledit import EditRefused
from router.outcomes import HistoryEntry
from router.serving.snapshot import Snapshot, load_models
from router.strings import MAX_REASON_LENGTH, text_problem


def check_token(request: Request) -> None:
    if not admin_token():
        raise AdminDisabledError(f"admin routes are disabled: set {TOKEN_ENV} to enable them")
    if not bearer_token_matches(request.headers.get("authorization", "")):
        raise UnauthorizedError("missing or wrong bearer token",
                                [{"header": "authorization", "expected": "Bearer <token>"}])


async def _body(request: Request, default: str) -> tuple[str, str | None]:
    """The optional ``{"reason": ..., "challenger": ...}``: why, and which challenger."""
    if not await request.body():
        return default, None
    body = await read_json(request, 65_536)
    reason = body.get("reason", default) if isinstance(body, dict) else None
    if not isinstance(reason, str):
        raise InputValidationError(
            'body must be {"reason": "...", "challenger": "..."} (both optional)',
            [{"field": "reason", "message": "must be a string"}])
    problem = text_problem(reason, max_length=MAX_REASON_LENGTH, prose=True)
    if problem is not None:
        raise InputValidationError(f"reason {problem}", [{"field": "reason", "message": problem}])
    challenger = body.get("challenger")
    if challenger is not None and not isinstance(challenger, str):
        raise InputValidationError("challenger must be a string naming a challenger",
                                   [{"field": "challenger", "message": "must be a string"}])
    return reason, challenger


def _check_challenger(snapshot: Snapshot, challenger: str | None) -> None:
    """A named challenger must be one the gateway serves (by variant or model name)."""
    arms = snapshot.config.arms
    if challenger is None or arm_named(arms, challenger) is not None:
        return
    accepted = ", ".join(dict.fromkeys([*(arm.name for arm in arms),
                                        *(arm.variant for arm in arms)])) or "none"
    raise InputValidationError(
        f"challenger {challenger!r} names no challenger of this gateway; it serves "
        f"{describe_challengers(arms)}",
        [{"field": "challenger", "message": f"one of {accepted}", "got": challenger}])


async def _switch(request: Request, action: str) -> Response:
    check_token(request)
    state = state_of(request)
    reason, challenger = await _body(request, f"{action} requested through the API")
    _check_challenger(state.snapshots.current, challenger)
    client = request.client.host if request.client else "unknown"
    # Which gateway made it (several may serve one experiment), and for which caller.
    actor = f"api@{socket.gethostname()}:{os.getpid()} from {client}"

    def switch_now() -> HistoryEntry:
        # Recorded with the figures it was made on, as a rollout's moves are.
        details = figures_now(state.rollout.evaluate, challenger)
        # The new file's models are loaded before it is written, and this gateway's watcher
        # waits, so that it never applies a file the switch then has to put back.
        with state.reloader.held():
            return switch(action, state.config_path, state.base_dir, state.store,
                          reason=reason, actor=actor, challenger=challenger, details=details,
                          check=lambda config: load_models(config, state.registry))

    try:
        entry = await asyncio.to_thread(switch_now)
    except EditRefused as exc:  # nothing to promote, nothing to roll back
        raise SwitchConflictError(exc.problems[0].message, exc.detail) from None
    except ConfigError as exc:  # the new file would not apply
        raise SwitchConflictError(exc.message, exc.detail) from None
    except StoreError as exc:  # answered 503, as every store fault
        raise StoreError(f"{action} not made, the file is unchanged: {exc.message}",
                         exc.detail) from None
    snapshot = await asyncio.to_thread(state.reloader.reload)
    return json_response({"action": entry.action, "from": entry.from_model,
                          "to": entry.to_model, "reason": entry.reason, "actor": entry.actor,
                          "revision": snapshot.revision, "config": snapshot.config.to_dict()})


async def promote(request: Request) -> Response:
    return await _switch(request, "promote")


async def rollback(request: Request) -> Response:
    return await _switch(request, "rollback")
