"""A store from its URL: ``memory://``, ``sqlite:///FILE`` or ``postgresql://…``."""

from __future__ import annotations

from pathlib import Path

from router.errors import StoreError
from router.outcomes.memory import MemoryStore
from router.outcomes.sqlite import SQLiteStore
from router.outcomes.store import OutcomeStore

__all__ = ["open_store"]

_SQLITE_PREFIX = "sqlite:///"


def open_store(url: str, base_dir: Path, *, create: bool = True) -> OutcomeStore:
    """Open the store named by ``url``; relative SQLite paths resolve against ``base_dir``.

    ``sqlite:///relative.db``, ``sqlite:////absolute.db`` (SQLAlchemy's forms),
    ``postgresql://user@host/db`` (the ``postgres`` extra) and ``memory://``. Parent
    directories of a SQLite file are created. An unknown scheme, a
    malformed URL or a file that cannot be opened raises ``StoreError`` naming the URL.

    ``create=False`` is for readers: a missing SQLite file raises ``StoreError`` naming its
    path instead, since an empty database made at a mistyped path reads as an experiment
    with no traffic.
    """
    if url == "memory://":
        return MemoryStore()
    if url.startswith(("postgresql://", "postgres://")):
        # psycopg is the postgres extra's: imported only for a postgresql:// store.
        from router.outcomes.postgres import PostgresStore

        return PostgresStore(url)
    if url.startswith(_SQLITE_PREFIX):
        raw = url[len(_SQLITE_PREFIX) :]
        if not raw or raw == ":memory:" or "?" in raw:
            # An in-memory SQLite file would be a different database on every thread's
            # connection, and URL parameters would be silently ignored: refuse both.
            raise StoreError(
                f"store {url!r}: expected sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db (use memory:// for an in-memory store)"
            )
        path = Path(raw)  # "/abs.db" from the four-slash form is already absolute
        if not path.is_absolute():
            path = Path(base_dir) / path
        if not create and not path.is_file():
            raise StoreError(f"store {url!r}: no such file: {path}")
        return SQLiteStore(path, url=url)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise StoreError(
        f"store {url!r}: unsupported scheme {scheme!r}; "
        "use sqlite:///relative.db, sqlite:////absolute.db, postgresql://… or memory://"
    )
