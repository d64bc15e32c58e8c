"""The app in-process (TestClient runs the lifespan): routes, answers, errors, logging."""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from router.gateway.endpoints import new_request_id
from router.gateway.state import GatewayState
from router.serving.registry import ModelRegistry


def state(client: TestClient) -> GatewayState:
    return client.app.state.gateway  # type: ignore[attr-defined, no-any-return]


def feature_names(model_dir: Path) -> list[str]:
    return list(ModelRegistry().load(model_dir).feature_names)


def named_row(model_dir: Path, values: list[float] | None = None) -> dict[str, float]:
    names = feature_names(model_dir)
    values = values or [5.1, 3.5, 1.4, 0.2][: len(names)]
    return dict(zip(names, values, strict=True))


def records(client: TestClient) -> list[Any]:
    gateway = state(client)
    gateway.writer.flush()
    return gateway.store.prediction_records()


def test_single_answer_has_spec_fields_and_headers(make_client: Any, champion_dir: Path,
                                                    challenger_dir: Path) -> None:
    """A named-feature request gets SPEC.md's answer, X-Request-Id and X-Variant."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         traffic={"challenger_percent": 0})
    response = client.post("/predict", json={"features": named_row(champion_dir)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["request_id", "variant", "model", "version", "prediction",
                          "probability", "probabilities"]
    assert body["variant"] == "champion" and body["model"] == "champ"
    assert response.headers["x-variant"] == "champion"
    assert response.headers["x-request-id"] == body["request_id"]
    assert math.isclose(sum(body["probabilities"].values()), 1.0)
    assert body["probability"] == body["probabilities"][str(body["prediction"])]
    served = ModelRegistry().load(champion_dir)
    expected = served.predict(np.array([list(named_row(champion_dir).values())]))
    assert body["prediction"] == expected.labels[0]


def test_client_request_id_is_kept_and_batch_rows_get_their_own(make_client: Any,
                                                                champion_dir: Path) -> None:
    """A client's X-Request-Id is kept; batch rows are <request_id>:<index>."""
    client = make_client(champion=champion_dir, mode="single")
    row = named_row(champion_dir)
    response = client.post("/predict", json={"instances": [row, list(row.values())]},
                           headers={"X-Request-Id": "abc-123"})
    body = response.json()
    assert response.headers["x-request-id"] == "abc-123" and body["request_id"] == "abc-123"
    assert [p["id"] for p in body["predictions"]] == ["abc-123:0", "abc-123:1"]
    assert body["predictions"][0]["prediction"] == body["predictions"][1]["prediction"]
    assert [r.request_id for r in records(client)] == ["abc-123:0", "abc-123:1"]


def test_generated_request_ids_are_time_ordered_uuid7s(make_client: Any,
                                                       champion_dir: Path) -> None:
    """Without X-Request-Id the gateway issues UUIDv7s (hex): unique, in time order."""
    client = make_client(champion=champion_dir, mode="single")
    ids = []
    for _ in range(30):
        ids.append(client.post("/predict", json={"features": named_row(champion_dir)}
                               ).json()["request_id"])
        time.sleep(0.001)  # one millisecond apart: the order is the time's, not the chance's
    parsed = [uuid.UUID(hex=i) for i in ids]
    assert all(len(i) == 32 and u.version == 7 and u.variant == uuid.RFC_4122
               for i, u in zip(ids, parsed, strict=True))
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    now_ms = time.time() * 1000
    assert all(abs((u.int >> 80) - now_ms) < 60_000 for u in parsed)


