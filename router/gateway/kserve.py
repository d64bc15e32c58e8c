"""KServe V1 protocol over the same core: ``{"instances": [[...]]}`` to ``{"predictions"}``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from router.errors import InputValidationError, NotFoundError
from router.gateway.endpoints import (
    answer_headers,
    json_response,
    predict_logged,
    read_json,
    request_id_of,
    state_of,
)
from router.gateway.override import forced_variant
from router.gateway.request_keys import header_map, segments_of, unit_id_of
from router.serving.inputs import refuse_unknown_fields, rows_to_array
from router.serving.snapshot import Snapshot


def _snapshot_for(request: Request) -> Snapshot:
    snapshot = state_of(request).snapshots.current
    name = request.path_params["name"]
    if name != snapshot.config.experiment:
        raise NotFoundError(f"no model {name!r}; this gateway serves "
                            f"{snapshot.config.experiment!r}",
                            [{"field": "name", "message": "unknown model"}])
    return snapshot


async def model_status(request: Request) -> Response:
    snapshot = _snapshot_for(request)
    return json_response({"name": snapshot.config.experiment, "ready": True})


async def predict(request: Request) -> Response:
    request_id = request_id_of(request)
    snapshot = _snapshot_for(request)
    body = await read_json(request, snapshot.config.limits.max_body_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list) \
            or not body["instances"]:
        raise InputValidationError('KServe V1 body must be {"instances": [[...], ...]}',
                                   [{"field": "instances", "message": "expected a list of rows"}])
    refuse_unknown_fields(body, "instances", snapshot.body_keys)
    instances = body["instances"]
    rows = rows_to_array(instances, snapshot.champion.feature_names,
                         [f"instances[{i}]" for i in range(len(instances))],
                         max_batch=snapshot.config.limits.max_batch,
                         max_abs=snapshot.input_bound)
    answer = await predict_logged(request, snapshot, rows, request_id=request_id, batch=True,
                                  unit_id=unit_id_of(snapshot, request, body),
                                  segments=segments_of(snapshot, request, body),
                                  forced=forced_variant(snapshot, header_map(request)))
    return json_response({"predictions": answer.labels}, headers=answer_headers(answer))
