"""The shadow mirror: bounded offers, counted drops, batches, timeouts, drain, worker process."""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from router.config import load_config
from router.gateway.state import GatewayState
from router.outcomes.answered import AnsweredRows, records_of
from router.outcomes.records import PredictionRecord
from router.serving.model import Prediction, ServedModel
from router.serving.registry import ModelRegistry
from router.serving.snapshot import Snapshot, load_models
from router.shadow.mirror import Outcome, ProcessScorer, ShadowMirror, ThreadScorer
from router.shadow.worker import _Models, own_seconds
from tests.configs import write_config
from tests.fixture_models import SLEEP_ENV
from tests.polling import eventually

ROW = [5.1, 3.5, 1.4, 0.2]
DEADLINE_S = 20.0  # only guards against hangs; a worker start imports scikit-learn


class ListSink:
    """The outcome writer's two members, keeping records in a list."""

    accepting = True

    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []
        self._lock = threading.Lock()

    def submit_answered(self, answered: AnsweredRows) -> None:
        with self._lock:
            self.records.extend(records_of(answered))


class GatedScorer:
    """Answers "setosa" once ``gate`` is set; a row whose first value is negative raises."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.gate = threading.Event()
        self.delay_s = delay_s
        self.calls: list[int] = []

    def prepare(self, model: ServedModel, until: Callable[[], float]) -> None:
        """Nothing to get ready."""

    def score(self, model: ServedModel, rows: np.ndarray, timeout_s: float,
              until: Callable[[], float]) -> Outcome:
        self.calls.append(len(rows))
        self.gate.wait(DEADLINE_S)
        time.sleep(self.delay_s)
        if (rows[:, 0] < 0).any():
            return Outcome("error", 0.001, error="ValueError: negative", per_row=True)
        n = len(rows)
        return Outcome("ok", 0.001, Prediction(["setosa"] * n, np.full((n, 3), 1 / 3)))

    def close(self) -> None:
        """Nothing to release."""


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry()


@pytest.fixture
def snapshot_of(tmp_path: Path, registry: ModelRegistry) -> Callable[..., Snapshot]:
    def make(champion: Path, challenger: Path, *, revision: int = 1,
             **sections: dict[str, Any]) -> Snapshot:
        path = write_config(tmp_path, champion=champion, challenger=challenger, mode="shadow",
                            name=f"router-{revision}.yaml", **sections)
        config = load_config(path, base_dir=tmp_path)
        return Snapshot(config=config, revision=revision, models=load_models(config, registry))

    return make


def wait_until(condition: Callable[[], bool]) -> None:
    eventually(condition, timeout=DEADLINE_S, interval=0.01, what="the shadow condition")


def offer_rows(mirror: ShadowMirror, snapshot: Snapshot, ids: list[str],
               first: float = ROW[0]) -> None:
    rows = np.array([[first, *ROW[1:]]] * len(ids))
    mirror.offer(snapshot, rows, ids, None)


def settled(counts: dict[str, int]) -> int:
    return counts["done"] + counts["failed"] + counts["timed_out"] + counts["dropped"]


# -- the queue --------------------------------------------------------------------------------


def test_full_queue_drops_and_counts_instead_of_waiting(
        snapshot_of: Callable[..., Snapshot], champion_dir: Path, challenger_dir: Path) -> None:
    """With queue_size 2 and a stuck challenger, offers 3 to 5 return at once as drops."""
    snapshot = snapshot_of(champion_dir, challenger_dir, shadow={"queue_size": 2})
    scorer = GatedScorer()
    mirror = ShadowMirror(ListSink(), scorer=scorer)
    mirror.start()
    for i in range(5):
        offer_rows(mirror, snapshot, [f"r{i}"])
    assert mirror.counts() == {"offered": 5, "done": 0, "dropped": 3, "failed": 0,
                               "timed_out": 0, "queue_depth": 2}
    scorer.gate.set()
    mirror.close(DEADLINE_S)
    assert mirror.counts() == {"offered": 5, "done": 2, "dropped": 3, "failed": 0,
                               "timed_out": 0, "queue_depth": 0}


def test_a_bad_row_in_a_batch_fails_only_its_own_request(
        snapshot_of: Callable[..., Snapshot], champion_dir: Path, challenger_dir: Path) -> None:
    """Offers queued behind a busy call go as one batch; a per-row error is retried alone."""
    snapshot = snapshot_of(champion_dir, challenger_dir)
    scorer, sink = GatedScorer(), ListSink()
    mirror = ShadowMirror(sink, scorer=scorer)
    mirror.start()
    offer_rows(mirror, snapshot, ["first"])
    wait_until(lambda: scorer.calls == [1])
    offer_rows(mirror, snapshot, ["good-1"])
    offer_rows(mirror, snapshot, ["bad"], first=-1.0)
    offer_rows(mirror, snapshot, ["good-2"])
    scorer.gate.set()
    mirror.close(DEADLINE_S)
    assert scorer.calls == [1, 3, 1, 1, 1]
    assert mirror.counts()["done"] == 3 and mirror.counts()["failed"] == 1
    errors = {r.request_id: r.error for r in sink.records}
    assert errors == {"first": None, "good-1": None, "bad": "ValueError: negative",
                      "good-2": None}


def test_sample_percent_sets_the_share_of_requests_offered(
        snapshot_of: Callable[..., Snapshot], champion_dir: Path, challenger_dir: Path) -> None:
    """sample_percent 0 offers nothing; 25 offers about a quarter of the requests."""
    none = snapshot_of(champion_dir, challenger_dir, revision=1, shadow={"sample_percent": 0})
    quarter = snapshot_of(champion_dir, challenger_dir, revision=2,
                          shadow={"sample_percent": 25})
    scorer = GatedScorer()
    scorer.gate.set()
    mirror = ShadowMirror(ListSink(), scorer=scorer, rng=random.Random(7))
    mirror.start()
    for i in range(200):
        offer_rows(mirror, none, [f"n{i}"])
    assert mirror.counts()["offered"] == 0
    for i in range(1000):
        offer_rows(mirror, quarter, [f"q{i}"])
    mirror.close(DEADLINE_S)
    counts = mirror.counts()
    assert 175 <= counts["offered"] <= 325
    assert counts["done"] == counts["offered"]


def test_an_offer_after_close_is_counted_as_dropped(
        snapshot_of: Callable[..., Snapshot], champion_dir: Path, challenger_dir: Path) -> None:
    """Work that arrives after shutdown began is never silently lost: it is a counted drop."""
    mirror = ShadowMirror(ListSink(), scorer=GatedScorer())
    mirror.start()
    mirror.close(1.0)
    offer_rows(mirror, snapshot_of(champion_dir, challenger_dir), ["late:0", "late:1"])
    assert mirror.counts()["offered"] == 2 and mirror.counts()["dropped"] == 2


def test_drain_deadline_counts_unfinished_work_as_dropped(
        snapshot_of: Callable[..., Snapshot], champion_dir: Path, challenger_dir: Path) -> None:
    """close(drain_s) scores what it can in time and counts every other row as dropped."""
    snapshot = snapshot_of(champion_dir, challenger_dir, batching={"max_batch": 1})
    scorer = GatedScorer(delay_s=0.05)
    scorer.gate.set()
    mirror = ShadowMirror(ListSink(), scorer=scorer)
    mirror.start()
    for i in range(20):
        offer_rows(mirror, snapshot, [f"r{i}"])
    mirror.close(0.2)  # 20 calls of 50 ms cannot finish in 0.2 s
    counts = mirror.counts()
    assert counts["dropped"] > 0 and counts["queue_depth"] == 0
    assert counts["done"] + counts["dropped"] == counts["offered"] == 20


# -- records ----------------------------------------------------------------------------------


def test_records_pair_with_the_champion_request_id_and_are_marked_shadow(
        snapshot_of: Callable[..., Snapshot], champion_dir: Path, challenger_dir: Path) -> None:
    """A shadow record has the champion's row id, shadow=True, the challenger's own answer."""
    snapshot = snapshot_of(champion_dir, challenger_dir, revision=4)
    sink = ListSink()
    mirror = ShadowMirror(sink, scorer=ThreadScorer())
    mirror.start()
    rows = np.array([ROW, [6.7, 3.0, 5.2, 2.3]])
    mirror.offer(snapshot, rows, ["req:0", "req:1"], "user-1")
    mirror.close(DEADLINE_S)
    assert snapshot.challenger is not None
    expected = snapshot.challenger.predict(rows)
    assert [r.request_id for r in sink.records] == ["req:0", "req:1"]
    for i, record in enumerate(sink.records):
        assert (record.variant, record.shadow, record.model, record.revision) == \
            ("challenger", True, "chall", 4)
        assert record.unit_id == "user-1" and record.error is None and record.latency_ms > 0
        assert record.features == tuple(rows[i])
        assert record.prediction == expected.labels[i]
        assert expected.probabilities is not None and record.probabilities is not None
        assert list(record.probabilities.values()) == expected.probabilities[i].tolist()
        assert record.probabilities[str(record.prediction)] == record.probability


def test_thread_scorer_counts_a_late_answer_as_timed_out(
        snapshot_of: Callable[..., Snapshot], champion_dir: Path, slow_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A call over shadow.timeout_ms is a challenger error 'timeout: over N ms', not an answer."""
    snapshot = snapshot_of(champion_dir, slow_dir, shadow={"timeout_ms": 5})
    monkeypatch.setenv(SLEEP_ENV, "30")
    sink = ListSink()
    mirror = ShadowMirror(sink, scorer=ThreadScorer())
    mirror.start()
    offer_rows(mirror, snapshot, ["slow"])
    mirror.close(DEADLINE_S)
    assert mirror.counts()["timed_out"] == 1
    [record] = sink.records
    assert record.error == "timeout: over 5 ms" and record.prediction is None