def test_a_forked_worker_draws_other_request_ids() -> None:
    """Ids come from a generator seeded per process: a forked child (a worker) and its parent
    never issue the same random part."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id to the parent, then out without running pytest's exit
        os.write(write_end, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read_end, 64).decode()
    os.close(read_end)
    os.close(write_end)
    assert child[12:] != new_request_id()[12:]


def test_every_answered_row_is_logged_with_its_context(make_client: Any, champion_dir: Path,
                                                       challenger_dir: Path) -> None:
    """Each answered row becomes a record with revision, variant, model, features, latency."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id"})
    answers = [client.post("/predict", json={"features": named_row(champion_dir)},
                           headers={"x-user-id": f"user-{i}"}).json() for i in range(40)]
    logged = {r.request_id: r for r in records(client)}
    assert len(logged) == 40
    for answer in answers:
        record = logged[answer["request_id"]]
        assert record.variant == answer["variant"] and record.revision == 1
        assert record.model == answer["model"] and record.experiment == "exp"
        assert record.prediction == answer["prediction"] and record.error is None
        assert record.features == tuple(named_row(champion_dir).values())
        assert record.latency_ms > 0 and record.unit_id is not None
    assert {a["variant"] for a in answers} == {"champion", "challenger"}


def test_body_sticky_key_pins_the_variant(make_client: Any, champion_dir: Path,
                                          challenger_dir: Path) -> None:
    """With sticky_key body:user_id the same user always lands on the same variant, and the
    users split between both variants."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         traffic={"challenger_percent": 50, "sticky_key": "body:user_id"})
    variants = {}
    for user in (f"u{i}" for i in range(20)):
        seen = {client.post("/predict", json={"features": named_row(champion_dir),
                                              "user_id": user}).json()["variant"]
                for _ in range(3)}
        assert len(seen) == 1, (user, seen)
        variants[user] = seen.pop()
    # 20 users at 50 %: all on one side has chance 2 * 0.5**20 for a random split.
    assert set(variants.values()) == {"champion", "challenger"}, variants


def test_failing_challenger_is_answered_by_the_champion(make_client: Any, champion_dir: Path,
                                                        failing_dir: Path) -> None:
    """A challenger that raises: the client gets the champion's answer, the error is counted."""
    client = make_client(champion=champion_dir, challenger=failing_dir,
                         traffic={"challenger_percent": 100})
    responses = [client.post("/predict", json={"features": named_row(champion_dir)})
                 for _ in range(5)]
    assert all(r.status_code == 200 and r.json()["variant"] == "champion" for r in responses)
    assert state(client).service.counts[("challenger", "errors")] == 5
    logged = records(client)
    assert sum(r.variant == "challenger" and r.error is not None for r in logged) == 5
    assert sum(r.variant == "champion" and r.fallback for r in logged) == 5


def test_failing_champion_is_a_500_with_the_request_id(make_client: Any,
                                                       failing_dir: Path) -> None:
    """The champion failing is the one 5xx: JSON naming the request id, and it is logged."""
    client = make_client(champion=failing_dir, mode="single")
    response = client.post("/predict", json={"features": named_row(failing_dir)},
                           headers={"X-Request-Id": "r-1"})
    assert response.status_code == 500
    assert response.json()["error"] == "model_failed" and "r-1" in response.json()["message"]
    assert [r.error is not None for r in records(client)] == [True]


def test_model_without_probabilities_serves_labels(make_client: Any, no_proba_dir: Path) -> None:
    """A pipeline whose last step has no predict_proba answers labels, probabilities null."""
    client = make_client(champion=no_proba_dir, mode="single")
    body = client.post("/predict", json={"features": named_row(no_proba_dir)}).json()
    assert body["prediction"] is not None
    assert body["probability"] is None and body["probabilities"] is None


