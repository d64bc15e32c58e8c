"""The statistics columns read again after more logging, on SQLite and on PostgreSQL: only
what is new is read, and the columns are those a full read of the log gives."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.outcomes import FeedbackRecord, OutcomeStore, PredictionRecord, open_store
from router.outcomes import sqlite_columns as columns_module

CLASSES = ("setosa", "versicolor", "virginica")
T0 = 1_700_000_000.0


def canonical(columns: dict[str, np.ndarray]) -> list[tuple[Any, ...]]:
    """The per-row columns as sorted row tuples (the stores promise no row order); NaN as
    None so that equal rows compare equal."""
    names = sorted(k for k, v in columns.items() if v.ndim == 1 and k != "unknown_feedback_ids")
    per_row = [columns[n].tolist() for n in names]
    if "segments" in columns:  # one tuple of values per row
        per_row.append([tuple(values) for values in columns["segments"].tolist()])
    rows = zip(*per_row, strict=True)
    return sorted(tuple(None if isinstance(x, float) and x != x else x for x in row)
                  for row in rows)


def random_round(rng: np.random.Generator, start: int, count: int, known: list[str]
                 ) -> tuple[list[PredictionRecord], list[FeedbackRecord]]:
    """``count`` predictions of two revisions and two experiments, with feedback for new and
    old requests (corrections included), for ids not logged yet, and labels that are no
    class."""
    predictions = []
    for i in range(start, start + count):
        probabilities = rng.dirichlet([1, 1, 1]).tolist()
        predicted = CLASSES[int(np.argmax(probabilities))]
        predictions.append(PredictionRecord(
            request_id=f"r{i}", ts=T0 + i, experiment="iris" if rng.random() < 0.9 else "other",
            revision=int(rng.integers(1, 3)),
            variant="challenger" if rng.random() < 0.5 else "champion", model="m", version="1",
            features=(1.0, 2.0, 3.0, 4.0), prediction=predicted,
            probability=max(probabilities), latency_ms=float(rng.gamma(2.0, 0.4)),
            unit_id=None if rng.random() < 0.2 else f"u{rng.integers(0, 50)}",
            probabilities=dict(zip(CLASSES, probabilities, strict=True)),
            segments=random_segments(rng)))
    known.extend(p.request_id for p in predictions)
    labels = [*CLASSES, "not-a-class"]
    feedback = [FeedbackRecord(request_id=str(rng.choice(known)), ts=T0,
                               label=str(rng.choice(labels)))
                for _ in range(count)]
    feedback += [FeedbackRecord(request_id=f"r{start + count + 3}", ts=T0, label="setosa")]
    return predictions, feedback


def random_segments(rng: np.random.Generator) -> dict[str, str] | None:
    """No segment values, or a plan (one with characters SQL and JSON quote) and a country
    not always given."""
    if rng.random() < 0.2:
        return None
    values = {"plan": str(rng.choice(["free", "pro", 'team, "big" \'s'])),
              "x-country": str(rng.choice(["DE", "FR", "\u00c5land"]))}
    return values if rng.random() < 0.7 else {"plan": values["plan"]}


@dataclass
class Log:
    """One outcome log, opened as often as a test likes, and the ranges of prediction ids its
    stores read rows in (SQLite: the rowid ranges of its statement; PostgreSQL: from 1 for a
    full read, else the ids after the kept read, up to the newest), in the order read."""

    open: Callable[[], OutcomeStore]
    reads: list[tuple[int, int]] = field(default_factory=list)


@pytest.fixture(params=["sqlite", "postgres"])
def log(request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Log]:
    reads: list[tuple[int, int]] = []
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'log.db'}"
        run = columns_module._SQLiteQuery.run

        def recording(self: Any, conn: Any, low: int, high: int, max_feedback_id: int
                      ) -> Any:
            reads.append((low, high))
            return run(self, conn, low, high, max_feedback_id)

        monkeypatch.setattr(columns_module._SQLiteQuery, "run", recording)
    else:
        from router.outcomes import postgres_columns

        url = request.getfixturevalue("postgres_url")
        rows = postgres_columns._PostgresQuery.rows

        def recording_rows(self: Any, conn: Any, low: int, high: int,
                           pending: Any = ()) -> Any:
            reads.append((low, high))
            return rows(self, conn, low, high, pending)

        every_row = postgres_columns._PostgresQuery.every_row

        def recording_every_row(self: Any, conn: Any, high: int) -> Any:
            reads.append((1, high))
            return every_row(self, conn, high)

        monkeypatch.setattr(postgres_columns._PostgresQuery, "rows", recording_rows)
        monkeypatch.setattr(postgres_columns._PostgresQuery, "every_row", recording_every_row)
    opened: list[OutcomeStore] = []

    def open_log() -> OutcomeStore:
        opened.append(open_store(url, tmp_path))
        return opened[-1]

    yield Log(open_log, reads)
    for store in opened:
        store.close()


def full_read(log: Log, *args: Any, **question: Any) -> dict[str, np.ndarray]:
    """The columns as a store that never read the log before gives them."""
    fresh = log.open()
    try:
        return fresh.analysis_columns(*args, **question)
    finally:
        fresh.close()


@pytest.mark.parametrize("question", [
    {"classes": CLASSES, "units": True},
    {"classes": CLASSES, "true_probability": True},
    {"revisions": [2], "classes": CLASSES, "units": True, "true_probability": True},
    {"classes": CLASSES, "segments": ("x-country", "plan")},
])
def test_reads_after_more_logging_equal_a_full_read(log: Log, question: dict[str, Any]) -> None:
    store = log.open()
    rng = np.random.default_rng(3)
    known: list[str] = []
    revisions = question.pop("revisions", None)
    written = 0
    for round_size in (300, 40, 0, 120, 1):
        predictions, feedback = random_round(rng, written, round_size, known)
        store.write_predictions(predictions)
        store.write_feedback(feedback)
        written += round_size
        log.reads.clear()
        kept = store.analysis_columns("iris", revisions, **question)
        read_again = list(log.reads)
        full = full_read(log, "iris", revisions, **question)
        assert canonical(kept) == canonical(full)
        assert int(kept["unknown_feedback_ids"]) == int(full["unknown_feedback_ids"])
        if written > round_size:  # not the first read: only the new rows were read again
            assert read_again == ([(written - round_size + 1, written)] if round_size else [])


def test_another_question_reads_everything(log: Log) -> None:
    store = log.open()
    rng = np.random.default_rng(5)
    predictions, feedback = random_round(rng, 0, 50, [])
    store.write_predictions(predictions)
    store.write_feedback(feedback)
    log.reads.clear()
    store.analysis_columns("iris", classes=CLASSES)
    store.analysis_columns("iris", classes=CLASSES, true_probability=True)  # another question
    store.analysis_columns("iris", classes=CLASSES, true_probability=True)  # nothing new
    assert [low for low, _ in log.reads] == [1, 1]


def test_regression_values_after_more_logging_equal_a_full_read(log: Log) -> None:
    store = log.open()
    rng = np.random.default_rng(9)
    for start in (0, 200, 230):
        store.write_predictions([PredictionRecord(
            request_id=f"r{i}", ts=T0 + i, experiment="house", revision=1, variant="champion",
            model="m", version="1", features=(1.0,), prediction=float(rng.normal()),
            probability=None, latency_ms=1.0) for i in range(start, start + 30 + start % 7)])
        store.write_feedback([FeedbackRecord(request_id=f"r{rng.integers(0, start + 30)}",
                                             ts=T0, value=float(rng.normal()))
                              for _ in range(25)])
        kept = store.analysis_columns("house")
        assert canonical(kept) == canonical(full_read(log, "house"))


def test_a_phase_over_the_bound_is_read_in_full_each_time(
        log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept read's memory is bounded: past MAX_KEPT_ROWS rows nothing is kept."""
    from router.outcomes import postgres_reads, sqlite_reads

    monkeypatch.setattr(sqlite_reads, "MAX_KEPT_ROWS", 20)
    monkeypatch.setattr(postgres_reads, "MAX_KEPT_ROWS", 20)
    store = log.open()
    predictions, feedback = random_round(np.random.default_rng(2), 0, 50, [])
    store.write_predictions(predictions)
    store.write_feedback(feedback)
    log.reads.clear()
    first = store.analysis_columns("iris", classes=CLASSES)
    again = store.analysis_columns("iris", classes=CLASSES)
    assert [low for low, _ in log.reads] == [1, 1] and canonical(first) == canonical(again)


