"""Open Inference Protocol (KServe V2) over REST: health, metadata and inference under ``/v2``.

``{name}`` is the experiment, routed like ``/predict`` (assignment, sticky key, override
header), or the name the YAML serves one of its models under: then that model alone answers,
and the rows are logged as forced, which keeps them out of the comparison. A version in the
path must be the one the metadata lists: a model's own version, or for the experiment the
configuration revision it serves. Errors leave in the protocol's shape, ``{"error": message}``,
with the statuses the other routes give and their ``code`` and ``detail`` beside it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from router import __version__
from router.errors import NotFoundError, NotReadyError, UnsupportedMediaError
from router.gateway.endpoints import (
    CLIENT_CHOSE_ID,
    ID_IN_BODY,
    JSONAnswer,
    json_response,
    predict_logged,
    raw_answer_headers,
    read_json,
    request_id_of,
    state_of,
)
from router.gateway.errors import render_error
from router.gateway.oip import model_metadata, output_names, output_tensors, parse_infer_request
from router.gateway.override import forced_variant
from router.gateway.request_keys import header_map, segments_of, unit_id_of
from router.serving.inputs import check_within
from router.serving.model import ServedModel
from router.serving.snapshot import Snapshot

Endpoint = Callable[[Request], Awaitable[Response]]
_NOT_SHAPED = ("content-length", "content-type")


def protocol_errors(endpoint: Endpoint) -> Endpoint:
    """Render a failure of ``endpoint`` with the one error table, in the protocol's shape."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:
            rendered = await render_error(request, exc)
            body = orjson.loads(bytes(rendered.body))
            headers = {k: v for k, v in rendered.headers.items() if k not in _NOT_SHAPED}
            return json_response({"error": body["message"], "code": body["error"],
                                  "detail": body["detail"]},
                                 status=rendered.status_code, headers=headers)

    return wrapper


@dataclass(frozen=True)
class Target:
    """What a ``{name}`` (and version) in the path reaches."""

    name: str
    role: str | None  # the one model's role, or None for the experiment
    models: tuple[ServedModel, ...]  # every model that may answer
    version: str


def target_of(snapshot: Snapshot, request: Request) -> Target:
    name = request.path_params["name"]
    roles = snapshot.variants
    experiment = snapshot.config.experiment
    if name == experiment:
        target = Target(name, None, tuple(snapshot.models[r] for r in roles),
                        str(snapshot.revision))
    else:
        role = next((r for r in roles if snapshot.names[r] == name), None)
        if role is None:
            names = ", ".join([experiment, *(snapshot.names[r] for r in roles)])
            raise NotFoundError(f"no model {name!r}; this gateway serves {names}",
                                [{"field": "name", "message": "unknown model"}])
        model = snapshot.models[role]
        target = Target(name, role, (model,), model.version)
    version = request.path_params.get("version")
    if version is not None and version != target.version:
        what = "configuration revision" if target.role is None else "version"
        raise NotFoundError(f"model {name!r} has no version {version!r}; it serves "
                            f"{what} {target.version!r}",
                            [{"field": "version", "message": "unknown version"}])
    return target


async def server_live(request: Request) -> Response:
    return json_response({"live": True})


async def server_ready(request: Request) -> Response:
    problems = await state_of(request).readiness_problems()
    if problems:
        raise NotReadyError("not ready: " + "; ".join(problems),
                            [{"check": p} for p in problems])
    return json_response({"ready": True})


async def server_metadata(request: Request) -> Response:
    return json_response({"name": "router", "version": __version__, "extensions": []})


async def model_ready(request: Request) -> Response:
    # A snapshot holds only loaded, verified models: a name that resolves is ready.
    target = target_of(state_of(request).snapshots.current, request)
    return json_response({"name": target.name, "ready": True})


async def model_metadata_route(request: Request) -> Response:
    snapshot = state_of(request).snapshots.current
    target = target_of(snapshot, request)
    metadata = model_metadata(target.name, [target.version], target.models)
    roles = [target.role] if target.role is not None else \
        list(snapshot.variants)
    metadata["parameters"]["models"] = {
        r: {"name": snapshot.names[r], "version": snapshot.models[r].version} for r in roles}
    if target.role is None:
        metadata["parameters"]["mode"] = snapshot.config.mode
    return json_response(metadata)


async def infer(request: Request) -> Response:
    state = state_of(request)
    snapshot = state.snapshots.current
    target = target_of(snapshot, request)
    headers = header_map(request)
    if b"inference-header-content-length" in headers:
        raise UnsupportedMediaError(
            "binary tensor data is not supported; send the tensors as JSON "
            "(tritonclient: set_data_from_numpy(array, binary_data=False))",
            [{"header": "inference-header-content-length",
              "message": "binary tensor extension not supported"}])
    request_id = request_id_of(request)
    body = await read_json(request, snapshot.config.limits.max_body_bytes,
                           json_by_default=True)
    parsed = parse_infer_request(body, target.models[0].feature_names,
                                 output_names(target.models),
                                 max_batch=snapshot.config.limits.max_batch)
    check_within(parsed.rows, target.models[0].feature_names, snapshot.input_bound)
    if parsed.id is not None and not headers.get(b"x-request-id"):  # an empty one is none
        # The request's own id names it in the log, so feedback can use it.
        request_id = request.scope["router.request_id"] = parsed.id
        request.scope[CLIENT_CHOSE_ID] = ID_IN_BODY
    forced = target.role if target.role is not None else forced_variant(snapshot, headers)
    answer = await predict_logged(
        request, snapshot, parsed.rows, request_id=request_id, batch=True,
        unit_id=unit_id_of(snapshot, request, parsed.parameters, header_fallback=True),
        segments=segments_of(snapshot, request, parsed.parameters, header_fallback=True),
        forced=forced)
    payload: dict[str, Any] = {
        "model_name": target.name, "model_version": target.version,
        "id": parsed.id if parsed.id is not None else request_id,
        "parameters": {"request_id": request_id, "variant": answer.variant,
                       "model": answer.model, "version": answer.version},
        "outputs": output_tensors(answer.labels, answer.probabilities,
                                  snapshot.models[answer.variant], parsed.outputs),
    }
    return JSONAnswer(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
                      raw_answer_headers(answer), variant=answer.variant)