# -- the worker process -----------------------------------------------------------------------


def test_worker_process_scores_the_challenger_each_snapshot_names(
        snapshot_of: Callable[..., Snapshot], champion_dir: Path, challenger_dir: Path) -> None:
    """After a reload the worker loads the new challenger by path: no challenger is cached."""
    first = snapshot_of(champion_dir, challenger_dir, revision=1)
    second = snapshot_of(champion_dir, champion_dir, revision=2)  # the forest as challenger
    scorer, sink = ProcessScorer(), ListSink()
    mirror = ShadowMirror(sink, scorer=scorer)
    mirror.start(first)
    try:
        rows = np.array([[6.0, 2.7, 5.1, 1.6]])
        mirror.offer(first, rows, ["a"], None)
        wait_until(lambda: mirror.counts()["done"] == 1)
        assert scorer.pid is not None and scorer.pid != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, scorer.pid) == 10  # yields to the gateway
        mirror.offer(second, rows, ["b"], None)
    finally:
        mirror.close(DEADLINE_S)
    assert mirror.counts()["done"] == 2 and scorer.starts == 1
    by_id = {r.request_id: r for r in sink.records}
    for request_id, snapshot in (("a", first), ("b", second)):
        assert snapshot.challenger is not None
        expected = snapshot.challenger.predict(rows).probabilities
        assert expected is not None
        record = by_id[request_id]
        assert record.revision == snapshot.revision and record.probabilities is not None
        assert list(record.probabilities.values()) == expected[0].tolist()


