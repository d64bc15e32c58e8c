"""``GET /openapi.json``: the OpenAPI 3.1 description, kept true to the routes the app serves.

The answers of a live gateway are checked against it in tests/e2e/test_openapi_served.py, and
tests/e2e/test_fuzz.py fuzzes every operation it describes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette
from starlette.routing import Route

from router.gateway import create_app
from router.gateway.openapi import openapi_document
from router.strings import MAX_ID_LENGTH, MAX_SEGMENT_LENGTH
from tests.conftest import IRIS_FEATURES

ANSWER_CHECKS = [status_code_conformance, content_type_conformance,
                 response_headers_conformance, response_schema_conformance]
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def registered_operations(app: Starlette) -> set[tuple[str, str]]:
    """(path, method) of every route; HEAD is left out: Starlette adds it to each GET route
    and answers it as the GET without its body."""
    operations = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        operations |= {(route.path, m.lower()) for m in route.methods or () if m != "HEAD"}
    return operations


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items()
            for method in item if method in HTTP_METHODS}


def test_every_route_the_app_registers_is_described_and_nothing_else(tmp_path: Path) -> None:
    app = create_app(tmp_path / "router.yaml", base_dir=tmp_path)  # routes need no config
    # /dashboard/ only sends a browser to /dashboard: no API operation, and linters refuse a
    # path ending in a slash.
    registered = registered_operations(app) - {("/dashboard/", "get")}
    documented = documented_operations(openapi_document())
    assert registered - documented == set(), "routes the description lacks"
    assert documented - registered == set(), "operations the app does not serve"
    assert ("/openapi.json", "get") in registered


def test_the_description_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1.")
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(documented_operations(document))


def test_every_operation_documents_its_answers_and_error_shapes() -> None:
    """Each operation names a success and, where it reads input, the JSON error it answers."""
    document = openapi_document()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            assert statuses & {"200", "202"}, (method, path)
            if "requestBody" in operation or operation.get("parameters"):
                assert statuses & {"400", "404", "415", "422"}, (method, path)
            for status, response in operation["responses"].items():
                if "$ref" in response:
                    response = document["components"]["responses"][response["$ref"]
                                                                    .rsplit("/", 1)[1]]
                assert response["content"], (method, path, status)


def test_the_gateway_serves_its_own_features_names_and_headers(
        make_client: Callable[..., Any], champion_dir: Path, challenger_dir: Path) -> None:
    """The served document fills in what the YAML and the models fix; paths stay the same."""
    client = make_client(champion=champion_dir, challenger=challenger_dir, experiment="iris",
                         traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id",
                                  "override_header": "x-variant"})
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    served = answer.json()
    snapshot = client.app.state.gateway.snapshots.current
    assert served == openapi_document(snapshot)
    assert documented_operations(served) == documented_operations(openapi_document())
    schemathesis.openapi.from_dict(served).validate()

    positional, named = served["components"]["schemas"]["FeatureRow"]["oneOf"]
    assert positional["minItems"] == positional["maxItems"] == 4
    assert named["required"] == list(IRIS_FEATURES)
    bound = snapshot.input_bound
    assert named["properties"]["sepal_length"] == {"type": "number", "minimum": -bound,
                                                  "maximum": bound}
    predict = served["paths"]["/predict"]["post"]
    assert {p["name"] for p in predict["parameters"]} == {"X-Request-Id", "x-user-id",
                                                          "x-variant"}
    infer = served["paths"]["/v2/models/{name}/versions/{version}/infer"]["post"]
    by_name = {p["name"]: p["schema"] for p in infer["parameters"]}
    assert by_name["name"] == {"enum": ["iris", "champ", "chall"]}
    assert by_name["version"] == {"enum": ["1"]}  # revision 1, and both models' version
    kserve = served["paths"]["/v1/models/{name}:predict"]["post"]
    assert kserve["parameters"][0]["schema"] == {"enum": ["iris"]}


def test_body_keys_the_yaml_names_are_the_only_extra_keys_a_prediction_takes(
        make_client: Callable[..., Any], champion_dir: Path) -> None:
    """The sticky key and the segments, in the body or as headers, each with its length."""
    client = make_client(champion=champion_dir, mode="single",
                         traffic={"sticky_key": "body:customer"},
                         analysis={"segments": ["body:plan", "header:x-country"]})
    served = client.get("/openapi.json").json()
    body = served["components"]["schemas"]["PredictRequest"]
    assert set(body["properties"]) == {"features", "instances", "user_id", "customer", "plan"}
    assert body["additionalProperties"] is False
    kserve = served["components"]["schemas"]["KServeRequest"]
    assert set(kserve["properties"]) == {"instances", "user_id", "customer", "plan"}
    assert kserve["additionalProperties"] is False
    assert body["properties"]["plan"]["anyOf"][0]["maxLength"] == MAX_SEGMENT_LENGTH
    assert body["properties"]["customer"]["anyOf"][0]["maxLength"] == MAX_ID_LENGTH
    headers = served["paths"]["/predict"]["post"]["parameters"]
    assert [h["name"] for h in headers] == ["X-Request-Id", "x-country"]


def test_several_challengers_answer_as_their_gateway_describes(
        make_client: Callable[..., Any], champion_dir: Path, challenger_dir: Path,
        no_proba_dir: Path) -> None:
    """With challengers: listed, variants are their names, /stats has comparisons and a
    decision naming a challenger, the timeline one per challenger: all as the document says."""
    client = make_client(champion=champion_dir, challengers=[
        {"name": "gb", "path": str(challenger_dir), "percent": 30},
        {"name": "svc", "path": str(no_proba_dir), "percent": 30}],
        traffic={"sticky_key": "header:x-user-id"})
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    row = [5.1, 3.5, 1.4, 0.2]
    requests: list[tuple[str, str, dict[str, Any]]] = [
        *(("POST", "/predict", {"json": {"features": row}, "headers": {"x-user-id": f"u{i}"}})
          for i in range(12)),
        ("GET", "/stats", {}), ("GET", "/stats/timeline", {}), ("GET", "/ready", {}),
        ("GET", "/v2/models/{name}", {"name": "exp"}),
        ("GET", "/v2/models/{name}", {"name": "svc"}),
        ("POST", "/v2/models/{name}/infer", {"name": "svc", "json": {"inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": row}]}}),
    ]
    variants = set()
    for method, template, options in requests:
        parameters = {"name": options.pop("name")} if "name" in options else {}
        answer = client.request(method, template.format(**parameters), **options)
        assert answer.status_code == 200, answer.text
        schema[template][method].Case(path_parameters=parameters).validate_response(
            answer, checks=ANSWER_CHECKS)
        variants.add(answer.headers.get("x-variant"))
    assert {"champion", "gb", "svc"} <= variants
