"""The outcome log: records of predictions, feedback and switches, the stores that keep them and
the writer (a process of its own, or a thread) that feeds a store without slowing requests.

``router.outcomes.writer_process`` is not imported here: ``python -m
router.outcomes.writer_child`` imports this package first, and must not find its own module
already loaded."""

from router.outcomes.memory import MemoryStore
from router.outcomes.opener import open_store
from router.outcomes.records import (
    FeedbackRecord,
    HistoryEntry,
    PredictionRecord,
    RevisionRecord,
    SwitchState,
)
from router.outcomes.sqlite import SQLiteStore
from router.outcomes.store import (
    AnalysisReads,
    ExperimentState,
    OutcomeLog,
    OutcomeStore,
    StoreHealth,
)
from router.outcomes.writer import OutcomeWriter

__all__ = [
    "AnalysisReads",
    "ExperimentState",
    "FeedbackRecord",
    "HistoryEntry",
    "MemoryStore",
    "OutcomeLog",
    "OutcomeStore",
    "OutcomeWriter",
    "PredictionRecord",
    "RevisionRecord",
    "SQLiteStore",
    "StoreHealth",
    "SwitchState",
    "open_store",
]
