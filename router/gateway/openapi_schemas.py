"""The JSON Schemas of ``/openapi.json``: every body the gateway takes and answers.

Written by hand from the code that reads and writes each body (``router.inputs``,
``router.oip``, ``router.gateway.endpoints`` ...), and kept true by tests: a live gateway's
answers are validated against them, and a fuzzer sends what they describe and what they do not.
A schema is never stricter than the gateway (what it rejects, the gateway rejects too); it may
be looser where the limit is the served models' (the features and their number) or the YAML's
(a sticky key in the body).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

# What text the router keeps may hold (router.strings.text_problem): no control character.
NO_CONTROL = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
MAX_ID = 200
MAX_FEEDBACK_ID = MAX_ID + 8  # a batch row's "<id>:<i>"
MAX_LABEL = 1_000
MAX_REASON = 2_000


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def text(max_length: int, description: str = "") -> Schema:
    schema: Schema = {"type": "string", "minLength": 1, "maxLength": max_length,
                      "pattern": NO_CONTROL}
    return {**schema, "description": description} if description else schema


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def closed(required: list[str], properties: dict[str, Schema], description: str = ""
           ) -> Schema:
    """An object of exactly these keys (``required`` among them)."""
    schema: Schema = {"type": "object", "required": required, "properties": properties,
                      "additionalProperties": False}
    return {**schema, "description": description} if description else schema


def numbers(description: str) -> Schema:
    return {"type": "object", "additionalProperties": {"type": "number"},
            "description": description}


ERROR_CODES = {
    "400": ["bad_json", "invalid_header"],
    "401": ["unauthorized"],
    "403": ["admin_disabled"],
    "404": ["not_found"],
    "408": ["request_timeout"],
    "409": ["duplicate_request_id", "switch_refused"],
    "413": ["payload_too_large"],
    "415": ["unsupported_media_type"],
    "422": ["invalid_input"],
    "500": ["model_failed"],
    "503": ["not_ready", "overloaded", "store_unavailable"],
}

_LABEL: Schema = {"type": ["string", "number", "boolean"],
                  "description": "a class label of the model (a number for a regressor)"}
_PROBABILITIES = nullable(numbers("each class's probability; null for a model without them"))
_ROW_ANSWER = {"prediction": _LABEL,
               "probability": nullable({"type": "number", "minimum": 0, "maximum": 1}),
               "probabilities": _PROBABILITIES}
_HEAD = {"request_id": {"type": "string", "minLength": 1},
         "variant": ref("Variant"),
         "model": {"type": "string", "description": "the name the YAML serves it under"},
         "version": {"type": "string"}}
_TENSOR_DATA: Schema = {
    "type": "array", "items": {"anyOf": [{"type": "number"}, {"$ref": "#/components/schemas/"
                                                                      "V2TensorData"}]},
    "description": "row-major values, flat or nested"}

_USER_ID: Schema = {"description": "the unit id when sticky_key is body:user_id (a string of "
                                   "at most 200 characters or an integer); else unread"}

SCHEMAS: dict[str, Schema] = {
    "Variant": {"type": "string", "minLength": 1,
                "description": "who answered (after any fallback): champion, challenger, or a "
                               "challenger listed under challengers: by its name"},
    "Error": closed(["error", "message", "detail"], {
        "error": {"type": "string", "description": "a stable machine-readable code"},
        "message": {"type": "string", "description": "what is wrong, for a person"},
        "detail": {"type": "array", "description": "one entry per fault: field and message"},
    }, "Every error but the Open Inference Protocol's"),
    "V2Error": closed(["error", "code", "detail"], {
        "error": {"type": "string", "description": "the message (the protocol's shape)"},
        "code": {"type": "string", "description": "the code the other routes name `error`"},
        "detail": {"type": "array"},
    }, "An error of the Open Inference Protocol's routes"),
    "FeatureRow": {
        "oneOf": [
            {"type": "array", "minItems": 1, "items": {"type": "number"},
             "description": "values in the model's feature order"},
            {"type": "object", "minProperties": 1, "additionalProperties": {"type": "number"},
             "description": "values by feature name"},
        ],
        "description": "one row: every feature of the champion, finite, within what the served "
                       "models take (GET /config names the features)"},
    "PredictRequest": {
        "type": "object",
        "properties": {
            "features": ref("FeatureRow"),
            "instances": {"type": "array", "minItems": 1, "items": ref("FeatureRow"),
                          "description": "a batch, at most limits.max_batch rows"},
            "user_id": _USER_ID,
        },
        "oneOf": [{"required": ["features"]}, {"required": ["instances"]}],
        "description": "exactly one of features and instances; another key only when it is "
                       "the YAML's body sticky key"},
    "Prediction": closed(["request_id", "variant", "model", "version", *_ROW_ANSWER],
                         {**_HEAD, **_ROW_ANSWER}, "the answer to one row"),
    "BatchPrediction": closed(["request_id", "variant", "model", "version", "predictions"], {
        **_HEAD,
        "predictions": {"type": "array", "minItems": 1, "items": closed(
            ["id", *_ROW_ANSWER], {"id": {"type": "string", "description": "<request_id>:<i>"},
                                   **_ROW_ANSWER})},
    }, "the answer to a batch; each row's id may be named by feedback"),
    "FeedbackItem": {
        **closed(["request_id"], {
            "request_id": text(MAX_FEEDBACK_ID, "a prediction's id, or a batch row's"),
            "label": {"anyOf": [text(MAX_LABEL), {"type": "number"}],
                      "description": "the true class"},
            "value": {"type": "number", "description": "the true value (a regressor)"},
        }),
        "oneOf": [{"required": ["label"]}, {"required": ["value"]}]},
    "FeedbackRequest": {"oneOf": [
        ref("FeedbackItem"),
        closed(["feedback"], {"feedback": {"type": "array", "minItems": 1,
                                           "items": ref("FeedbackItem")}}),
    ]},
    "FeedbackAccepted": closed(["accepted"], {"accepted": {"type": "integer", "minimum": 1}}),
    "Health": closed(["status"], {"status": {"const": "ok"}}),
    "Ready": closed(["status", "revision", "models"], {
        "status": {"const": "ready"},
        "revision": {"type": "integer"},
        "models": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "role to <name>:<version>"}}),
    "Config": closed(["revision", "loaded_at", "last_reload_error", "config", "models"], {
        "revision": {"type": "integer"},
        "loaded_at": {"type": "string", "format": "date-time"},
        "last_reload_error": nullable({"type": "string"}),
        "config": {"type": "object", "description": "every key of the YAML, defaults filled"},
        "models": {"type": "object", "additionalProperties": ref("ServedModel")}}),
    "ServedModel": closed(
        ["name", "metadata_name", "version", "sha256", "task", "features", "engine",
         "engine_reason"], {
            "name": {"type": "string"}, "metadata_name": {"type": "string"},
            "version": {"type": "string"}, "sha256": {"type": "string"},
            "task": {"enum": ["classification", "regression"]},
            "features": {"type": "array", "items": {"type": "string"}},
            "engine": {"type": "string"}, "engine_reason": nullable({"type": "string"})}),
    "Stats": {
        "type": "object",
        "required": ["experiment", "mode", "config_revision", "metric", "analysis_unit",
                     "generated_at", "phase", "variants", "guardrails", "decision",
                     "unknown_feedback_ids"],
        "properties": {
            "experiment": {"type": "string"},
            "mode": {"enum": ["ab", "shadow", "single"]},
            "config_revision": nullable({"type": "integer"}),
            "metric": {"enum": ["accuracy", "log_loss", "mae", "rmse"]},
            "analysis_unit": {"enum": ["user", "request"]},
            "generated_at": {"type": "string", "format": "date-time"},
            "phase": {"type": "object"},
            "variants": {"type": "object", "additionalProperties": {"type": "object"}},
            "comparison": nullable({"type": "object"}),
            "challengers": {"type": "array", "items": {"type": "string"}},
            "comparisons": {"type": "object", "additionalProperties": {"type": "object"}},
            "guardrails": nullable({"type": "object"}),
            "decision": {
                "type": "object", "required": ["action", "reasons"],
                "properties": {"action": {"enum": ["promote", "continue", "rollback"]},
                               "reasons": {"type": "array", "items": {"type": "string"}},
                               "challenger": nullable({"type": "string"})},
                "additionalProperties": False},
            "unknown_feedback_ids": {"type": "integer", "minimum": 0},
        },
        "description": "the experiment's results (docs/statistics.md has every key): with one "
                       "challenger a comparison, with several (challengers:) comparisons and a "
                       "decision naming the challenger it acts on; also drift, rolling, outputs "
                       "and segments"},
    "Timeline": {
        "type": "object",
        "required": ["experiment", "mode", "metric", "higher_is_better", "alpha",
                     "confidence", "generated_at", "phase", "axis"],
        "properties": {
            "experiment": {"type": "string"}, "mode": {"enum": ["ab", "shadow", "single"]},
            "metric": {"type": "string"}, "higher_is_better": {"type": "boolean"},
            "alpha": {"type": "number"}, "confidence": {"type": "number"},
            "generated_at": {"type": "string", "format": "date-time"},
            "phase": {"type": "object"}, "axis": {"type": "string"},
            "labelled": {"type": "array", "items": {"type": "integer"}},
            "variants": {"type": "object"}, "comparison": nullable({"type": "object"}),
            "challengers": {"type": "array", "items": {"type": "string"}},
            "timelines": {"type": "object", "description": "per challenger (challengers:)"}},
        "additionalProperties": False},
    "History": closed(["history"], {"history": {"type": "array", "items": closed(
        ["ts", "action", "from", "to", "reason", "actor", "details", "experiment"], {
            "ts": {"type": "number", "description": "unix seconds"},
            "experiment": {"type": "string",
                           "description": "whose switch; empty if recorded before switches "
                                          "named it"},
            "action": {"type": "string"}, "from": nullable({"type": "string"}),
            "to": nullable({"type": "string"}), "reason": {"type": "string"},
            "actor": {"type": "string"}, "details": {"type": "object"}})}}),
    "SwitchRequest": {
        "type": "object",
        "properties": {"reason": text(MAX_REASON, "why; tabs and line feeds allowed") | {
            "pattern": "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$"}},
        "description": "optional; other keys are not read"},
    "Switch": closed(["action", "from", "to", "reason", "actor", "revision", "config"], {
        "action": {"enum": ["promote", "rollback"]}, "from": {"type": "string"},
        "to": {"type": "string"}, "reason": {"type": "string"}, "actor": {"type": "string"},
        "revision": {"type": "integer"}, "config": {"type": "object"}}),
    "KServeRequest": {
        "type": "object", "required": ["instances"],
        "properties": {"instances": {"type": "array", "minItems": 1,
                                     "items": ref("FeatureRow")},
                       "user_id": _USER_ID},
        "description": "the rows; another key only when the YAML names it as a body key"},
    "KServePredictions": closed(["predictions"], {"predictions": {"type": "array",
                                                                  "items": _LABEL}}),
    "ModelStatus": closed(["name", "ready"], {"name": {"type": "string"},
                                              "ready": {"type": "boolean"}}),
    "V2ServerMetadata": closed(["name", "version", "extensions"], {
        "name": {"type": "string"}, "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}}}),
    "V2Live": closed(["live"], {"live": {"type": "boolean"}}),
    "V2Ready": closed(["ready"], {"ready": {"type": "boolean"}}),
    "V2TensorMetadata": {
        "type": "object", "required": ["name", "datatype", "shape"],
        "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                       "shape": {"type": "array", "items": {"type": "integer"}},
                       "parameters": {"type": "object"}}},
    "V2ModelMetadata": closed(
        ["name", "versions", "platform", "inputs", "outputs", "parameters"], {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": ref("V2TensorMetadata")},
            "outputs": {"type": "array", "items": ref("V2TensorMetadata")},
            "parameters": {"type": "object"}}),
    "V2TensorData": _TENSOR_DATA,
    "V2InferRequest": closed(["inputs"], {
        "id": nullable(text(MAX_ID, "names the prediction, as X-Request-Id does")),
        "parameters": nullable({"type": "object", "description":
                                "may carry the sticky key's value under its header name"}),
        "inputs": {"type": "array", "minItems": 1, "items": closed(
            ["name", "shape", "datatype", "data"], {
                "name": {"type": "string",
                         "description": "input ([rows, features]) or a feature's name"},
                "shape": {"type": "array", "minItems": 1,
                          "items": {"type": "integer", "minimum": 0}},
                "datatype": {"enum": ["FP32", "FP64", "INT32", "INT64"]},
                "parameters": {"type": "object"},
                "data": ref("V2TensorData")})},
        "outputs": nullable({"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"enum": ["label", "probabilities"]}}}}),
    }),
    "V2InferResponse": closed(["model_name", "model_version", "id", "parameters", "outputs"], {
        "model_name": {"type": "string"}, "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": closed(["request_id", "variant", "model", "version"], _HEAD),
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name", "datatype", "shape", "data"],
            "properties": {"name": {"enum": ["label", "probabilities"]},
                           "datatype": {"enum": ["BYTES", "FP64"]},
                           "shape": {"type": "array", "items": {"type": "integer"}},
                           "parameters": {"type": "object"},
                           "data": {"type": "array"}}}}}),
}
