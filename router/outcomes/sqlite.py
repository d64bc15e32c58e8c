"""``SQLiteStore``: the outcome log in one SQLite file that several processes write at once."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from itertools import chain
from pathlib import Path
from typing import Any

from router.errors import RecordError, StoreError
from router.outcomes.records import (
    FeedbackRecord,
    PredictionRecord,
)
from router.outcomes.rows import (
    PREDICTION_COLUMNS,
    SELECTED_PREDICTION_COLUMNS,
    StoreRow,
    features_by_request,
    feedback_row,
    prediction_from_row,
    prediction_row,
)
from router.outcomes.sqlite_health import (
    DEFAULT_MIN_FREE_BYTES,
    FileFault,
    FileIdentity,
    abandon,
    file_fault,
    identity,
    shm_writable,
)
from router.outcomes.sqlite_schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from router.outcomes.sqlite_state import SQLiteExperimentState
from router.outcomes.store import StoreHealth

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

logger = logging.getLogger(__name__)

# Rows inserted between two yields of the core: about 0.3 ms of SQLite.
WRITE_SLICE_ROWS = 64
_INSERT_INTO = f"INSERT INTO predictions ({PREDICTION_COLUMNS}) VALUES "
_ROW_MARKS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_PREDICTION = _INSERT_INTO + _ROW_MARKS
# A whole slice in one statement: stepping a statement per row cost about 0.65 µs of the
# writer's 4 µs a row. 1,280 variables, within SQLite's limit since 3.32 (32,766).
_INSERT_SLICE = _INSERT_INTO + ", ".join([_ROW_MARKS] * WRITE_SLICE_ROWS)
_SLICE_VARIABLES = WRITE_SLICE_ROWS * _ROW_MARKS.count("?")
_SELECT_PREDICTION = f"SELECT {SELECTED_PREDICTION_COLUMNS} FROM predictions"


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SQLiteStore(SQLiteExperimentState):
    """One SQLite file in WAL mode, one connection per thread.

    The writer thread writes while request threads read, and several gateway processes
    (``uvicorn --workers N``) write the same file: WAL lets readers go on during a write, a busy
    timeout makes writers queue instead of failing, and every write is one ``BEGIN IMMEDIATE``
    transaction (taking the write lock up front avoids the deadlock of two readers upgrading).
    """

    def __init__(self, path: Path, *, url: str | None = None, busy_timeout_s: float = 10.0,
                 min_free_bytes: int = DEFAULT_MIN_FREE_BYTES) -> None:
        self.path = Path(path)
        self.url = url or f"sqlite:///{self.path}"
        self._busy_timeout_s = busy_timeout_s
        self._min_free_bytes = min_free_bytes
        self._local = threading.local()
        self._lock = threading.Lock()
        # Every thread's connection, with the thread that opened and uses it.
        self._connections: dict[sqlite3.Connection, int] = {}
        # Threads within a call that uses their connection, how deep: a reopen must not close
        # a connection a query runs on (SQLite frees what the query uses: a crash).
        self._busy: dict[int, int] = {}
        self._closed = False
        # Health (sqlite_health.py): the file this store opened, and what happened to others.
        self._identity: FileIdentity | None = None
        self._companions: dict[Path, FileIdentity] = {}  # its -wal and -shm files
        self._generation = 0  # one up at each reopen: every thread then connects afresh
        self._reopen_lock = threading.Lock()
        self._rows_in_file = 0  # predictions and feedback this process wrote to the file
        self._reopened = 0
        self._orphaned = 0
        # The statistics' latest read, extended by what is logged after it (sqlite_columns.py;
        # made on first use, so that a store that only writes never imports numpy).
        self._column_cache: Any = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._init_schema()
            self._remember_files()
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise StoreError(f"store {self.url!r}: cannot open {self.path}: {exc}") from exc
        except StoreError:
            self.close()
            raise

    # -- connections -------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not self._closed \
                and self._local.generation == self._generation:
            return conn
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self.url!r} is closed")
            stale = conn  # of a file that was since removed or replaced
            if stale is not None:
                self._connections.pop(stale, None)
            generation = self._generation
            # check_same_thread=False only so that close() can close every thread's
            # connection; each connection is still used by the one thread that opened it.
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,  # autocommit; transactions are explicit
                check_same_thread=False,
            )
            self._connections[conn] = threading.get_ident()
        conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at checkpoints, fast
        self._local.conn, self._local.generation = conn, generation
        if stale is not None:
            _release([stale], self.path)
        return conn

    def _init_schema(self) -> None:
        # Several processes may start at once on a new file. journal_mode can fail with
        # "database is locked" without waiting on the busy handler, so retry until the deadline.
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                self._create_schema()
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.005, 0.05))

    def _create_schema(self) -> None:
        conn = self._conn()
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(mode).lower() != "wal":
            logger.warning(
                "%s: journal_mode is %s, not wal (file system without WAL?)", self.url, mode
            )
        with self._transaction() as tx:
            # Not executescript(): it would COMMIT the BEGIN IMMEDIATE that makes this race-safe.
            for statement in SCHEMA:
                tx.execute(statement)
            row = tx.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None and row[0].isdigit() and int(row[0]) < SCHEMA_VERSION:
                # A file an older router wrote: brought up to date in the same transaction.
                for version in range(int(row[0]), SCHEMA_VERSION):
                    for statement in MIGRATIONS[version]:
                        tx.execute(statement)
                tx.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                           (str(SCHEMA_VERSION),))
                row = (str(SCHEMA_VERSION),)
        if row is None or row[0] != str(SCHEMA_VERSION):
            raise StoreError(
                f"store {self.url!r}: schema version {row[0] if row else None}, "
                f"this router reads version {SCHEMA_VERSION}"
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT leaves the transaction open; end it so the next call starts clean,
            # without letting a failed ROLLBACK hide the error that caused it.
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._errors():
            return self._conn().execute(sql, params).fetchall()

    @contextmanager
    def _errors(self, *, write: bool = False) -> Iterator[None]:
        """SQLite's errors as ``StoreError``; first, a faulty file is refused untouched.

        A write needs the very file this store opened, writable, with room; a read only needs
        a writable ``-shm`` (reading writes its read marks there: SIGBUS otherwise).
        """
        if self._closed:
            raise StoreError(f"store {self.url!r} is closed")
        if write:
            fault = self._fault()
            if fault is not None:
                raise StoreError(f"store {self.url!r}: {fault.message}")
        elif not shm_writable(self.path):
            raise StoreError(f"store {self.url!r}: {self.path}-shm is read-only")
        me = threading.get_ident()
        with self._lock:
            self._busy[me] = self._busy.get(me, 0) + 1
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.url!r}: {exc}") from exc
        finally:
            with self._lock:
                depth = self._busy.pop(me) - 1
                if depth:
                    self._busy[me] = depth

    # -- the OutcomeStore protocol -----------------------------------------------------------

    @contextmanager
    def _record_errors(self) -> Iterator[None]:
        """Errors about what is written (not about the file) as ``RecordError``."""
        try:
            yield
        except (UnicodeEncodeError, OverflowError, ValueError, TypeError,
                sqlite3.InterfaceError, sqlite3.DataError) as exc:
            raise RecordError(f"store {self.url!r} cannot take a record: "
                              f"{type(exc).__name__}: {exc}") from exc

    def write_predictions(self, records: Sequence[PredictionRecord | StoreRow]) -> None:
        """Append ``records`` in one transaction (serialized here, in the caller's thread)."""
        with self._record_errors():
            rows = [prediction_row(r) for r in records]
        if not rows:
            return
        with self._errors(write=True), self._record_errors(), self._transaction() as conn:
            one_statement = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) \
                >= _SLICE_VARIABLES
            for start in range(0, len(rows), WRITE_SLICE_ROWS):
                if start:
                    # The writer shares a core with other work (the clients, in the serving
                    # benchmark): giving it back between slices turns one long burst into short
                    # ones that a waiting process can cut in between (docs/performance.md).
                    os.sched_yield()
                piece = rows[start:start + WRITE_SLICE_ROWS]
                if len(piece) == WRITE_SLICE_ROWS and one_statement:
                    conn.execute(_INSERT_SLICE, list(chain.from_iterable(piece)))
                else:
                    conn.executemany(_INSERT_PREDICTION, piece)
        self._kept(len(rows))

    def write_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        """Append ground truth in one transaction; ids not (yet) predicted are kept."""
        with self._record_errors():
            rows = [feedback_row(r) for r in records]
        if not rows:
            return
        with self._errors(write=True), self._record_errors(), self._transaction() as conn:
            conn.executemany(
                "INSERT INTO feedback (request_id, ts, label, value) VALUES (?, ?, ?, ?)", rows
            )
        self._kept(len(rows))

    def logged_request_ids(self, request_ids: Sequence[str]) -> set[str]:
        """Which of ``request_ids`` some logged prediction carries (the request id index)."""
        found: set[str] = set()
        ids = list(dict.fromkeys(request_ids))
        for start in range(0, len(ids), 500):  # within SQLite's limit on bound variables
            chunk = ids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            found.update(r[0] for r in self._query(
                f"SELECT DISTINCT request_id FROM predictions WHERE request_id IN ({marks})",
                chunk))
        return found

    def logged_features(self, request_ids: Sequence[str]) -> dict[str, tuple[float, ...]]:
        """The inputs logged for each of ``request_ids`` that some prediction carries."""
        found: dict[str, tuple[float, ...]] = {}
        ids = list(dict.fromkeys(request_ids))
        for start in range(0, len(ids), 500):  # within SQLite's limit on bound variables
            chunk = ids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._query("SELECT request_id, features FROM predictions "
                               f"WHERE request_id IN ({marks}) ORDER BY id", chunk)
            found.update(features_by_request(rows))  # each id is in one chunk only
        return found

    def count_predictions(self, *, shadow: bool | None = None) -> int:
        """How many predictions were logged; ``shadow`` filters on the shadow flag."""
        if shadow is None:
            rows = self._query("SELECT count(*) FROM predictions")
        else:
            rows = self._query("SELECT count(*) FROM predictions WHERE shadow = ?", (int(shadow),))
        return int(rows[0][0])

    def prediction_records(self, *, experiment: str | None = None) -> list[PredictionRecord]:
        """Every logged prediction (of one experiment), in insertion order."""
        if experiment is None:
            rows = self._query(f"{_SELECT_PREDICTION} ORDER BY id")
        else:
            rows = self._query(
                f"{_SELECT_PREDICTION} WHERE experiment = ? ORDER BY id", (experiment,)
            )
        return [prediction_from_row(row) for row in rows]

    def feedback_records(self) -> list[FeedbackRecord]:
        """Every logged feedback record, in insertion order, ``label`` as ``str``."""
        rows = self._query("SELECT request_id, ts, label, value FROM feedback ORDER BY id")
        return [FeedbackRecord(request_id=r, ts=ts, label=lb, value=v) for r, ts, lb, v in rows]

    def kept_arrays(self) -> list[Any]:
        """The numpy columns kept from the last analysis read (what a gateway holds for it)."""
        cache = self._column_cache
        return [] if cache is None else cache.arrays()

    def analysis_columns(self, experiment: str, revisions: Sequence[int] | None = None, *,
                         classes: Sequence[str] | None = None, units: bool = False,
                         true_probability: bool = False, feature_rows: int = 0,
                         segments: Sequence[str] = (), arms: Sequence[str] = (),
                         latest_rows: int = 0) -> dict[str, Any]:
        """The statistics' numpy columns (see ``router.outcomes.columns``), aggregated in SQL."""
        from router.outcomes.sqlite_reads import SQLiteColumnCache, sqlite_columns

        with self._lock:
            if self._column_cache is None:
                self._column_cache = SQLiteColumnCache()
        with self._errors():
            return sqlite_columns(self._conn(), self.path, experiment, revisions,
                                  classes=classes, units=units,
                                  true_probability=true_probability,
                                  feature_rows=feature_rows, segments=segments, arms=arms,
                                  timeout_s=self._busy_timeout_s,
                                  cache=self._column_cache, latest_rows=latest_rows)

    def ping(self) -> bool:
        """True when the file is healthy and answers a query; never raises."""
        if self.health().problem is not None:
            return False
        try:
            self._query("SELECT value FROM meta LIMIT 1")
        except StoreError:
            return False
        return True

    def health(self) -> StoreHealth:
        """What is wrong with the file now, after opening it again where that is the remedy.

        A removed file is created afresh in its directory, a replaced one (a restored copy) is
        opened; what this process had written to the old file is counted as ``orphaned``. A
        missing directory is waited for: it may be a volume not mounted yet, and creating it
        would put the log where nobody looks.
        """
        if self._closed:
            return StoreHealth(f"store {self.url!r} is closed", self._reopened, self._orphaned)
        fault = self._fault()
        if fault is not None and fault.reopenable:
            fault = self._reopen()
        problem = None if fault is None else f"store {self.url!r}: {fault.message}"
        return StoreHealth(problem, self._reopened, self._orphaned)

    def _fault(self) -> FileFault | None:
        return file_fault(self.path, self._identity, self._min_free_bytes)

    def _kept(self, rows: int) -> None:
        """After a commit: the rows are in the file only if it is still the one at the path."""
        try:
            same = identity(self.path) == self._identity
        except OSError:
            same = False
        if not same:
            raise StoreError(f"store {self.url!r}: {self.path} was removed or replaced during "
                             "the write; the rows went with the old file")
        with self._lock:
            self._rows_in_file += rows

    def _reopen(self) -> FileFault | None:
        with self._reopen_lock:
            fault = self._fault()  # another thread may have reopened meanwhile
            if fault is None or not fault.reopenable:
                return fault
            with self._lock:
                self._generation += 1
                orphaned, self._rows_in_file = self._rows_in_file, 0
                self._column_cache = None  # rows of the old file
                # A thread within a call keeps its connection until its next one, which
                # connects afresh (the generation moved) and lets go of it.
                busy = {conn: owner for conn, owner in self._connections.items()
                        if owner in self._busy}
                old = [conn for conn in self._connections if conn not in busy]
                self._connections = busy
            self._orphaned += orphaned
            logger.error("%s: %s; %d records this process wrote to it are gone with it unless "
                         "that file is restored; opening %s again", self.url, fault.message,
                         orphaned, self.path)
            self._set_companions_aside()
            # Every idle thread's connection to the old file, not only this one's: a thread
            # that never uses the store again (the writer process's main thread, an idle pool
            # thread) would hold the old file, its -wal and -shm open for good, and a removed
            # file's space would never come back. Closing the last connection to a
            # file leaves the -wal and -shm at its path alone once that path names another
            # file (SQLite checks that the file has not moved before it removes them).
            _release(old, self.path)
            try:
                self._init_schema()
                self._remember_files()
            except (OSError, sqlite3.Error, StoreError) as exc:
                return FileFault(f"{fault.message}; opening it again failed: {exc}")
            self._reopened += 1
            logger.warning("%s: %s opened again; writing resumes", self.url, self.path)
            return None

    def _remember_files(self) -> None:
        self._identity = identity(self.path)
        self._companions = {}
        for suffix in ("-wal", "-shm"):
            companion = self.path.with_name(self.path.name + suffix)
            with suppress(OSError):
                self._companions[companion] = identity(companion)

    def _set_companions_aside(self) -> None:
        """Move the old file's -wal and -shm out of the new file's way.

        SQLite cannot tell whose WAL it finds beside a database: it would replay the old
        file's frames into the new one. The old WAL is kept (``…-wal.orphaned``), the shared
        memory index, rebuilt from a WAL anyway, is removed.
        """
        for companion, recorded in self._companions.items():
            try:
                if identity(companion) != recorded:
                    continue
                if companion.name.endswith("-wal"):
                    companion.rename(companion.with_name(companion.name + ".orphaned"))
                else:
                    companion.unlink()
            except OSError:
                continue  # gone with the old file, or not ours to move
            logger.warning("%s: %s of the old file set aside", self.url, companion.name)

    def close(self) -> None:
        """Close every thread's connection; later calls raise ``StoreError``."""
        with self._lock:
            self._closed = True
            connections, self._connections = list(self._connections), {}
        _release(connections, self.path)


def _release(connections: list[sqlite3.Connection], path: Path) -> None:
    """Close connections, unless closing would fault on a read-only ``-shm`` file."""
    if shm_writable(path):
        for conn in connections:
            conn.close()
        return
    for conn in connections:
        abandon(conn)
    if connections:
        logger.error("%s-shm is read-only: %d connection(s) left open until the process ends "
                     "(closing would fault)", path, len(connections))
