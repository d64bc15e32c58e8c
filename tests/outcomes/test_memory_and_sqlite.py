"""The behaviour every OutcomeStore shares, run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from router.errors import StoreError
from router.outcomes import (
    AnalysisReads,
    ExperimentState,
    FeedbackRecord,
    HistoryEntry,
    MemoryStore,
    OutcomeLog,
    OutcomeStore,
    PredictionRecord,
    SQLiteStore,
    open_store,
)
from router.outcomes.store import StoreLifecycle


def prediction(request_id: str, **changes: Any) -> PredictionRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "ts": 1_700_000_000.125,
        "experiment": "iris",
        "revision": 1,
        "variant": "champion",
        "model": "iris-rf",
        "version": "1",
        "features": (5.1, 3.5, 1.4, 0.2),
        "prediction": "setosa",
        "probability": 0.97,
        "latency_ms": 0.4,
        "probabilities": {"setosa": 0.97, "versicolor": 0.03, "virginica": 0.0},
    }
    fields.update(changes)
    return PredictionRecord(**fields)


StoreFactory = Callable[[], OutcomeStore]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes stores of one kind (the same database each time) and closes them afterwards."""
    opened: list[OutcomeStore] = []
    postgres_url = request.getfixturevalue("postgres_url") \
        if request.param == "postgres" else ""

    def make() -> OutcomeStore:
        store: OutcomeStore
        if request.param == "memory":
            store = MemoryStore()
        elif request.param == "postgres":
            store = open_store(postgres_url, tmp_path)
        else:
            store = SQLiteStore(tmp_path / "outcomes.db")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> OutcomeStore:
    return store_factory()


def test_store_implements_the_protocol(store: OutcomeStore) -> None:
    """Every store satisfies the OutcomeStore protocol, so each of its three roles."""
    assert isinstance(store, OutcomeStore)
    for role in (OutcomeLog, ExperimentState, AnalysisReads):
        assert isinstance(store, role)


def test_the_three_roles_split_the_store_without_overlap() -> None:
    """Each method of OutcomeStore belongs to exactly one role, besides the shared lifecycle."""
    def methods(protocol: type) -> set[str]:
        return {name for name in vars(protocol) if not name.startswith("_")}

    lifecycle = methods(StoreLifecycle)
    roles = [methods(role) for role in (OutcomeLog, ExperimentState, AnalysisReads)]
    assert lifecycle == {"ping", "health", "close"}
    assert sum(len(r) for r in roles) == len(set().union(*roles)) == 14
    assert roles[0] == {"write_predictions", "write_feedback"}
    assert roles[1] == {"register_revision", "revisions", "publish_switch_state",
                        "switch_state", "append_history", "history"}


def test_a_healthy_store_reports_no_problem_and_a_closed_one_says_so(
        store: OutcomeStore) -> None:
    """health() is None-problem while open, names the closed store after close()."""
    assert store.health().problem is None
    store.close()
    problem = store.health().problem
    assert problem is not None and "closed" in problem


def test_logged_features_answers_the_inputs_of_the_ids_asked(store: OutcomeStore) -> None:
    """Each asked id that was logged maps to its features (a logged NaN as NaN), its first row
    when a shadow request logged two; ids never logged are left out, across lookup chunks."""
    store.write_predictions([
        prediction("a", features=(1.0, 2.0, 3.0, 4.0)),
        prediction("a", variant="challenger", shadow=True, features=(1.0, 2.0, 3.0, 4.0)),
        prediction("b:0", features=(0.1, float("nan"), -1e-300, 123456.789)),
        prediction("c", features=(9.0, 9.0, 9.0, 9.0)),
    ])
    asked = ["a", "b:0", *(f"unknown-{i}" for i in range(1200))]
    found = store.logged_features(asked)
    assert set(found) == {"a", "b:0"}
    assert found["a"] == (1.0, 2.0, 3.0, 4.0)
    first, missing, *rest = found["b:0"]
    assert first == 0.1 and missing != missing and rest == [-1e-300, 123456.789]
    assert store.logged_features([]) == {}


def test_prediction_records_round_trip_every_field(store: OutcomeStore) -> None:
    """Every field of a prediction comes back as written, including the prediction's type."""
    records = [
        prediction("r1", unit_id="user-7", segments={"x-country": "DE", "plan": "Pro \u00e9"}),
        prediction(
            "r2", prediction=2, probability=0.6, probabilities={"0": 0.1, "1": 0.3, "2": 0.6}
        ),
        prediction(
            "r3",
            prediction=3.25,
            probability=None,
            probabilities=None,
            features=(0.1, -2.5, 1e-300, 123456.789),
        ),
        prediction(
            "r4",
            prediction=None,
            probability=None,
            probabilities=None,
            error="ValueError: bad input",
        ),
        prediction("r5", variant="challenger", model="iris-gb", shadow=True, revision=3),
        prediction("r6", prediction="1", fallback=True, latency_ms=12.5),
        prediction("r7", variant="challenger", model="iris-gb", forced=True),
    ]
    store.write_predictions(records)

    got = store.prediction_records()

    assert got == records
    assert type(got[1].prediction) is int
    assert type(got[5].prediction) is str
    assert all(type(x) is float for x in got[2].features)


