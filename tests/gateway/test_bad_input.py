"""Bad input at the HTTP edge, in-process: the decoder, the error renderer, feedback checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from router.errors import BadJSONError, InputValidationError
from router.gateway.endpoints import Truths, parse_feedback
from router.gateway.errors import error_response
from router.serving.inputs import decode_json


@pytest.mark.parametrize("raw", [
    b"[" * 2000 + b"]" * 2000,
    b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b', "b": NaN}',
    b'{"a": "\\udc00x"}',
    b'{"a": NaN, "\\ud800": 1}',
    b"\xff\xfe",
])
def test_decoder_refuses_what_it_cannot_give_back_safely(raw: bytes) -> None:
    """Deep nesting, lone surrogates and invalid UTF-8 are bad JSON, with or without NaN."""
    with pytest.raises(BadJSONError):
        decode_json(raw)


def test_a_body_that_is_not_utf8_is_named_so() -> None:
    """orjson calls invalid UTF-8 "surrogates not allowed"; the answer says what it is."""
    with pytest.raises(BadJSONError) as raised:
        decode_json(b'{"features": "caf\xe9"}')
    assert str(raised.value) == "body is not UTF-8: byte 0xE9 at position 17"


def test_decoder_keeps_nan_for_validation_and_turns_huge_integers_to_infinity() -> None:
    """NaN still reaches validation (which names the field); a 400-digit integer is infinite."""
    decoded = decode_json(b'{"a": NaN, "b": ' + b"9" * 400 + b', "c": 12}')
    assert decoded["a"] != decoded["a"] and decoded["b"] == float("inf") and decoded["c"] == 12


@pytest.mark.parametrize(("item", "field"), [
    ({"request_id": "r", "value": 10**400}, "value"),
    ({"request_id": "r", "label": 10**400}, "label"),
    ({"request_id": "r", "label": float("nan")}, "label"),
    ({"request_id": "\udc00x", "label": "benign"}, "request_id"),
    ({"request_id": "r", "label": "a\x00b"}, "label"),
    ({"request_id": "r" * 300, "label": "a"}, "request_id"),
    ({"request_id": "r", "label": "a", "\udc00": 1}, "\\udc00"),
])
def test_feedback_the_store_could_not_keep_is_named(item: dict[str, object],
                                                    field: str) -> None:
    """Each unstorable feedback field is a 422 naming it, never a later failure in the writer."""
    with pytest.raises(InputValidationError) as raised:
        parse_feedback(item, max_batch=10)
    assert field in [p["field"] for p in raised.value.detail]
    orjson.dumps(raised.value.detail)  # the detail itself can be rendered


def test_a_feedback_batch_with_another_top_level_key_is_refused() -> None:
    """``{"feedback": [...], "x": 1}``: the unknown key is named, as in a single item."""
    with pytest.raises(InputValidationError) as raised:
        parse_feedback({"feedback": [{"request_id": "r", "label": "a"}], "x": 1}, max_batch=10)
    assert [p["field"] for p in raised.value.detail] == ["x"]


@pytest.mark.parametrize(("classes", "label", "stored"), [
    ({"0", "1"}, 1.0, "1"),  # a labelling job's float column, for integer classes
    ({"0.0", "1.0"}, 1, "1.0"),  # and the other way round
    ({"0", "1"}, 1, "1"),
    ({"yes", "no"}, "yes", "yes"),
])
def test_a_numeric_label_is_read_as_the_class_it_names(classes: set[str], label: object,
                                                       stored: str) -> None:
    """JSON does not tell 1 from 1.0 as a person means them: a label equal to a class as a
    number is stored as that class's text, so that it joins."""
    truths = Truths("classification", frozenset(classes))
    [record] = parse_feedback({"request_id": "r", "label": label}, max_batch=10, truths=truths)
    assert record.label == stored


def test_an_empty_feedback_list_is_named_so() -> None:
    with pytest.raises(InputValidationError) as raised:
        parse_feedback({"feedback": []}, max_batch=10)
    assert raised.value.detail == [{"field": "feedback", "message": "expected a non-empty list"}]


def test_error_renderer_cannot_fail() -> None:
    """A message, detail or header UTF-8 or latin-1 cannot carry still gives the JSON error."""
    response = error_response(422, "invalid_input", "unknown feature \udc00",
                              [{"field": "features.\udc00", "value": object()}],
                              headers={"X-Request-Id": "日本"})
    body = orjson.loads(response.body)
    assert response.status_code == 422 and body["error"] == "invalid_input"
    assert body["message"] == "unknown feature \\udc00"
    assert body["detail"][0]["field"] == "features.\\udc00"


def test_any_reload_failure_lands_in_last_reload_error(
        make_client: Any, champion_dir: Path, challenger_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault no check anticipated still leaves the running config and says why in /config."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         traffic={"challenger_percent": 10})
    gateway = client.app.state.gateway

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk said no")

    monkeypatch.setattr("router.live.reload.load_models", broken)
    before = client.get("/config").json()["revision"]
    with pytest.raises(OSError):
        gateway.reloader.reload()
    payload = client.get("/config").json()
    assert payload["revision"] == before
    assert "OSError: disk said no" in payload["last_reload_error"]


def test_a_value_past_the_models_bound_is_a_422_on_every_protocol(
        make_client: Any, champion_dir: Path, challenger_dir: Path) -> None:
    """1e300 reaches no model: /predict, KServe V1 and V2 each answer 422 naming the value."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         traffic={"challenger_percent": 50})
    row = [5.1, 3.5, 1e300, 0.2]
    v2 = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": row}]}
    for path, body in (("/predict", {"features": row}),
                       ("/v1/models/exp:predict", {"instances": [row]}),
                       ("/v2/models/exp/infer", v2)):
        response = client.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert "petal_length" in response.json()["detail"][0]["field"]
        assert "1e+300 is beyond what the served models take" in response.text
    client.app.state.gateway.writer.flush()
    assert client.app.state.gateway.store.prediction_records() == []


@pytest.mark.parametrize("path", ["/predict", "/feedback", "/v1/models/exp:predict",
                                  "/v2/models/exp/infer"])
def test_a_compressed_body_is_a_415_naming_its_encoding(make_client: Any, champion_dir: Path,
                                                        path: str) -> None:
    """A gzip body is refused as what it is, on every route that reads JSON, not decoded as
    text ("not UTF-8: byte 0x8B"); ``identity`` (or nothing) is a plain body."""
    import gzip

    client = make_client(champion=champion_dir, mode="single")
    body = orjson.dumps({"features": [5.1, 3.5, 1.4, 0.2]})
    refused = client.post(path, content=gzip.compress(body), headers={
        "content-type": "application/json", "content-encoding": "gzip"})
    assert refused.status_code == 415, refused.text
    answer = refused.json()
    message = answer["message"] if "message" in answer else answer["error"]  # V2's shape
    assert message == "compressed request bodies are not supported (Content-Encoding: gzip)"
    assert answer["detail"] == [{"header": "content-encoding", "got": "gzip"}]
    plain = client.post("/predict", content=body, headers={
        "content-type": "application/json", "content-encoding": "identity"})
    assert plain.status_code == 200, plain.text
