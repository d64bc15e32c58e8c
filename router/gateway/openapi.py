"""``GET /openapi.json``: an OpenAPI 3.1 description of every route the gateway serves.

Written by hand (the bodies' schemas are in ``router.gateway.openapi_schemas``) and kept true
by tests: the routes the app registers and the operations described are the same set, methods
included; a live gateway's answers validate against it; and a fuzzer drives every operation
from it and finds no 5xx and no answer it does not describe. What depends on the YAML and the
models (the features, the sticky and override headers, the names under ``/v1`` and ``/v2``) is
filled in by ``router.gateway.openapi_served`` for the gateway that serves the document.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from router import __version__
from router.gateway.endpoints import state_of
from router.gateway.openapi_schemas import ERROR_CODES, MAX_ID, NO_CONTROL, SCHEMAS, ref
from router.gateway.openapi_served import served_document
from router.serving.snapshot import Snapshot

Operation = dict[str, Any]

DESCRIPTION = """\
A traffic router for scikit-learn models: it routes each prediction to the champion or a \
challenger, logs every outcome, takes the ground truth later (`/feedback`) and computes the \
statistics for a blue-green switch.

Errors are JSON `{"error", "message", "detail"}` (the Open Inference Protocol's routes: \
`{"error": message, "code", "detail"}`), with the statuses listed per operation. Before any \
route, the connection itself may be answered `408 request_timeout` (headers not in within \
`limits.header_timeout_s`) or `503 too_many_connections` (over `limits.max_connections`) and \
closed; an unknown path is a `404 not_found` and a method a route does not take a \
`405 method_not_allowed` with an `Allow` header; every `GET` route also answers `HEAD`.

The features a row must hold and the bounds of their values, the names served under `/v1` \
and `/v2`, and the sticky-key and override headers depend on the YAML file and its models: \
a gateway's own `/openapi.json` names them."""


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def answer(description: str, schema: dict[str, Any], *,
           headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response = {"description": description, **json_content(schema)}
    return {**response, "headers": headers} if headers else response


def text_answer(description: str, *media_types: str) -> dict[str, Any]:
    return {"description": description,
            "content": {m: {"schema": {"type": "string"}} for m in media_types}}


def errors(*statuses: int, protocol: str = "") -> dict[str, Any]:
    """References to the error answers of ``statuses`` (``protocol="V2"``: the V2 shape)."""
    return {str(s): {"$ref": f"#/components/responses/{protocol}Error{s}"} for s in statuses}


def error_responses() -> dict[str, Any]:
    responses = {}
    for shape in ("", "V2"):
        field = "code" if shape else "error"
        for status, codes in ERROR_CODES.items():
            responses[f"{shape}Error{status}"] = answer(
                ", ".join(codes),
                {"allOf": [ref(f"{shape}Error")], "properties": {field: {"enum": codes}}})
    return responses


def or_empty(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema; an empty value (``?limit=``) is taken as not given."""
    return {"anyOf": [schema, {"const": ""}]}


REQUEST_ID = {
    "name": "X-Request-Id", "in": "header", "required": False,
    "schema": {"type": "string", "maxLength": MAX_ID, "pattern": NO_CONTROL},
    "description": "the prediction's id, kept if it names no earlier prediction (else 409); "
                   "without it (or empty) the gateway issues a UUIDv7"}
ANSWER_HEADERS = {
    "X-Request-Id": {"required": True, "schema": {"type": "string", "minLength": 1}},
    "X-Variant": {"required": True, "schema": ref("Variant")},
}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "the experiment's name, or (under /v2) one of its models'"}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "a model's version, or the experiment's configuration revision"}
REPORT_QUERY = [
    {"name": "alpha", "in": "query", "required": False,
     "schema": or_empty({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}),
     "description": "replay the verdict at another significance level"},
    {"name": "metric", "in": "query", "required": False,
     "schema": or_empty({"enum": ["accuracy", "log_loss", "mae", "rmse"]}),
     "description": "replay it on another metric (one the models' task has)"},
]
PREDICTION_ERRORS = (400, 408, 409, 413, 415, 422, 500, 503)
ADMIN = {"security": [{"bearerAuth": []}],
         "requestBody": {"required": False, **json_content(ref("SwitchRequest"))},
         "responses": {"200": answer("the switch, applied", ref("Switch")),
                       **errors(400, 401, 403, 408, 409, 413, 415, 422, 503)}}


def get(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Operation]:
    return {"get": {"summary": summary, "responses": responses, **extra}}


def post(summary: str, body: dict[str, Any] | None, responses: dict[str, Any],
         **extra: Any) -> dict[str, Operation]:
    operation: Operation = {"summary": summary, "responses": responses, **extra}
    if body is not None:
        operation["requestBody"] = {"required": True, **json_content(body)}
    return {"post": operation}


def v2_model_paths(prefix: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """A model's metadata, readiness and inference under ``prefix``."""
    not_found = errors(404, protocol="V2")
    return {
        prefix: get("the model's metadata: inputs, outputs, classes",
                    {"200": answer("metadata", ref("V2ModelMetadata")), **not_found},
                    parameters=parameters),
        f"{prefix}/ready": get("whether the model is ready",
                               {"200": answer("ready", ref("ModelStatus")), **not_found},
                               parameters=parameters),
        f"{prefix}/infer": post(
            "inference with tensors; the experiment's name is routed as /predict, a model's "
            "name is served by that model alone (logged as forced)",
            ref("V2InferRequest"),
            {"200": answer("the output tensors", ref("V2InferResponse"), headers=ANSWER_HEADERS),
             **errors(400, 404, 408, 409, 413, 415, 422, 500, 503, protocol="V2")},
            parameters=[*parameters, REQUEST_ID]),
    }


def paths() -> dict[str, Any]:
    report_errors = errors(422, 503)
    return {
        "/predict": post(
            "one prediction or a batch, routed per the YAML",
            ref("PredictRequest"),
            {"200": answer("the prediction", {"oneOf": [ref("Prediction"),
                                                        ref("BatchPrediction")]},
                           headers=ANSWER_HEADERS), **errors(*PREDICTION_ERRORS)},
            parameters=[REQUEST_ID]),
        "/feedback": post(
            "ground truth for earlier predictions, joined when the statistics are computed",
            ref("FeedbackRequest"),
            {"202": answer("accepted for the log", ref("FeedbackAccepted")),
             **errors(400, 408, 413, 415, 422, 503)}),
        "/config": get("the running configuration, its revision and the last reload error",
                       {"200": answer("the configuration", ref("Config"))}),
        "/stats": get("the experiment's results and recommendation",
                      {"200": answer("the report", ref("Stats")), **report_errors},
                      parameters=REPORT_QUERY),
        "/stats/timeline": get("the report's figures as the labels arrived",
                               {"200": answer("the timeline", ref("Timeline")), **report_errors},
                               parameters=REPORT_QUERY),
        "/history": get(
            "the switches (promote, rollback, rollout steps), oldest first",
            {"200": answer("the latest switches", ref("History")), **report_errors},
            parameters=[{"name": "limit", "in": "query", "required": False,
                         "schema": or_empty({"type": "integer", "minimum": 1,
                                             "maximum": 10_000}),
                         "description": "how many of the latest (100 by default)"}]),
        "/dashboard": get("the experiment's web page",
                          {"200": text_answer("the page", "text/html")}),
        "/dashboard/static/{name}": get(
            "the dashboard's script and stylesheet",
            {"200": text_answer("the file", "text/javascript", "text/css"), **errors(404)},
            parameters=[{"name": "name", "in": "path", "required": True,
                         "schema": {"enum": ["dashboard.js", "dashboard.css"]}}]),
        "/health": get("liveness", {"200": answer("the process serves", ref("Health"))}),
        "/ready": get("readiness: models loaded, store reachable and its file sound",
                      {"200": answer("ready", ref("Ready")), **errors(503)}),
        "/metrics": get("Prometheus metrics (OpenMetrics when the Accept header asks for it)",
                        {"200": text_answer("the metrics", "text/plain",
                                            "application/openmetrics-text")}),
        "/admin/promote": {"post": {"summary": "promote the challenger", **ADMIN}},
        "/admin/rollback": {"post": {"summary": "roll back to the previous champion", **ADMIN}},
        "/v1/models/{name}:predict": post(
            "KServe V1 prediction; name is the experiment", ref("KServeRequest"),
            {"200": answer("the predictions", ref("KServePredictions"),
                           headers=ANSWER_HEADERS),
             **errors(400, 404, 408, 409, 413, 415, 422, 500, 503)},
            parameters=[NAME, REQUEST_ID]),
        "/v1/models/{name}": get("KServe V1 model status",
                                 {"200": answer("the status", ref("ModelStatus")),
                                  **errors(404)}, parameters=[NAME]),
        "/v2": get("Open Inference Protocol: server metadata",
                   {"200": answer("metadata", ref("V2ServerMetadata"))}),
        "/v2/health/live": get("Open Inference Protocol: liveness",
                               {"200": answer("live", ref("V2Live"))}),
        "/v2/health/ready": get("Open Inference Protocol: readiness",
                                {"200": answer("ready", ref("V2Ready")),
                                 **errors(503, protocol="V2")}),
        **v2_model_paths("/v2/models/{name}", [NAME]),
        **v2_model_paths("/v2/models/{name}/versions/{version}", [NAME, VERSION]),
        "/openapi.json": get("this document",
                             {"200": answer("OpenAPI 3.1", {"type": "object"})}),
    }


@functools.cache
def base_document() -> dict[str, Any]:
    """The description every gateway shares, built once per process (not to be changed)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "router", "version": __version__, "description": DESCRIPTION,
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "paths": paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": error_responses(),
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "ROUTER_ADMIN_TOKEN; without it the admin routes answer 403"}},
        },
    }


def openapi_document(snapshot: Snapshot | None = None) -> dict[str, Any]:
    """The description; for ``snapshot``, with what its YAML and models fix (the features and
    their bounds, the names served, the sticky and override headers) filled in."""
    if snapshot is None:
        return base_document()
    return served_document(base_document(), snapshot)


# The last document served and the snapshot it describes: rebuilt after a reload only.
_served: tuple[Snapshot, bytes] | None = None


async def openapi_json(request: Request) -> Response:
    global _served
    snapshot = state_of(request).snapshots.current
    if _served is None or _served[0] is not snapshot:
        _served = (snapshot, orjson.dumps(openapi_document(snapshot)))
    return Response(_served[1], media_type="application/json")
