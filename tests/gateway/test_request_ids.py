"""A client-chosen request id names one prediction: the ledger of used ids, in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from router.errors import DuplicateRequestIdError, StoreError
from router.gateway.request_ids import RequestIdLedger
from router.outcomes import open_store
from router.outcomes.memory import MemoryStore
from router.outcomes.records import PredictionRecord


def record(request_id: str) -> PredictionRecord:
    return PredictionRecord(request_id=request_id, ts=1.0, experiment="exp", revision=1,
                            variant="champion", model="champ", version="1",
                            features=(1.0, 2.0), prediction="a", probability=0.9,
                            latency_ms=1.0)


@pytest.mark.parametrize("url", ["memory://", "sqlite:///log.db"])
def test_store_says_which_ids_it_logged(tmp_path: Path, url: str) -> None:
    """``logged_request_ids`` answers the subset some logged prediction carries."""
    store = open_store(url, tmp_path)
    try:
        store.write_predictions([record("a"), record("b:0"), record("b:1")])
        assert store.logged_request_ids(["a", "b", "b:1", "zz"]) == {"a", "b:1"}
        many = [f"id-{i}" for i in range(1200)] + ["a"]  # past one statement's variables
        assert store.logged_request_ids(many) == {"a"}
    finally:
        store.close()


def test_a_repeat_is_refused_while_the_first_is_unwritten_and_once_it_is_logged() -> None:
    """The ledger refuses from memory first, and from the log after a restart."""
    store = MemoryStore()
    ledger = RequestIdLedger(store)
    asyncio.run(ledger.claim("evil", []))
    with pytest.raises(DuplicateRequestIdError):
        asyncio.run(ledger.claim("evil", []))
    store.write_predictions([record("evil"), record("b:0")])
    restarted = RequestIdLedger(store)
    with pytest.raises(DuplicateRequestIdError):
        asyncio.run(restarted.claim("evil", []))
    with pytest.raises(DuplicateRequestIdError):  # a batch whose row 0 is logged
        asyncio.run(restarted.claim("b", ["b:0", "b:1"]))


def test_concurrent_repeats_let_exactly_one_through() -> None:
    """Ten requests with one id at once: one is taken, nine are 409s."""
    ledger = RequestIdLedger(MemoryStore())

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(ledger.claim("same", []) for _ in range(10)),
                                    return_exceptions=True)

    results = asyncio.run(all_at_once())
    assert results.count(None) == 1
    assert all(isinstance(r, DuplicateRequestIdError) for r in results if r is not None)


def test_an_unreachable_store_does_not_refuse_new_ids(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """With the log down, memory alone decides: a new id passes, a remembered one does not."""
    store = MemoryStore()

    def down(ids: object) -> set[str]:
        raise StoreError("store down")

    monkeypatch.setattr(store, "logged_request_ids", down)
    ledger = RequestIdLedger(store)
    asyncio.run(ledger.claim("new", []))
    with pytest.raises(DuplicateRequestIdError):
        asyncio.run(ledger.claim("new", []))


def test_memory_is_bounded_and_released_ids_are_free_again() -> None:
    """Only the latest ids are held; an id given back may be used."""
    ledger = RequestIdLedger(MemoryStore(), capacity=3)
    for name in ("a", "b", "c", "d"):
        asyncio.run(ledger.claim(name, []))
    asyncio.run(ledger.claim("a", []))  # forgotten from memory, and never logged
    ledger.release("d", [])
    asyncio.run(ledger.claim("d", []))


def test_gateway_issued_ids_are_not_checked(make_client: Any, champion_dir: Path) -> None:
    """Without X-Request-Id no lookup is made; with one, a repeat is a 409 naming it."""
    client = make_client(champion=champion_dir, mode="single")
    for _ in range(3):
        assert client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}
                           ).status_code == 200
    first = client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]},
                        headers={"X-Request-Id": "mine"})
    again = client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]},
                        headers={"X-Request-Id": "mine"})
    assert first.status_code == 200 and again.status_code == 409
    assert again.json()["error"] == "duplicate_request_id"
    assert again.json()["detail"] == [{"header": "x-request-id", "request_id": "mine"}]


class DownStore(MemoryStore):
    """A store whose reads fail as an unreachable PostgreSQL's do: each after a wait (the
    pool's 3 s, here none), counted."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0
        self.down = True

    def logged_request_ids(self, request_ids: Any) -> set[str]:
        self.asked += 1
        if self.down:
            raise StoreError("store down")
        return super().logged_request_ids(request_ids)


def test_a_store_known_to_be_down_is_not_asked_again_for_each_request() -> None:
    """During an outage each lookup waits for the store to fail (3 s on PostgreSQL), on a
    thread of the event loop's small executor: asked per request, 200 requests with their
    own ids took 152 s. After a failed lookup the ledger decides from memory alone until
    ``retry_after_s`` has passed, and while the writer says the store is failing; then one
    request asks again (not every one that comes while it waits), and the ledger goes on
    asking once the store answers."""
    store = DownStore()
    clock = [0.0]
    writer_failing = [False]
    ledger = RequestIdLedger(store, store_failing=lambda: writer_failing[0],
                             retry_after_s=5.0, clock=lambda: clock[0])
    for i in range(50):
        asyncio.run(ledger.claim(f"during-{i}", []))
    assert store.asked == 1
    with pytest.raises(DuplicateRequestIdError):  # memory still refuses a repeat
        asyncio.run(ledger.claim("during-7", []))
    clock[0] = 6.0  # past the wait, the writer not failing: one request asks again, not all

    async def two_at_once() -> None:
        await asyncio.gather(ledger.claim("probe-1", []), ledger.claim("probe-2", []))

    asyncio.run(two_at_once())
    assert store.asked == 2
    writer_failing[0] = True  # the writer has found out too
    clock[0] = 60.0
    asyncio.run(ledger.claim("later", []))
    assert store.asked == 2
    writer_failing[0] = False  # the writer wrote again: the store is back
    store.down = False
    store.write_predictions([record("logged-before")])
    with pytest.raises(DuplicateRequestIdError):
        asyncio.run(ledger.claim("logged-before", []))
    asyncio.run(ledger.claim("after", []))
    assert store.asked == 4
