"""End to end: a live gateway's real answers, good and bad, are what its /openapi.json says.

One request or more per operation (successes, then the errors it can give without breaking the
gateway), each answer checked against the served description: a documented status, the
documented content type and headers, a body valid against the schema. The fuzz test
(tests/e2e/test_fuzz.py) sends generated requests; this one sends the answers a client meets.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.server import Server

pytestmark = pytest.mark.e2e

EXPERIMENT = "served"
ADMIN_TOKEN = "served-admin-token"
ROW = [5.1, 3.5, 1.4, 0.2]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
JSON = {"content-type": "application/json"}
ADMIN = {**JSON, "authorization": f"Bearer {ADMIN_TOKEN}"}


def tensor(name: str = "input", shape: list[int] | None = None, data: list[Any] | None = None,
           datatype: str = "FP64") -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": shape or [1, 4], "datatype": datatype,
                        "data": ROW if data is None else data}]}


# (method, path template, path parameters, request keywords, the status expected)
REQUESTS: list[tuple[str, str, dict[str, str], dict[str, Any], int]] = [
    ("GET", "/openapi.json", {}, {}, 200),
    ("POST", "/predict", {}, {"json": {"features": ROW, "user_id": "u1"}}, 200),
    ("POST", "/predict", {}, {"json": {"instances": [ROW, dict(zip(
        ["sepal_length", "sepal_width", "petal_length", "petal_width"], ROW, strict=True))]},
        "headers": {"x-request-id": "served-batch"}}, 200),
    ("POST", "/predict", {}, {"json": {"features": ROW},
                              "headers": {"x-request-id": "served-batch:1"}}, 409),
    ("POST", "/predict", {}, {"json": {"features": [1.0]}}, 422),
    ("POST", "/predict", {}, {"json": {"features": [1e300, 1, 1, 1]}}, 422),
    ("POST", "/predict", {}, {"content": b"[" * 2000, "headers": JSON}, 400),
    ("POST", "/predict", {}, {"content": b"{}", "headers": {"content-type": "text/plain"}},
     415),
    ("POST", "/predict", {}, {"content": b"[" * 1_100_000, "headers": JSON}, 413),
    ("POST", "/feedback", {}, {"json": {"request_id": "served-batch:0", "label": "setosa"}},
     202),
    ("POST", "/feedback", {}, {"json": {"feedback": [{"request_id": "x", "label": "virginica"}]}},
     202),
    ("POST", "/feedback", {}, {"json": {"feedback": [{"request_id": "x", "value": 1}]}}, 422),
    ("POST", "/feedback", {}, {"json": {"request_id": "x"}}, 422),
    ("GET", "/config", {}, {}, 200),
    ("GET", "/stats", {}, {}, 200),
    ("GET", "/stats", {}, {"params": {"alpha": "0.1", "metric": "log_loss"}}, 200),
    ("GET", "/stats", {}, {"params": {"metric": "mae"}}, 422),
    ("GET", "/stats/timeline", {}, {}, 200),
    ("GET", "/stats/timeline", {}, {"params": {"alpha": "2"}}, 422),
    ("GET", "/history", {}, {"params": {"limit": "5"}}, 200),
    ("GET", "/history", {}, {"params": {"limit": "0"}}, 422),
    ("GET", "/dashboard", {}, {}, 200),
    ("GET", "/dashboard/static/{name}", {"name": "dashboard.js"}, {}, 200),
    ("GET", "/dashboard/static/{name}", {"name": "dashboard.css"}, {}, 200),
    ("GET", "/dashboard/static/{name}", {"name": "nope.js"}, {}, 404),
    ("GET", "/health", {}, {}, 200),
    ("GET", "/ready", {}, {}, 200),
    ("GET", "/metrics", {}, {}, 200),
    ("GET", "/metrics", {}, {"headers": {"accept": "application/openmetrics-text"}}, 200),
    ("POST", "/v1/models/{name}:predict", {"name": "served"}, {"json": {"instances": [ROW]}},
     200),
    ("POST", "/v1/models/{name}:predict", {"name": "champ"}, {"json": {"instances": [ROW]}},
     404),
    ("POST", "/v1/models/{name}:predict", {"name": "served"}, {"json": {"rows": [ROW]}}, 422),
    ("GET", "/v1/models/{name}", {"name": "served"}, {}, 200),
    ("GET", "/v1/models/{name}", {"name": "nope"}, {}, 404),
    ("GET", "/v2", {}, {}, 200),
    ("GET", "/v2/health/live", {}, {}, 200),
    ("GET", "/v2/health/ready", {}, {}, 200),
    ("GET", "/v2/models/{name}", {"name": "served"}, {}, 200),
    ("GET", "/v2/models/{name}", {"name": "chall"}, {}, 200),
    ("GET", "/v2/models/{name}", {"name": "nope"}, {}, 404),
    ("GET", "/v2/models/{name}/ready", {"name": "champ"}, {}, 200),
    ("POST", "/v2/models/{name}/infer", {"name": "served"}, {"json": tensor()}, 200),
    ("POST", "/v2/models/{name}/infer", {"name": "chall"},
     {"json": {**tensor(datatype="FP32"), "id": "served-v2", "outputs": [{"name": "label"}]}},
     200),
    ("POST", "/v2/models/{name}/infer", {"name": "served"},
     {"json": {**tensor(), "id": "served-v2"}}, 409),
    ("POST", "/v2/models/{name}/infer", {"name": "served"}, {"json": tensor(shape=[2, 4])},
     422),
    ("GET", "/v2/models/{name}/versions/{version}", {"name": "champ", "version": "1"}, {}, 200),
    ("GET", "/v2/models/{name}/versions/{version}", {"name": "champ", "version": "9"}, {},
     404),
    ("GET", "/v2/models/{name}/versions/{version}/ready", {"name": "served", "version": "1"},
     {}, 200),
    ("POST", "/v2/models/{name}/versions/{version}/infer", {"name": "served", "version": "1"},
     {"json": tensor()}, 200),
    ("POST", "/admin/promote", {}, {"json": {"reason": "x"}, "headers": JSON}, 401),
    ("POST", "/admin/promote", {}, {"json": {"reason": "a\x00b"}, "headers": ADMIN}, 422),
    ("POST", "/admin/promote", {}, {"json": {"reason": "served test"}, "headers": ADMIN}, 200),
    ("POST", "/admin/promote", {}, {"headers": ADMIN}, 409),
    ("POST", "/admin/rollback", {}, {"headers": ADMIN}, 200),
    ("GET", "/history", {}, {}, 200),
]


@pytest.fixture(scope="module")
def server(ab_server: Server) -> Server:
    """The shared ab gateway (tests/e2e/conftest.py) for this module's experiment."""
    return ab_server


def test_real_answers_are_what_the_description_says(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    exercised = set()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for method, template, path_parameters, request, status in REQUESTS:
            path = template.format(**path_parameters)
            answer = client.request(method, path, **request)
            assert answer.status_code == status, (method, path, answer.text)
            operation = schema[template][method]
            operation.Case(path_parameters=path_parameters).validate_response(
                answer, checks=CHECKS)
            exercised.add((template, method.lower()))
    documented = {(path, method) for path, item in schema.raw_schema["paths"].items()
                  for method in item}
    assert documented - exercised == set(), "operations this test does not call"
