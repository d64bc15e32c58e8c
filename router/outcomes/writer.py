"""``OutcomeWriter``: takes records from the request path without waiting and writes them to the
store from one background thread, retrying failures so that no accepted record is dropped, and
setting aside (as dead letters) the rare record the store cannot take, so that it never blocks
the ones behind it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router.errors import StoreError
from router.outcomes.answered import AnsweredBatch, AnsweredRows, records_of, records_of_batch
from router.outcomes.batches import Chunk, ChunkQueue, IsolatingWrites
from router.outcomes.dead_letters import DeadLetters
from router.outcomes.records import FeedbackRecord, PredictionRecord
from router.outcomes.spill import SpillDirectory
from router.outcomes.store import OutcomeLog, StoreHealth
from router.thread_names import name_native_thread

__all__ = ["OutcomeWriter"]

logger = logging.getLogger(__name__)

# Retry delays after a failed write: doubling from the first to the cap, so a store that is
# down is not hammered, and one that comes back is written to within a couple of seconds.
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 2.0
# How often the store's health (a file removed, replaced, read-only, a full disk) is looked
# at between writes, so that a fault is seen within a second even while nothing is written;
# also the longest wait between attempts while it lasts, so that a repair is seen as soon.
_HEALTH_INTERVAL_S = 0.5
# How long close() waits, past its timeout, for what is left to be spilled; should the disk
# refuse it too, the writer keeps trying the store and the disk meanwhile.
_SPILL_AT_CLOSE_S = 30.0


class OutcomeWriter:
    """Buffers outcome records in memory and writes them to ``store`` in a daemon thread.

    It runs in the writer process of a gateway (``WriterProcess``), or in the gateway's own
    process for the in-memory store. ``submit_predictions`` and ``submit_feedback`` only take
    a lock and append a reference; serialization and I/O happen in the thread, which wakes
    every ``flush_interval_s`` (sooner once ``batch_size`` records wait) and writes everything
    waiting in store calls of at most ``batch_size`` records. A call that fails because the
    store is unavailable is retried with a capped backoff, in order, until it succeeds; one
    that fails on the records' content sets the refused records aside in ``dead_letter_dir``
    (the spill directory unless given) and writes the rest (``IsolatingWrites``).
    ``max_pending`` is a soft bound: ``submit`` always accepts (the answer was already given),
    and ``accepting`` turns False so that the gateway can refuse new requests until the
    backlog drains.

    Args:
        store: where the records go; left open by ``close()`` (whoever opened it closes it).
        max_pending: backlog at which ``accepting`` turns False.
        flush_interval_s: longest time a record waits before a write is attempted.
        batch_size: most records per store call, and the backlog that wakes the thread early.
        spill_dir: where records wait on local disk while the store is down.
        spill_after: records queued in memory before the rest goes to ``spill_dir``.
        dead_letter_dir: where refused records are set aside (default ``spill_dir``; without
            either, only the log keeps them).
    """

    def __init__(self, store: OutcomeLog, *, max_pending: int = 100_000,
                 flush_interval_s: float = 0.2, batch_size: int = 5_000,
                 spill_dir: Path | None = None, spill_after: int | None = None,
                 dead_letter_dir: Path | None = None) -> None:
        if max_pending < 1 or batch_size < 1 or flush_interval_s <= 0:
            raise ValueError("max_pending and batch_size must be >= 1, flush_interval_s > 0")
        self._store = store
        self._max_pending = max_pending
        self._flush_interval_s = flush_interval_s
        self._batch_size = batch_size

        # Guarded by _lock: what submit hands over, and the counters others read.
        self._lock = threading.Lock()
        self._pending_predictions: list[Chunk] = []
        self._pending_feedback: list[Chunk] = []
        self._pending_oldest: float | None = None
        self._inflight_oldest: float | None = None
        self._backlog = 0
        self._written = 0
        self._write_errors = 0
        self._last_error: str | None = None
        self._failing = False  # from a failed write or health check to a write or ping that works
        self._health = StoreHealth(None)
        self._health_checked = 0.0
        self._closed = False

        # Owned by the writer thread once it runs.
        self._predictions = ChunkQueue()
        self._feedback = ChunkQueue()

        # While the store is down, records past ``spill_after`` go to local disk (so memory
        # stays bounded and new requests are still accepted) and come back once it answers.
        dead_letter_dir = dead_letter_dir if dead_letter_dir is not None else spill_dir
        dead_letters = DeadLetters(dead_letter_dir) if dead_letter_dir is not None else None
        self._isolating = IsolatingWrites(store, dead_letters, self._note_error)
        self._spill = SpillDirectory(spill_dir, dead_letters) if spill_dir is not None else None
        self._spill_after = spill_after if spill_after is not None else max(1, max_pending // 2)
        self._spilled = 0
        self._replay_due = self._spill is not None  # files a crash or an outage left behind
        self._spill_everything = False  # set by close() when the store stays down

        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- request path --------------------------------------------------------------------------

    def submit_predictions(self, records: Sequence[PredictionRecord]) -> None:
        """Hand prediction records to the writer; never waits on I/O. StoreError once closed."""
        self._submit("predictions", records)

    def submit_answered(self, answered: AnsweredRows) -> None:
        """Hand one request's answered rows to the writer, as records; never waits on I/O."""
        self._submit("predictions", records_of(answered))

    def submit_batch(self, batch: AnsweredBatch) -> None:
        """Hand one model call's answered rows to the writer, as records; never waits on I/O."""
        self._submit("predictions", records_of_batch(batch))

    def submit_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        """Hand feedback records to the writer; never waits on I/O. StoreError once closed."""
        self._submit("feedback", records)

    def _submit(self, kind: str, records: Sequence[Any]) -> None:
        # tuple() is free for a tuple and a C-level copy otherwise: the caller may reuse its list.
        chunk = tuple(records)
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise StoreError("outcome writer is closed; records not accepted")
            if not chunk:
                return
            # The list is looked up under the lock: the writer thread swaps in a new one, and
            # an append to the list it already took would be lost.
            pending = self._pending_predictions if kind == "predictions" \
                else self._pending_feedback
            pending.append((now, chunk))
            if self._pending_oldest is None:
                self._pending_oldest = now
            self._backlog += len(chunk)
            wake = self._backlog >= self._batch_size
        if wake and not self._wake.is_set():
            self._wake.set()

    # -- observation ---------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Records submitted and not yet written (waiting or being written)."""
        return self._backlog

    @property
    def accepting(self) -> bool:
        """False while the backlog is at or above ``max_pending``."""
        return self._backlog < self._max_pending

    @property
    def spilled(self) -> int:
        """Records on local disk waiting for the store to come back."""
        return self._spilled

    @property
    def dead_letters(self) -> int:
        """Records the store refused one by one, set aside so that the rest get written."""
        return self._isolating.set_aside

    @property
    def failing(self) -> bool:
        """True while the store refuses writes: from a failed write (or health check) until a
        write or a ping succeeds, so also while every record waits on disk."""
        return self._failing

    @property
    def stall(self) -> str | None:
        """None: a thread takes records in memory, with no pipe to stop reading
        (``WriterProcess``'s own)."""
        return None

    @property
    def store_problem(self) -> str | None:
        """What the store's latest health check found wrong, None when it was healthy."""
        return self._health.problem

    @property
    def store_reopened(self) -> int:
        """Store files opened again after they were removed or replaced."""
        return self._health.reopened

    @property
    def orphaned(self) -> int:
        """Records written to a store file that was then removed or replaced (gone with it)."""
        return self._health.orphaned

    @property
    def lost(self) -> int:
        """Records a killed writer process held: none, in a thread (``WriterProcess``'s own)."""
        return 0

    @property
    def written(self) -> int:
        """Records written to the store so far."""
        return self._written

    @property
    def write_errors(self) -> int:
        """Store calls that failed (each was retried)."""
        return self._write_errors

    @property
    def last_error(self) -> str | None:
        """``"Type: message"`` of the latest failed store call; kept after later successes."""
        return self._last_error

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest record not yet written; 0.0 when nothing waits."""
        with self._lock:
            times = [t for t in (self._pending_oldest, self._inflight_oldest) if t is not None]
        return max(0.0, time.monotonic() - min(times)) if times else 0.0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread; records submitted before are written too."""
        if self._thread is not None:
            raise RuntimeError("OutcomeWriter.start() called twice")
        self._thread = threading.Thread(target=self._run, name="outcome-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, write everything submitted, stop the thread; the store stays open.

        With a ``timeout`` that passes before the backlog is written (the store keeps failing),
        what is left is spilled; without a spill directory, or with one that refuses them too
        for ``_SPILL_AT_CLOSE_S`` more, raises ``StoreError`` and leaves the thread retrying:
        records are reported, not dropped. Calling ``close`` again waits again.
        """
        with self._lock:
            self._closed = True
        if self._thread is None:
            self.start()  # never started: still drain what was submitted
        self._stopping = True
        self._wake.set()
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive() and self._spill is not None:
            # The store stays down: keep what is left on local disk for the next start.
            self._spill_everything = True
            self._wake.set()
            self._thread.join(_SPILL_AT_CLOSE_S)
        if self._thread.is_alive():
            raise StoreError(f"outcome writer: {self._backlog} records not written after "
                             f"{timeout} s (last error: {self._last_error})")

    def write_soon(self) -> None:
        """Write what waits now rather than at the end of the flush interval."""
        self._wake.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is written; False if ``timeout`` passed.
        For tests and callers that read their own writes; the request path never calls it."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self.backlog:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    # -- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        name_native_thread()
        failures = 0
        while True:
            if failures:
                # Not _wake.wait(): a growing backlog sets _wake and would cut the backoff short.
                cap = _HEALTH_INTERVAL_S if self._health.problem else _BACKOFF_MAX_S
                time.sleep(min(cap, _BACKOFF_FIRST_S * 2 ** (failures - 1)))
            else:
                self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            # Read before taking the pending records: once _stopping is seen, close() has
            # already refused further submits, so this pass takes the last of them.
            stopping = self._stopping
            if self._spill_everything:
                self._take_pending()
                self._spill_queued()
                if not (self._predictions.chunks or self._feedback.chunks):
                    return
                # The disk refused them too: they stay here, the store is tried again, and
                # close() names them if neither takes them in time.
            try:
                if self._unhealthy():
                    self._take_pending()  # records wait in memory, then on disk
                    done = answering = False
                else:
                    done = self._write_all()  # nothing left queued in memory
                    # With nothing queued (everything spilled, say) _write_all succeeds without
                    # asking the store: only its answer to a ping ends a failure, or lets the
                    # spilled records come back.
                    answering = done and (not (self._failing or self._replay_due)
                                          or self._store.ping())
                    if answering and self._replay_due:
                        self._replay()
                        done = False  # write what came back on the next pass
            except Exception as exc:  # a bug here must not kill the thread and strand records
                logger.exception("outcome writer: unexpected error")
                self._note_error(exc)
                done = answering = False
            if not answering and self._spill is not None and (
                    len(self._predictions) + len(self._feedback) >= self._spill_after
                    or (stopping and self._health.problem is not None)):
                # At a stop with the store's file at fault, no retry can succeed in time.
                self._spill_queued()
            failures = 0 if answering else failures + 1
            self._failing = not answering
            if stopping and done:
                return

    def _unhealthy(self) -> bool:
        """Ask the store about its health when it is due; True while it has a problem."""
        now = time.monotonic()
        if self._health.problem is None and now - self._health_checked < _HEALTH_INTERVAL_S:
            return False
        self._health_checked = now
        health = self._store.health()
        if health.problem is not None and health.problem != self._health.problem:
            logger.error("outcome writer: %s; records wait in memory, then in %s", health.problem,
                         self._spill.directory if self._spill is not None else "memory only")
            with self._lock:
                self._last_error = health.problem
        self._health = health
        return health.problem is not None

    def _spill_queued(self) -> None:
        """Move every queued record to local disk (the store is failing). A kind the disk
        refuses stays queued in memory, whole (``SpillDirectory.append`` leaves no part of it
        on disk); a kind moved before it is counted as spilled all the same."""
        assert self._spill is not None
        moved = 0
        for kind, queue in (("predictions", self._predictions), ("feedback", self._feedback)):
            if not queue.chunks:
                continue
            records = tuple(r for _, chunk in queue.chunks for r in chunk)
            try:
                self._spill.append(kind, records)
            except OSError as exc:
                logger.error("outcome writer: cannot spill to %s: %s; %d records wait in "
                             "memory", self._spill.directory, exc,
                             len(self._predictions) + len(self._feedback))
                break
            queue.chunks.clear()
            moved += len(records)
        if not moved:
            return
        oldest = min((t for t in (self._predictions.oldest(), self._feedback.oldest())
                      if t is not None), default=None)
        with self._lock:
            self._backlog -= moved
            self._spilled += moved
            self._inflight_oldest = oldest
        self._replay_due = True
        logger.warning("outcome writer: store unavailable, %d records spilled to %s", moved,
                       self._spill.directory)

    def _replay(self) -> None:
        """Queue spilled records again, oldest first, now that the store answers."""
        assert self._spill is not None
        self._replay_due = False
        for path in reversed(self._spill.claim()):
            now = time.monotonic()
            entries: dict[str, list[Chunk]] = {"predictions": [], "feedback": []}
            for kind, records in self._spill.read(path):
                entries[kind].append((now, records))
            for kind, queue in (("predictions", self._predictions), ("feedback", self._feedback)):
                queue.chunks.extendleft(reversed(entries[kind]))
            loaded = sum(len(r) for chunks in entries.values() for _, r in chunks)
            path.unlink()
            with self._lock:
                self._backlog += loaded
                self._spilled = max(0, self._spilled - loaded)
            logger.info("outcome writer: %d spilled records queued again from %s", loaded,
                        path.name)

    def _take_pending(self) -> None:
        with self._lock:
            predictions, self._pending_predictions = self._pending_predictions, []
            feedback, self._pending_feedback = self._pending_feedback, []
            taken_oldest, self._pending_oldest = self._pending_oldest, None
            if taken_oldest is not None and self._inflight_oldest is None:
                self._inflight_oldest = taken_oldest
        # O(chunks), outside the lock: submit must not wait behind a large backlog.
        self._predictions.chunks.extend(predictions)
        self._feedback.chunks.extend(feedback)

    def _write_all(self) -> bool:
        """Write every waiting record; False when the store failed (the rest stays queued)."""
        self._take_pending()
        for kind, queue, write in (
            ("predictions", self._predictions, self._store.write_predictions),
            ("feedback", self._feedback, self._store.write_feedback),
        ):
            while queue.chunks:
                batch = queue.take(self._batch_size)
                handled, written = self._isolating.write(kind, write, batch)
                if handled:
                    queue.drop(handled)
                    oldest = min((t for t in (self._predictions.oldest(),
                                              self._feedback.oldest()) if t is not None),
                                 default=None)
                    with self._lock:
                        if handled == len(batch):
                            # Before the backlog can read 0: who sees it empty sees the
                            # store writable, not a stale failure.
                            self._failing = False
                        self._inflight_oldest = oldest
                        self._backlog -= handled
                        self._written += written
                if handled < len(batch):
                    logger.warning(
                        "outcome writer: writing %d records failed (%d waiting), will retry: %s",
                        len(batch) - handled, self._backlog, self._last_error)
                    return False
        return True

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self._write_errors += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
