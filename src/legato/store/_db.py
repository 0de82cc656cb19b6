"""Engines: URL normalisation and per-dialect connection setup."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError

from legato.errors import ConfigurationError

READ_ONLY = "legato_read_only"
"""Connection execution option: on SQLite, begin with a deferred BEGIN (a WAL reader
that takes no write lock) instead of BEGIN IMMEDIATE."""

SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")


def resolve_url(url: str) -> URL:
    """Normalise ``url``: a plain path means SQLite; ``postgres(ql)://`` means psycopg."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("the store URL is empty; give a file path or a database URL")
    url = url.strip()
    if "://" not in url:
        path = Path(url).expanduser().resolve()
        return URL.create("sqlite+pysqlite", database=str(path))
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"the store URL {url!r} is not a valid database URL") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    raise ConfigurationError(
        f"unsupported store URL scheme {parsed.drivername!r}; use a file path, "
        "sqlite:///path/to/file.db or postgresql://user@host/dbname (driver psycopg)"
    )


def is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine(url: URL, *, sqlite_synchronous: str, pool_size: int) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, sqlite_synchronous)
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,  # a dead pooled connection is replaced, not handed out
    )


def _sqlite_engine(url: URL, synchronous: str) -> Engine:
    mode = synchronous.upper() if isinstance(synchronous, str) else synchronous
    if mode not in SQLITE_SYNCHRONOUS:
        raise ConfigurationError(
            f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}, "
            f"got {synchronous!r}"
        )
    if not is_memory(url):
        Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)

    # The pysqlite recipe from SQLAlchemy's SQLite documentation: take transaction
    # control away from the sqlite3 module, then emit BEGIN ourselves.  Every write
    # transaction starts with BEGIN IMMEDIATE, so it takes the write lock up front
    # (waiting up to busy_timeout) instead of failing with SQLITE_BUSY halfway through,
    # and SAVEPOINTs nest inside it properly.
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={mode}")
            cursor.execute("PRAGMA foreign_keys=ON")
            if not is_memory(url):
                _preallocate_wal(dbapi_connection, f"{url.database}-wal")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        # on the driver's connection: this runs for every transaction (decision 0008)
        driver = connection.connection.driver_connection
        driver.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")  # type: ignore[union-attr]

    return engine


WAL_ZERO_CHUNK = 1 << 20


def _preallocate_wal(dbapi_connection: Any, wal_path: str) -> None:
    """Zero-fill the WAL file up to the size it reaches before each checkpoint.

    A commit that appends to a file and grows it costs an fdatasync that also flushes the
    file's new size (about 0.5 ms on this project's machines); one that overwrites blocks
    already written costs about 0.2 ms. SQLite reuses its WAL from the start after each
    checkpoint, so a WAL that has reached its full size is cheap to commit to; a new
    database (or one just reopened: closing deletes the WAL) pays the higher price for
    its first few thousand commits. PostgreSQL zero-fills new WAL segments for the same
    reason (``wal_init_zero``).

    Safe: SQLite reads a WAL frame only if its salt and checksum match the WAL header,
    so zeros past the last frame are ignored, exactly like the stale frames a checkpoint
    leaves behind. Only bytes past the file's current end are written, under the write
    lock (BEGIN IMMEDIATE), so no writer appends frames meanwhile. Best effort: if the
    lock is busy or the file cannot be written, nothing is done."""
    try:
        page_size = dbapi_connection.execute("PRAGMA page_size").fetchone()[0]
        pages = dbapi_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        if pages <= 0:
            return
        target = 32 + (pages + 64) * (page_size + 24)  # header + frames, with some slack
        dbapi_connection.execute("PRAGMA busy_timeout=0")
        try:
            dbapi_connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return  # another connection is writing: it is not a new database
        finally:
            dbapi_connection.execute("PRAGMA busy_timeout=5000")
        try:
            with contextlib.suppress(OSError), open(wal_path, "r+b") as wal:
                size = wal.seek(0, os.SEEK_END)
                zeros = bytes(WAL_ZERO_CHUNK)
                while size < target:
                    size += wal.write(zeros[: min(WAL_ZERO_CHUNK, target - size)])
                wal.flush()
                os.fdatasync(wal.fileno())
        finally:
            dbapi_connection.execute("ROLLBACK")
    except sqlite3.Error:
        return


def dialect_insert(connection: sa.Connection, table: sa.Table) -> Any:
    """The dialect's own INSERT construct (it knows ON CONFLICT) for this connection."""
    if connection.dialect.name == "postgresql":
        return pg_insert(table)
    return sqlite_insert(table)
