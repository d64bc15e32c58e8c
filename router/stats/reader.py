"""The outcome log as the statistics read it, with a slow read shared for a short while.

An open dashboard asks for ``/stats`` and ``/stats/timeline`` every few seconds and the rollout
looks once per interval; over a million logged predictions each read of the analysis columns
costs a second or more of a core that also serves predictions. :class:`SharedColumns` lets
those callers share one read: a read that took at least :data:`SLOW_READ_S` is answered again,
to any caller asking the same question, for twice as long as it took (so at a million rows the
figures are at most about three seconds old, and reading never takes more than a third of a
core). A quicker read (a small log, and every test) is never reused, and callers that arrive
while a read runs wait for it instead of starting their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from router.outcomes.records import RevisionRecord

__all__ = ["SLOW_READ_S", "ColumnSource", "SharedColumns"]

SLOW_READ_S = 0.25


class ColumnSource(Protocol):
    """What the statistics read from a store (``OutcomeStore`` has both)."""

    def revisions(self, experiment: str) -> list[RevisionRecord]: ...

    def analysis_columns(self, experiment: str, revisions: Sequence[int] | None = None, *,
                         classes: Sequence[str] | None = None, units: bool = False,
                         true_probability: bool = False, feature_rows: int = 0,
                         segments: Sequence[str] = (), arms: Sequence[str] = (),
                         latest_rows: int = 0) -> dict[str, Any]: ...


@dataclass(frozen=True)
class _Read:
    question: tuple[Any, ...]
    units: bool
    feature_rows: int
    columns: dict[str, Any]
    fresh_until: float

    def answers(self, question: tuple[Any, ...], units: bool, feature_rows: int) -> bool:
        return (question == self.question and self.units >= units
                and self.feature_rows >= feature_rows and time.monotonic() < self.fresh_until)


class SharedColumns:
    """A :class:`ColumnSource` over ``store`` that shares slow reads (see the module doc).

    The arrays it returns are read-only: callers share them.
    """

    def __init__(self, store: ColumnSource) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._last: _Read | None = None

    def revisions(self, experiment: str) -> list[RevisionRecord]:
        return self._store.revisions(experiment)

    def analysis_columns(self, experiment: str, revisions: Sequence[int] | None = None, *,
                         classes: Sequence[str] | None = None, units: bool = False,
                         true_probability: bool = False, feature_rows: int = 0,
                         segments: Sequence[str] = (), arms: Sequence[str] = (),
                         latest_rows: int = 0) -> dict[str, Any]:
        if latest_rows:
            # The newest rows only (the monitoring gauges): small, never shared or kept.
            return self._store.analysis_columns(
                experiment, revisions, classes=classes, units=units,
                true_probability=true_probability, feature_rows=feature_rows,
                segments=segments, arms=arms, latest_rows=latest_rows)
        question = (experiment, None if revisions is None else tuple(revisions),
                    None if classes is None else tuple(classes), true_probability,
                    tuple(segments), tuple(arms))
        with self._lock:
            last = self._last
            if last is not None and last.answers(question, units, feature_rows):
                return last.columns
            started = time.monotonic()
            # Asked only when wanted: a source of one challenger need not know the word.
            arms_asked: dict[str, Any] = {"arms": arms} if arms else {}
            columns = self._store.analysis_columns(
                experiment, revisions, classes=classes, units=units,
                true_probability=true_probability, feature_rows=feature_rows,
                segments=segments, **arms_asked)
            took = time.monotonic() - started
            for values in columns.values():
                if isinstance(values, np.ndarray):
                    values.flags.writeable = False
            self._last = _Read(question, units, feature_rows, columns,
                               time.monotonic() + 2 * took if took >= SLOW_READ_S else 0.0)
            return columns

    def kept_bytes(self) -> int:
        """Bytes of numpy arrays this process holds for the statistics: the store's kept read
        (``kept_arrays``, bounded) and the columns last handed out, about 110 bytes a logged
        row together. Each buffer counts once: a column that is a view of a kept array adds
        nothing."""
        last = self._last
        arrays = [*(getattr(self._store, "kept_arrays", list)()),
                  *([] if last is None else last.columns.values())]
        buffers: dict[int, int] = {}
        for array in arrays:
            if isinstance(array, np.ndarray):
                owner = array if array.base is None else array.base
                buffers[id(owner)] = getattr(owner, "nbytes", array.nbytes)
        return sum(buffers.values())
