"""The SQLite store checks its file before using it: removed, replaced, read-only, disk full."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from router.errors import StoreError
from router.outcomes import OutcomeWriter, SQLiteStore
from router.outcomes.writer_process import WriterProcess
from tests.outcomes.test_writer import eventually, make_writer, prediction

__all__ = ["make_writer"]

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "var" / "outcomes.db")
    yield opened
    opened.close()


def ids_in(database: Path) -> list[str]:
    """What a reader opening the path now finds, as another process would."""
    with sqlite3.connect(database) as conn:
        return [r for (r,) in conn.execute("SELECT request_id FROM predictions ORDER BY id")]


def chattr(flag: str, path: Path) -> None:
    """chattr, or a skip naming why the file system or the user cannot set the flag."""
    try:
        result = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("chattr is not installed")
    if result.returncode != 0:
        pytest.skip(f"chattr {flag} refused here: {result.stderr.strip()}")


def test_a_removed_file_is_never_written_in_silence_and_is_created_again(
        store: SQLiteStore) -> None:
    """Writes after the file is removed raise instead of going to the unlinked inode; the
    health check creates a fresh file and reports the rows that went with the old one."""
    store.write_predictions([prediction("a"), prediction("b")])
    store.path.unlink()
    with pytest.raises(StoreError, match="missing"):
        store.write_predictions([prediction("c")])
    health = store.health()
    assert health.problem is None and health.reopened == 1 and health.orphaned == 2
    store.write_predictions([prediction("c")])
    assert ids_in(store.path) == ["c"]
    assert [r.request_id for r in store.prediction_records()] == ["c"]


def removed_files_held(pid: int | str, directory: Path) -> list[str]:
    """Files in ``directory`` that process ``pid`` ("self": this one) still holds open after
    they were removed: their space cannot come back while it does."""
    held = []
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue  # closed meanwhile
        if target.startswith(f"{directory}/") and target.endswith(" (deleted)"):
            held.append(target)
    return held


def remove_store_files(database: Path) -> None:
    """What an operator short of disk space does: the file and its -wal go."""
    for suffix in ("", "-wal"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


_QUERY_UNDER_WAY = textwrap.dedent("""
    import os, sys, threading, time
    from pathlib import Path
    from router.outcomes.sqlite import SQLiteStore
    path = Path(sys.argv[1])
    store = SQLiteStore(path)
    # About 2 s on a slow 2-core machine, 0.5 s on a fast one: still under way when the
    # file is opened again, 0.2 s in.
    LONG = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
            "WHERE x < 5000000) SELECT count(*) FROM c")
    got = []
    def read():  # a /stats read on a pool thread
        try:
            got.append(store._query(LONG))
        except Exception as exc:
            got.append(exc)
    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.2)
    os.remove(path)
    store.health()  # /ready's thread: the file is opened again
    reader.join()
    print("done")
""")


def test_a_query_under_way_on_another_thread_survives_the_reopen(tmp_path: Path) -> None:
    """The reopen lets go of idle threads' connections only: closing one a query runs on
    crashed the process (SQLite frees what the query is using), in about half the runs."""
    for run in range(6):
        path = tmp_path / f"log{run}.db"
        done = subprocess.run([sys.executable, "-c", _QUERY_UNDER_WAY, str(path)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0 and done.stdout == "done\n", (done.returncode,
                                                                   done.stderr[-2000:])


@pytest.mark.parametrize("removed", ["file and -wal", "file, then the orphaned -wal"])
def test_a_removed_file_is_let_go_by_every_thread(store: SQLiteStore, removed: str) -> None:
    """Found by probing: once a removed file was created again, connections that other
    threads had opened kept the old file, its -wal and -shm open, so their space never came
    back (the disk stayed full until a restart); now every thread's is closed."""
    store.write_predictions([prediction("a")])
    reader = threading.Thread(target=store.count_predictions)
    reader.start()
    reader.join()
    if removed == "file and -wal":
        remove_store_files(store.path)
    else:
        store.path.unlink()
    assert store.health().problem is None
    for orphaned in store.path.parent.glob("*.orphaned"):  # the old -wal, set aside
        orphaned.unlink()
    assert removed_files_held("self", store.path.parent) == []
    store.write_predictions([prediction("b")])
    assert ids_in(store.path) == ["b"]


