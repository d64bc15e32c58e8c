"""The traffic simulator: held-out rows as sticky users' requests, their true labels sent late."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from router.cli import main
from router.demo.client import Connection, SimulationError
from router.demo.progress import ProgressBar
from router.demo.simulate import SimulationResult, Simulator
from router.demo.training import HOLDOUT_PATH, load_holdout, train_demo
from router.outcomes import open_store
from tests.e2e.server import serve
from tests.polling import eventually

FEATURES = ["a", "b", "c"]


class StubGateway:
    """A real HTTP server that answers like the gateway and records every request in order."""

    def __init__(self, sticky_key: str | None, features: list[str]) -> None:
        self.calls: list[tuple[str, dict[str, str], Any]] = []
        self.request_ids: list[str] = []  # of the /predict calls, in the same order
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the simulator expects
            # Headers and body go in two writes: without this, each waits on a delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def _answer(self, status: int, payload: Any) -> None:
                body = orjson.dumps(payload)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(200, {"config": {"experiment": "stub",
                                              "traffic": {"sticky_key": sticky_key}},
                                   "models": {"champion": {"features": features}}})

            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request_id = uuid.uuid4().hex
                with stub.lock:
                    stub.calls.append((self.path, dict(self.headers.items()), body))
                    if self.path == "/predict":
                        stub.request_ids.append(request_id)
                if self.path == "/predict":
                    self._answer(200, {"request_id": request_id, "variant": "champion"})
                else:
                    self._answer(202, {"accepted": len(body["feedback"])})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll: shutdown() waits up to one poll interval.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Any]:
    servers: list[StubGateway] = []

    def make(sticky_key: str | None = "header:x-user-id",
             features: list[str] | None = None) -> StubGateway:
        servers.append(StubGateway(sticky_key, features or FEATURES))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def rows(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows, each with a label that names it."""
    X = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    return X, np.array([f"label-{i}" for i in range(n)])


def test_labels_wait_for_the_delay_and_go_in_batches(stub: Any) -> None:
    """A label goes once `feedback_delay` more requests were answered, `feedback_batch` at once."""
    gateway = stub()
    X, y = rows()
    simulator = Simulator(gateway.url, X, y, FEATURES, concurrency=1, feedback_delay=10,
                          feedback_batch=5, seed=1)
    result = simulator.run(50)
    assert (result.sent, result.answered, result.labels_sent) == (50, 50, 40)
    assert simulator.pending_labels == 10
    simulator.flush_feedback()  # the rest of the ground truth arrives after the traffic
    assert result.labels_sent == 50 and result.feedback_batches == 10
    predicted = labelled = 0
    for path, _, body in gateway.calls:
        if path == "/predict":
            predicted += 1
            continue
        assert len(body["feedback"]) == 5
        labelled += 5
        if predicted < 50:
            assert predicted >= labelled + 10
    assert (predicted, labelled) == (50, 50)


def test_true_label_goes_with_its_request(stub: Any) -> None:
    """The label sent for a request id is the held-out label of the row that request carried."""
    gateway = stub(features=list(reversed(FEATURES)))  # the gateway's order, not the file's
    X, y = rows()
    simulator = Simulator(gateway.url, X, y, FEATURES, concurrency=3, feedback_delay=4,
                          feedback_batch=3, seed=2)
    simulator.run(30)
    simulator.flush_feedback()
    label_by_row = {tuple(row): label for row, label in zip(X.tolist(), y.tolist(), strict=True)}
    predictions = [body for path, _, body in gateway.calls if path == "/predict"]
    row_of = {request_id: tuple(body["features"][name] for name in FEATURES)
              for request_id, body in zip(gateway.request_ids, predictions, strict=True)}
    labels = {item["request_id"]: item["label"] for path, _, body in gateway.calls
              if path == "/feedback" for item in body["feedback"]}
    assert len(labels) == 30
    assert labels == {request_id: label_by_row[row] for request_id, row in row_of.items()}
    assert all(list(body["features"]) == list(reversed(FEATURES)) for body in predictions)


def test_sticky_key_in_header_or_body(stub: Any) -> None:
    """Users go in the gateway's sticky key: the named header, or the named body field."""
    X, y = rows()
    header = stub("header:x-user-id")
    Simulator(header.url, X, y, FEATURES, users=3, concurrency=1, seed=3).run(10)
    users = {h.get("x-user-id") or h.get("X-User-Id") for p, h, _ in header.calls
             if p == "/predict"}
    assert users and users <= {"user-0", "user-1", "user-2"}
    body = stub("body:user_id")
    Simulator(body.url, X, y, FEATURES, users=3, concurrency=1, seed=3).run(10)
    users = {b["user_id"] for p, _, b in body.calls if p == "/predict"}
    assert users and users <= {"user-0", "user-1", "user-2"}


def test_a_gateway_without_the_rows_features_is_refused(stub: Any) -> None:
    """Rows that lack a feature the gateway's model takes are an error naming it."""
    gateway = stub(features=[*FEATURES, "d"])
    X, y = rows()
    with pytest.raises(SimulationError, match="d"):
        Simulator(gateway.url, X, y, FEATURES)


