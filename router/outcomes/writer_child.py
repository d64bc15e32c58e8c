"""The writer process: reads batches of records from its gateway over a pipe, writes them to the
store with an ``OutcomeWriter`` (retries, spill, dead letters) and reports its counts back.

``WriterProcess`` starts it as ``python -m router.outcomes.writer_child FD``, ``FD`` being its
end of a socket pair. Each message is one pickle:

- gateway to child: ``("hello", Settings)`` first, then ``("records", predictions,
  feedback, answered, batches)`` (predictions as plain tuples in ``PredictionRecord``'s field
  order: a plain tuple pickles four times faster than a named tuple, and the gateway pays for
  the pickling; ``answered``, requests' rows as ``router.outcomes.answered.hand`` encoded them,
  and ``batches``, model calls' answers as ``router.outcomes.batch_packing.pack_batches``
  packed them, or None),
  ``("flush", n)`` and ``("close", timeout_s)``;
- child to gateway: ``("ready", pid)`` or ``("failed", text)``, then ``("status",
  WriterStatus)`` whenever a count changed (at most every ``Settings.status_interval_s``, at
  once after a flush request), and ``("closed", WriterStatus, error)`` last.

The child ignores SIGINT and SIGTERM, which a terminal or a supervisor may send to the whole
process group: it stops when its gateway closes it, after writing everything it was handed,
or when the gateway is gone (end of file), after writing everything left in the pipe.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

from router.errors import StoreError
from router.outcomes.answered import (
    AnsweredBatch,
    Handed,
    records_of_batch,
    records_of_handed,
    store_rows_of_batch,
)
from router.outcomes.batch_packing import pack_batches, unpack_batches
from router.outcomes.opener import open_store
from router.outcomes.records import FeedbackRecord, PredictionRecord
from router.outcomes.store import OutcomeLog
from router.outcomes.writer import OutcomeWriter
from router.subprocesses import child_environment

__all__ = ["Settings", "WriterStatus", "main", "pack_records", "start_child"]

log = logging.getLogger("router.outcomes.writer")

# With the gateway gone there is nobody to say how long to try: as long as a clean stop does.
DRAIN_WITHOUT_GATEWAY_S = 10.0


class Settings(NamedTuple):
    """What the child needs to open the store and run its writer."""

    store_url: str
    base_dir: str
    spill_dir: str | None
    dead_letter_dir: str | None
    max_pending: int
    flush_interval_s: float
    batch_size: int
    spill_after: int | None
    sys_path: list[str]
    status_interval_s: float  # how stale the counts the gateway shows may be


class WriterStatus(NamedTuple):
    """The child's counts, as ``OutcomeWriter`` keeps them, plus what it read from the pipe."""

    received: int  # records read from the pipe
    flushed: int  # the latest flush request read
    backlog: int
    written: int
    write_errors: int
    last_error: str | None
    failing: bool
    spilled: int
    dead_letters: int
    store_problem: str | None
    store_reopened: int
    orphaned: int
    lag_seconds: float


IDLE_STATUS = WriterStatus(0, 0, 0, 0, 0, None, False, 0, 0, None, 0, 0, 0.0)


def status_of(writer: OutcomeWriter, received: int, flushed: int) -> WriterStatus:
    return WriterStatus(received, flushed, writer.backlog, writer.written, writer.write_errors,
                        writer.last_error, writer.failing, writer.spilled, writer.dead_letters,
                        writer.store_problem, writer.store_reopened, writer.orphaned,
                        round(writer.lag_seconds, 3))


def pack_records(predictions: list[PredictionRecord], feedback: list[FeedbackRecord],
                 answered: Sequence[Handed] = (), batches: Sequence[AnsweredBatch] = ()
                 ) -> bytes:
    """One ``records`` message. A value pickle cannot take (a label of an odd type) travels
    as its text, which is what the store would have written for it."""
    try:
        # map(tuple): a named tuple pickles through a Python method per record, a tuple in C.
        return pickle.dumps(("records", list(map(tuple, predictions)), feedback,
                             list(answered) or None, pack_batches(batches) if batches else None),
                            protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        every = [*predictions, *(r for rows in answered for r in records_of_handed(rows)),
                 *(r for batch in batches for r in records_of_batch(batch))]
        return pickle.dumps(("records", [_picklable(p) for p in every], feedback, None, None),
                            protocol=pickle.HIGHEST_PROTOCOL)


def _picklable(record: PredictionRecord) -> tuple[Any, ...]:
    values = []
    for value in record:
        try:
            pickle.dumps(value)
        except Exception:
            value = str(value)
        values.append(value)
    return tuple(values)


def send(connection: Connection, message: tuple[Any, ...]) -> None:
    connection.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(connection: Connection) -> Any:
    return pickle.loads(connection.recv_bytes())


def start_child(settings: Settings, timeout_s: float) -> tuple[subprocess.Popen[bytes],
                                                                Connection]:
    """Start a writer process; return it and the gateway's end of its pipe once its store is
    open. Raises ``StoreError`` saying why it did not start."""
    parent, child = Pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "router.outcomes.writer_child", str(child.fileno())],
            pass_fds=(child.fileno(),), env=child_environment(), stdin=subprocess.DEVNULL)
    except OSError as exc:
        parent.close()
        raise StoreError(f"cannot start the outcome writer process: {exc}") from exc
    finally:
        child.close()
    try:
        send(parent, ("hello", settings))
        answer = receive(parent) if parent.poll(timeout_s) else \
            ("failed", f"not started within {timeout_s:g} s")
    except (EOFError, OSError) as exc:
        answer = ("failed", f"it ended (exit code {process.poll()}): {exc!r}")
    if answer[0] != "ready":
        parent.close()
        if process.poll() is None:
            process.kill()
        process.wait()
        raise StoreError(f"outcome writer process: {answer[1]}")
    return process, parent


