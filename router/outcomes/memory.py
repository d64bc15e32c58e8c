"""``MemoryStore``: the outcome log in process memory, for tests and ``memory://``."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from router.errors import StoreError
from router.outcomes.records import (
    FeedbackRecord,
    HistoryEntry,
    PredictionRecord,
    RevisionRecord,
    SwitchState,
)
from router.outcomes.rows import StoreRow, record_of_row
from router.outcomes.store import StoreHealth

__all__ = ["MemoryStore"]


class MemoryStore:
    """Lists guarded by one lock; behaves like ``SQLiteStore`` where the gateway can tell.

    Feedback labels are kept as ``str(label)`` and values as ``float`` (so ``1`` and ``"1"``
    join the same way as in SQLite), and history details go through JSON, so what one store
    refuses or changes the other does too. Prediction records are kept as given.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._predictions: list[PredictionRecord] = []
        self._feedback: list[FeedbackRecord] = []
        self._history: list[HistoryEntry] = []
        self._revisions: list[RevisionRecord] = []
        self._switch_states: dict[str, SwitchState] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store memory:// is closed")

    def write_predictions(self, records: Sequence[PredictionRecord | StoreRow]) -> None:
        """Append ``records`` at once (all or nothing, like one transaction)."""
        batch = [record_of_row(r) if isinstance(r, StoreRow) else r for r in records]
        with self._lock:
            self._check_open()
            self._predictions.extend(batch)

    def logged_request_ids(self, request_ids: Sequence[str]) -> set[str]:
        """Which of ``request_ids`` some logged prediction carries."""
        wanted = set(request_ids)
        with self._lock:
            self._check_open()
            return {r.request_id for r in self._predictions if r.request_id in wanted}

    def logged_features(self, request_ids: Sequence[str]) -> dict[str, tuple[float, ...]]:
        """The inputs logged for each of ``request_ids`` that some prediction carries."""
        wanted = set(request_ids)
        found: dict[str, tuple[float, ...]] = {}
        with self._lock:
            self._check_open()
            for r in self._predictions:
                if r.request_id in wanted:
                    found.setdefault(r.request_id, tuple(float(x) for x in r.features))
        return found

    def write_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        """Append ground truth with ``label`` as ``str`` and ``value`` as ``float``."""
        batch = [
            dataclasses.replace(
                r,
                label=None if r.label is None else str(r.label),
                value=None if r.value is None else float(r.value),
            )
            for r in records
        ]
        with self._lock:
            self._check_open()
            self._feedback.extend(batch)

    def append_history(self, entry: HistoryEntry) -> None:
        """Record one switch; ``details`` are copied through JSON as SQLite would store them."""
        details = orjson.loads(orjson.dumps(entry.details, default=str))
        stored = dataclasses.replace(entry, details=details)
        with self._lock:
            self._check_open()
            self._history.append(stored)

    def history(self, limit: int | None = None, experiment: str | None = None
                ) -> list[HistoryEntry]:
        """The switches oldest first (``experiment``'s, and those that name none); with
        ``limit``, only the latest ``limit`` of them."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        with self._lock:
            self._check_open()
            # sorted() is stable, so entries with the same ts keep their insertion order.
            entries = sorted((e for e in self._history
                              if experiment is None or e.experiment in (experiment, "")),
                             key=lambda e: e.ts)
        if limit is None:
            return entries
        return entries[len(entries) - limit :] if limit else []

    def count_predictions(self, *, shadow: bool | None = None) -> int:
        """How many predictions were logged; ``shadow`` filters on the shadow flag."""
        with self._lock:
            self._check_open()
            if shadow is None:
                return len(self._predictions)
            return sum(1 for r in self._predictions if r.shadow == shadow)

    def prediction_records(self, *, experiment: str | None = None) -> list[PredictionRecord]:
        """Every logged prediction (of one experiment), in insertion order."""
        with self._lock:
            self._check_open()
            if experiment is None:
                return list(self._predictions)
            return [r for r in self._predictions if r.experiment == experiment]

    def feedback_records(self) -> list[FeedbackRecord]:
        """Every logged feedback record, in insertion order."""
        with self._lock:
            self._check_open()
            return list(self._feedback)

    def register_revision(self, experiment: str, digest: str, config: dict[str, Any],
                          ts: float) -> int:
        """The latest revision if its digest matches, else a new one numbered one higher."""
        with self._lock:
            self._check_open()
            mine = [r for r in self._revisions if r.experiment == experiment]
            if mine and mine[-1].digest == digest:
                return mine[-1].revision
            revision = mine[-1].revision + 1 if mine else 1
            self._revisions.append(RevisionRecord(experiment, revision, ts, digest,
                                                  orjson.loads(orjson.dumps(config))))
            return revision

    def revisions(self, experiment: str) -> list[RevisionRecord]:
        """Every revision of an experiment, oldest first."""
        with self._lock:
            self._check_open()
            return [r for r in self._revisions if r.experiment == experiment]

    def publish_switch_state(self, experiment: str, state: dict[str, Any], ts: float) -> int:
        """Replace the experiment's switch state, one generation up."""
        with self._lock:
            self._check_open()
            last = self._switch_states.get(experiment)
            generation = last.generation + 1 if last else 1
            self._switch_states[experiment] = SwitchState(
                experiment, generation, ts, orjson.loads(orjson.dumps(state)))
            return generation

    def switch_state(self, experiment: str) -> SwitchState | None:
        """The newest switch state of an experiment, if any."""
        with self._lock:
            self._check_open()
            return self._switch_states.get(experiment)

    def analysis_columns(self, experiment: str, revisions: Sequence[int] | None = None, *,
                         classes: Sequence[str] | None = None, units: bool = False,
                         true_probability: bool = False, feature_rows: int = 0,
                         segments: Sequence[str] = (), arms: Sequence[str] = (),
                         latest_rows: int = 0) -> dict[str, Any]:
        """The statistics' numpy columns (see ``router.outcomes.columns``)."""
        from router.outcomes.columns import memory_columns

        with self._lock:
            self._check_open()
            predictions, feedback = list(self._predictions), list(self._feedback)
        if latest_rows:
            predictions = predictions[-latest_rows:]
        columns = memory_columns(predictions, feedback, experiment, revisions, classes=classes,
                                 units=units, true_probability=true_probability,
                                 feature_rows=feature_rows, segments=segments, arms=arms)
        if latest_rows:
            columns["unknown_feedback_ids"] = np.array(0)  # not counted on a partial read
        return columns

    def ping(self) -> bool:
        """True until the store is closed."""
        return not self._closed

    def health(self) -> StoreHealth:
        """Healthy until closed."""
        return StoreHealth("store memory:// is closed" if self._closed else None)

    def close(self) -> None:
        """Refuse further use; the lists are dropped with the object."""
        with self._lock:
            self._closed = True