def test_letting_go_of_the_old_file_leaves_the_new_files_companions_alone(
        tmp_path: Path) -> None:
    """Two stores on one file, as a gateway's and its writer process's: once one has created
    the removed file anew and written to it, the other closes its connections to the old
    file. The last connection to a file removes its -wal and -shm by name, names that are now
    the new file's (whose rows would vanish with its -wal), unless the file has moved away
    from that path: SQLite looks first, and this keeps it so."""
    database = tmp_path / "outcomes.db"
    first, second = SQLiteStore(database), SQLiteStore(database)
    try:
        first.write_predictions([prediction("a")])
        assert second.count_predictions() == 1
        remove_store_files(database)
        assert first.health().problem is None
        first.write_predictions([prediction("b")])  # in the new file's -wal for now
        assert second.health() == (None, 1, 0)  # the file it had was replaced
        assert Path(f"{database}-wal").exists() and Path(f"{database}-shm").exists()
        assert ids_in(database) == ["b"]
        second.write_predictions([prediction("c")])
        assert ids_in(database) == ["b", "c"]
        assert removed_files_held("self", tmp_path) == []
    finally:
        first.close()
        second.close()
    assert ids_in(database) == ["b", "c"]


def test_the_writer_process_lets_go_of_a_removed_file(tmp_path: Path) -> None:
    """Found by probing, on the writer process itself: after `rm outcomes.db
    outcomes.db-wal` it created the file again but kept the old one open (its main thread
    had opened the store), so df never showed the space back and /ready kept saying the
    disk was full."""
    writer = WriterProcess("sqlite:///var/outcomes.db", tmp_path)
    writer.start()
    try:
        writer.submit_predictions([prediction(f"before-{i}") for i in range(100)])
        assert writer.flush(60)
        remove_store_files(tmp_path / "var" / "outcomes.db")
        eventually(lambda: writer.store_reopened == 1, "the file created again", 60)
        writer.submit_predictions([prediction("after")])
        assert writer.flush(60)
        assert writer.pid is not None
        assert removed_files_held(writer.pid, tmp_path / "var") == []
    finally:
        writer.close(timeout=60)
    assert ids_in(tmp_path / "var" / "outcomes.db") == ["after"]


def test_a_missing_directory_is_waited_for_not_created(store: SQLiteStore) -> None:
    """The store's directory gone (a volume not mounted?): reported until it is back."""
    store.write_predictions([prediction("a")])
    shutil.rmtree(store.path.parent)
    health = store.health()
    assert health.problem is not None and "directory" in health.problem
    assert str(store.path.parent) in health.problem
    assert not store.ping() and not store.path.parent.exists()
    with pytest.raises(StoreError, match="directory"):
        store.write_predictions([prediction("b")])
    store.path.parent.mkdir()
    assert store.health().problem is None and store.ping()
    store.write_predictions([prediction("b")])
    assert ids_in(store.path) == ["b"]


def test_a_directory_moved_away_and_back_resumes_the_same_file(store: SQLiteStore,
                                                                tmp_path: Path) -> None:
    """Moved aside and restored: the same file again, nothing reopened, nothing orphaned."""
    store.write_predictions([prediction("a")])
    aside = tmp_path / "aside"
    store.path.parent.rename(aside)
    assert "missing" in (store.health().problem or "")
    aside.rename(store.path.parent)
    health = store.health()
    assert health == (None, 0, 0)
    store.write_predictions([prediction("b")])
    assert ids_in(store.path) == ["a", "b"]


def test_a_replaced_file_is_opened_in_its_place(store: SQLiteStore, tmp_path: Path) -> None:
    """A restored copy put in place of the file (new inode) is what the store writes next."""
    store.write_predictions([prediction("a")])
    backup = tmp_path / "backup.db"
    with sqlite3.connect(store.path) as source, sqlite3.connect(backup) as target:
        source.backup(target)
    store.write_predictions([prediction("b")])
    backup.replace(store.path)
    with pytest.raises(StoreError, match="replaced"):
        store.write_predictions([prediction("c")])
    health = store.health()
    assert health.problem is None and health.reopened == 1 and health.orphaned == 2
    store.write_predictions([prediction("c")])
    assert ids_in(store.path) == ["a", "c"]


def test_a_full_disk_is_reported_before_a_write_fails_halfway(tmp_path: Path) -> None:
    """Below the free-space floor the store says so by name and refuses writes."""
    store = SQLiteStore(tmp_path / "outcomes.db", min_free_bytes=1 << 62)
    try:
        problem = store.health().problem
        assert problem is not None and "disk full" in problem and str(tmp_path) in problem
        with pytest.raises(StoreError, match="disk full"):
            store.write_predictions([prediction("a")])
    finally:
        store.close()


def test_an_immutable_file_is_reported_read_only(store: SQLiteStore) -> None:
    """chattr +i on the database: named in the health check, writes refused, then resumed."""
    store.write_predictions([prediction("a")])
    chattr("+i", store.path)
    try:
        problem = store.health().problem
        assert problem is not None and "read-only" in problem and str(store.path) in problem
        with pytest.raises(StoreError, match="read-only"):
            store.write_predictions([prediction("b")])
    finally:
        chattr("-i", store.path)
    store.write_predictions([prediction("b")])
    assert ids_in(store.path) == ["a", "b"]