# -- PostgreSQL: ids are handed out before commit, so a later commit can bring a lower id -------


QUESTION: dict[str, Any] = {"classes": CLASSES, "units": True, "true_probability": True}


def uncommitted_round(url: str, predictions: list[PredictionRecord],
                      feedback: list[FeedbackRecord]) -> Any:
    """A connection whose open transaction has written ``predictions`` and ``feedback``: their
    ids are taken, their rows not yet visible to anyone else."""
    import psycopg

    from router.outcomes.rows import PREDICTION_COLUMNS, feedback_row, prediction_row

    conn = psycopg.connect(url)
    with conn.cursor() as cursor:
        with cursor.copy(f"COPY predictions ({PREDICTION_COLUMNS}) FROM STDIN") as copy:
            for record in predictions:
                copy.write_row(prediction_row(record))
        with cursor.copy("COPY feedback (request_id, ts, label, value) FROM STDIN") as copy:
            for fb in feedback:
                copy.write_row(feedback_row(fb))
    return conn


def test_postgres_reads_rows_committed_after_rows_of_higher_ids(postgres_url: str,
                                                                 tmp_path: Path) -> None:
    """A write that commits after a later one brings predictions and feedback of lower ids
    than those already read: the next read still finds them."""
    store = open_store(postgres_url, tmp_path)
    rng = np.random.default_rng(11)
    known: list[str] = []
    store.write_predictions((first := random_round(rng, 0, 100, known))[0])
    store.write_feedback(first[1])
    store.analysis_columns("iris", **QUESTION)
    slow = uncommitted_round(postgres_url, *random_round(rng, 100, 30, known))
    try:
        predictions, feedback = random_round(rng, 130, 40, known)
        store.write_predictions(predictions)
        store.write_feedback(feedback)
        before_commit = store.analysis_columns("iris", **QUESTION)
        fresh = open_store(postgres_url, tmp_path)
        assert canonical(before_commit) == canonical(fresh.analysis_columns("iris", **QUESTION))
        slow.commit()
    finally:
        slow.close()
    after_commit = store.analysis_columns("iris", **QUESTION)
    full = fresh.analysis_columns("iris", **QUESTION)
    assert len(canonical(after_commit)) > len(canonical(before_commit))
    assert canonical(after_commit) == canonical(full)
    assert int(after_commit["unknown_feedback_ids"]) == int(full["unknown_feedback_ids"])
    fresh.close()
    store.close()