def test_regressor_serves_values(make_client: Any, regressor_dir: Path) -> None:
    """A regression pipeline answers a number."""
    client = make_client(champion=regressor_dir, mode="single")
    names = feature_names(regressor_dir)
    body = client.post("/predict", json={"features": [1.0] * len(names)}).json()
    assert isinstance(body["prediction"], float) and body["probabilities"] is None


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"content": b'{"features": [1, 2', "headers": {"content-type": "application/json"}},
     400, "bad_json"),
    ({"content": b"features=1", "headers": {"content-type": "application/x-www-form-urlencoded"}},
     415, "unsupported_media_type"),
    ({"json": {"features": [1, 2]}}, 422, "invalid_input"),
    ({"json": {"features": {"sepal_length": None}}}, 422, "invalid_input"),
    ({"content": b'{"features": [NaN, 1, 2, 3]}', "headers": {"content-type": "application/json"}},
     422, "invalid_input"),
    ({"json": {"instances": [[1, 2, 3, 4]] * 11}}, 413, "payload_too_large"),
    ({"content": b'{"features": [' + b"1," * 600 + b"1]}",
      "headers": {"content-type": "application/json"}}, 413, "payload_too_large"),
])
def test_bad_input_gets_a_clear_json_error(make_client: Any, champion_dir: Path,
                                           kwargs: dict[str, Any], status: int, code: str) -> None:
    """400/413/415/422 per SPEC.md, always {"error","message","detail"}, never a 5xx."""
    client = make_client(champion=champion_dir, mode="single",
                         limits={"max_body_bytes": 1000, "max_batch": 10})
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "detail"} and body["error"] == code
    assert body["message"]
    assert records(client) == []


def test_unknown_route_and_method_are_json(make_client: Any, champion_dir: Path) -> None:
    """404 and 405 use the same error shape."""
    client = make_client(champion=champion_dir, mode="single")
    assert client.get("/nope").json()["error"] == "not_found"
    assert client.get("/predict").json()["error"] == "method_not_allowed"


def test_feedback_single_and_batch_is_stored(make_client: Any, champion_dir: Path) -> None:
    """Feedback is accepted (202) in both forms and stored, unknown ids included."""
    client = make_client(champion=champion_dir, mode="single")
    assert client.post("/feedback", json={"request_id": "a", "label": "setosa"}).status_code == 202
    response = client.post("/feedback", json={"feedback": [
        {"request_id": "b", "label": "virginica"},
        {"request_id": "never-seen", "label": "setosa"}]})
    assert response.status_code == 202 and response.json() == {"accepted": 2}
    gateway = state(client)
    gateway.writer.flush()
    stored = {(f.request_id, f.label, f.value) for f in gateway.store.feedback_records()}
    assert stored == {("a", "setosa", None), ("b", "virginica", None),
                      ("never-seen", "setosa", None)}


@pytest.mark.parametrize(("body", "field", "said"), [
    # A number as a classifier's truth: stored, it would replace the request's label with none.
    ({"request_id": "a", "value": 0}, "value", 'the served models are classifiers: give "label"'),
    # A label that is no class of any served model could never be predicted: a typo, counted
    # as every model's mistake.
    ({"request_id": "a", "label": "Setosa"}, "label",
     "none of the served models' classes (setosa, versicolor, virginica)"),
    ({"feedback": [{"request_id": "a", "label": "setosa"}, {"request_id": "b", "label": 7}]},
     "feedback[1].label", "none of the served models' classes"),
])
def test_feedback_that_could_never_count_is_refused(make_client: Any, champion_dir: Path,
                                                    body: dict[str, Any], field: str,
                                                    said: str) -> None:
    """Feedback a classifier's statistics cannot use is a 422 naming the field and why, and
    nothing of that body is stored: a request's label is never erased by it."""
    client = make_client(champion=champion_dir, mode="single")
    assert client.post("/feedback", json={"request_id": "a", "label": "setosa"}).status_code \
        == 202
    response = client.post("/feedback", json=body)
    assert response.status_code == 422
    detail = {d["field"]: d["message"] for d in response.json()["detail"]}
    assert said in detail[field]
    gateway = state(client)
    gateway.writer.flush()
    assert [(f.request_id, f.label) for f in gateway.store.feedback_records()] == [("a", "setosa")]


def test_a_regressor_takes_values_and_refuses_labels(make_client: Any, regressor_dir: Path
                                                     ) -> None:
    client = make_client(champion=regressor_dir, mode="single")
    assert client.post("/feedback", json={"request_id": "a", "value": 151.0}).status_code == 202
    response = client.post("/feedback", json={"request_id": "a", "label": "151"})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"field": "label", "message": 'the served models are regressors: give "value"'}]


