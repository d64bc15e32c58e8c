"""End to end: hostile and malformed requests against `router serve`, over real HTTP.

Every answer to bad input is a 4xx JSON error naming what is wrong, and the keep-alive
connection it came on serves the next request.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest

from tests.configs import write_config
from tests.e2e.server import REPO_ROOT, Server, serve
from tests.polling import eventually

pytestmark = pytest.mark.e2e

ROW = [5.1, 3.5, 1.4, 0.2]
EXPERIMENT = "hostile"
ADMIN_TOKEN = "s3cret"


@pytest.fixture(scope="module")
def server(ab_server: Server) -> Server:
    """The shared ab gateway (tests/e2e/conftest.py) for this module's experiment."""
    return ab_server


class Connection:
    """One keep-alive HTTP/1.1 connection that must stay open from request to request."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.http = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        self.http.connect()
        self.socket = self.http.sock

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
        sent = {"Content-Type": "application/json", **(headers or {})}
        self.http.request(method, path, body=body, headers=sent)
        response = self.http.getresponse()
        raw = response.read()
        assert response.getheader("content-type", "").startswith("application/json"), raw
        assert response.getheader("connection", "").lower() != "close", "connection closed"
        assert self.http.sock is self.socket, "the connection was not kept alive"
        return response.status, dict(response.getheaders()), json.loads(raw)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def connection(server: Server) -> Iterator[Connection]:
    opened = Connection(server.url)
    yield opened
    opened.close()


def good_predict(connection: Connection) -> None:
    status, _, body = connection.send("POST", "/predict",
                                      json.dumps({"features": ROW}).encode())
    assert status == 200, body


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("path", ["/predict", "/feedback", "/v1/models/hostile:predict"])
def test_deeply_nested_json_is_a_400_and_the_connection_stays(
        connection: Connection, path: str) -> None:
    """JSON nested 2,000 deep (4 KB) is refused as bad JSON on every POST route, never a 5xx."""
    for body in (deep(2000), b'{"features": ' + deep(2000) + b', "x": NaN}'):
        status, _, answer = connection.send("POST", path, body)
        assert status == 400, answer
        assert answer["error"] == "bad_json" and "deep" in answer["message"]
    good_predict(connection)


def test_a_400_digit_integer_in_feedback_is_a_422(connection: Connection) -> None:
    """An integer no float can hold, as a value or a label, is named; the next request works."""
    huge = "9" * 400
    for field in ("value", "label"):
        body = f'{{"request_id": "r-1", "{field}": {huge}}}'.encode()
        status, _, answer = connection.send("POST", "/feedback", body)
        assert status == 422, answer
        assert answer["detail"][0]["field"] == field
    status, _, answer = connection.send("POST", "/feedback",
                                        b'{"request_id": "r-1", "label": "setosa"}')
    assert status == 202, answer


@pytest.mark.parametrize("body", [
    b'{"features": {"\\udc00": 1.0}}',
    b'{"features": [5.1, 3.5, 1.4, 0.2], "user_id": "\\udc00x"}',
    b'{"features": [5.1, 3.5, 1.4, 0.2], "user_id": "a\\u0000b"}',
])
def test_unstorable_strings_in_a_prediction_are_refused(connection: Connection,
                                                        body: bytes) -> None:
    """A lone surrogate or a control character in a feature name or a user id: a JSON 4xx."""
    status, _, answer = connection.send("POST", "/predict", body)
    assert 400 <= status < 500, answer
    assert answer["error"] in ("bad_json", "invalid_input")
    good_predict(connection)


@pytest.mark.parametrize("item", [
    {"request_id": "\udc00x", "label": "benign"},
    {"request_id": "r-2", "label": "\ud800"},
    {"request_id": "r-2", "label": "a\x00b"},
    {"request_id": "a\x1b[31mred", "label": "benign"},
])
def test_unstorable_strings_in_feedback_are_refused(connection: Connection,
                                                    item: dict[str, str]) -> None:
    """Feedback the store could not keep is refused at the door with a 4xx, not queued."""
    status, _, answer = connection.send("POST", "/feedback", json.dumps(item).encode())
    assert 400 <= status < 500, answer
    status, _, _ = connection.send("POST", "/feedback",
                                   b'{"request_id": "r-3", "label": "setosa"}')
    assert status == 202


@pytest.mark.parametrize("limit", ["99999999999999999999", "%C2%B2", "0", "-1", "abc", "1e3"])
def test_history_limit_is_validated(connection: Connection, limit: str) -> None:
    """``/history?limit=`` takes a whole number from 1 to 10,000; anything else is a 422."""
    status, _, answer = connection.send("GET", f"/history?limit={limit}")
    assert status == 422, answer
    assert answer["detail"][0]["field"] == "limit"
    status, _, answer = connection.send("GET", "/history?limit=10000")
    assert status == 200 and answer == {"history": []}


def test_bad_content_type_and_missing_route_keep_the_connection(
        connection: Connection) -> None:
    """415 and 404 answers leave the connection usable too."""
    status, _, _ = connection.send("POST", "/predict", b"{}", {"Content-Type": "text/plain"})
    assert status == 415
    status, _, _ = connection.send("GET", "/nowhere")
    assert status == 404
    good_predict(connection)


def test_whitespace_admin_token_means_disabled(tmp_path: Path, champion_dir: Path,
                                               challenger_dir: Path) -> None:
    """``ROUTER_ADMIN_TOKEN="   "`` no request could match: the routes are disabled (403)."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db")
    with serve(config, tmp_path, extra_env={"ROUTER_ADMIN_TOKEN": "  \t "}) as running:
        connection = Connection(running.url)
        for authorization in ("Bearer   ", "Bearer", ""):
            status, _, answer = connection.send("POST", "/admin/promote", b"",
                                                {"Authorization": authorization})
            assert status == 403, answer
            assert answer["error"] == "admin_disabled"
        connection.close()