_SHM_SCRIPT = textwrap.dedent("""
    import subprocess, sys
    from pathlib import Path
    from router.errors import StoreError
    from router.outcomes import SQLiteStore
    from tests.outcomes.test_writer import prediction

    path = Path(sys.argv[1])
    store = SQLiteStore(path)
    store.write_predictions([prediction("a")])
    reader = SQLiteStore(path)
    reader.count_predictions()
    subprocess.run(["chattr", "+i", f"{path}-shm"], check=True)
    try:
        store.write_predictions([prediction("b")])
    except StoreError as exc:
        print("write refused:", exc)
    try:
        reader.count_predictions()
    except StoreError as exc:
        print("read refused:", exc)
    print("ping:", store.ping(), "health:", store.health().problem)
    reader.close()
    store.close()
    print("closed")
""")


def test_an_immutable_shm_file_does_not_kill_the_process(tmp_path: Path) -> None:
    """Found by probing: with chattr +i on outcomes.db-shm, writes, reads and close used
    to fault on SQLite's shared-memory mapping (SIGBUS); now they are refused, and the
    process ends normally."""
    database = tmp_path / "outcomes.db"
    SQLiteStore(database).close()
    chattr("+i", database)  # skips here if the file system refuses the flag
    chattr("-i", database)
    try:
        done = subprocess.run([sys.executable, "-c", _SHM_SCRIPT, str(database)],
                              capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    finally:
        subprocess.run(["chattr", "-i", f"{database}-shm"], capture_output=True)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stdout}{done.stderr}"
    assert "write refused" in done.stdout and "read refused" in done.stdout
    assert f"ping: False health: store 'sqlite:///{database}': store file {database}-shm is " \
        "read-only" in done.stdout
    assert "closed" in done.stdout
    assert ids_in(database) == ["a"]


def test_the_writer_holds_records_while_the_directory_is_gone(
        tmp_path: Path, make_writer: Callable[..., OutcomeWriter]) -> None:
    """Detected without a write (the health check), records wait, and they are written into
    a fresh file once the directory is back; what the old file held is counted as orphaned."""
    store = SQLiteStore(tmp_path / "var" / "outcomes.db")
    writer = make_writer(store, flush_interval_s=0.01)
    writer.start()
    writer.submit_predictions([prediction(f"before{i}") for i in range(30)])
    assert writer.flush(10)
    shutil.rmtree(tmp_path / "var")
    eventually(lambda: writer.store_problem is not None and writer.failing,
               "a removed directory not noticed")
    writer.submit_predictions([prediction(f"during{i}") for i in range(20)])
    eventually(lambda: writer.write_errors == 0 or writer.backlog == 20, "records waiting")
    assert writer.backlog == 20 and "directory" in (writer.store_problem or "")
    (tmp_path / "var").mkdir()
    assert writer.flush(10)
    assert ids_in(store.path) == [f"during{i}" for i in range(20)]
    assert (writer.store_reopened, writer.orphaned, writer.failing) == (1, 30, False)


class CappedStore(SQLiteStore):
    """A SQLite store whose connections may not grow the file past ``pages`` pages: SQLite
    then fails writes with SQLITE_FULL, as on a full disk or an exhausted quota."""

    pages = 1 << 30

    def _conn(self) -> sqlite3.Connection:
        conn = super()._conn()
        conn.execute(f"PRAGMA max_page_count = {self.pages}")
        return conn


def test_a_store_that_is_full_keeps_records_waiting_never_dead_letters_them(
        tmp_path: Path, make_writer: Callable[..., OutcomeWriter]) -> None:
    """SQLITE_FULL is the store failing, not the records: nothing is set aside, everything is
    written once there is room again."""
    store = CappedStore(tmp_path / "outcomes.db")
    (pages,) = store._query("PRAGMA page_count")[0]
    store.pages = pages + 1
    writer = make_writer(store, spill_dir=tmp_path / "spill", flush_interval_s=0.01)
    writer.submit_predictions([prediction(f"r{i}") for i in range(2000)])
    writer.start()
    eventually(lambda: writer.write_errors >= 3, "writes failing on a full database")
    assert "full" in (writer.last_error or "")
    assert writer.dead_letters == 0 and writer.backlog == 2000 and writer.failing
    store.pages = 1 << 30  # room again (the cap is set at each use of a connection)
    assert writer.flush(10), writer.last_error
    assert len(ids_in(store.path)) == 2000 and writer.dead_letters == 0
