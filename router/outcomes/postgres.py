"""``PostgresStore``: the outcome log in PostgreSQL, shared by many gateways (extra ``postgres``).

psycopg 3 with a connection pool. The schema is created and migrated on start, under an
advisory lock so that gateways starting together do not race, and its version is recorded.
Predictions are written with ``COPY``, the fastest bulk path PostgreSQL has.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from router.errors import RecordError, StoreError
from router.outcomes.history_sql import entries_of, history_query
from router.outcomes.records import (
    FeedbackRecord,
    HistoryEntry,
    PredictionRecord,
    RevisionRecord,
    SwitchState,
)
from router.outcomes.rows import (
    PREDICTION_COLUMNS,
    SELECTED_PREDICTION_COLUMNS,
    StoreRow,
    features_by_request,
    feedback_row,
    prediction_from_row,
    prediction_row,
    to_json,
)
from router.outcomes.store import StoreHealth

try:
    import psycopg
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise StoreError(
        "postgresql:// stores need the postgres extra: pip install 'router[postgres]'"
    ) from exc

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

log = logging.getLogger(__name__)

# Any 64-bit number only this project uses: serializes schema migrations across gateways.
_MIGRATION_LOCK = 0x726F75746572  # "router"

# Each entry brings the schema from version i to i + 1; applied in order, once each.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE predictions (
            id            BIGSERIAL PRIMARY KEY,
            request_id    TEXT             NOT NULL,
            ts            DOUBLE PRECISION NOT NULL,
            experiment    TEXT             NOT NULL,
            revision      INTEGER          NOT NULL,
            variant       TEXT             NOT NULL,
            shadow        SMALLINT         NOT NULL,
            model         TEXT             NOT NULL,
            version       TEXT             NOT NULL,
            unit_id       TEXT,
            features      TEXT             NOT NULL,
            prediction    TEXT,
            label         TEXT,
            value         DOUBLE PRECISION,
            probability   DOUBLE PRECISION,
            probabilities TEXT,
            latency_ms    DOUBLE PRECISION NOT NULL,
            error         TEXT,
            fallback      SMALLINT         NOT NULL
        )""",
        "CREATE INDEX predictions_request_id ON predictions (request_id)",
        "CREATE INDEX predictions_experiment_revision ON predictions (experiment, revision)",
        """CREATE TABLE feedback (
            id         BIGSERIAL PRIMARY KEY,
            request_id TEXT             NOT NULL,
            ts         DOUBLE PRECISION NOT NULL,
            label      TEXT,
            value      DOUBLE PRECISION
        )""",
        "CREATE INDEX feedback_request_id ON feedback (request_id)",
        """CREATE TABLE history (
            id         BIGSERIAL PRIMARY KEY,
            ts         DOUBLE PRECISION NOT NULL,
            action     TEXT NOT NULL,
            from_model TEXT NOT NULL,
            to_model   TEXT NOT NULL,
            reason     TEXT NOT NULL,
            actor      TEXT NOT NULL,
            details    TEXT NOT NULL
        )""",
        """CREATE TABLE revisions (
            experiment TEXT             NOT NULL,
            revision   INTEGER          NOT NULL,
            ts         DOUBLE PRECISION NOT NULL,
            digest     TEXT             NOT NULL,
            config     TEXT             NOT NULL,
            PRIMARY KEY (experiment, revision)
        )""",
        """CREATE TABLE switch_state (
            experiment TEXT             PRIMARY KEY,
            generation INTEGER          NOT NULL,
            ts         DOUBLE PRECISION NOT NULL,
            state      TEXT             NOT NULL
        )""",
    ),
    # Rows whose variant the client chose (override header, a model named directly).
    ("ALTER TABLE predictions ADD COLUMN forced SMALLINT NOT NULL DEFAULT 0",),
    # Each request's segment values (analysis.segments), a JSON object.
    ("ALTER TABLE predictions ADD COLUMN segments TEXT",),
    # Whose switch ('': recorded before switches named their experiment).
    ("ALTER TABLE history ADD COLUMN experiment TEXT NOT NULL DEFAULT ''",),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# Failures caused by a record's content rather than by the server or the connection.
_RECORD_FAULTS = (UnicodeEncodeError, OverflowError, ValueError, TypeError, psycopg.DataError)