@pytest.mark.parametrize(("body", "field"), [
    ({"label": "x"}, "request_id"),
    ({"request_id": "a"}, "label"),
    ({"request_id": "a", "label": "x", "value": 1}, "label"),
    ({"request_id": "a", "value": "high"}, "value"),
    ({"feedback": [{"request_id": "a", "label": "x"}, {"request_id": "b", "label": None}]},
     "feedback[1].label"),
])
def test_bad_feedback_names_the_field(make_client: Any, champion_dir: Path,
                                      body: dict[str, Any], field: str) -> None:
    """Bad feedback is a 422 naming the field; nothing of that body is stored."""
    client = make_client(champion=champion_dir, mode="single")
    response = client.post("/feedback", json=body)
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["detail"]]


def test_config_health_ready(make_client: Any, champion_dir: Path, challenger_dir: Path) -> None:
    """/config shows revision 1 and the running config; /health and /ready answer 200."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         traffic={"challenger_percent": 10})
    config = client.get("/config").json()
    assert config["revision"] == 1 and config["last_reload_error"] is None
    assert config["config"]["traffic"]["challenger_percent"] == 10
    assert config["config"]["champion"]["name"] == "champ" and config["loaded_at"]
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200


def test_kserve_v1_route_uses_the_same_core(make_client: Any, champion_dir: Path) -> None:
    """/v1/models/{experiment}:predict answers predictions; another name is a 404."""
    client = make_client(champion=champion_dir, mode="single", experiment="iris")
    row = list(named_row(champion_dir).values())
    response = client.post("/v1/models/iris:predict", json={"instances": [row, row]})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 2
    assert response.headers["x-variant"] == "champion"
    assert client.get("/v1/models/iris").json() == {"name": "iris", "ready": True}
    assert client.post("/v1/models/other:predict",
                       json={"instances": [row]}).status_code == 404
    assert len(records(client)) == 2


def test_kserve_v1_refuses_a_field_it_would_ignore(make_client: Any, champion_dir: Path,
                                                   challenger_dir: Path) -> None:
    """A V1 body's top-level fields are held to /predict's rule: a misspelt sticky key
    (``userid`` for ``user_id``) is a 422 naming it, not a request silently assigned at
    random; the configured body keys are taken."""
    client = make_client(champion=champion_dir, challenger=challenger_dir, experiment="iris",
                         traffic={"challenger_percent": 50, "sticky_key": "body:user_id"},
                         analysis={"segments": ["body:plan"]})
    row = list(named_row(champion_dir).values())
    refused = client.post("/v1/models/iris:predict",
                          json={"instances": [row], "userid": "u-1", "signature": "x"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["message"] == "unknown top-level field(s): userid, signature"
    assert refused.json()["detail"] == [{"field": "userid", "message": "unknown field"},
                                        {"field": "signature", "message": "unknown field"}]
    assert records(client) == []
    taken = client.post("/v1/models/iris:predict",
                        json={"instances": [row], "user_id": "u-1", "plan": "pro"})
    assert taken.status_code == 200, taken.text
    assert [(r.unit_id, r.segments) for r in records(client)] == [("u-1", {"plan": "pro"})]


def test_a_middleware_added_through_the_public_api_sees_predict(
        tmp_path: Path, champion_dir: Path) -> None:
    """``/predict`` skips Starlette's routing for speed only while no middleware is added: a
    CORS middleware added with ``add_middleware`` answers the preflight and marks the answer."""
    from starlette.middleware.cors import CORSMiddleware

    from router.gateway import create_app
    from tests.configs import write_config

    app = create_app(write_config(tmp_path, champion=champion_dir, mode="single"),
                     base_dir=tmp_path)
    app.add_middleware(CORSMiddleware, allow_origins=["https://app.example"],
                       allow_methods=["POST"], allow_headers=["content-type"])
    origin = {"Origin": "https://app.example"}
    with TestClient(app) as client:
        answer = client.post("/predict", json={"features": named_row(champion_dir)},
                             headers=origin)
        preflight = client.options("/predict", headers={
            **origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]


def _scope(headers: dict[str, str]) -> dict[str, Any]:
    """A ``POST /predict`` scope as uvicorn builds it."""
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/predict", "raw_path": b"/predict",
            "root_path": "", "query_string": b"", "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}


@pytest.mark.parametrize(("headers", "body"), [
    ({"content-type": "application/json"}, b'{"features": [1, 2'),
    ({"content-type": "text/plain"}, b"{}"),
    ({"content-type": "application/json"}, b'{"features": {"nope": 1}}'),
])
def test_the_direct_answer_is_the_asgi_answer(make_client: Any, champion_dir: Path,
                                              headers: dict[str, str], body: bytes) -> None:
    """What the connection protocol gets from ``answer_predict`` is what ASGI clients get."""
    client = make_client(champion=champion_dir, mode="single")
    app = client.app
    assert app.direct_predict_open()
    status, raw, answer = client.portal.call(app.answer_predict, _scope(headers), body)
    through_asgi = client.post("/predict", content=body, headers=headers)
    assert status == through_asgi.status_code >= 400
    assert answer == through_asgi.content
    assert dict(raw)[b"content-type"] == b"application/json"


def test_a_good_direct_answer_carries_the_prediction(make_client: Any,
                                                     champion_dir: Path) -> None:
    client = make_client(champion=champion_dir, mode="single")
    body = json.dumps({"features": named_row(champion_dir)}).encode()
    status, raw, answer = client.portal.call(
        client.app.answer_predict, _scope({"content-type": "application/json"}), body)
    headers = dict(raw)
    assert status == 200 and headers[b"content-length"] == str(len(answer)).encode()
    assert headers[b"x-variant"] in (b"champion", b"challenger")
    assert b'"prediction"' in answer and headers[b"x-request-id"] in answer


def test_a_direct_answer_decodes_the_body_it_was_given_and_keeps_the_size_limit(
        make_client: Any, champion_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole body is in hand: it is decoded as it is, not streamed again through a
    receive (an async generator and a coroutine per request); a body over
    ``limits.max_body_bytes`` is still refused with 413."""
    from starlette.requests import Request

    client = make_client(champion=champion_dir, mode="single")
    body = json.dumps({"features": named_row(champion_dir)}).encode()

    def streamed(self: Request) -> None:
        raise AssertionError("the body was streamed again")

    monkeypatch.setattr(Request, "stream", streamed)
    status, _, answer = client.portal.call(
        client.app.answer_predict, _scope({"content-type": "application/json"}), body)
    assert status == 200, answer
    limit = client.app.gateway.config.limits.max_body_bytes
    padded = body[:-1] + b", " + b" " * limit + b"}"
    status, _, answer = client.portal.call(
        client.app.answer_predict, _scope({"content-type": "application/json"}), padded)
    assert status == 413 and b"max_body_bytes" in answer


