"""What one gateway's ``/openapi.json`` adds to the shared description: its YAML and models.

The shared document (``router.gateway.openapi``) cannot know the features, the names served or
the headers the YAML configures; a running gateway knows them from its snapshot, so the
document it serves says exactly what it takes: a row of the champion's features, each within
the bound every loaded model can score (``router.input_bounds``), the experiment's and the
models' names under ``/v1`` and ``/v2``, and the sticky-key and override headers. A request
outside the document is refused (422, or 404 for a name), as a fuzzer driven by it checks.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from router.gateway.openapi_schemas import NO_CONTROL, Schema
from router.serving.input_bounds import NO_BOUND
from router.serving.snapshot import Snapshot
from router.strings import MAX_ID_LENGTH, MAX_SEGMENT_LENGTH

# The operations that take a prediction's input (and so the sticky, segment and override
# headers).
PREDICTING = {"/predict", "/v1/models/{name}:predict", "/v2/models/{name}/infer",
              "/v2/models/{name}/versions/{version}/infer"}


def keyed_values(snapshot: Snapshot) -> dict[tuple[str, str], tuple[int, str]]:
    """The values a request may carry under a configured key (the sticky key, the segments;
    ``router.gateway.request_keys``): by (header or body, name), their longest and what."""
    config = snapshot.config
    keys = [(config.traffic.sticky_key, MAX_ID_LENGTH, "the unit (user) id a variant sticks to"),
            *((key, MAX_SEGMENT_LENGTH, "a segment of the analysis")
              for key in config.analysis.segments)]
    values: dict[tuple[str, str], tuple[int, str]] = {}
    for key, longest, what in keys:
        if key is not None:
            known = values.get((key.source, key.name))
            values[(key.source, key.name)] = (longest, what) if known is None else \
                (min(longest, known[0]), f"{known[1]}; {what}")
    return values


def served_document(base: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
    """``base`` with ``snapshot``'s features, names and headers (a copy: base is shared)."""
    document = copy.deepcopy(base)
    schemas = document["components"]["schemas"]
    features = snapshot.champion.feature_names
    schemas["FeatureRow"] = feature_row(features, snapshot.input_bound)
    schemas["PredictRequest"] = with_body_keys(schemas["PredictRequest"], snapshot)
    schemas["KServeRequest"] = with_body_keys(schemas["KServeRequest"], snapshot)
    roles = snapshot.variants
    schemas["Variant"] = {**schemas["Variant"], "enum": list(roles)}
    experiment = snapshot.config.experiment
    names = list(dict.fromkeys([experiment, *(snapshot.names[r] for r in roles)]))
    versions = list(dict.fromkeys([str(snapshot.revision),
                                   *(snapshot.models[r].version for r in roles)]))
    for path, item in document["paths"].items():
        for operation in item.values():
            parameters = [served_parameter(p, path, experiment, names, versions)
                          for p in operation.get("parameters", [])]
            if path in PREDICTING:
                parameters += headers_of(snapshot)
            if parameters:
                operation["parameters"] = parameters
    document["info"]["description"] += (
        f"\n\nThis gateway serves the experiment `{experiment}` ({snapshot.config.mode}, "
        f"configuration revision {snapshot.revision}): "
        + ", ".join(f"{role} `{snapshot.names[role]}` version {snapshot.models[role].version}"
                    for role in roles)
        + f"; features {', '.join(f'`{name}`' for name in features)}.")
    return document


def feature_row(features: Sequence[str], bound: float) -> Schema:
    value: Schema = {"type": "number"}
    if bound < NO_BOUND:
        value |= {"minimum": -bound, "maximum": bound}
    count = len(features)
    return {"oneOf": [
        {"type": "array", "minItems": count, "maxItems": count, "items": value,
         "description": f"the values in this order: {', '.join(features)}"},
        {"type": "object", "required": list(features),
         "properties": {name: value for name in features}, "additionalProperties": False,
         "description": "the values by feature name"},
    ], "description": "one row; a value past what every served model can score is refused"}


def with_body_keys(base: Schema, snapshot: Snapshot) -> Schema:
    """A prediction body (``/predict``'s, KServe V1's): no key but the row(s), ``user_id`` and
    the configured body keys."""
    properties = dict(base["properties"])
    for (source, name), (longest, what) in keyed_values(snapshot).items():
        if source == "body":
            properties[name] = {
                "anyOf": [{"type": "string", "maxLength": longest, "pattern": NO_CONTROL},
                          {"type": "integer"}, {"type": "null"}],
                "description": f"{what}: a string or an integer; empty or null for none"}
    return {**base, "properties": properties, "additionalProperties": False}


def served_parameter(parameter: dict[str, Any], path: str, experiment: str,
                     names: list[str], versions: list[str]) -> dict[str, Any]:
    """A path parameter restricted to what this gateway serves (else a 404 is the answer)."""
    if parameter["in"] != "path" or parameter["name"] not in ("name", "version"):
        return parameter
    if parameter["name"] == "version":
        allowed = versions
    else:
        allowed = [experiment] if path.startswith("/v1/") else names
    return {**parameter, "schema": {"enum": allowed}}


def headers_of(snapshot: Snapshot) -> list[dict[str, Any]]:
    """The sticky-key, segment and override headers the YAML names, as header parameters."""
    headers = [{"name": name, "in": "header", "required": False,
                "schema": {"type": "string", "maxLength": longest, "pattern": NO_CONTROL},
                "description": what}
               for (source, name), (longest, what) in keyed_values(snapshot).items()
               if source == "header"]
    traffic = snapshot.config.traffic
    if traffic.override_header is not None and traffic.override_header not in \
            {h["name"] for h in headers}:
        headers.append({"name": traffic.override_header, "in": "header", "required": False,
                        "schema": {"type": "string"},
                        "description": "a variant to force (champion, challenger or a served "
                                       "model's name; anything else is a 422)"
                                       + ("; read only with the admin token"
                                          if traffic.override_requires_token else "")})
    return headers
