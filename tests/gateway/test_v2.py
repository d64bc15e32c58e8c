"""The Open Inference Protocol (KServe V2) routes in-process: metadata, inference, errors, log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.conftest import DIABETES_FEATURES, IRIS_FEATURES
from tests.gateway.test_app import records, state

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def matrix(rows: list[list[float]], datatype: str = "FP64", **extra: Any) -> dict[str, Any]:
    flat = [v for row in rows for v in row]
    return {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])],
                        "datatype": datatype, "data": flat}], **extra}


def per_feature(rows: list[list[float]], names: tuple[str, ...] = IRIS_FEATURES
                ) -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": [len(rows)], "datatype": "FP64",
                        "data": [row[j] for row in rows]}
                       for j, name in reversed(list(enumerate(names)))]}  # any order


def outputs_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in body["outputs"]}


@pytest.fixture
def ab(make_client: Any, champion_dir: Path, challenger_dir: Path) -> TestClient:
    """An ab gateway at 50 % with a sticky header, experiment "exp", models champ and chall."""
    return make_client(champion=champion_dir, challenger=challenger_dir,  # type: ignore[no-any-return]
                       traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id"})


def test_health_and_server_metadata(ab: TestClient) -> None:
    """Liveness, readiness and the server's metadata answer 200 in the protocol's shapes."""
    assert ab.get("/v2/health/live").json() == {"live": True}
    assert ab.get("/v2/health/ready").json() == {"ready": True}
    assert ab.get("/v2").json() == {"name": "router", "version": "0.1.0", "extensions": []}


def test_model_metadata_lists_inputs_and_outputs(ab: TestClient) -> None:
    """The experiment and each model list the input tensor, the outputs and their versions."""
    experiment = ab.get("/v2/models/exp").json()
    assert experiment["name"] == "exp" and experiment["versions"] == ["1"]
    assert experiment["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4],
                                     "parameters": {"features": list(IRIS_FEATURES)}}]
    assert experiment["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3],
         "parameters": {"classes": ["setosa", "versicolor", "virginica"]}}]
    assert set(experiment["parameters"]["models"]) == {"champion", "challenger"}
    model = ab.get("/v2/models/chall/versions/1").json()
    assert model["name"] == "chall" and model["versions"] == ["1"]
    assert model["parameters"]["models"] == {"challenger": {"name": "chall", "version": "1"}}
    for path in ("/v2/models/exp/ready", "/v2/models/champ/ready",
                 "/v2/models/champ/versions/1/ready"):
        assert ab.get(path).status_code == 200


@pytest.mark.parametrize("path", ["/v2/models/nope", "/v2/models/nope/ready",
                                  "/v2/models/champ/versions/7", "/v2/models/exp/versions/9/ready"])
def test_unknown_models_and_versions_are_404_in_the_protocols_shape(ab: TestClient,
                                                                     path: str) -> None:
    """A name or version the gateway does not serve: 404, {"error": "<message>"}."""
    response = ab.get(path)
    assert response.status_code == 404
    body = response.json()
    assert isinstance(body["error"], str) and body["code"] == "not_found"
    assert "exp, champ, chall" in body["error"] or "serves" in body["error"]


def test_infer_equals_predict_for_the_same_rows(ab: TestClient) -> None:
    """The same rows give the same labels and probabilities from /v2 infer as from /predict;
    the answer is logged under its request id, and feedback on <id>:<i> reaches /stats."""
    headers = {"x-user-id": "user-1"}
    predicted = ab.post("/predict", json={"instances": ROWS}, headers=headers).json()
    response = ab.post("/v2/models/exp/infer", json=matrix(ROWS), headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-variant"] == body["parameters"]["variant"] == predicted["variant"]
    out = outputs_of(body)
    assert out["label"]["datatype"] == "BYTES" and out["label"]["shape"] == [3]
    assert out["label"]["data"] == [p["prediction"] for p in predicted["predictions"]]
    probabilities = out["probabilities"]
    classes = probabilities["parameters"]["classes"]
    assert probabilities["shape"] == [3, 3] and probabilities["datatype"] == "FP64"
    assert np.reshape(probabilities["data"], (3, 3)).tolist() == [
        [p["probabilities"][c] for c in classes] for p in predicted["predictions"]]

    request_id = body["id"]
    assert request_id == body["parameters"]["request_id"] == response.headers["x-request-id"]
    logged = [r for r in records(ab) if r.request_id.startswith(request_id)]
    assert [r.request_id for r in logged] == [f"{request_id}:{i}" for i in range(3)]
    assert all(r.unit_id == "user-1" and not r.forced for r in logged)
    assert ab.post("/feedback", json={"feedback": [
        {"request_id": f"{request_id}:{i}", "label": "setosa"} for i in range(3)]}
                   ).status_code == 202
    state(ab).writer.flush()
    stats = ab.get("/stats").json()
    assert sum(v["labelled"] for v in stats["variants"].values()) == 3


def test_one_tensor_per_feature_equals_the_matrix(ab: TestClient) -> None:
    """MLServer's pandas-style request, one 1-D tensor per feature in any order, gives the
    same answer as the [rows, features] tensor; [rows, 1] columns are taken too."""
    headers = {"x-user-id": "user-2"}
    as_matrix = ab.post("/v2/models/exp/infer", json=matrix(ROWS), headers=headers).json()
    columns = per_feature(ROWS)
    as_columns = ab.post("/v2/models/exp/infer", json=columns, headers=headers).json()
    for tensor in columns["inputs"]:
        tensor["shape"] = [len(ROWS), 1]
    as_tall = ab.post("/v2/models/exp/infer", json=columns, headers=headers).json()
    assert as_matrix["outputs"] == as_columns["outputs"] == as_tall["outputs"]


def test_fp32_and_integer_tensors(ab: TestClient) -> None:
    """FP32 data reaches the model rounded to float32, as a tensor of that type holds it;
    INT32 and INT64 data are taken as whole numbers; nested data equals flat data."""
    ab.post("/v2/models/exp/infer", json=matrix(ROWS, "FP32"))
    ab.post("/v2/models/exp/infer", json=matrix([[5, 3, 1, 0]], "INT64"))
    nested = matrix([[6, 3, 5, 2]], "INT32")
    nested["inputs"][0]["data"] = [[6, 3, 5, 2]]
    assert ab.post("/v2/models/exp/infer", json=nested).status_code == 200
    logged = records(ab)
    assert logged[0].features == tuple(float(np.float32(v)) for v in ROWS[0])
    assert logged[0].features != tuple(ROWS[0])
    assert logged[3].features == (5.0, 3.0, 1.0, 0.0)
    assert logged[4].features == (6.0, 3.0, 5.0, 2.0)


def test_outputs_select_what_is_answered(ab: TestClient) -> None:
    """"outputs" names what comes back; an unknown output is a 422 naming the choices."""
    only = ab.post("/v2/models/exp/infer",
                   json=matrix(ROWS, outputs=[{"name": "probabilities",
                                               "parameters": {"binary_data": False}}])).json()
    assert [o["name"] for o in only["outputs"]] == ["probabilities"]
    response = ab.post("/v2/models/exp/infer", json=matrix(ROWS, outputs=[{"name": "scores"}]))
    assert response.status_code == 422
    assert "label, probabilities" in response.json()["error"]
    assert response.json()["detail"][0]["field"] == "outputs[0].name"


def test_a_model_named_is_served_alone_and_logged_as_forced(ab: TestClient) -> None:
    """/v2/models/chall/infer is answered by the challenger for every user, logged as forced,
    and counted apart in /stats."""
    for user in range(20):
        response = ab.post("/v2/models/chall/versions/1/infer", json=matrix(ROWS[:1]),
                           headers={"x-user-id": f"user-{user}"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert response.headers["x-variant"] == "challenger"
        assert (body["model_name"], body["model_version"]) == ("chall", "1")
    logged = records(ab)
    assert len(logged) == 20 and all(r.forced and r.variant == "challenger" for r in logged)
    stats = ab.get("/stats").json()
    assert stats["variants"]["challenger"]["forced"] == 20
    assert stats["variants"]["challenger"]["requests"] == 0


def test_request_id_from_the_body_or_the_header(ab: TestClient) -> None:
    """The request's "id" is echoed and names its rows in the log; X-Request-Id wins."""
    body = ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1], id="req-42")).json()
    assert body["id"] == "req-42" and body["parameters"]["request_id"] == "req-42"
    both = ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1], id="req-43"),
                   headers={"x-request-id": "hdr-43"}).json()
    assert both["id"] == "req-43" and both["parameters"]["request_id"] == "hdr-43"
    assert [r.request_id for r in records(ab)] == ["req-42:0", "hdr-43:0"]


