"""The store's protocols, one per role (the outcome log, the experiment's state, the analysis
reads) and ``OutcomeStore`` that has them all, and ``open_store`` for a URL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from router.outcomes.records import (
    FeedbackRecord,
    HistoryEntry,
    PredictionRecord,
    RevisionRecord,
    SwitchState,
)

if TYPE_CHECKING:
    import numpy as np

    from router.outcomes.rows import StoreRow

__all__ = [
    "AnalysisReads",
    "ExperimentState",
    "OutcomeLog",
    "OutcomeStore",
    "StoreHealth",
    "StoreLifecycle",
]


class StoreHealth(NamedTuple):
    """A store's own view of itself: ``problem`` names what is wrong (None when healthy);
    ``reopened`` counts files opened again after they were removed or replaced, and
    ``orphaned`` the records this process had written to such files (gone with them)."""

    problem: str | None
    reopened: int = 0
    orphaned: int = 0


@runtime_checkable
class StoreLifecycle(Protocol):
    """What every part of a store answers: is it there, is it well, and closing it.

    Every method may be called from any thread. After ``close`` every method but ``ping``,
    ``health`` and ``close`` raises ``StoreError``.
    """

    def ping(self) -> bool:
        """True when the store answers a trivial query (for ``/ready``); never raises."""
        ...

    def health(self) -> StoreHealth:
        """What is wrong with the store, checked without a round trip (microseconds), after
        repairing what can be repaired; never raises."""
        ...

    def close(self) -> None:
        """Release connections; calling it again does nothing."""
        ...


@runtime_checkable
class OutcomeLog(StoreLifecycle, Protocol):
    """The append-only log of answered predictions and ground truth: the writer's side.

    Each call is one transaction, so a failed call wrote nothing and may be retried as a
    whole. A record the store cannot encode raises ``RecordError``; a store that cannot be
    reached or written raises ``StoreError``.
    """

    def write_predictions(self, records: Sequence[PredictionRecord | StoreRow]) -> None:
        """Append ``records`` in one transaction (a ``StoreRow`` stands for its record)."""
        ...

    def write_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        """Append ground truth in one transaction; ids not (yet) predicted are kept."""
        ...


@runtime_checkable
class ExperimentState(StoreLifecycle, Protocol):
    """The experiment's shared state: config revisions, the switch state every gateway
    follows, and the history of switches."""

    def register_revision(self, experiment: str, digest: str, config: dict[str, Any],
                          ts: float) -> int:
        """The revision number of this config content: the latest one if its digest matches,
        else the latest plus one (1 for a new experiment), recorded atomically."""
        ...

    def revisions(self, experiment: str) -> list[RevisionRecord]:
        """Every revision of an experiment, oldest first."""
        ...

    def publish_switch_state(self, experiment: str, state: dict[str, Any], ts: float) -> int:
        """Record the experiment's switchable keys as its newest state; returns its generation
        (one more than the last, 1 for the first)."""
        ...

    def switch_state(self, experiment: str) -> SwitchState | None:
        """The newest switch state of an experiment, if any was published."""
        ...

    def append_history(self, entry: HistoryEntry) -> None:
        """Record one switch of the experiment."""
        ...

    def history(self, limit: int | None = None, experiment: str | None = None
                ) -> list[HistoryEntry]:
        """The switches oldest first; with ``limit``, only the latest ``limit`` of them; with
        ``experiment``, its own and those recorded before switches named their experiment."""
        ...


@runtime_checkable
class AnalysisReads(StoreLifecycle, Protocol):
    """What the statistics, the CLI and tests read back from the log."""

    def count_predictions(self, *, shadow: bool | None = None) -> int:
        """How many predictions were logged; ``shadow`` filters on the shadow flag."""
        ...

    def logged_request_ids(self, request_ids: Sequence[str]) -> set[str]:
        """Which of ``request_ids`` some logged prediction carries (an indexed lookup): how a
        gateway refuses a client's request id that already names a prediction."""
        ...

    def logged_features(self, request_ids: Sequence[str]) -> dict[str, tuple[float, ...]]:
        """The inputs logged for each of ``request_ids`` that some prediction carries (an
        indexed lookup; a NaN input as NaN): what training-serving skew compares. A shadow
        request's two rows carry the same inputs; the first logged is answered."""
        ...

    def prediction_records(self, *, experiment: str | None = None) -> list[PredictionRecord]:
        """Every logged prediction (of one experiment), in insertion order."""
        ...

    def feedback_records(self) -> list[FeedbackRecord]:
        """Every logged feedback record, in insertion order, ``label`` as ``str``."""
        ...

    def analysis_columns(self, experiment: str, revisions: Sequence[int] | None = None, *,
                         classes: Sequence[str] | None = None, units: bool = False,
                         true_probability: bool = False, feature_rows: int = 0,
                         segments: Sequence[str] = (), arms: Sequence[str] = (),
                         latest_rows: int = 0) -> dict[str, np.ndarray]:
        """The experiment's predictions in ``revisions`` (all when ``None``) joined with the
        latest feedback of each request id, as numpy columns for the statistics; the columns
        are defined in ``router.outcomes.columns``. Aggregated by the database, no row objects.
        ``arms`` (the challengers' variants, for an experiment with several) adds ``arm``.
        ``latest_rows`` reads only those among the log's newest that many rows, keeps nothing
        for the next read and counts no unknown feedback ids (``unknown_feedback_ids`` is 0).
        """
        ...


@runtime_checkable
class OutcomeStore(OutcomeLog, ExperimentState, AnalysisReads, Protocol):
    """Where answered predictions, ground truth and switches are kept: the three roles in one
    database (memory, SQLite or PostgreSQL), each role typed on its own so that a part of the
    gateway asks only for what it uses."""
