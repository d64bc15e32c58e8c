"""What only the SQLite store promises: URL forms, WAL, typed columns, several processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.errors import StoreError
from router.outcomes import (
    FeedbackRecord,
    MemoryStore,
    PredictionRecord,
    SQLiteStore,
    open_store,
)
from router.outcomes import sqlite as sqlite_module
from router.outcomes.sqlite import WRITE_SLICE_ROWS


def prediction(request_id: str, **changes: Any) -> PredictionRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "ts": 1_700_000_000.0,
        "experiment": "iris",
        "revision": 1,
        "variant": "champion",
        "model": "iris-rf",
        "version": "1",
        "features": (5.1, 3.5, 1.4, 0.2),
        "prediction": "setosa",
        "probability": 0.97,
        "latency_ms": 0.4,
    }
    fields.update(changes)
    return PredictionRecord(**fields)


def raw_query(path: Path, sql: str) -> list[Any]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def test_relative_url_resolves_against_base_dir_and_creates_directories(tmp_path: Path) -> None:
    """sqlite:///var/sub/x.db is base_dir/var/sub/x.db, its directories created."""
    store = open_store("sqlite:///var/sub/outcomes.db", tmp_path)
    try:
        assert isinstance(store, SQLiteStore)
        assert store.path == tmp_path / "var" / "sub" / "outcomes.db"
        assert store.path.is_file()
    finally:
        store.close()


def test_four_slash_url_is_an_absolute_path(tmp_path: Path) -> None:
    """sqlite:////abs/x.db (SQLAlchemy's form) is the absolute path, whatever base_dir is."""
    target = tmp_path / "abs" / "outcomes.db"
    store = open_store(f"sqlite:///{target}", tmp_path / "elsewhere")
    try:
        assert str(target).startswith("/")
        assert isinstance(store, SQLiteStore)
        assert store.path == target
        assert target.is_file()
    finally:
        store.close()


def test_memory_url_opens_a_memory_store(tmp_path: Path) -> None:
    """memory:// opens the in-process store."""
    store = open_store("memory://", tmp_path)
    try:
        assert isinstance(store, MemoryStore)
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://router@db/outcomes",
        "mysql://x/y",
        "sqlite://outcomes.db",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite:///x.db?timeout=5",
        "outcomes.db",
        "",
    ],
)
def test_unsupported_url_raises_store_error_naming_it(tmp_path: Path, url: str) -> None:
    """An unknown scheme or malformed URL is a StoreError whose message names the URL."""
    with pytest.raises(StoreError) as info:
        open_store(url, tmp_path)
    assert repr(url) in str(info.value)


def test_unopenable_path_raises_store_error_naming_the_url(tmp_path: Path) -> None:
    """A path under a regular file, or a file that is not SQLite, is a StoreError naming the URL."""
    (tmp_path / "plain-file").write_text("not a directory")
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)

    for url in ("sqlite:///plain-file/outcomes.db", "sqlite:///garbage.db"):
        with pytest.raises(StoreError) as info:
            open_store(url, tmp_path)
        assert url in str(info.value)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    """A file written by a newer schema is a StoreError, not silently misread."""
    SQLiteStore(tmp_path / "o.db").close()
    with closing(sqlite3.connect(tmp_path / "o.db")) as conn, conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")

    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteStore(tmp_path / "o.db")


def test_file_is_in_wal_mode(tmp_path: Path) -> None:
    """The store puts the file in WAL mode, so readers go on while the writer writes."""
    SQLiteStore(tmp_path / "o.db").close()

    assert raw_query(tmp_path / "o.db", "PRAGMA journal_mode") == [("wal",)]


def test_columns_are_typed_for_sql_aggregation(tmp_path: Path) -> None:
    """label is str(prediction), value float(prediction) when numeric; feedback joins on label."""
    store = SQLiteStore(tmp_path / "o.db")
    try:
        store.write_predictions(
            [
                prediction("s", prediction="setosa"),
                prediction("i", prediction=1, shadow=True),
                prediction("f", prediction=2.5, probabilities={"a": 0.5, "b": 0.5}),
                prediction("e", prediction=None, error="boom"),
            ]
        )
        store.write_feedback(
            [FeedbackRecord("i", ts=1.0, label="1"), FeedbackRecord("f", ts=1.0, value=2.0)]
        )
    finally:
        store.close()

    rows = raw_query(
        tmp_path / "o.db",
        "SELECT request_id, prediction, label, value, shadow, "
        "typeof(features), probabilities FROM predictions ORDER BY id",
    )
    assert rows == [
        ("s", '"setosa"', "setosa", None, 0, "text", None),
        ("i", "1", "1", 1.0, 1, "text", None),
        ("f", "2.5", "2.5", 2.5, 0, "text", '{"a":0.5,"b":0.5}'),
        ("e", None, None, None, 0, "text", None),
    ]
    joined = raw_query(
        tmp_path / "o.db",
        "SELECT p.request_id, f.value - p.value FROM predictions p "
        "JOIN feedback f ON f.request_id = p.request_id ORDER BY p.id",
    )
    assert joined == [("i", None), ("f", -0.5)]
    assert raw_query(
        tmp_path / "o.db",
        "SELECT count(*) FROM predictions p JOIN feedback f "
        "ON f.request_id = p.request_id AND f.label = p.label",
    ) == [(1,)]


