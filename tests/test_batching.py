"""The per-model micro-batcher: one model call for concurrent rows, each request its own answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.errors import StoreError
from router.outcomes.answered import AnsweredBatch, Asked, ModelTag, records_of_batch
from router.serving import batching
from router.serving.batching import MicroBatcher, Predictor
from router.serving.model import Prediction
from router.serving.registry import ModelRegistry

BAD = -999.0  # a row whose first value is this makes the fake model raise


class FakeModel:
    """Labels each row with its first value; raises on a BAD row; records every call's size."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, X: np.ndarray) -> Prediction:
        self.calls.append(len(X))
        if (X[:, 0] == BAD).any():
            raise ValueError("bad row")
        return Prediction(labels=X[:, 0].tolist(), probabilities=X * 2)


class InlineModel(FakeModel):
    """A FakeModel that also answers inline, except for rows whose first value is negative."""

    def __init__(self) -> None:
        super().__init__()
        self.inline_calls = 0

    def predict_inline(self, X: np.ndarray) -> Prediction | None:
        self.inline_calls += 1
        return None if (X[:, 0] < 0).any() else self.predict(X)


class NoExecutor(Executor):
    """An executor that must not be used."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise AssertionError("the model call went to the thread pool")


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def _row(value: float, width: int = 3) -> np.ndarray:
    return np.full((1, width), value)


async def _gather(batcher: MicroBatcher, rows: list[np.ndarray]) -> list[Any]:
    return await asyncio.gather(*(batcher.predict(r) for r in rows), return_exceptions=True)


def test_concurrent_rows_share_calls_and_keep_their_answers(pool: ThreadPoolExecutor) -> None:
    """Concurrent requests are batched, and each gets exactly its own rows' answers."""
    model = FakeModel()
    batcher = MicroBatcher(model, pool, max_batch=64, max_wait_ms=1)  # type: ignore[arg-type]
    rows = [_row(float(i)) for i in range(40)] + [np.array([[50.0] * 3, [51.0] * 3])]
    answers = asyncio.run(_gather(batcher, rows))
    for row, answer in zip(rows, answers, strict=True):
        assert answer.labels == row[:, 0].tolist()
        np.testing.assert_array_equal(answer.probabilities, row * 2)
    assert len(model.calls) < len(rows)
    assert sum(model.calls) == 42


def test_a_failing_row_fails_only_its_own_request(pool: ThreadPoolExecutor) -> None:
    """When a batched call raises, every request is retried alone: only the bad one fails."""
    model = FakeModel()
    batcher = MicroBatcher(model, pool, max_batch=64, max_wait_ms=1)  # type: ignore[arg-type]
    rows = [_row(float(i)) for i in range(12)]
    rows[7] = _row(BAD)
    answers = asyncio.run(_gather(batcher, rows))
    for i, answer in enumerate(answers):
        if i == 7:
            assert isinstance(answer, ValueError)
        else:
            assert isinstance(answer, Prediction)
            assert answer.labels == [float(i)]


def test_no_call_exceeds_max_batch_but_a_large_request_goes_whole(
        pool: ThreadPoolExecutor) -> None:
    """Batches stop at max_batch rows; a single request over the limit is not split."""
    model = FakeModel()
    batcher = MicroBatcher(model, pool, max_batch=8, max_wait_ms=1)  # type: ignore[arg-type]
    rows = [_row(float(i)) for i in range(30)] + [np.tile(_row(99.0), (20, 1))]
    answers = asyncio.run(_gather(batcher, rows))
    assert answers[-1].labels == [99.0] * 20
    assert max(c for c in model.calls if c != 20) <= 8
    assert 20 in model.calls