def test_a_reused_id_is_named_where_it_was_sent(ab: TestClient) -> None:
    """A request's id used twice is a 409 naming where it came from: the body's ``id`` field,
    or the X-Request-Id header."""
    assert ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1], id="order-1")).status_code \
        == 200
    again = ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1], id="order-1"))
    assert again.status_code == 409, again.text
    assert again.json()["error"].startswith("the request's id 'order-1' was already used")
    assert again.json()["detail"] == [{"field": "id", "request_id": "order-1"}]
    # An empty header is no id: the body's names the request, and was used.
    empty_header = ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1], id="order-1"),
                           headers={"x-request-id": ""})
    assert empty_header.status_code == 409, empty_header.text
    assert empty_header.json()["detail"] == [{"field": "id", "request_id": "order-1"}]
    # A clash on a row's id names that row: "order-2" was never sent, its row id was.
    assert ab.post("/predict", json={"features": ROWS[0]},
                   headers={"x-request-id": "order-2:0"}).status_code == 200
    row_clash = ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1], id="order-2"))
    assert row_clash.status_code == 409, row_clash.text
    assert row_clash.json()["error"].startswith(
        "the request's id 'order-2' names a row 'order-2:0' that was already used")
    assert row_clash.json()["detail"] == [
        {"field": "id", "request_id": "order-2", "used": "order-2:0"}]
    by_header = ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1]),
                        headers={"x-request-id": "order-1"})
    assert by_header.status_code == 409, by_header.text
    assert by_header.json()["error"].startswith("X-Request-Id 'order-1' was already used")
    assert by_header.json()["detail"] == [{"header": "x-request-id", "request_id": "order-1"}]


