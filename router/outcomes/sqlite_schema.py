"""The SQLite file's tables and indexes, and the migrations that bring an older file up to date."""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA", "SCHEMA_VERSION"]

SCHEMA_VERSION = 4

# Typed columns rather than one JSON blob, so that statistics can aggregate in SQL over a
# million rows. JSON text only where the shape varies (features, probabilities, details) or
# where a Python type must survive (prediction: "1" and 1 are different labels). No foreign
# keys: feedback may arrive before its prediction, and unknown ids are kept.
SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    f"INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}')",
    """CREATE TABLE IF NOT EXISTS predictions (
        id            INTEGER PRIMARY KEY,  -- rowid: insertion order
        request_id    TEXT    NOT NULL,
        ts            REAL    NOT NULL,     -- unix seconds
        experiment    TEXT    NOT NULL,
        revision      INTEGER NOT NULL,
        variant       TEXT    NOT NULL,     -- champion or challenger
        shadow        INTEGER NOT NULL,     -- 0 or 1
        model         TEXT    NOT NULL,
        version       TEXT    NOT NULL,
        unit_id       TEXT,
        features      TEXT    NOT NULL,     -- JSON array of floats
        prediction    TEXT,                 -- JSON, so its type survives; NULL on error
        label         TEXT,                 -- str(prediction), joins feedback.label
        value         REAL,                 -- float(prediction) when numeric
        probability   REAL,
        probabilities TEXT,                 -- JSON object {class: p}
        latency_ms    REAL    NOT NULL,
        error         TEXT,
        fallback      INTEGER NOT NULL,     -- 1: champion answered for a failed challenger
        forced        INTEGER NOT NULL DEFAULT 0, -- 1: the client chose the variant
        segments      TEXT                  -- JSON object {segment key: value}
    )""",
    "CREATE INDEX IF NOT EXISTS predictions_request_id ON predictions (request_id)",
    "CREATE INDEX IF NOT EXISTS predictions_experiment_revision "
    "ON predictions (experiment, revision)",
    """CREATE TABLE IF NOT EXISTS feedback (
        id         INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL,
        ts         REAL NOT NULL,
        label      TEXT,                    -- str(label): 1 and "1" match
        value      REAL
    )""",
    "CREATE INDEX IF NOT EXISTS feedback_request_id ON feedback (request_id)",
    """CREATE TABLE IF NOT EXISTS history (
        id         INTEGER PRIMARY KEY,
        ts         REAL NOT NULL,
        action     TEXT NOT NULL,
        from_model TEXT NOT NULL,
        to_model   TEXT NOT NULL,
        reason     TEXT NOT NULL,
        actor      TEXT NOT NULL,
        details    TEXT NOT NULL,           -- JSON object
        experiment TEXT NOT NULL DEFAULT ''  -- '': recorded before switches named it
    )""",
    """CREATE TABLE IF NOT EXISTS revisions (
        experiment TEXT    NOT NULL,
        revision   INTEGER NOT NULL,
        ts         REAL    NOT NULL,
        digest     TEXT    NOT NULL,        -- sha256 of the canonical config JSON
        config     TEXT    NOT NULL,        -- JSON object, defaults filled in
        PRIMARY KEY (experiment, revision)
    )""",
    """CREATE TABLE IF NOT EXISTS switch_state (
        experiment TEXT    PRIMARY KEY,
        generation INTEGER NOT NULL,
        ts         REAL    NOT NULL,
        state      TEXT    NOT NULL         -- JSON: mode, champion, challenger, previous, percent
    )""",
)

# Each entry brings a file from version i to i + 1 (the key); run in the schema's transaction.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE predictions ADD COLUMN forced INTEGER NOT NULL DEFAULT 0",),
    2: ("ALTER TABLE predictions ADD COLUMN segments TEXT",),
    3: ("ALTER TABLE history ADD COLUMN experiment TEXT NOT NULL DEFAULT ''",),
}
