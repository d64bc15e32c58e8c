"""Segment values (analysis.segments) are read from each request and logged with its rows."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from router.config import StickyKey
from router.errors import InputValidationError
from router.gateway.request_keys import keyed_value
from tests.gateway.test_app import named_row, records
from tests.gateway.test_v2 import ROWS, matrix

SEGMENTS = {"segments": ["header:X-Country", "body:plan"]}


@pytest.fixture
def ab(make_client: Any, champion_dir: Path, challenger_dir: Path) -> TestClient:
    """An ab gateway at 50 % that segments by a header and a body field."""
    return make_client(champion=champion_dir, challenger=challenger_dir,  # type: ignore[no-any-return]
                       traffic={"challenger_percent": 50}, analysis=SEGMENTS)


def test_predict_logs_each_rows_segment_values(ab: TestClient, champion_dir: Path) -> None:
    """The header's and the body field's values are logged with every row of the request
    (batch rows too); a key the request lacks, or leaves empty, is absent."""
    row = named_row(champion_dir)
    sent = [
        ({"features": row, "plan": "pro"}, {"x-country": "DE"}),
        ({"instances": [row, row], "plan": 3}, {}),
        ({"features": row, "plan": ""}, {"X-Country": "FR"}),
        ({"features": row}, {}),
    ]
    for body, headers in sent:
        response = ab.post("/predict", json=body, headers=headers)
        assert response.status_code == 200, response.text
    assert [r.segments for r in records(ab)] == [
        {"x-country": "DE", "plan": "pro"}, {"plan": "3"}, {"plan": "3"}, {"x-country": "FR"},
        None]


@pytest.mark.parametrize(("body", "headers", "status", "field"), [
    ({"plan": "p" * 101}, {}, 422, "plan"),
    ({"plan": "caf\ud800"}, {}, 400, None),  # JSON itself is refused: no such text is kept
    ({"plan": {"tier": 1}}, {}, 422, "plan"),
    ({"plan": True}, {}, 422, "plan"),
    ({}, {"x-country": "D\x01E"}, 422, "x-country"),
])
def test_a_segment_value_that_cannot_be_kept_is_refused_naming_the_key(
        ab: TestClient, champion_dir: Path, body: dict[str, Any], headers: dict[str, str],
        status: int, field: str | None) -> None:
    """Over 100 characters, a lone surrogate, a control character, or neither a string nor an
    integer: refused (the key named), and nothing is logged."""
    content = json.dumps({"features": named_row(champion_dir), **body})  # "\ud800" escaped
    response = ab.post("/predict", content=content.encode(),
                       headers={"content-type": "application/json", **headers})
    assert response.status_code == status, response.text
    if field is not None:
        assert response.json()["detail"][0]["field"] == field
        assert field in response.json()["message"]
    assert records(ab) == []


def test_kserve_and_open_inference_requests_carry_segments(ab: TestClient) -> None:
    """KServe V1 reads body fields beside the instances; the Open Inference Protocol reads a
    body key from the parameters, and a header key from the header, else the parameters."""
    ab.post("/v1/models/exp:predict", json={"instances": ROWS[:1], "plan": "team"},
            headers={"x-country": "DE"})
    ab.post("/v2/models/exp/infer",
            json=matrix(ROWS[:1], parameters={"plan": "free", "x-country": "IT"}))
    ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1], parameters={"x-country": "IT"}),
            headers={"x-country": "ES"})
    assert [r.segments for r in records(ab)] == [
        {"x-country": "DE", "plan": "team"}, {"x-country": "IT", "plan": "free"},
        {"x-country": "ES"}]


def test_shadow_copies_carry_the_requests_segments(make_client: Any, champion_dir: Path,
                                                   challenger_dir: Path) -> None:
    """In shadow mode the challenger's mirrored rows carry the same values as the champion's."""
    client = make_client(champion=champion_dir, challenger=challenger_dir, mode="shadow",
                         analysis=SEGMENTS)
    client.post("/predict", json={"features": named_row(champion_dir), "plan": "pro"},
                headers={"x-country": "DE"})
    deadline = time.monotonic() + 300  # the shadow worker starts slowly on a loaded machine
    while len(records(client)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(r.shadow, r.segments) for r in records(client)] == [
        (False, {"x-country": "DE", "plan": "pro"}), (True, {"x-country": "DE", "plan": "pro"})]


def test_a_header_value_is_read_as_utf8_like_the_same_text_in_a_body(ab: TestClient,
                                                                     champion_dir: Path) -> None:
    """A header's bytes are UTF-8 text, as a JSON body's are: "Côte d'Ivoire" sent as a header
    is the segment the same text in the parameters is, not its bytes read as latin-1."""
    country = "Côte d'Ivoire"
    response = ab.post("/predict", json={"features": named_row(champion_dir)},
                       headers={"x-country": country.encode()})
    assert response.status_code == 200, response.text
    ab.post("/v2/models/exp/infer", json=matrix(ROWS[:1], parameters={"x-country": country}))
    assert [r.segments for r in records(ab)] == [{"x-country": country}] * 2


@pytest.mark.parametrize("key", [StickyKey("header", "x-user-id"),
                                 StickyKey("header", "x-country")])
def test_a_header_value_in_latin1_is_the_same_text(key: StickyKey) -> None:
    """Python's ``requests`` and ``http.client`` write a ``str`` header value in latin-1:
    bytes that are not UTF-8 are read so, and name the text UTF-8 bytes would. (A test client
    re-encodes such bytes, so the request is built from its raw headers, as uvicorn hands them
    over.)"""
    def value_of(raw: bytes) -> str | None:
        request = Request({"type": "http", "headers": [(key.name.encode(), raw)]})
        return keyed_value(key, request, {}, max_length=100)
    assert value_of("Côte".encode("latin-1")) == value_of("Côte".encode()) == "Côte"
    with pytest.raises(InputValidationError) as raised:  # latin-1's C1 controls stay refused
        value_of(b"C\x85te")
    assert raised.value.detail == [
        {"field": key.name, "message": "holds a control character (U+0085) at position 1"}]