class PostgresStore:
    """The ``OutcomeStore`` protocol over a psycopg connection pool."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4,
                 connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self._cache_lock = threading.Lock()
        self._column_cache: Any = None
        # A short wait for a pooled connection: while the server is down, a write fails fast
        # and the writer's retry and spill take over, rather than blocking on the pool.
        self._pool = ConnectionPool(url, min_size=min_size, max_size=max_size, open=False,
                                    timeout=3.0,
                                    kwargs={"connect_timeout": int(connect_timeout_s)})
        try:
            # One direct connection first: its error says why (refused, unknown host, auth),
            # where the pool would only say that it timed out.
            psycopg.connect(url, connect_timeout=int(connect_timeout_s)).close()
            self._pool.open(wait=True, timeout=connect_timeout_s)
            self._migrate()
        except Exception as exc:
            self._pool.close()
            reason = " ".join(str(exc).split())
            raise StoreError(f"store {_safe(url)!r}: cannot open: {reason}") from exc

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except _RECORD_FAULTS as exc:
            # About what was written (a NUL byte in text, a lone surrogate, a number out of
            # range), not about the server: the writer sets such a record aside.
            raise self._record_error(exc) from exc
        except psycopg.Error as exc:
            raise StoreError(f"store {_safe(self.url)!r}: {exc}") from exc
        except Exception as exc:  # the pool's own timeouts and closed-pool errors
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"store {_safe(self.url)!r}: {exc}") from exc

    def _record_error(self, exc: Exception) -> RecordError:
        return RecordError(f"store {_safe(self.url)!r} cannot take a record: "
                           f"{type(exc).__name__}: {exc}")

    def _rows(self, convert: Callable[[Any], tuple[Any, ...]],
              records: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return [convert(r) for r in records]
        except _RECORD_FAULTS as exc:
            raise self._record_error(exc) from exc

    def _migrate(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
                         "value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(f"store {_safe(self.url)!r}: schema version {current}, this "
                                 f"router reads up to version {SCHEMA_VERSION}")
            for version in range(current, SCHEMA_VERSION):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                log.info("store %s: schema migrated to version %d", _safe(self.url),
                         version + 1)
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                         "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                         (str(SCHEMA_VERSION),))

    # -- the OutcomeStore protocol -----------------------------------------------------------

    def write_predictions(self, records: Sequence[PredictionRecord | StoreRow]) -> None:
        """Append ``records`` in one transaction, with ``COPY``."""
        if not records:
            return
        rows = self._rows(prediction_row, records)
        with self._connection() as conn, conn.transaction(), conn.cursor() as cursor, \
                cursor.copy(f"COPY predictions ({PREDICTION_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def write_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        """Append ground truth in one transaction; ids not (yet) predicted are kept."""
        if not records:
            return
        rows = self._rows(feedback_row, records)
        with self._connection() as conn, conn.transaction(), conn.cursor() as cursor, \
                cursor.copy("COPY feedback (request_id, ts, label, value) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def append_history(self, entry: HistoryEntry) -> None:
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO history (ts, action, from_model, to_model, reason, actor, details, "
                "experiment) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (float(entry.ts), entry.action, entry.from_model, entry.to_model, entry.reason,
                 entry.actor, to_json(entry.details), entry.experiment))

    def history(self, limit: int | None = None, experiment: str | None = None
                ) -> list[HistoryEntry]:
        with self._connection() as conn:
            rows = conn.execute(*history_query("%s", limit, experiment)).fetchall()
        return entries_of(rows, limit)

    def logged_request_ids(self, request_ids: Sequence[str]) -> set[str]:
        """Which of ``request_ids`` some logged prediction carries (the request id index)."""
        with self._connection() as conn:
            rows = conn.execute("SELECT DISTINCT request_id FROM predictions "
                                "WHERE request_id = ANY(%s)", (list(request_ids),)).fetchall()
        return {r[0] for r in rows}

    def logged_features(self, request_ids: Sequence[str]) -> dict[str, tuple[float, ...]]:
        """The inputs logged for each of ``request_ids`` that some prediction carries."""
        with self._connection() as conn:
            rows = conn.execute("SELECT request_id, features FROM predictions "
                                "WHERE request_id = ANY(%s) ORDER BY id",
                                (list(request_ids),)).fetchall()
        return features_by_request(rows)

    def count_predictions(self, *, shadow: bool | None = None) -> int:
        with self._connection() as conn:
            if shadow is None:
                row = conn.execute("SELECT count(*) FROM predictions").fetchone()
            else:
                row = conn.execute("SELECT count(*) FROM predictions WHERE shadow = %s",
                                   (int(shadow),)).fetchone()
        return int(row[0]) if row else 0

    def prediction_records(self, *, experiment: str | None = None) -> list[PredictionRecord]:
        sql = f"SELECT {SELECTED_PREDICTION_COLUMNS} FROM predictions"
        with self._connection() as conn:
            if experiment is None:
                rows = conn.execute(f"{sql} ORDER BY id").fetchall()
            else:
                rows = conn.execute(f"{sql} WHERE experiment = %s ORDER BY id",
                                    (experiment,)).fetchall()
        return [prediction_from_row(row) for row in rows]

    def feedback_records(self) -> list[FeedbackRecord]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT request_id, ts, label, value FROM feedback ORDER BY id").fetchall()
        return [FeedbackRecord(request_id=r, ts=ts, label=lb, value=v) for r, ts, lb, v in rows]

    def register_revision(self, experiment: str, digest: str, config: dict[str, Any],
                          ts: float) -> int:
        """The latest revision if its digest matches, else a new one numbered one higher.

        Serialized per experiment with a transaction-scoped advisory lock, so gateways
        applying the same file at once agree on one number.
        """
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (experiment,))
            row = conn.execute(
                "SELECT revision, digest FROM revisions WHERE experiment = %s "
                "ORDER BY revision DESC LIMIT 1", (experiment,)).fetchone()
            if row is not None and row[1] == digest:
                return int(row[0])
            revision = int(row[0]) + 1 if row is not None else 1
            conn.execute(
                "INSERT INTO revisions (experiment, revision, ts, digest, config) "
                "VALUES (%s, %s, %s, %s, %s)",
                (experiment, revision, float(ts), digest, to_json(config)))
            return revision

    def revisions(self, experiment: str) -> list[RevisionRecord]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT revision, ts, digest, config FROM revisions WHERE experiment = %s "
                "ORDER BY revision", (experiment,)).fetchall()
        return [RevisionRecord(experiment, int(rev), ts, digest, orjson.loads(config))
                for rev, ts, digest, config in rows]

    def publish_switch_state(self, experiment: str, state: dict[str, Any], ts: float) -> int:
        """Replace the experiment's switch state, one generation up (row-locked upsert)."""
        with self._connection() as conn:
            row = conn.execute(
                "INSERT INTO switch_state (experiment, generation, ts, state) "
                "VALUES (%s, 1, %s, %s) ON CONFLICT (experiment) DO UPDATE SET "
                "generation = switch_state.generation + 1, ts = EXCLUDED.ts, "
                "state = EXCLUDED.state RETURNING generation",
                (experiment, float(ts), to_json(state))).fetchone()
        return int(row[0]) if row else 1

    def switch_state(self, experiment: str) -> SwitchState | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT generation, ts, state FROM switch_state WHERE experiment = %s",
                (experiment,)).fetchone()
        if row is None:
            return None
        return SwitchState(experiment, int(row[0]), row[1], orjson.loads(row[2]))

    def kept_arrays(self) -> list[Any]:
        """The numpy columns kept from the last analysis read (what a gateway holds for it)."""
        cache = self._column_cache
        return [] if cache is None else cache.arrays()

    def analysis_columns(self, experiment: str, revisions: Sequence[int] | None = None, *,
                         classes: Sequence[str] | None = None, units: bool = False,
                         true_probability: bool = False, feature_rows: int = 0,
                         segments: Sequence[str] = (), arms: Sequence[str] = (),
                         latest_rows: int = 0) -> dict[str, Any]:
        """The statistics' numpy columns (see ``router.outcomes.columns``), joined in SQL;
        a repeated question reads only what was logged since the last answer."""
        from router.outcomes.postgres_reads import PostgresColumnCache, postgres_columns

        with self._cache_lock:
            if self._column_cache is None:
                self._column_cache = PostgresColumnCache()
        with self._connection() as conn:
            return postgres_columns(conn, experiment, revisions, classes=classes, units=units,
                                    true_probability=true_probability,
                                    feature_rows=feature_rows, segments=segments, arms=arms,
                                    cache=self._column_cache,
                                    side=self._connection, latest_rows=latest_rows)

    def ping(self) -> bool:
        """True when a pooled connection answers within 2 s; never raises."""
        try:
            with self._pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
        except Exception:
            return False
        return True

    def health(self) -> StoreHealth:
        """Closed or not: a server's faults show on the next write or ``ping``, and asking it
        here would cost a round trip on every check."""
        return StoreHealth(f"store {_safe(self.url)!r} is closed" if self._pool.closed
                           else None)

    def close(self) -> None:
        self._pool.close()


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