def test_postgres_forgets_the_ids_of_a_write_rolled_back(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids taken by a write that never commits are looked for only while it may still
    commit: once it is over (and the grace period, here none, has passed), no more."""
    from router.outcomes import postgres_pending

    monkeypatch.setattr(postgres_pending, "PENDING_GRACE_S", 0.0)
    store = open_store(postgres_url, tmp_path)
    rng = np.random.default_rng(13)
    known: list[str] = []
    for start, size in ((0, 80), (80, 20)):
        if start:
            slow = uncommitted_round(postgres_url, *random_round(rng, start, size, [*known]))
        else:
            predictions, feedback = random_round(rng, start, size, known)
            store.write_predictions(predictions)
            store.write_feedback(feedback)
    predictions, feedback = random_round(rng, 100, 10, known)
    store.write_predictions(predictions)
    store.write_feedback(feedback)
    store.analysis_columns("iris", **QUESTION)
    cache = store._column_cache  # type: ignore[attr-defined]
    assert cache.pending_predictions.size == 20 and cache.pending_feedback.size == 21
    slow.rollback()
    slow.close()
    for start in (110, 120):
        predictions, feedback = random_round(rng, start, 10, known)
        store.write_predictions(predictions)
        store.write_feedback(feedback)
        kept = store.analysis_columns("iris", **QUESTION)
    assert cache.pending_predictions.size == 0 and cache.pending_feedback.size == 0
    fresh = open_store(postgres_url, tmp_path)
    assert canonical(kept) == canonical(fresh.analysis_columns("iris", **QUESTION))
    fresh.close()
    store.close()


def test_postgres_full_read_of_a_log_of_one_question_notes_the_ids_in_flight(
        postgres_url: str, tmp_path: Path) -> None:
    """A first read of a log that holds only the question's rows, while a write is under way
    with ids below the newest: the ids it took are looked for again, and the later reads,
    after it commits and after more logging, equal a full read."""
    store = open_store(postgres_url, tmp_path)
    rng = np.random.default_rng(17)
    known: list[str] = []

    def iris_round(start: int, size: int, known: list[str]
                   ) -> tuple[list[PredictionRecord], list[FeedbackRecord]]:
        predictions, feedback = random_round(rng, start, size, known)
        return [p._replace(experiment="iris") for p in predictions], feedback

    store.write_predictions((first := iris_round(0, 60, known))[0])
    store.write_feedback(first[1])
    slow = uncommitted_round(postgres_url, *iris_round(60, 20, [*known]))
    try:
        store.write_predictions((second := iris_round(80, 10, known))[0])
        store.write_feedback(second[1])
        before_commit = store.analysis_columns("iris", **QUESTION)
        cache = store._column_cache  # type: ignore[attr-defined]
        assert cache.pending_predictions.size == 20 and cache.pending_feedback.size == 21
        slow.commit()
    finally:
        slow.close()
    fresh = open_store(postgres_url, tmp_path)
    for start in (90, 100):
        predictions, feedback = iris_round(start, 10, known)
        store.write_predictions(predictions)
        store.write_feedback(feedback)
        kept = store.analysis_columns("iris", **QUESTION)
        full = fresh.analysis_columns("iris", **QUESTION)
        assert len(canonical(kept)) > len(canonical(before_commit))
        assert canonical(kept) == canonical(full)
        assert int(kept["unknown_feedback_ids"]) == int(full["unknown_feedback_ids"])
    assert cache.pending_predictions.size == 0
    fresh.close()
    store.close()


def test_missing_ids_wait_for_the_transactions_running_when_they_were_missed() -> None:
    """Ids a read missed are looked for while a transaction running then may still commit
    them, and for the grace period; transactions of other databases do not count."""
    from router.outcomes.postgres_pending import PENDING_GRACE_S, Missing, Snapshot

    then = Snapshot.parse("100:110:100,104,107", elsewhere=[107])
    assert then.running == frozenset({100, 104})
    missed = Missing(np.array([5, 6]), then.running, since=0.0)
    still_running = Snapshot.parse("104:112:104,111")
    all_ended = Snapshot.parse("111:112:111")
    assert not missed.settled(still_running, now=PENDING_GRACE_S)
    assert not missed.settled(all_ended, now=PENDING_GRACE_S / 2)
    assert missed.settled(all_ended, now=PENDING_GRACE_S)
    # A 64-bit id of the snapshot matches the 32-bit id pg_stat_activity shows.
    assert Snapshot.parse(f"{2**32 + 7}:{2**32 + 9}:{2**32 + 7}", [7]).running == frozenset()