def test_sticky_key_from_the_header_or_the_parameters(ab: TestClient, make_client: Any,
                                                      champion_dir: Path,
                                                      challenger_dir: Path) -> None:
    """A header sticky key is read from the header, else from the request's parameters; a
    body key (body:user_id) from the parameters."""
    ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1], parameters={"x-user-id": "p-1"}))
    ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1], parameters={"x-user-id": "p-2"}),
            headers={"x-user-id": "h-2"})
    assert [r.unit_id for r in records(ab)] == ["p-1", "h-2"]
    by_body = make_client(champion=champion_dir, challenger=challenger_dir,
                          name="body.yaml", traffic={"challenger_percent": 50,
                                                     "sticky_key": "body:user_id"})
    by_body.post("/v2/models/exp/infer", json=matrix(ROWS[:1], parameters={"user_id": 7}))
    assert [r.unit_id for r in records(by_body)] == ["7"]


def test_a_sticky_header_names_the_same_user_as_the_parameters(ab: TestClient) -> None:
    """A user id sent as a header (its UTF-8 bytes) and in the parameters is one user: one
    unit id in the log, so one variant whichever protocol the client speaks."""
    user = "Zoë-Ødegaard"
    for _ in range(3):
        by_header = ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1]),
                            headers={"x-user-id": user.encode()})
        in_parameters = ab.post("/v2/models/exp/infer",
                                json=matrix(ROWS[:1], parameters={"x-user-id": user}))
        assert (by_header.status_code, in_parameters.status_code) == (200, 200), by_header.text
    # An empty header is an absent one: the parameters name the user.
    ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1], parameters={"x-user-id": user}),
            headers={"x-user-id": ""})
    logged = records(ab)
    assert len(logged) == 7 and {r.unit_id for r in logged} == {user}
    assert len({r.variant for r in logged}) == 1


def test_no_content_type_is_json_and_another_is_refused(ab: TestClient) -> None:
    """tritonclient sends no Content-Type: the body is read as JSON; text/plain is a 415."""
    import orjson

    raw = orjson.dumps(matrix(ROWS[:1]))
    assert ab.post("/v2/models/exp/infer", content=raw).status_code == 200
    refused = ab.post("/v2/models/exp/infer", content=raw, headers={"content-type": "text/plain"})
    assert refused.status_code == 415 and "Content-Type" in refused.json()["error"]


def bad(tensor: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                        "data": [5.1, 3.5, 1.4, 0.2], **tensor}]}


