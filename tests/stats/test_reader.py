"""SharedColumns: a slow read of the log is shared for a short while, a quick one never."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from router.outcomes.records import RevisionRecord
from router.stats.reader import SLOW_READ_S, SharedColumns


class CountingStore:
    """A store whose reads take ``seconds`` and are counted."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.reads = 0

    def revisions(self, experiment: str) -> list[RevisionRecord]:
        return []

    def analysis_columns(self, experiment: str, revisions: Sequence[int] | None = None, *,
                         classes: Sequence[str] | None = None, units: bool = False,
                         true_probability: bool = False, feature_rows: int = 0,
                         segments: Sequence[str] = ()) -> dict[str, Any]:
        self.reads += 1
        time.sleep(self.seconds)
        return {"ts": np.arange(3.0), "unknown_feedback_ids": np.array(0)}


def test_a_slow_read_answers_the_same_question_again() -> None:
    store = CountingStore(SLOW_READ_S + 0.05)
    shared = SharedColumns(store)
    first = shared.analysis_columns("exp", [1, 2], classes=["a"], units=True, feature_rows=10)
    again = shared.analysis_columns("exp", [1, 2], classes=["a"], units=True, feature_rows=10)
    assert again is first and store.reads == 1
    # Asking for less than was read (the timeline asks what the report asks) is answered too.
    assert shared.analysis_columns("exp", [1, 2], classes=["a"]) is first
    assert store.reads == 1
    with pytest.raises(ValueError, match="read-only"):
        first["ts"][0] = 5.0


@pytest.mark.parametrize("other", [
    {"revisions": [2]}, {"classes": ["b"]}, {"true_probability": True},
    {"units": True, "feature_rows": 20},
])
def test_another_question_reads_again(other: dict[str, Any]) -> None:
    store = CountingStore(SLOW_READ_S + 0.05)
    shared = SharedColumns(store)
    asked = {"revisions": [1, 2], "classes": ["a"], "units": True, "feature_rows": 10} | other
    shared.analysis_columns("exp", [1, 2], classes=["a"], units=True, feature_rows=10)
    shared.analysis_columns("exp", asked.pop("revisions"), **asked)
    assert store.reads == 2


def test_a_shared_read_expires_after_twice_its_duration() -> None:
    store = CountingStore(SLOW_READ_S + 0.05)
    shared = SharedColumns(store)
    shared.analysis_columns("exp")
    time.sleep(2 * store.seconds + 0.1)
    shared.analysis_columns("exp")
    assert store.reads == 2


def test_a_quick_read_is_never_reused() -> None:
    store = CountingStore(0.0)
    shared = SharedColumns(store)
    shared.analysis_columns("exp")
    shared.analysis_columns("exp")
    assert store.reads == 2


def test_callers_arriving_during_a_read_wait_for_it() -> None:
    store = CountingStore(SLOW_READ_S + 0.1)
    shared = SharedColumns(store)
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(shared.analysis_columns("exp")))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.reads == 1 and all(r is results[0] for r in results)


class KeepingStore(CountingStore):
    """A store that keeps its read, as the SQL stores do: the columns it returns are views of
    the arrays it keeps, and one column is its own."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.kept = np.arange(1000.0)

    def analysis_columns(self, experiment: str, revisions: Sequence[int] | None = None,
                         **options: Any) -> dict[str, Any]:
        return {"ts": self.kept[10:], "latency_ms": np.ones(500)}

    def kept_arrays(self) -> list[np.ndarray]:
        return [self.kept]


def test_kept_bytes_count_each_buffer_once() -> None:
    """What a gateway process holds for /stats: the store's kept read and the last columns
    handed out, a view of a kept array counted with it, not again."""
    shared = SharedColumns(KeepingStore())
    assert shared.kept_bytes() == 8 * 1000
    shared.analysis_columns("exp", [1])
    assert shared.kept_bytes() == 8 * 1000 + 8 * 500


def test_kept_bytes_of_a_sqlite_log_grow_with_it(tmp_path: Any) -> None:
    from router.outcomes import SQLiteStore
    from tests.stats.test_report import Log

    store = SQLiteStore(tmp_path / "outcomes.db")
    log = Log(store)  # type: ignore[arg-type]
    shared = SharedColumns(store)
    sizes = []
    for _ in range(2):
        for _ in range(500):
            log.label(log.predict(), "setosa")
        shared.analysis_columns("exp", [1], classes=["setosa", "versicolor", "virginica"])
        sizes.append(shared.kept_bytes())
    # Every logged row keeps at least its id, time, variant and outcome: 8 bytes each at least.
    assert sizes[0] >= 4 * 8 * 500 and 2 * sizes[0] - 64 <= sizes[1] <= 2 * sizes[0] + 4096
    store.close()