def test_prediction_records_filter_by_experiment_in_insertion_order(store: OutcomeStore) -> None:
    """prediction_records keeps insertion order and filters on the experiment."""
    store.write_predictions([prediction("b"), prediction("x", experiment="other")])
    store.write_predictions([prediction("a")])

    assert [r.request_id for r in store.prediction_records()] == ["b", "x", "a"]
    assert [r.request_id for r in store.prediction_records(experiment="iris")] == ["b", "a"]
    assert store.prediction_records(experiment="none") == []


def test_empty_writes_change_nothing(store: OutcomeStore) -> None:
    """Writing an empty batch is allowed and writes nothing."""
    store.write_predictions([])
    store.write_feedback([])

    assert store.count_predictions() == 0
    assert store.feedback_records() == []


def test_feedback_keeps_unknown_ids_and_stores_labels_as_text(store: OutcomeStore) -> None:
    """Feedback is kept whether or not its id was predicted; labels are str so 1 matches "1"."""
    store.write_predictions([prediction("known")])
    store.write_feedback(
        [
            FeedbackRecord("known", ts=10.0, label="setosa"),
            FeedbackRecord("never-predicted", ts=11.0, label=1),  # type: ignore[arg-type]
            FeedbackRecord("later", ts=12.0, value=3.2),
        ]
    )

    assert store.feedback_records() == [
        FeedbackRecord("known", ts=10.0, label="setosa"),
        FeedbackRecord("never-predicted", ts=11.0, label="1"),
        FeedbackRecord("later", ts=12.0, value=3.2),
    ]


def test_history_round_trips_oldest_first(store: OutcomeStore) -> None:
    """history() gives every entry oldest first; a limit keeps the latest ones, still in order."""
    entries = [
        HistoryEntry(
            ts=100.0 + i,
            action=action,
            from_model="iris-rf@1",
            to_model="iris-gb@1",
            reason=f"step {i}",
            actor="rollout",
            details={"challenger_percent": i * 25, "p_value": 0.01, "tags": ["a"]},
        )
        for i, action in enumerate(["rollout_step", "rollout_step", "promote", "rollback"])
    ]
    for entry in entries:
        store.append_history(entry)

    assert store.history() == entries
    assert store.history(limit=2) == entries[2:]
    assert store.history(limit=10) == entries
    assert store.history(limit=0) == []


def test_history_is_each_experiments_own(store: OutcomeStore) -> None:
    """Two experiments that log to one store each read their own switches."""
    one = HistoryEntry(1.0, "promote", "a", "b", "better", "cli", experiment="one")
    two = HistoryEntry(2.0, "rollback", "c", "d", "worse", "cli", experiment="two")
    later = HistoryEntry(3.0, "rollback", "b", "a", "worse", "api", experiment="one")
    for entry in (one, two, later):
        store.append_history(entry)

    assert store.history(experiment="one") == [one, later]
    assert store.history(limit=1, experiment="one") == [later]
    assert store.history(experiment="two") == [two]
    assert store.history(experiment="three") == []
    assert store.history() == [one, two, later]  # the whole store's, as `--store` reads it


def test_switches_from_before_history_named_experiments_are_every_experiments(
        store_factory: StoreFactory) -> None:
    """A log from before the history named its experiment gains the column on open; its old
    switches cannot be told apart, so every experiment's history shows them."""
    first = store_factory()
    if isinstance(first, MemoryStore):
        pytest.skip("a memory store has no file to migrate")
    first.append_history(HistoryEntry(1.0, "promote", "a", "b", "better", "cli"))
    first.close()
    _run(first, ("ALTER TABLE history DROP COLUMN experiment",
                 "UPDATE meta SET value = '3' WHERE key = 'schema_version'"))

    second = store_factory()
    second.append_history(HistoryEntry(2.0, "rollback", "b", "a", "worse", "cli",
                                       experiment="two"))

    assert [(e.action, e.experiment) for e in second.history(experiment="one")] == [
        ("promote", "")]
    assert [(e.action, e.experiment) for e in second.history(experiment="two")] == [
        ("promote", ""), ("rollback", "two")]


def test_count_predictions_filters_on_shadow(store: OutcomeStore) -> None:
    """count_predictions counts all rows, or only shadow / only served ones."""
    store.write_predictions([prediction(f"c{i}") for i in range(5)])
    store.write_predictions(
        [prediction(f"s{i}", variant="challenger", shadow=True) for i in range(3)]
    )

    assert store.count_predictions() == 8
    assert store.count_predictions(shadow=True) == 3
    assert store.count_predictions(shadow=False) == 5


def test_ping_is_true_while_open_and_use_after_close_raises(store: OutcomeStore) -> None:
    """ping() answers True while open and False after close; other calls then raise StoreError."""
    assert store.ping() is True

    store.close()

    assert store.ping() is False
    with pytest.raises(StoreError):
        store.write_predictions([prediction("late")])
    with pytest.raises(StoreError):
        store.count_predictions()
    store.close()  # a second close is harmless