def test_a_lone_request_on_an_idle_model_does_not_wait(
        pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle batcher sends a lone request at once: it never sleeps for max_wait_ms."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(batching.asyncio, "sleep", recording_sleep)
    batcher = MicroBatcher(FakeModel(), pool, max_batch=64,  # type: ignore[arg-type]
                           max_wait_ms=60_000)

    async def one_then_another() -> list[Prediction]:
        return [await batcher.predict(_row(1.0)), await batcher.predict(_row(2.0))]

    first, second = asyncio.run(one_then_another())
    assert (first.labels, second.labels) == ([1.0], [2.0])
    assert slept == []


def test_a_cheap_model_runs_inline_and_defers_to_the_pool_when_it_declines(
        pool: ThreadPoolExecutor) -> None:
    """predict_inline answers on the loop; when it returns None the pool runs predict."""
    model = InlineModel()
    inline = MicroBatcher(model, NoExecutor(), max_batch=64, max_wait_ms=1)  # type: ignore[arg-type]
    assert asyncio.run(_gather(inline, [_row(1.0), _row(2.0)]))[1].labels == [2.0]
    declined = MicroBatcher(model, pool, max_batch=64, max_wait_ms=1)  # type: ignore[arg-type]
    assert asyncio.run(declined.predict(_row(-1.0))).labels == [-1.0]
    assert model.inline_calls >= 2


@pytest.mark.parametrize("engine", ["sklearn", "auto"])
def test_batched_answers_of_a_real_model_equal_single_row_answers(
        champion_dir: Path, iris_data: tuple[np.ndarray, np.ndarray],
        monkeypatch: pytest.MonkeyPatch, pool: ThreadPoolExecutor, engine: str) -> None:
    """Under concurrency a served model answers each row exactly as it answers that row alone."""
    monkeypatch.setenv("ROUTER_ENGINE", engine)
    model = ModelRegistry().load(champion_dir)
    X, _ = iris_data
    predictor = Predictor(pool, max_batch=16, max_wait_ms=1)

    async def all_rows() -> list[Prediction]:
        return list(await asyncio.gather(*(predictor.predict(model, X[i:i + 1])
                                           for i in range(len(X)))))

    answers = asyncio.run(all_rows())
    assert predictor.batcher(model).calls < len(X)
    for i, answer in enumerate(answers):
        alone = model.predict(X[i:i + 1])
        assert answer.labels == alone.labels
        assert answer.probabilities is not None and alone.probabilities is not None
        np.testing.assert_array_equal(answer.probabilities, alone.probabilities)


class OverlapModel(FakeModel):
    """A FakeModel that notes how many of its kind run at once."""

    running = 0
    most = 0
    lock = threading.Lock()

    def predict(self, X: np.ndarray) -> Prediction:
        with OverlapModel.lock:
            OverlapModel.running += 1
            OverlapModel.most = max(OverlapModel.most, OverlapModel.running)
        time.sleep(0.005)  # long enough for another pool thread to start, were it allowed to
        with OverlapModel.lock:
            OverlapModel.running -= 1
        return super().predict(X)


def test_the_batchers_of_one_predictor_take_turns_in_the_pool(pool: ThreadPoolExecutor) -> None:
    """Two models served through one Predictor never have pool calls running at once."""
    champion, challenger = OverlapModel(), OverlapModel()
    predictor = Predictor(pool, max_batch=4, max_wait_ms=1)

    async def both() -> list[Prediction]:
        return list(await asyncio.gather(*(predictor.predict(m, _row(float(i)))
                                           for i in range(20)
                                           for m in (champion, challenger))))

    answers = asyncio.run(both())
    assert [a.labels for a in answers] == [[float(i)] for i in range(20) for _ in range(2)]
    assert OverlapModel.most == 1
    assert len(champion.calls) > 1 and len(challenger.calls) > 1


def test_a_request_does_not_ask_for_the_running_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``asyncio.get_running_loop`` makes a system call (getpid) on every call in Python 3.11;
    a batcher asks once per event loop, not once per request. Under a second loop (a second
    ``asyncio.run``) it asks again and answers as before."""
    asked = 0
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        nonlocal asked
        asked += 1
        return real()

    monkeypatch.setattr(batching.asyncio, "get_running_loop", counting)
    model = InlineModel()
    batcher = MicroBatcher(model, NoExecutor(), max_batch=8,  # type: ignore[arg-type]
                           max_wait_ms=1)

    async def one_by_one(first: float) -> list[Any]:
        return [await batcher.predict(_row(first + i)) for i in range(20)]

    for first in (0.0, 100.0):
        answers = asyncio.run(one_by_one(first))
        assert [a.labels for a in answers] == [[first + i] for i in range(20)]
    assert asked <= 2  # once a loop


# -- logging each answered call ------------------------------------------------------------------

TAG = ModelTag("exp", 1, "champion", "m", "1", ("a", "b", "c"))


def _asked(i: int, rows: int = 1) -> Asked:
    ids = [f"r{i}"] if rows == 1 else [f"r{i}:{k}" for k in range(rows)]
    return (TAG, ids, f"user-{i}", None, False, False, time.perf_counter())


async def _asking(batcher: MicroBatcher, rows: list[np.ndarray]) -> list[Any]:
    return await asyncio.gather(*(batcher.predict(r, _asked(i, len(r)))
                                  for i, r in enumerate(rows)), return_exceptions=True)


def test_each_call_is_logged_once_with_every_request_it_answered(
        pool: ThreadPoolExecutor) -> None:
    """One model call is one hand-over to the log, whatever number of requests it answered;
    each request's records carry its own rows, ids and latency."""
    batches: list[AnsweredBatch] = []
    model = FakeModel()
    batcher = MicroBatcher(model, pool, max_batch=64, max_wait_ms=1,  # type: ignore[arg-type]
                           log=batches.append)
    rows = [_row(float(i)) for i in range(20)] + [np.array([[50.0] * 3, [51.0] * 3])]
    answers = asyncio.run(_asking(batcher, rows))
    assert all(isinstance(a, Prediction) for a in answers)
    assert len(batches) == len(model.calls) < len(rows)
    records = [r for batch in batches for r in records_of_batch(batch)]
    assert sum(batch.rows for batch in batches) == len(records) == 22
    by_id = {r.request_id: r for r in records}
    for i, row in enumerate(rows[:20]):
        record = by_id[f"r{i}"]
        assert (record.features, record.prediction, record.unit_id, record.variant) == \
            (tuple(row[0].tolist()), float(i), f"user-{i}", "champion")
        assert record.probabilities == dict(zip("abc", (row[0] * 2).tolist(), strict=True))
        assert 0 < record.latency_ms < 10_000
    assert [by_id[f"r20:{k}"].prediction for k in range(2)] == [50.0, 51.0]


def test_a_request_answered_alone_after_a_failed_call_is_logged_alone(
        pool: ThreadPoolExecutor) -> None:
    batches: list[AnsweredBatch] = []
    batcher = MicroBatcher(FakeModel(), pool, max_batch=64,  # type: ignore[arg-type]
                           max_wait_ms=1, log=batches.append)
    rows = [_row(float(i)) for i in range(6)]
    rows[3] = _row(BAD)
    answers = asyncio.run(_asking(batcher, rows))
    assert isinstance(answers[3], ValueError)
    logged = sorted(r.request_id for b in batches for r in records_of_batch(b))
    assert logged == ["r0", "r1", "r2", "r4", "r5"]  # the failure is the service's to log


def test_an_answer_the_log_refuses_is_not_given(pool: ThreadPoolExecutor) -> None:
    """An answered prediction is always logged: if the log takes no more, the requests get
    its error, not an answer."""

    def refuse(batch: AnsweredBatch) -> None:
        raise StoreError("outcome writer is closed; records not accepted")

    batcher = MicroBatcher(FakeModel(), pool, max_batch=64,  # type: ignore[arg-type]
                           max_wait_ms=1, log=refuse)
    answers = asyncio.run(_asking(batcher, [_row(1.0), _row(2.0)]))
    assert all(isinstance(a, StoreError) for a in answers)
    # A request that gives no Asked tuple is its caller's to log.
    assert asyncio.run(batcher.predict(_row(3.0))).labels == [3.0]


def test_a_request_gone_before_its_answer_is_not_logged(pool: ThreadPoolExecutor) -> None:
    """The call's other requests are logged with their own rows, the gone one's left out."""
    batches: list[AnsweredBatch] = []
    model = OverlapModel()  # a call lasts 5 ms: time to cancel one request during it
    batcher = MicroBatcher(model, pool, max_batch=64, max_wait_ms=1,  # type: ignore[arg-type]
                           log=batches.append)

    async def one_cancelled() -> None:
        first = asyncio.ensure_future(batcher.predict(_row(1.0), _asked(1)))
        await asyncio.sleep(0)  # the first call starts with the first row alone
        kept = asyncio.ensure_future(batcher.predict(_row(2.0), _asked(2)))
        gone = asyncio.ensure_future(batcher.predict(_row(3.0), _asked(3)))
        after = asyncio.ensure_future(batcher.predict(_row(4.0), _asked(4)))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(first, kept, after)

    asyncio.run(one_cancelled())
    assert model.calls == [1, 3]
    records = sorted((r for b in batches for r in records_of_batch(b)),
                     key=lambda r: r.request_id)
    assert [(r.request_id, r.features, r.prediction) for r in records] == [
        ("r1", (1.0,) * 3, 1.0), ("r2", (2.0,) * 3, 2.0), ("r4", (4.0,) * 3, 4.0)]
    assert [b.rows for b in batches] == [1, 2]


def test_a_predictor_logs_through_every_batcher_it_makes(pool: ThreadPoolExecutor) -> None:
    batches: list[AnsweredBatch] = []
    predictor = Predictor(pool, max_batch=8, max_wait_ms=1)
    first = FakeModel()
    asyncio.run(predictor.predict(first, _row(1.0), _asked(1)))  # type: ignore[arg-type]
    predictor.log_to(batches.append)
    second = FakeModel()
    asyncio.run(predictor.predict(first, _row(2.0), _asked(2)))  # type: ignore[arg-type]
    asyncio.run(predictor.predict(second, _row(3.0), _asked(3)))  # type: ignore[arg-type]
    assert [r.request_id for b in batches for r in records_of_batch(b)] == ["r2", "r3"]