def test_progress_bar_draws_only_on_a_terminal() -> None:
    """On a TTY the bar is redrawn with \\r; elsewhere it writes nothing at all."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    result = SimulationResult(sent=5, answered=5)
    result.variants["champion"] = 5
    piped, terminal = io.StringIO(), Terminal()
    for stream in (piped, terminal):
        bar = ProgressBar(10, stream)
        bar.update(result, force=True)
        bar.close(result)
    assert piped.getvalue() == ""
    assert terminal.getvalue().startswith("\r[") and terminal.getvalue().endswith("\n")
    assert "5/10" in terminal.getvalue()


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models, config and held-out rows, trained once."""
    root = tmp_path_factory.mktemp("demo")
    train_demo(root)
    return root


@pytest.mark.e2e
def test_simulate_against_a_real_gateway(demo_root: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    """`router simulate` of 300 requests: 300 logged, 300 true labels joined, users sticky."""
    with serve(demo_root / "configs" / "router.yaml", demo_root) as server:
        code = main(["simulate", "--url", server.url, "--requests", "300",
                     "--holdout", str(demo_root / HOLDOUT_PATH), "--users", "100",
                     "--seed", "7"])
        assert code == 0
    out = capsys.readouterr().out
    assert "300/300 requests answered" in out and "300 labels sent" in out
    store = open_store("sqlite:///var/outcomes.db", demo_root)
    try:
        predictions = store.prediction_records()
        feedback = store.feedback_records()
    finally:
        store.close()
    assert len(predictions) == 300 and len(feedback) == 300
    X, y, _ = load_holdout(demo_root)
    label_by_row = {tuple(row): label for row, label in zip(X.tolist(), y.tolist(), strict=True)}
    by_id = {p.request_id: p for p in predictions}
    for item in feedback:
        assert item.label == label_by_row[tuple(by_id[item.request_id].features)]
    variant_of: dict[str, set[str]] = {}
    for p in predictions:
        variant_of.setdefault(str(p.unit_id), set()).add(p.variant)
    assert len(variant_of) <= 100 and all(len(v) == 1 for v in variant_of.values())
    assert {p.variant for p in predictions} == {"champion", "challenger"}


def test_drift_shifts_one_feature_by_its_standard_deviations(stub: Any) -> None:
    """--drift b=0.5: every row sent has b moved by half of b's standard deviation over the
    held-out rows; a and c are sent as they are."""
    gateway = stub()
    X, y = rows()
    Simulator(gateway.url, X, y, FEATURES, concurrency=1, seed=4, drift={"b": 0.5}).run(40)
    originals = {(row[0], row[2]): row[1] for row in X.tolist()}
    sent = [body["features"] for path, _, body in gateway.calls if path == "/predict"]
    assert len(sent) == 40
    for features in sent:
        assert features["b"] == pytest.approx(
            originals[(features["a"], features["c"])] + 0.5 * float(np.std(X[:, 1])))


def test_drift_of_an_unknown_feature_is_refused(stub: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A --drift feature the rows lack, or a spec without a number, is an error naming it."""
    gateway = stub()
    X, y = rows()
    with pytest.raises(SimulationError, match="income"):
        Simulator(gateway.url, X, y, FEATURES, drift={"income": 1.0})
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--url", gateway.url, "--drift", "b=a lot"])
    assert exit_info.value.code != 0
    assert "FEATURE=SHIFT" in capsys.readouterr().err


@pytest.mark.e2e
def test_plain_demo_traffic_shows_no_drift_and_drift_on_purpose_shows(demo_root: Path) -> None:
    """5,000 plain demo requests: every feature and prediction stable; then 5,000 with
    --drift mean_radius=1: mean_radius flagged, every other feature still stable."""
    import httpx2 as httpx

    with serve(demo_root / "configs" / "router.yaml", demo_root) as server:
        holdout = str(demo_root / HOLDOUT_PATH)
        assert main(["simulate", "--url", server.url, "--requests", "5000",
                     "--holdout", holdout, "--seed", "8"]) == 0
        plain = wait_for_rows(httpx, server.url, 5000)
        assert main(["simulate", "--url", server.url, "--requests", "5000",
                     "--holdout", holdout, "--seed", "9", "--drift", "mean_radius=1"]) == 0
        drifted = wait_for_rows(httpx, server.url, 10_000)
    flagged = {n: f for n, f in plain["features"].items() if f["status"] != "stable"}
    assert not flagged, flagged
    assert {p["status"] for p in plain["predictions"].values()} == {"stable"}
    statuses = {name: f["status"] for name, f in drifted["features"].items()}
    assert statuses.pop("mean_radius") in ("moderate", "major")
    assert set(statuses.values()) == {"stable"}, drifted["features"]


def wait_for_rows(httpx: Any, url: str, rows: int, timeout: float = 30.0) -> dict[str, Any]:
    """/stats's drift block once it covers ``rows`` requests (the log trails by a second)."""
    return dict(eventually(lambda: httpx.get(f"{url}/stats", timeout=30).json()["drift"],
                           lambda drift: drift["rows"] >= rows, timeout=timeout,
                           what=f"/stats's drift covering {rows} rows"))


@pytest.mark.parametrize(("url", "said"), [
    ("ftp://x", "not an http(s) URL: ftp://x"),
    ("http://127.0.0.1:99999", "not a usable URL: http://127.0.0.1:99999: Port out of range"),
    ("http://127.0.0.1:port", "not a usable URL: http://127.0.0.1:port: "),
])
def test_a_url_that_names_no_gateway_is_one_error(url: str, said: str) -> None:
    """Not a traceback from urllib's port parsing: the CLI prints the error's one line."""
    with pytest.raises(SimulationError) as raised:
        Connection(url)
    assert str(raised.value).startswith(said)