def test_records_survive_reopening(store_factory: StoreFactory) -> None:
    """A second store object on the same location sees the first one's writes (SQLite)."""
    first = store_factory()
    first.write_predictions([prediction("p")])
    first.append_history(HistoryEntry(1.0, "promote", "a", "b", "better", "cli"))
    second = store_factory()

    if isinstance(first, MemoryStore):
        assert second.count_predictions() == 0  # each memory store is its own log
    else:
        assert second.count_predictions() == 1
        assert [e.action for e in second.history()] == ["promote"]


def _as_before_forced(store: OutcomeStore) -> None:
    """Turn the store's log back into schema version 1: no forced column, as an older router
    left it."""
    _run(store, ("ALTER TABLE predictions DROP COLUMN segments",
                 "ALTER TABLE predictions DROP COLUMN forced",
                 "ALTER TABLE history DROP COLUMN experiment",  # as old as the rest
                 "UPDATE meta SET value = '1' WHERE key = 'schema_version'"))


def _run(store: OutcomeStore, statements: tuple[str, ...]) -> None:
    """Run SQL on the store's own file or database, as an older router or a person would."""
    if isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store.path)) as conn, conn:
            for statement in statements:
                conn.execute(statement)
    else:
        import psycopg

        with psycopg.connect(store.url, autocommit=True) as conn:  # type: ignore[attr-defined]
            for statement in statements:
                conn.execute(statement)


def test_a_log_from_before_forced_rows_is_migrated(store_factory: StoreFactory) -> None:
    """An existing SQLite file or PostgreSQL database without the forced column gains it on
    open: the old rows read as not forced, and forced rows are written and read back."""
    first = store_factory()
    if isinstance(first, MemoryStore):
        pytest.skip("a memory store has no file to migrate")
    first.write_predictions([prediction("old")])
    first.close()
    _as_before_forced(first)

    second = store_factory()
    second.write_predictions([prediction("new", variant="challenger", forced=True)])

    assert [(r.request_id, r.forced) for r in second.prediction_records()] == [
        ("old", False), ("new", True)]
    assert second.analysis_columns("iris")["forced"].tolist() == [False, True]


def test_a_log_from_before_segments_is_migrated(store_factory: StoreFactory) -> None:
    """An existing SQLite file or PostgreSQL database without the segments column gains it on
    open: the old rows have no segment values, new rows keep theirs."""
    first = store_factory()
    if isinstance(first, MemoryStore):
        pytest.skip("a memory store has no file to migrate")
    first.write_predictions([prediction("old")])
    first.close()
    _run(first, ("ALTER TABLE predictions DROP COLUMN segments",
                 "ALTER TABLE history DROP COLUMN experiment",  # as old as the rest
                 "UPDATE meta SET value = '2' WHERE key = 'schema_version'"))

    second = store_factory()
    second.write_predictions([prediction("new", segments={"plan": "pro"})])

    assert [(r.request_id, r.segments) for r in second.prediction_records()] == [
        ("old", None), ("new", {"plan": "pro"})]
    assert second.analysis_columns("iris", segments=["plan"])["segments"].tolist() == [
        [None], ["pro"]]


def test_concurrent_writers_and_readers_in_threads(store: OutcomeStore) -> None:
    """Threads writing and reading one store at once lose nothing and duplicate nothing."""
    errors: list[BaseException] = []

    def write(tag: str) -> None:
        try:
            for b in range(25):
                store.write_predictions([prediction(f"{tag}-{b}-{i}") for i in range(20)])
                store.count_predictions()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    ids = [r.request_id for r in store.prediction_records()]
    assert len(ids) == 4 * 25 * 20
    assert len(set(ids)) == len(ids)


def test_revisions_are_numbered_by_content(store: OutcomeStore) -> None:
    """Same content keeps its number; new content gets the next; experiments count apart."""
    assert store.register_revision("e", "d1", {"mode": "ab"}, 1.0) == 1
    assert store.register_revision("e", "d1", {"mode": "ab"}, 2.0) == 1
    assert store.register_revision("e", "d2", {"mode": "single"}, 3.0) == 2
    assert store.register_revision("e", "d1", {"mode": "ab"}, 4.0) == 3
    assert store.register_revision("other", "d1", {}, 5.0) == 1
    assert [(r.revision, r.digest, r.config) for r in store.revisions("e")] == [
        (1, "d1", {"mode": "ab"}), (2, "d2", {"mode": "single"}), (3, "d1", {"mode": "ab"})]


def test_switch_state_is_the_latest_publication(store: OutcomeStore) -> None:
    """Each publication replaces the state one generation up; experiments are separate."""
    assert store.switch_state("e") is None
    assert store.publish_switch_state("e", {"mode": "ab"}, 10.0) == 1
    assert store.publish_switch_state("e", {"mode": "single"}, 11.0) == 2
    assert store.publish_switch_state("f", {"mode": "ab"}, 12.0) == 1
    state = store.switch_state("e")
    assert state is not None
    assert (state.generation, state.ts, state.state) == (2, 11.0, {"mode": "single"})