def wait_for_config(url: str, check: Any, timeout: float = 10.0) -> dict[str, Any]:
    """``/config`` once ``check(payload)`` holds."""
    return eventually(lambda: httpx.get(f"{url}/config", timeout=5).json(), check,
                      timeout=timeout, what="/config in the expected state")


def test_reload_failures_are_reported_and_do_not_block_the_watcher(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> None:
    """A NUL byte in a model path and a 5,000-deep YAML each land in ``last_reload_error``;
    a valid file saved right after the deep one is applied."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db", traffic={"challenger_percent": 10})
    good = config.read_text()
    with serve(config, tmp_path) as running:
        config.write_text(good.replace(str(challenger_dir), f"{challenger_dir}\\u0000x"))
        payload = wait_for_config(running.url, lambda p: p["last_reload_error"])
        assert "challenger.path" in payload["last_reload_error"], payload
        assert "NUL" in payload["last_reload_error"] or "control" in payload[
            "last_reload_error"], payload

        config.write_text("experiment: " + "[" * 5000 + "]" * 5000 + "\n")
        payload = wait_for_config(running.url, lambda p: "deep" in (p["last_reload_error"]
                                                                    or ""))
        assert "nested" in payload["last_reload_error"], payload

        config.write_text(good.replace('"challenger_percent": 10', '"challenger_percent": 30'))
        payload = wait_for_config(
            running.url, lambda p: p["config"]["traffic"]["challenger_percent"] == 30)
        assert payload["config"]["traffic"]["challenger_percent"] == 30, payload
        assert payload["last_reload_error"] is None


def test_validate_refuses_a_header_name_that_is_not_an_http_token(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> None:
    """``sticky_key: header:日`` fails ``router validate`` naming the key and line, and the
    gateway refuses to start on it rather than answering every request with a 500."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          traffic={"challenger_percent": 10, "sticky_key": "header:日"})
    result = subprocess.run([sys.executable, "-m", "router.cli", "validate", str(config)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 1, result.stdout
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1)
                if "sticky_key" in text)
    assert f":{line}: traffic.sticky_key:" in result.stderr, result.stderr
    assert "token" in result.stderr and "Traceback" not in result.stderr


def test_a_refused_promote_switches_nothing(tmp_path: Path, champion_dir: Path,
                                            challenger_dir: Path) -> None:
    """``{"reason": "\\ud800"}`` is refused before the file is touched: no switch is applied
    by the watcher and none is in the history."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db")
    before = config.read_text()
    with serve(config, tmp_path, extra_env={"ROUTER_ADMIN_TOKEN": ADMIN_TOKEN}) as running:
        connection = Connection(running.url)
        status, _, answer = connection.send(
            "POST", "/admin/promote", b'{"reason": "\\ud800"}',
            {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert 400 <= status < 500, answer
        time.sleep(1.5)  # three polls of the watcher
        status, _, history = connection.send("GET", "/history")
        assert history == {"history": []}
        status, _, payload = connection.send("GET", "/config")
        assert payload["revision"] == 1 and payload["config"]["mode"] == "ab"
        connection.close()
    assert config.read_text() == before


def logged_ids(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [r[0] for r in connection.execute("SELECT request_id FROM predictions")]


def test_a_request_id_labels_one_prediction_only(tmp_path: Path, champion_dir: Path,
                                                 challenger_dir: Path) -> None:
    """A client's X-Request-Id is kept once: a repeat is a 409, also across a batch's
    ``<id>:<i>`` rows and after a restart, so one label never counts for several rows."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db", traffic={"challenger_percent": 100})
    one = json.dumps({"features": ROW}).encode()
    two = json.dumps({"instances": [ROW, ROW]}).encode()
    with serve(config, tmp_path) as running:
        connection = Connection(running.url)
        status, headers, _ = connection.send("POST", "/predict", one, {"X-Request-Id": "evil"})
        assert status == 200 and headers["x-request-id"] == "evil"
        for _ in range(3):
            status, _, answer = connection.send("POST", "/predict", one,
                                                {"X-Request-Id": "evil"})
            assert status == 409, answer
            assert answer["error"] == "duplicate_request_id" and "evil" in answer["message"]
        status, _, answer = connection.send("POST", "/predict", two, {"X-Request-Id": "b"})
        assert status == 200 and [p["id"] for p in answer["predictions"]] == ["b:0", "b:1"]
        status, _, _ = connection.send("POST", "/predict", one, {"X-Request-Id": "b:1"})
        assert status == 409
        status, _, _ = connection.send("POST", "/predict", one, {"X-Request-Id": "c:0"})
        assert status == 200
        status, _, _ = connection.send("POST", "/predict", two, {"X-Request-Id": "c"})
        assert status == 409
        status, _, _ = connection.send("POST", "/v1/models/exp:predict",
                                       json.dumps({"instances": [ROW]}).encode(),
                                       {"X-Request-Id": "evil"})
        assert status == 409
        status, _, _ = connection.send("POST", "/feedback",
                                       b'{"request_id": "evil", "label": "virginica"}')
        assert status == 202
        connection.close()
    with serve(config, tmp_path) as running:  # the store remembers what this process did not
        connection = Connection(running.url)
        status, _, answer = connection.send("POST", "/predict", one, {"X-Request-Id": "evil"})
        assert status == 409, answer
        connection.close()
    logged = logged_ids(tmp_path / "outcomes.db")
    assert sorted(logged) == ["b:0", "b:1", "c:0", "evil"]