def test_a_call_over_the_timeout_kills_the_worker_and_the_next_call_recovers(
        registry: ModelRegistry, slow_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung challenger cannot be interrupted in a thread; its process is killed instead."""
    model = registry.load(slow_dir)
    rows = np.array([ROW])
    scorer = ProcessScorer()
    never: Callable[[], float] = lambda: math.inf  # noqa: E731
    try:
        monkeypatch.setenv(SLEEP_ENV, "300")  # the worker reads it at each call
        outcome = scorer.score(model, rows, 0.1, never)
        assert (outcome.kind, outcome.error) == ("timeout", "timeout: over 100 ms")
        assert scorer.pid is None  # killed and reaped
        monkeypatch.setenv(SLEEP_ENV, "0")  # the next worker inherits this
        assert scorer.score(model, rows, 0.1, never).kind == "ok"
        assert scorer.starts == 2
    finally:
        scorer.close()


def test_drain_deadline_cuts_a_call_in_flight_and_counts_it_dropped(
        snapshot_of: Callable[..., Snapshot], champion_dir: Path, slow_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A call still running at the end of drain_s is ended, its rows dropped, not timed out."""
    snapshot = snapshot_of(champion_dir, slow_dir, shadow={"timeout_ms": 60_000})
    monkeypatch.setenv(SLEEP_ENV, "800")  # loading calls the model twice: 1.6 s
    scorer = ProcessScorer()
    assert snapshot.challenger is not None
    scorer.prepare(snapshot.challenger, lambda: math.inf)  # load now, so the call is in flight
    mirror = ShadowMirror(ListSink(), scorer=scorer)
    mirror.start()
    offer_rows(mirror, snapshot, ["stuck"])
    time.sleep(0.1)
    mirror.close(0.2)
    assert mirror.counts() == {"offered": 1, "done": 0, "dropped": 1, "failed": 0,
                               "timed_out": 0, "queue_depth": 0}
    assert scorer.pid is None


def test_time_spent_waiting_for_a_cpu_is_not_the_challengers(tmp_path: Path) -> None:
    """A call's own time is wall time less the run-queue wait the kernel's schedstat reports."""
    schedstat = tmp_path / "schedstat"
    schedstat.write_text("900000000 400000000 12\n")  # cpu ns, run-queue wait ns, slices
    started = time.perf_counter() - 1.0
    assert 0.6 <= own_seconds(started, 0.0, str(schedstat)) < 0.7
    # Where the kernel does not say, wall time it is.
    assert own_seconds(started, None, str(schedstat)) >= 1.0
    assert own_seconds(started, 0.0, str(tmp_path / "missing")) >= 1.0


def test_worker_refuses_a_model_file_that_changed_on_disk(challenger_dir: Path) -> None:
    """The worker scores only the file whose sha256 the snapshot names."""
    models = _Models()
    with pytest.raises(RuntimeError, match="changed on disk"):
        models.get(str(challenger_dir), "0" * 64)


# -- in the gateway ---------------------------------------------------------------------------


@pytest.fixture
def gateway(make_client: Callable[..., TestClient]) -> Callable[..., TestClient]:
    """In-process gateways, built by the shared make_client fixture."""
    return make_client


def state(client: TestClient) -> GatewayState:
    return client.app.state.gateway  # type: ignore[attr-defined, no-any-return]


def test_gateway_answers_with_the_champion_and_logs_both_answers(
        gateway: Callable[..., TestClient], champion_dir: Path, challenger_dir: Path) -> None:
    """In shadow mode every answer is the champion's; each row gets a paired shadow record."""
    client = gateway(champion=champion_dir, challenger=challenger_dir, mode="shadow")
    for i in range(20):
        response = client.post("/predict", json={"features": ROW},
                               headers={"x-request-id": f"req-{i}"})
        assert response.status_code == 200
        assert (response.headers["x-variant"], response.json()["model"]) == ("champion", "champ")
    assert client.post("/predict", json={"instances": [ROW, ROW]},
                       headers={"x-request-id": "batch"}).status_code == 200
    gateway_state = state(client)
    assert gateway_state.shadow is not None
    mirror = gateway_state.shadow
    wait_until(lambda: mirror.counts()["done"] == 22)
    gateway_state.writer.flush()
    records = gateway_state.store.prediction_records()
    champion = sorted(r.request_id for r in records if not r.shadow)
    shadow = sorted(r.request_id for r in records if r.shadow)
    assert champion == shadow and len(shadow) == 22
    assert {(r.variant, r.model) for r in records if r.shadow} == {("challenger", "chall")}


def test_failing_challenger_leaves_every_answer_200_and_counts_failures(
        gateway: Callable[..., TestClient], champion_dir: Path, failing_dir: Path) -> None:
    """A challenger that raises never reaches the client; each call is a counted failure."""
    client = gateway(champion=champion_dir, challenger=failing_dir, mode="shadow")
    for _ in range(10):
        response = client.post("/predict", json={"features": ROW})
        assert response.status_code == 200 and response.headers["x-variant"] == "champion"
    mirror = state(client).shadow
    assert mirror is not None
    wait_until(lambda: settled(mirror.counts()) == 10)
    assert mirror.counts()["failed"] == 10
    state(client).writer.flush()
    errors = [r.error for r in state(client).store.prediction_records() if r.shadow]
    assert errors == ["RuntimeError: FailingClassifier: deliberate failure"] * 10


def test_ab_mode_offers_nothing_to_the_mirror(
        gateway: Callable[..., TestClient], champion_dir: Path, challenger_dir: Path) -> None:
    """Only shadow mode mirrors: in ab mode the challenger answers its own share instead."""
    client = gateway(champion=champion_dir, challenger=challenger_dir, mode="ab",
                     traffic={"challenger_percent": 50})
    for _ in range(10):
        assert client.post("/predict", json={"features": ROW}).status_code == 200
    mirror = state(client).shadow
    assert mirror is not None and mirror.counts()["offered"] == 0