@pytest.mark.parametrize(("body", "status", "field", "words"), [
    (bad({"datatype": "BOOL"}), 422, "inputs[0].datatype", "FP32, FP64, INT32, INT64"),
    (bad({"shape": [1, 3]}), 422, "inputs[0].shape", "[rows, 4]"),
    (bad({"shape": [4]}), 422, "inputs[0].shape", "[rows, 4]"),
    (bad({"shape": [2, 4]}), 422, "inputs[0].data", "holds 4 values where its shape needs 8"),
    (bad({"data": [5.1, "3.5", None, True]}), 422, "inputs[0].data[1] (row 0, sepal_width)",
     "must be a number"),
    (bad({"datatype": "INT32", "data": [5, 3, 1.5, 2**40]}), 422,
     "inputs[0].data[2] (row 0, petal_length)", "INT32 needs an integer"),
    (bad({"datatype": "FP32", "data": [5.1, 3.5, 1e39, 0.2]}), 422,
     "inputs[0].data[2] (row 0, petal_length)", "out of FP32's range"),
    (bad({"shape": [0, 4], "data": []}), 422, "inputs[0].shape", "no rows"),
    (bad({"parameters": {"binary_data_size": 32}}), 415,
     "inputs[0].parameters.binary_data_size", "binary_data=False"),
    (bad({"shape": [1001, 4], "data": [1.0] * 4004}), 413, "inputs[0].shape", "max_batch"),
    ({"inputs": []}, 422, "inputs", "non-empty"),
    ({"inputs": [{"name": "sepal_length", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
     422, "inputs.sepal_width", "missing"),
    ({"inputs": [{"name": "petals", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
     422, "inputs[0].name", "one per feature"),
    ({"instances": [[1, 2, 3, 4]]}, 422, "instances", "unknown"),
    ({"id": 5, "inputs": []}, 422, "id", "must be a string"),
    ({"inputs": [{"name": {}, "shape": [1], "datatype": "FP64", "data": [1.0]}]},
     422, "inputs[0].name", "must be a string"),
    ({"inputs": [{"name": ["input"], "shape": [1, 4], "datatype": "FP64", "data": [1.0] * 4}]},
     422, "inputs[0].name", "must be a string"),
    (bad({}) | {"parameters": False}, 422, "parameters", "must be an object"),
    ({"inputs": bad({})["inputs"] * 2}, 422, "inputs[1].name", "'input' given twice"),
    ({"inputs": [*bad({})["inputs"], {"name": "sepal_length", "shape": [1], "datatype": "FP64",
                                      "data": [1.0]}]},
     422, "inputs[0].name", "holds every feature: send it alone"),
    (bad({}) | {"parameters": []}, 422, "parameters", "must be an object"),
])
def test_bad_requests_name_the_field(ab: TestClient, body: dict[str, Any], status: int,
                                     field: str, words: str) -> None:
    """Each fault is answered with today's status in the protocol's shape, naming the field;
    nothing is logged."""
    response = ab.post("/v2/models/exp/infer", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert words in error["error"], error
    assert error["detail"][0]["field"] == field, error
    assert records(ab) == []


def test_nan_in_a_tensor_is_a_422(ab: TestClient) -> None:
    """NaN (which tritonclient's JSON writes as a literal) is refused with its place named."""
    raw = (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", '
           b'"data": [5.1, NaN, 1.4, 0.2]}]}')
    response = ab.post("/v2/models/exp/infer", content=raw)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "inputs[0].data[1] (row 0, sepal_width)"


def test_binary_extension_header_is_a_415(ab: TestClient) -> None:
    """A body in the binary tensor extension (Inference-Header-Content-Length) is refused."""
    response = ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1]),
                       headers={"inference-header-content-length": "80"})
    assert response.status_code == 415 and "binary" in response.json()["error"]


def test_a_regressor_answers_fp64_labels_without_probabilities(make_client: Any,
                                                              regressor_dir: Path) -> None:
    """A regressor's label tensor is FP64; it has no probabilities to ask for."""
    client = make_client(champion=regressor_dir, mode="single")
    metadata = client.get("/v2/models/exp").json()
    assert metadata["outputs"] == [{"name": "label", "datatype": "FP64", "shape": [-1]}]
    row = [0.01] * len(DIABETES_FEATURES)
    body = client.post("/v2/models/exp/infer", json=matrix([row])).json()
    predicted = client.post("/predict", json={"features": row}).json()
    [label] = body["outputs"]
    assert label["datatype"] == "FP64" and label["data"] == [predicted["prediction"]]
    refused = client.post("/v2/models/exp/infer",
                          json=matrix([row], outputs=[{"name": "probabilities"}]))
    assert refused.status_code == 422


def test_the_override_header_forces_the_experiments_infer(make_client: Any, champion_dir: Path,
                                                          challenger_dir: Path) -> None:
    """traffic.override_header works on /v2/models/<experiment>/infer as on /predict."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         traffic={"challenger_percent": 0, "override_header": "x-router-variant"})
    response = client.post("/v2/models/exp/infer", json=matrix(ROWS[:1]),
                           headers={"x-router-variant": "challenger"})
    assert response.headers["x-variant"] == "challenger"
    assert [(r.variant, r.forced) for r in records(client)] == [("challenger", True)]
