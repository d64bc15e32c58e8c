"""``WriterProcess``: the outcome log written by a child process, so that encoding records and
running SQL never take the serving process's CPU or its interpreter lock.

On the request path, ``submit_batch`` appends one model call's answer, as the batcher handed
it (:class:`router.outcomes.answered.AnsweredBatch`), to a deque and returns;
``submit_answered`` encodes one request's rows (a failed call, a shadow copy) into one bytes
object (:func:`router.outcomes.answered.hand`) and appends that; ``submit_predictions`` appends
a list of records (:mod:`router.outcomes.handoff_queues`). A hand-over thread wakes when
records wait, lets them gather for ``handoff_interval_s``, then packs the lot in one pickle
(:func:`router.outcomes.writer_child.pack_records`) and sends it down a socket pair to the
child (:mod:`router.outcomes.writer_child`) in one write (:mod:`router.outcomes.handoff_pipe`);
while records keep coming it goes on every interval without being woken for each pass. There
the store's rows are made, and an ``OutcomeWriter`` does what it does in a thread otherwise:
batches, retries, spill files, dead letters. A second thread reads the child's counts as
they change; every property here (backlog, written, failing, ...) answers from them, so
``/metrics`` and ``/ready`` show the child's state.

What each way out costs: ``close`` hands over what is left and waits while the child writes
it (or spills it, the store being down); if this process is killed, the child still reads
what was handed over, writes it and exits, so only the records of the last hand-over interval
are lost; if the child is killed, a new one is started and what the dead one held is counted
in ``lost``. A child that stops reading its pipe (stopped, stuck) is ``failing`` once it has
read nothing for ``stall_after_s``; records then wait here, counted in the backlog (the cap
holds while the hand-over waits on the full pipe), and ``close`` gives up on it at its
timeout: what was not handed over goes to the spill directory, what the child holds is
counted in ``lost``. docs/performance.md has the measurements behind the design.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from router.errors import StoreError
from router.outcomes.answered import AnsweredBatch, AnsweredRows, hand
from router.outcomes.handoff_pipe import PipeSender
from router.outcomes.handoff_queues import HandoffQueues, keep_on_disk
from router.outcomes.records import FeedbackRecord, PredictionRecord
from router.outcomes.writer_child import (
    IDLE_STATUS,
    Settings,
    WriterStatus,
    receive,
    start_child,
)
from router.thread_names import name_native_thread

__all__ = ["HANDOFF_INTERVAL_S", "WriterProcess"]

log = logging.getLogger("router.outcomes.writer")

# How long records gather before one hand-over packs them: the loss bound if this process is
# killed. Each hand-over and each report of the child's counts wakes a thread here, which takes
# the interpreter lock from the serving loop: fewer, larger ones cost the serving core less
# (docs/performance.md).
HANDOFF_INTERVAL_S = 0.02
STATUS_INTERVAL_S = 0.25
# How often the child writes: shorter, smaller writes than a thread writer's 0.2 s, since the
# child shares a core with other work and a long write holds that core up (docs/performance.md).
FLUSH_INTERVAL_S = 0.05
START_TIMEOUT_S = 120.0  # spawning Python and opening the store; slow on a loaded machine
# A child that reads what it is handed reports it within a status interval; one that has read
# none of it for this long is stopped or stuck, and said to be failing. Seconds rather than the
# interval: a message of a hundred thousand rows takes it a fraction of a second to read and
# turn into rows, longer on a loaded machine.
STALL_AFTER_S = 5.0
# How long close() waits for a child that has read everything it was handed to write it (or
# spill it, the store being down) beyond its timeout, before killing it.
_CLOSE_GRACE_S = 60.0
# Past close()'s deadline, a child that has read nothing for this long is given up on; its
# reports come every status interval while it reads.
_QUIET_AT_CLOSE_S = 1.0
_RESTART_BACKOFF_S = 1.0  # between attempts to start a writer process


class WriterProcess:
    """Hands records to a writer process; the same members as ``OutcomeWriter``.

    Args:
        store_url: the store the child opens (relative SQLite paths against ``base_dir``).
        base_dir: where relative paths resolve.
        max_pending: backlog at which ``accepting`` turns False (records are still taken).
        handoff_interval_s: how long records gather before they are handed over.
        status_interval_s: how often, at most, the child reports its changing counts.
        flush_interval_s, batch_size, spill_dir, spill_after, dead_letter_dir: the child's
            ``OutcomeWriter``'s; ``spill_dir`` also takes what ``close`` could not hand to a
            child that does not read.
        stall_after_s: how long the child may leave what it was handed unread before it is
            said to be stalled (``stall``, ``failing``).
    """

    def __init__(self, store_url: str, base_dir: Path, *, max_pending: int = 100_000,
                 handoff_interval_s: float = HANDOFF_INTERVAL_S,
                 flush_interval_s: float = FLUSH_INTERVAL_S,
                 batch_size: int = 5_000, spill_dir: Path | None = None,
                 spill_after: int | None = None, dead_letter_dir: Path | None = None,
                 status_interval_s: float = STATUS_INTERVAL_S,
                 stall_after_s: float = STALL_AFTER_S) -> None:
        if max_pending < 1 or batch_size < 1 or flush_interval_s <= 0 or handoff_interval_s < 0:
            raise ValueError("max_pending and batch_size must be >= 1, intervals > 0")
        self._settings = Settings(
            store_url, str(base_dir), None if spill_dir is None else str(spill_dir),
            None if dead_letter_dir is None else str(dead_letter_dir), max_pending,
            flush_interval_s, batch_size, spill_after, list(sys.path), status_interval_s)
        self._max_pending = max_pending
        self._handoff_interval_s = handoff_interval_s
        self._stall_after_s = stall_after_s

        # The request path's side: an append (atomic) and two flags, no lock. The deques are
        # the queues' own, named here so that a submit looks up one attribute, not two.
        self._queues = HandoffQueues()
        self._predictions = self._queues.predictions
        self._answered = self._queues.answered
        self._batches = self._queues.batches
        self._feedback = self._queues.feedback
        self._awake = False  # the hand-over thread was woken for what is queued
        self.closed = False
        self._accepting = True  # kept by the two threads: the request path reads a flag
        self._wake = threading.Event()

        # Written by the hand-over thread only; _taken (and a restart's reset of the status)
        # under _count_lock, so that a backlog read never sees records in neither place.
        self._count_lock = threading.Lock()
        self._taken = 0  # records taken off the queue for the current child
        self._sent = 0  # of which sent to it
        # When the child last showed that it reads: a report of more records read, or the
        # first record taken for it while it had read everything before.
        self._read_at = time.monotonic()
        self._last_handoff = time.monotonic()
        self._flush_asked = 0
        self._closing_timeout: float | None = None
        self._give_up_at: float | None = None  # close()'s deadline for a child that reads
        self._gave_up = False  # close() stopped waiting for a child that did not read
        self._left: str | None = None  # why, once it did
        self._process: subprocess.Popen[bytes] | None = None
        self._sender: PipeSender | None = None
        # Counts of children that ended (a restart starts from zero), and their loss.
        self._past = IDLE_STATUS
        self._lost = 0
        self._spilled_here = 0  # records close() kept in the spill directory itself
        self._not_kept = 0  # records close() could neither hand over nor spill

        # Written by the status thread (and by a restart).
        self._status = IDLE_STATUS
        self._status_changed = threading.Condition()
        self._child_ended = threading.Event()
        self._close_error: str | None = None

        self._handoff: threading.Thread | None = None
        self._reader: threading.Thread | None = None

    # -- request path --------------------------------------------------------------------------

    def submit_predictions(self, records: Sequence[PredictionRecord]) -> None:
        """Hand prediction records over; never waits, never encodes. StoreError once closed."""
        # tuple(): the caller may reuse its list (free for a tuple, a C copy otherwise).
        self._submit(self._predictions, tuple(records))

    def submit_answered(self, answered: AnsweredRows) -> None:
        """Hand one request's answered rows over, encoded in one C call; never waits.
        StoreError once closed."""
        self._submit(self._answered, hand(answered))

    def submit_batch(self, batch: AnsweredBatch) -> None:
        """Hand one model call's answered rows over as they are; never waits, never encodes.
        StoreError once closed."""
        self._submit(self._batches, batch)

    def submit_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        """Hand feedback records over; never waits, never encodes. StoreError once closed."""
        self._submit(self._feedback, tuple(records))

    def _submit(self, queue: deque[Any], item: tuple[Any, ...]) -> None:
        if self.closed:
            raise StoreError("outcome writer is closed; records not accepted")
        if item:  # an empty list of records is nothing to hand over
            queue.append(item)
            if not self._awake:
                self._awake = True
                self._wake.set()

    @property
    def accepting(self) -> bool:
        """False while the backlog is at or above ``max_pending`` (as of the last hand-over,
        report from the child, or look up from a full pipe: a soft bound, read on every
        request)."""
        return self._accepting

    # -- observation ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The writer process's id while one runs."""
        process = self._process
        return None if process is None or process.poll() is not None else process.pid

    @property
    def handed_over(self) -> int:
        """Records sent to the current writer process."""
        return self._sent

    @property
    def received(self) -> int:
        """Records the current writer process said it read."""
        return self._status.received

    @property
    def backlog(self) -> int:
        """Records submitted and not yet written: waiting here, in the pipe, or in the child."""
        with self._count_lock:
            waiting = self._queues.waiting()
            status = self._status
            return waiting + self._taken - status.received + status.backlog

    def _unread(self) -> int:
        """Records taken for the child that it has not said it read."""
        return self._taken - self._status.received

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest record not yet written: the child's, or of what waits here; while
        the child reads nothing (its own figure then stands still), at least that long."""
        now = time.monotonic()
        waiting = now - self._last_handoff if self._queues else 0.0
        unread = self._unread_for() or 0.0
        return max(waiting, unread, self._status.lag_seconds)

    @property
    def stall(self) -> str | None:
        """Why records do not reach the store though it may be fine: the child has read none
        of what it was handed for ``stall_after_s`` (stopped, or stuck); None while it reads.
        """
        quiet = self._unread_for()
        if quiet is None:
            return None
        return (f"outcome writer process {self.pid} has read none of the {self._unread()} "
                f"records handed to it for {quiet:.0f} s (stopped or stuck)")

    def _unread_for(self) -> float | None:
        """How long the child has read nothing while records wait for it, once that is
        ``stall_after_s`` or more; None before, or while nothing waits for it."""
        quiet = time.monotonic() - self._read_at
        if self._unread() <= 0 or quiet < self._stall_after_s:
            return None
        return quiet

    @property
    def failing(self) -> bool:
        """The store refuses writes, or the child reads nothing (``stall``)."""
        return self._status.failing or self.stall is not None

    @property
    def spilled(self) -> int:
        """Records on local disk: the child's spill, and what ``close`` kept there itself."""
        return self._status.spilled + self._spilled_here

    # The child's own figures, as ``OutcomeWriter`` defines them: the current child's state,
    # and counts summed over every child this gateway ran (a restart starts from zero).
    store_problem = property(lambda self: self._status.store_problem,
                             doc="What the store's latest health check found wrong.")
    last_error = property(lambda self: self._status.last_error or self._past.last_error,
                          doc="The latest failed store call, as ``Type: message``.")
    written = property(lambda self: self._past.written + self._status.written,
                       doc="Records written to the store.")
    write_errors = property(lambda self: self._past.write_errors + self._status.write_errors,
                            doc="Store calls that failed (each was retried).")
    dead_letters = property(lambda self: self._past.dead_letters + self._status.dead_letters,
                            doc="Records the store refused, set aside.")
    store_reopened = property(
        lambda self: self._past.store_reopened + self._status.store_reopened,
        doc="Store files opened again after they were removed or replaced.")
    orphaned = property(lambda self: self._past.orphaned + self._status.orphaned,
                        doc="Records written to a store file that was then removed.")

    @property
    def lost(self) -> int:
        """Records killed writer processes, or one ``close`` gave up on, held (at most):
        handed over, not known written; and records ``close`` could neither hand over nor
        spill."""
        return self._lost

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer process (the store is opened there) and the hand-over thread.

        Raises ``StoreError`` when the child cannot open the store or does not start.
        """
        if self._handoff is not None:
            raise RuntimeError("WriterProcess.start() called twice")
        self._spawn()
        self._handoff = threading.Thread(target=self._run_handoff, name="outcome-handoff",
                                         daemon=True)
        self._handoff.start()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is written; False if ``timeout`` passed.

        For tests and callers that must read their own writes; the request path never calls it.
        """
        deadline = time.monotonic() + timeout
        self._flush_asked += 1
        asked = self._flush_asked
        self._awake = True
        self._wake.set()
        with self._status_changed:
            while not (self._status.flushed >= asked and self.backlog == 0):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._handoff is None:
                    return False
                self._status_changed.wait(min(remaining, 0.1))
        return True

    def close(self, timeout: float | None = None) -> None:
        """Stop taking records, hand over the rest and wait while the child writes them.

        With the store down, the child spills what it cannot write within ``timeout`` (10 s
        by default); without a spill directory, or when spilling fails too, it raises
        ``StoreError`` naming the records it could not write, as ``OutcomeWriter.close`` does.
        A child that has not read all it was handed within ``timeout`` (stopped, stuck) is
        given up on, so that a shutdown ends: what was not handed over goes to the spill
        directory (without one it is counted in ``lost``), what the child holds is counted in
        ``lost`` (it still writes that if it runs again), and ``StoreError`` says so.
        """
        self.closed = True
        if self._handoff is None:
            self.start()
        assert self._handoff is not None
        timeout = 10.0 if timeout is None else timeout
        self._give_up_at = time.monotonic() + timeout
        self._closing_timeout = timeout
        self._awake = True
        self._wake.set()
        self._handoff.join()
        process = self._process
        if process is not None and not self._gave_up and not self._child_exited(process):
            self._gave_up = True
        if self._gave_up:
            raise StoreError(self._leave_child(timeout))
        if self._sender is not None:
            self._sender.close()
        if self._reader is not None:
            self._reader.join(5)
        if self._close_error is not None:
            raise StoreError(self._close_error)

    def _child_exited(self, process: subprocess.Popen[bytes]) -> bool:
        """Wait while the child writes what it read and exits; False once close()'s deadline
        has passed with some of what it was handed still unread and nothing read for
        ``_QUIET_AT_CLOSE_S``: it does not read (one still reading is waited for, up to the
        grace, rather than counted lost)."""
        assert self._give_up_at is not None
        while True:
            try:
                process.wait(0.1)
                return True
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now >= self._give_up_at and self._unread() > 0 \
                    and now - self._read_at >= min(_QUIET_AT_CLOSE_S, self._stall_after_s):
                return False
            if now >= self._give_up_at + _CLOSE_GRACE_S:
                process.kill()
                process.wait()
                raise StoreError("outcome writer process did not stop; killed")

    def _leave_child(self, timeout: float) -> str:
        """Give up on a child that did not read what it was handed within ``timeout``: hang up,
        so that if it runs again it writes what it read and exits, and count what it holds
        as lost. The error to raise (the same again if close() is called again)."""
        if self._left is not None:
            return self._left
        if self._sender is not None:
            self._sender.hang_up()
            self._sender.close()
        with self._count_lock:
            status = self._status
            held = max(0, self._taken - status.received + status.backlog)
        self._lost += held
        parts = [f"outcome writer process {self.pid} did not read what it was handed within "
                 f"{timeout:g} s (stopped or stuck)"]
        if self._spilled_here:
            parts.append(f"{self._spilled_here} records not handed over are kept in "
                         f"{self._settings.spill_dir} for the next start")
        if self._not_kept:
            parts.append(f"{self._not_kept} records not handed over could not be kept and are "
                         "lost")
        parts.append(f"up to {held} records it held are lost unless it runs again")
        self._left = "; ".join(parts)
        log.error("outcome writer: %s", self._left)
        return self._left

    # -- the hand-over thread ------------------------------------------------------------------

    def _run_handoff(self) -> None:
        name_native_thread()
        while True:
            self._wake.wait()
            if self._closing_timeout is None and self._handoff_interval_s:
                time.sleep(self._handoff_interval_s)  # let the records of a few ms gather
            self._wake.clear()
            closing = self._closing_timeout
            handed = 0
            try:
                if self._child_ended.is_set() and not self._replace_child(in_hand=0):
                    return  # closing, and no child to close: what was left is counted lost
                handed = self._hand_over()
                if closing is not None:
                    self._hand_over()  # a submit that was under way as close() began
                flush = self._flush_asked
                if flush > self._status.flushed or closing is not None:
                    self._deliver(pickle.dumps(("flush", flush)))
                if closing is not None:
                    self._deliver(pickle.dumps(("close", closing)))
                    return
            except _NotRead:
                # close()'s deadline passed while the child left the pipe full: what waits
                # here goes where the next start finds it.
                self._gave_up = True
                self._keep_the_rest()
                return
            except Exception:  # a bug here must not end the thread and strand every record
                log.exception("outcome writer: unexpected error handing records over")
            if handed:
                # Records keep coming: the next pass follows the interval. The request path
                # sees _awake still set and does not wake this thread for each pass, which
                # cost the event loop a wake-up and this thread a switch (docs/performance.md).
                self._wake.set()
            else:
                # Idle: the next submit wakes it. Cleared before the queues are read again,
                # so a submit that came meanwhile is seen here or wakes the thread.
                self._awake = False
                if self._queues:
                    self._wake.set()

    def _hand_over(self) -> int:
        """Send everything queued to the child as one message; the records it held."""
        with self._count_lock:
            taken = self._queues.take()
            if taken.records:
                if self._unread() <= 0:
                    self._read_at = time.monotonic()  # it had read everything: a new wait
                self._taken += taken.records
        if not taken.records:
            return 0
        self._last_handoff = time.monotonic()
        try:
            self._deliver(taken.message(), taken.records)
        except _NotRead:
            with self._count_lock:  # not sent whole: the child cannot read any of it
                self._queues.put_back(taken)
                self._taken -= taken.records
            raise
        self._sent += taken.records
        self._accepting = self.backlog < self._max_pending
        return taken.records

    def _deliver(self, body: bytes, records: int = 0) -> None:
        """Send to the child, starting a new one first when the last one ended. Raises
        ``_NotRead`` when close()'s deadline passes with the pipe still full."""
        while True:
            if self._child_ended.is_set() and not self._replace_child(in_hand=records):
                return
            sender = self._sender
            assert sender is not None
            try:
                if sender.send(body, self._still_waiting):
                    return
            except OSError:
                # The status thread sees the end too; wait for it to take the last counts.
                self._child_ended.wait(5)
                self._child_ended.set()
                continue
            raise _NotRead

    def _still_waiting(self) -> bool:
        """Asked every few milliseconds while the pipe is full: records gather here meanwhile,
        and the request path must see the cap reached; False once close()'s deadline passed."""
        self._accepting = self.backlog < self._max_pending
        give_up_at = self._give_up_at
        return give_up_at is None or time.monotonic() < give_up_at

    def _keep_the_rest(self) -> None:
        """Once close() gave up on the child: what waits here goes to the spill directory for
        the next start to write; what cannot be kept there is counted lost."""
        with self._count_lock:
            taken = self._queues.take()
        spill_dir = self._settings.spill_dir
        kept = keep_on_disk(taken, None if spill_dir is None else Path(spill_dir))
        self._spilled_here += kept
        self._not_kept += taken.records - kept
        self._lost += taken.records - kept

    def _replace_child(self, in_hand: int) -> bool:
        """Count what the ended child held as lost and start another; ``in_hand`` records,
        taken for it and not sent, go to the new one. Tries until one starts, unless
        closing: then False, and what is left is lost too."""
        status = self._status
        held = self._taken - in_hand - status.received + status.backlog
        self._past = self._past._replace(
            written=self._past.written + status.written,
            write_errors=self._past.write_errors + status.write_errors,
            dead_letters=self._past.dead_letters + status.dead_letters,
            store_reopened=self._past.store_reopened + status.store_reopened,
            orphaned=self._past.orphaned + status.orphaned,
            last_error=status.last_error or self._past.last_error)
        with self._count_lock:
            self._taken = in_hand
            self._status = IDLE_STATUS
            self._read_at = time.monotonic()
        while True:
            try:
                self._spawn()
                break
            except StoreError as exc:
                self._set_status(IDLE_STATUS._replace(failing=True, last_error=str(exc)))
                if self._closing_timeout is not None:
                    held += in_hand + self._queues.waiting()
                    self._close_error = f"{exc}; {held} records not written"
                    break
                log.error("outcome writer: %s; trying again", exc)
                time.sleep(_RESTART_BACKOFF_S)
        if held > 0:
            self._lost += held
            log.error("outcome writer: the writer process ended; up to %d records it held are "
                      "lost", held)
        return not self._child_ended.is_set()

    # -- the child -----------------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start a child, wait for its store to open, start its status thread."""
        process, connection = start_child(self._settings, START_TIMEOUT_S)
        if self._sender is not None:
            self._sender.close()  # the last child's
        self._process = process
        self._sender = PipeSender(connection)
        self._sent = 0
        self._child_ended.clear()
        self._set_status(IDLE_STATUS)  # the last attempt's failure, if any, is over
        self._reader = threading.Thread(target=self._read_status, args=(connection, process),
                                        name="outcome-status", daemon=True)
        self._reader.start()

    def _read_status(self, connection: Connection, process: subprocess.Popen[bytes]) -> None:
        """Take the child's counts as they come, until it closes or ends."""
        name_native_thread()
        try:
            while True:
                message = receive(connection)
                self._set_status(message[1])
                if message[0] == "closed":
                    self._close_error = message[2]
                    break
        except Exception:  # the end of the pipe, or a message that makes no sense
            if not self.closed:
                log.error("outcome writer: the writer process %d ended unexpectedly (exit code "
                          "%s)", process.pid, process.poll())
        finally:
            connection.close()
            self._child_ended.set()
            self._awake = True
            self._wake.set()  # the hand-over thread starts another child
            with self._status_changed:
                self._status_changed.notify_all()

    def _set_status(self, status: WriterStatus) -> None:
        with self._status_changed:
            if status.received > self._status.received:
                self._read_at = time.monotonic()  # the child reads
            self._status = status
            self._accepting = self.backlog < self._max_pending
            self._status_changed.notify_all()


class _NotRead(Exception):
    """close()'s deadline passed while the child left its pipe full."""