def test_an_added_middleware_closes_the_direct_path(tmp_path: Path, champion_dir: Path) -> None:
    from starlette.middleware.cors import CORSMiddleware

    from router.gateway import create_app
    from tests.configs import write_config

    app = create_app(write_config(tmp_path, champion=champion_dir, mode="single"),
                     base_dir=tmp_path)
    assert not app.direct_predict_open()  # type: ignore[attr-defined]  # not started
    app.add_middleware(CORSMiddleware, allow_origins=["https://app.example"])
    with TestClient(app):
        assert not app.direct_predict_open()  # type: ignore[attr-defined]


def test_the_started_state_is_the_apps_own_attribute_and_its_state_entry(
        tmp_path: Path, champion_dir: Path) -> None:
    """Embedding code reads ``app.state.gateway``; the request path reads the app's plain
    attribute (Starlette's ``State`` answers through a Python ``__getattr__``): one object."""
    from router.gateway import create_app
    from tests.configs import write_config

    app = create_app(write_config(tmp_path, champion=champion_dir, mode="single"),
                     base_dir=tmp_path)
    assert app.gateway is None  # type: ignore[attr-defined]  # not started
    with TestClient(app) as client:
        assert app.gateway is app.state.gateway  # type: ignore[attr-defined]
        assert client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}).status_code == 200
