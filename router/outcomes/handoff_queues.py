"""What the request path hands to the outcome log's writer process, queued as it came until the
hand-over thread takes it for the pipe: four deques (one per kind of hand-over), what one take
holds, and where a take goes when no writer process will read it (the spill directory)."""

from __future__ import annotations

import logging
from collections import deque
from itertools import chain
from pathlib import Path
from typing import NamedTuple

from router.outcomes.answered import (
    AnsweredBatch,
    Handed,
    records_of_batch,
    records_of_handed,
    row_count,
)
from router.outcomes.records import FeedbackRecord, PredictionRecord
from router.outcomes.spill import SpillDirectory
from router.outcomes.writer_child import pack_records

__all__ = ["HandoffQueues", "Taken", "keep_on_disk"]

log = logging.getLogger("router.outcomes.writer")


class Taken(NamedTuple):
    """Everything one take found queued, and how many records (rows) that is."""

    predictions: list[tuple[PredictionRecord, ...]]
    answered: list[Handed]
    batches: list[AnsweredBatch]
    feedback: list[tuple[FeedbackRecord, ...]]
    records: int

    def message(self) -> bytes:
        """The take as one ``records`` message for the writer process."""
        return pack_records(list(chain.from_iterable(self.predictions)),
                            list(chain.from_iterable(self.feedback)), self.answered,
                            self.batches)


class HandoffQueues:
    """The four queues. The request path appends to them directly (an atomic append, no
    lock); one thread takes from them."""

    def __init__(self) -> None:
        self.predictions: deque[tuple[PredictionRecord, ...]] = deque()
        self.answered: deque[Handed] = deque()
        self.batches: deque[AnsweredBatch] = deque()
        self.feedback: deque[tuple[FeedbackRecord, ...]] = deque()

    def __bool__(self) -> bool:
        return bool(self.predictions or self.answered or self.batches or self.feedback)

    def take(self) -> Taken:
        """Everything queued now."""
        # Popped one chunk at a time (an append may come meanwhile), flattened in C.
        predictions = [self.predictions.popleft() for _ in range(len(self.predictions))]
        answered = [self.answered.popleft() for _ in range(len(self.answered))]
        batches = [self.batches.popleft() for _ in range(len(self.batches))]
        feedback = [self.feedback.popleft() for _ in range(len(self.feedback))]
        records = sum(map(len, predictions)) + row_count(answered) \
            + sum(batch[0] for batch in batches) + sum(map(len, feedback))
        return Taken(predictions, answered, batches, feedback, records)

    def put_back(self, taken: Taken) -> None:
        """A take that could not be sent, back at the front, ahead of what came since."""
        self.predictions.extendleft(reversed(taken.predictions))
        self.answered.extendleft(reversed(taken.answered))
        self.batches.extendleft(reversed(taken.batches))
        self.feedback.extendleft(reversed(taken.feedback))

    def waiting(self) -> int:
        """Records queued (a copy of each deque is counted: an append may come meanwhile)."""
        return sum(map(len, list(self.predictions))) + row_count(list(self.answered)) \
            + sum(batch[0] for batch in list(self.batches)) + sum(map(len, list(self.feedback)))


def keep_on_disk(taken: Taken, spill_dir: Path | None) -> int:
    """Append a take to this process's spill file in ``spill_dir``, where the next writer
    process to start finds it and writes it to the store, as it does its own spill; how many
    records were kept (none without a directory, or when writing failed)."""
    if spill_dir is None or not taken.records:
        return 0
    predictions = [*chain.from_iterable(taken.predictions),
                   *(r for handed in taken.answered for r in records_of_handed(handed)),
                   *(r for batch in taken.batches for r in records_of_batch(batch))]
    feedback = list(chain.from_iterable(taken.feedback))
    spill = SpillDirectory(spill_dir)
    kept = 0
    for kind, records in (("predictions", predictions), ("feedback", feedback)):
        if not records:
            continue
        try:
            spill.append(kind, tuple(records))
        except OSError as exc:
            log.error("outcome writer: cannot spill to %s: %s", spill_dir, exc)
            continue
        kept += len(records)
    return kept