def test_a_value_a_served_model_cannot_take_is_a_422_not_a_challenger_error(
        tmp_path: Path, no_proba_dir: Path, champion_dir: Path) -> None:
    """1e300 is finite, but the challenger's forest computes in float32: the request is a 422
    naming the field, and the challenger is charged with no error."""
    config = write_config(tmp_path, champion=no_proba_dir, challenger=champion_dir,
                          store="sqlite:///outcomes.db", traffic={"challenger_percent": 100})
    with serve(config, tmp_path) as running:
        connection = Connection(running.url)
        for _ in range(10):
            status, _, answer = connection.send(
                "POST", "/predict", json.dumps({"features": [1e300, 3.5, 1.4, 0.2]}).encode())
            assert status == 422, answer
            assert answer["detail"][0]["field"].startswith("features[0]")
            assert "served models" in answer["detail"][0]["message"]
        status, _, answer = connection.send(
            "POST", "/v1/models/exp:predict",
            json.dumps({"instances": [[5.1, -1e300, 1.4, 0.2]]}).encode())
        assert status == 422, answer
        good_predict(connection)
        stats = httpx.get(f"{running.url}/stats", timeout=30).json()
        assert stats["variants"]["challenger"]["errors"] == 0, stats["variants"]
        connection.close()


def _raw_exchange(server: Server, request: bytes) -> bytes:
    """``request`` written on a fresh socket (as many bytes as the server reads), then what
    the server answers before it closes."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        with contextlib.suppress(ConnectionError):  # closed by the server midway: its answer
            sock.sendall(request)
        received = b""
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def _json_answer(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw[:300]
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_headers_past_the_limit_get_a_431_and_are_not_buffered(server: Server) -> None:
    """A header that never ends would otherwise be held in memory whole: past 64 KiB of
    request line and headers the gateway answers 431 and closes. A request just under it is
    served."""
    endless = (b"GET /health HTTP/1.1\r\nhost: gateway\r\nx-big: " + b"a" * 4_000_000)
    status, body = _json_answer(_raw_exchange(server, endless))
    assert status == 431 and body["error"] == "headers_too_large"
    assert "65536" in body["message"] or "64 KiB" in body["message"]
    fits = (b"GET /health HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\nx-big: "
            + b"a" * 60_000 + b"\r\n\r\n")
    assert _raw_exchange(server, fits).startswith(b"HTTP/1.1 200 ")
    # Whole requests whose headers end in the read that takes them past the cap, as curl
    # sends them: one header, or many small ones.
    for headers in (b"x-big: " + b"a" * 70_000 + b"\r\n",
                    b"".join(b"x-h%d: " % i + b"b" * 1_000 + b"\r\n" for i in range(70))):
        whole = b"GET /health HTTP/1.1\r\nhost: gateway\r\n" + headers + b"\r\n"
        status, body = _json_answer(_raw_exchange(server, whole))
        assert status == 431 and body["error"] == "headers_too_large"
    # Short headers and a large body (within limits.max_body_bytes), in one write: the body
    # is no header, however the reads cut it.
    body = json.dumps({"features": ROW}).encode() + b" " * 400_000
    large = (b"POST /predict HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
             b"connection: close\r\ncontent-length: " + str(len(body)).encode()
             + b"\r\n\r\n" + body)
    assert _raw_exchange(server, large).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("header", [b"x-request-id: r\x00x", b"x-user-id: u\x1bx",
                                    b"x-request-id: r\x7fx"])
def test_a_request_the_http_parser_refuses_is_answered_in_json(server: Server,
                                                               header: bytes) -> None:
    """Control characters in a header are refused by the HTTP parser itself, before any route:
    the answer is still the JSON error every other refusal is, naming what was wrong."""
    raw = (b"POST /predict HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
           + header + b"\r\ncontent-length: 2\r\n\r\n{}")
    status, body = _json_answer(_raw_exchange(server, raw))
    assert status == 400 and body["error"] == "bad_request"
    assert "not valid HTTP/1.1" in body["message"] and "header" in body["message"].lower()


def test_a_utf8_request_id_is_kept_as_sent_and_joins_its_feedback(server: Server,
                                                                  connection: Connection
                                                                  ) -> None:
    """A request id in UTF-8 comes back byte for byte, is logged as the text it is, and the
    feedback naming it in JSON finds its prediction. One that is not UTF-8 is a 400."""
    sent = "naïve-日本-" + str(time.time_ns())
    raw_id = sent.encode()

    def predict(request_id: bytes, body: bytes) -> bytes:
        return (b"POST /predict HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
                b"connection: close\r\nx-request-id: " + request_id + b"\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)
    request = predict(raw_id, json.dumps({"features": ROW}).encode())
    answer = _raw_exchange(server, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b"\r\nx-request-id: " + raw_id + b"\r\n" in head
    assert json.loads(body)["request_id"] == sent
    status, _, _ = connection.send("POST", "/feedback", json.dumps(
        {"request_id": sent, "label": "setosa"}).encode())
    assert status == 202

    def joined() -> bool:
        # The gateway's store, named by its log's path: the prediction and its feedback by
        # the same text.
        with sqlite3.connect(server.log.parent / "outcomes.db") as db:
            (count,) = db.execute(
                "SELECT count(*) FROM predictions p JOIN feedback f "
                "ON f.request_id = p.request_id WHERE p.request_id = ?", (sent,)).fetchone()
        return bool(count == 1)
    eventually(joined, what="the feedback joined to its prediction")
    refused = predict(raw_id + b"-bad", b'{"features": [1, 2, 3, "x"]}')
    head, _, _ = _raw_exchange(server, refused).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 422 ")  # an error echoes the id's bytes too
    assert b"\r\nx-request-id: " + raw_id + b"-bad\r\n" in head
    not_utf8 = predict(b"caf\xe9-" + raw_id, json.dumps({"features": ROW}).encode())
    status, body_json = _json_answer(_raw_exchange(server, not_utf8))
    assert status == 400 and body_json["error"] == "invalid_header"
    assert "UTF-8" in body_json["message"]


def test_an_error_lists_at_most_a_hundred_faults(connection: Connection) -> None:
    """A few kilobytes of bad rows must not make a megabyte of answer: the detail lists the
    first hundred faults and the message says how many there were."""
    status, _, body = connection.send("POST", "/predict",
                                      json.dumps({"instances": [{}] * 1000}).encode())
    assert status == 422
    assert len(body["detail"]) == 100
    assert "the first 100 of 4000" in body["message"]


def test_a_trailing_slash_is_not_redirected_to_the_host_the_client_named(
        connection: Connection) -> None:
    """A redirect to ``http://<Host>/stats`` would send a client wherever its Host header
    says; the route is named in a 404 instead."""
    status, headers, body = connection.send("GET", "/stats/", headers={"Host": "evil.example"})
    assert status == 404 and "location" not in {k.lower() for k in headers}
    assert body["error"] == "not_found" and "/stats/" in body["message"]