def test_numpy_values_are_stored_as_plain_python(tmp_path: Path) -> None:
    """numpy scalars from a model (np.int64 label, np.float64 features) are stored and read back."""
    store = SQLiteStore(tmp_path / "o.db")
    try:
        store.write_predictions(
            [
                prediction(
                    "n",
                    prediction=np.int64(2),
                    revision=np.int64(4),
                    probability=np.float64(0.5),
                    features=tuple(np.array([1.5, 2.0])),
                    probabilities={"2": np.float64(0.5)},
                    latency_ms=np.float32(0.25),
                )
            ]
        )
        (got,) = store.prediction_records()
    finally:
        store.close()

    assert got.prediction == 2 and type(got.prediction) is int
    assert got.revision == 4 and got.features == (1.5, 2.0) and got.probabilities == {"2": 0.5}


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from router.outcomes import PredictionRecord, open_store

    url, tag = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    sys.stdin.readline()  # wait for "go" so that both open and write at the same moment
    store = open_store(url, Path("."))
    try:
        for b in range(250):
            store.write_predictions([
                PredictionRecord(
                    request_id=f"{tag}-{b * 20 + i}", ts=float(b), experiment="iris",
                    revision=1, variant="champion", model="m", version="1",
                    features=(1.0, 2.0), prediction="a", probability=None, latency_ms=0.1,
                )
                for i in range(20)
            ])
    finally:
        store.close()
    """
)


def test_two_processes_writing_one_file_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """Two processes creating and writing one new file at once each get all 5,000 rows in."""
    url = f"sqlite:///{tmp_path / 'shared' / 'outcomes.db'}"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, url, tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.close()
        for child in children:
            child.wait(timeout=60)
            assert child.stderr is not None
            assert child.returncode == 0, child.stderr.read()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()

    store = open_store(url, tmp_path)
    try:
        ids = [r.request_id for r in store.prediction_records()]
    finally:
        store.close()
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000
    assert sum(i.startswith("a-") for i in ids) == 5_000


def test_a_large_write_gives_the_core_back_between_slices_in_one_transaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows go in slices with a yield of the core between them, and still all or none."""
    store = SQLiteStore(tmp_path / "log.db")
    records = [prediction(f"r{i}") for i in range(3 * WRITE_SLICE_ROWS + 1)]
    yields: list[int] = []
    monkeypatch.setattr(sqlite_module.os, "sched_yield", lambda: yields.append(1))
    store.write_predictions(records)
    assert len(yields) == 3
    assert [r.request_id for r in store.prediction_records()] == [r.request_id for r in records]

    def interrupted() -> None:
        raise OSError("interrupted between slices")

    monkeypatch.setattr(sqlite_module.os, "sched_yield", interrupted)
    with pytest.raises(OSError, match="between slices"):
        store.write_predictions([prediction(f"s{i}") for i in range(2 * WRITE_SLICE_ROWS)])
    assert len(store.prediction_records()) == len(records)  # the first slice rolled back
    store.close()


@pytest.mark.parametrize("count", [1, WRITE_SLICE_ROWS - 1, WRITE_SLICE_ROWS,
                                   2 * WRITE_SLICE_ROWS + 5])
def test_a_full_slice_is_one_insert_statement_and_every_row_reads_back(
        tmp_path: Path, count: int) -> None:
    """A slice of WRITE_SLICE_ROWS rows goes as one multi-row INSERT (a statement per row cost
    a sixth more of the writer's CPU); every field of every row reads back, in order."""
    store = SQLiteStore(tmp_path / "log.db")
    records = [prediction(f"r{i}", features=(float(i), 0.5), prediction=i % 3,
                          probabilities={"0": 0.5, "1": 0.5} if i % 2 else None,
                          unit_id=None if i % 4 else f"u{i}", segments={"k": str(i)})
               for i in range(count)]
    statements: list[str] = []
    store._conn().set_trace_callback(statements.append)
    store.write_predictions(records)
    store._conn().set_trace_callback(None)
    inserts = [s for s in statements if s.startswith("INSERT INTO predictions")]
    full, rest = divmod(count, WRITE_SLICE_ROWS)
    assert len(inserts) == full + rest
    assert store.prediction_records() == records
    store.close()


def test_the_bounds_of_a_read_are_found_through_the_index_whatever_the_log_size(
        tmp_path: Path) -> None:
    """Every read of the columns starts with the log's lowest and highest ids: looked up in
    the index, not found by a scan that grows with the log (80 ms at 300,000 rows)."""
    from router.outcomes.sqlite_reads import _bounds

    store = open_store("sqlite:///log.db", tmp_path)
    try:
        store.write_predictions([prediction(f"r{i}") for i in range(20_000)])
        store.write_feedback([FeedbackRecord("r5", 2.0, label="a")])
    finally:
        store.close()
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    with closing(sqlite3.connect(tmp_path / "log.db")) as conn:
        conn.set_progress_handler(count, 100)  # called every 100 virtual machine steps
        assert _bounds(conn) == (1, 20_000, 1)
    assert steps < 10
