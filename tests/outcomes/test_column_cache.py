"""SQLite's statistics columns read again after more logging: only what is new is read, and
the columns are those a full read of the file gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.outcomes import FeedbackRecord, PredictionRecord, SQLiteStore
from router.outcomes import sqlite_columns as columns_module

CLASSES = ("setosa", "versicolor", "virginica")
T0 = 1_700_000_000.0


def canonical(columns: dict[str, np.ndarray]) -> list[tuple[Any, ...]]:
    """The per-row columns as sorted row tuples (the stores promise no row order); NaN as
    None so that equal rows compare equal."""
    names = sorted(k for k, v in columns.items() if v.ndim == 1 and k != "unknown_feedback_ids")
    rows = zip(*(columns[n].tolist() for n in names), strict=True)
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
            probabilities=dict(zip(CLASSES, probabilities, strict=True))))
    known.extend(p.request_id for p in predictions)
    labels = [*CLASSES, "not-a-class"]
    feedback = [FeedbackRecord(request_id=str(rng.choice(known)), ts=T0,
                               label=str(rng.choice(labels)))
                for _ in range(count)]
    feedback += [FeedbackRecord(request_id=f"r{start + count + 3}", ts=T0, label="setosa")]
    return predictions, feedback


@pytest.fixture
def read_ranges(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The rowid ranges the SQLite reader reads the log in, as they are read."""
    ranges: list[tuple[int, int]] = []
    run = columns_module._SQLiteQuery.run

    def recording(self: Any, conn: Any, low: int, high: int, max_feedback_id: int) -> Any:
        ranges.append((low, high))
        return run(self, conn, low, high, max_feedback_id)

    monkeypatch.setattr(columns_module._SQLiteQuery, "run", recording)
    return ranges


@pytest.mark.parametrize("question", [
    {"classes": CLASSES, "units": True},
    {"classes": CLASSES, "true_probability": True},
    {"revisions": [2], "classes": CLASSES, "units": True, "true_probability": True},
])
def test_reads_after_more_logging_equal_a_full_read(tmp_path: Path, question: dict[str, Any],
                                                    read_ranges: list[tuple[int, int]]) -> None:
    path = tmp_path / "log.db"
    store = SQLiteStore(path)
    rng = np.random.default_rng(3)
    known: list[str] = []
    revisions = question.pop("revisions", None)
    written = 0
    for round_size in (300, 40, 0, 120, 1):
        predictions, feedback = random_round(rng, written, round_size, known)
        store.write_predictions(predictions)
        store.write_feedback(feedback)
        written += round_size
        read_ranges.clear()
        kept = store.analysis_columns("iris", revisions, **question)
        read_again = list(read_ranges)
        fresh = SQLiteStore(path)  # no earlier read: everything from the file
        try:
            full = fresh.analysis_columns("iris", revisions, **question)
        finally:
            fresh.close()
        assert canonical(kept) == canonical(full)
        assert int(kept["unknown_feedback_ids"]) == int(full["unknown_feedback_ids"])
        if written > round_size:  # not the first read: only the new rows were read again
            assert read_again == ([(written - round_size + 1, written)] if round_size else [])
    store.close()


def test_another_question_reads_everything(tmp_path: Path,
                                           read_ranges: list[tuple[int, int]]) -> None:
    store = SQLiteStore(tmp_path / "log.db")
    rng = np.random.default_rng(5)
    predictions, feedback = random_round(rng, 0, 50, [])
    store.write_predictions(predictions)
    store.write_feedback(feedback)
    read_ranges.clear()
    store.analysis_columns("iris", classes=CLASSES)
    store.analysis_columns("iris", classes=CLASSES, true_probability=True)  # another question
    store.analysis_columns("iris", classes=CLASSES, true_probability=True)  # nothing new
    assert [low for low, _ in read_ranges] == [1, 1]
    store.close()


def test_regression_values_after_more_logging_equal_a_full_read(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = SQLiteStore(path)
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
        fresh = SQLiteStore(path)
        try:
            assert canonical(kept) == canonical(fresh.analysis_columns("house"))
        finally:
            fresh.close()
    store.close()


def test_a_phase_over_the_bound_is_read_in_full_each_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        read_ranges: list[tuple[int, int]]) -> None:
    """The kept read's memory is bounded: past MAX_KEPT_ROWS rows nothing is kept."""
    monkeypatch.setattr(columns_module, "MAX_KEPT_ROWS", 20)
    store = SQLiteStore(tmp_path / "log.db")
    predictions, feedback = random_round(np.random.default_rng(2), 0, 50, [])
    store.write_predictions(predictions)
    store.write_feedback(feedback)
    read_ranges.clear()
    first = store.analysis_columns("iris", classes=CLASSES)
    again = store.analysis_columns("iris", classes=CLASSES)
    assert [low for low, _ in read_ranges] == [1, 1] and canonical(first) == canonical(again)
    store.close()