def open_writer(settings: Settings) -> tuple[OutcomeLog, OutcomeWriter]:
    """Open the store and start a writer on it; raises ``StoreError``."""
    store = open_store(settings.store_url, Path(settings.base_dir))
    writer = OutcomeWriter(
        store, max_pending=settings.max_pending, flush_interval_s=settings.flush_interval_s,
        batch_size=settings.batch_size,
        spill_dir=None if settings.spill_dir is None else Path(settings.spill_dir),
        spill_after=settings.spill_after,
        dead_letter_dir=None if settings.dead_letter_dir is None
        else Path(settings.dead_letter_dir))
    writer.start()
    return store, writer


def serve(connection: Connection, writer: OutcomeWriter, settings: Settings
          ) -> tuple[WriterStatus, str | None]:
    """Hand what the gateway sends to ``writer`` until told to close or the pipe ends; then
    close the writer. Returns the last status and why closing failed (None when it did not)."""
    received = flushed = 0
    interval = settings.status_interval_s
    last: WriterStatus | None = None
    last_sent = 0.0
    timeout_s = DRAIN_WITHOUT_GATEWAY_S
    reporting = True  # until a report finds the gateway gone
    while True:
        asked = False
        if connection.poll(interval):
            try:
                message = receive(connection)
            except (EOFError, OSError):
                log.warning("outcome writer: the gateway is gone; writing what it handed over")
                break
            if message[0] == "records":
                _, plain, feedback, answered, batches = message
                predictions = [tuple.__new__(PredictionRecord, p) for p in plain]
                for handed in answered or ():
                    predictions += records_of_handed(handed)
                for batch in unpack_batches(batches) if batches else ():
                    predictions += _rows_of(batch)
                if predictions:
                    writer.submit_predictions(predictions)
                if feedback:
                    writer.submit_feedback(feedback)
                received += len(predictions) + len(feedback)
            elif message[0] == "flush":
                flushed, asked = message[1], True
                writer.write_soon()
            elif message[0] == "close":
                timeout_s = message[1]
                break
        now = time.monotonic()
        if reporting and (asked or now - last_sent >= interval):
            status = status_of(writer, received, flushed)
            if asked or status != last:
                try:
                    send(connection, ("status", status))
                except OSError:
                    # Killed: what it sent before is still in the pipe, to read to the end.
                    reporting = False
                last, last_sent = status, now
    error = None
    try:
        writer.close(timeout=timeout_s)
    except StoreError as exc:
        error = str(exc)
        log.error("outcome writer: %s", exc)
    return status_of(writer, received, flushed), error


def _rows_of(batch: AnsweredBatch) -> list[Any]:
    """A batch's rows as the store writes them; its records where a value is one the store
    cannot take, for the writer to set that one aside (``IsolatingWrites``)."""
    try:
        return store_rows_of_batch(batch)
    except Exception:
        return records_of_batch(batch)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    connection = Connection(int(argv[1]))
    try:
        kind, settings = receive(connection)
    except (EOFError, OSError):
        return 0
    assert kind == "hello"
    # The gateway's import path: a label of a user's own type unpickles here as it was there.
    sys.path[:0] = [p for p in settings.sys_path if p not in sys.path]
    try:
        store, writer = open_writer(settings)
    except StoreError as exc:
        send(connection, ("failed", str(exc)))
        return 1
    # What this process made to start is not garbage: kept out of every collection. And a
    # message's rows live until they are written, so the default threshold (700) would run a
    # collection every few dozen rows: making records took 4.1 to 4.5 µs a row with it, 2.2
    # to 2.4 with these (docs/performance.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
    send(connection, ("ready", os.getpid()))
    status, error = serve(connection, writer, settings)
    with contextlib.suppress(OSError):  # the gateway is gone: nobody to tell
        send(connection, ("closed", status, error))
    store.close()  # opened here; the writer leaves it open
    return 0 if error is None else 1


if __name__ == "__main__":
    # Run from the module under its own name, so that what it pickles (WriterStatus) names a
    # class the gateway can find, not one in its __main__.
    from router.outcomes import writer_child

    sys.exit(writer_child.main(sys.argv))
