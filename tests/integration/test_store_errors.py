"""Driver errors become Legato errors by code (store/errors.py), from real failures."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from legato.errors import ConfigurationError, ConflictError, StoreError, error_from_dict
from legato.store import Scope, SqlStore
from legato.store.errors import translate, translated

POSTGRES_SERVER = os.environ.get(
    "LEGATO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="module")
def pg_conninfo() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this module; dropped afterwards."""
    if os.environ.get("LEGATO_TEST_POSTGRES") == "skip":
        pytest.skip("LEGATO_TEST_POSTGRES=skip")
    import psycopg

    server = sa.make_url(POSTGRES_SERVER).set(drivername="postgresql")
    conninfo = server.render_as_string(hide_password=False)
    name = f"legato_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_SERVER}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _raised(fn: object) -> BaseException:
    try:
        fn()  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("expected an exception")


# -- SQLite ------------------------------------------------------------------------------


def test_sqlite_busy_is_retryable(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    try:
        error = translate(_raised(lambda: other.execute("BEGIN IMMEDIATE")))
    finally:
        holder.rollback()
        holder.close()
        other.close()
    assert type(error) is StoreError
    assert error.retryable
    assert error.details["code_name"] == "SQLITE_BUSY"


def test_sqlite_constraint_errors(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "c.db")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v TEXT NOT NULL)")
    db.execute("INSERT INTO t VALUES (1, 'a', 'x')")
    duplicate_key = translate(_raised(lambda: db.execute("INSERT INTO t VALUES (2, 'a', 'y')")))
    duplicate_pk = translate(_raised(lambda: db.execute("INSERT INTO t VALUES (1, 'b', 'y')")))
    not_null = translate(_raised(lambda: db.execute("INSERT INTO t VALUES (3, 'c', NULL)")))
    db.close()
    assert isinstance(duplicate_key, ConflictError)
    assert isinstance(duplicate_pk, ConflictError)
    # A NOT NULL violation is a bug, not a conflict, and retrying will not help.
    assert type(not_null) is StoreError
    assert not not_null.retryable
    assert error_from_dict(not_null.to_dict()).message == not_null.message
    assert not_null.to_dict()["retryable"] is False


def test_translated_unwraps_sqlalchemy_and_chains_the_cause(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with pytest.raises(ConflictError) as info, translated():
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    engine.dispose()
    assert isinstance(info.value.__cause__, sa.exc.IntegrityError)


async def test_store_waits_for_a_busy_sqlite_file(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE + busy_timeout: a writer waits for another process's lock."""
    path = tmp_path / "shared.db"
    async with await SqlStore.open(str(path)) as store:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, holder.rollback).start()
        await store.register_worker("w1", "host", 1, now=1.0)
        holder.close()
        assert await store.stale_workers(now=10.0, older_than=1.0) == [("w1", "host", 1)]


async def test_schema_from_a_newer_legato_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    async with await SqlStore.open(str(path)):
        pass
    db = sqlite3.connect(path)
    db.execute("UPDATE legato_alembic_version SET version_num = '9999'")
    db.commit()
    db.close()
    with pytest.raises(ConfigurationError, match="newer Legato"):
        await SqlStore.open(str(path))


# -- PostgreSQL ---------------------------------------------------------------------------


def test_postgres_unique_violation_is_a_conflict(pg_conninfo: str) -> None:
    import psycopg

    with psycopg.connect(pg_conninfo) as db:
        db.execute("CREATE TEMP TABLE t (id int PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES (1)")
        error = translate(_raised(lambda: db.execute("INSERT INTO t VALUES (1)")))
    assert isinstance(error, ConflictError)
    assert error.details["sqlstate"] == "23505"
    assert error.details["constraint_name"] == "t_pkey"


def test_postgres_serialization_failure_is_retryable(pg_conninfo: str) -> None:
    import psycopg

    table = f"counter_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_conninfo, autocommit=True) as setup:
        setup.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n int)")
        setup.execute(f"INSERT INTO {table} VALUES (1, 0)")
    first = psycopg.connect(pg_conninfo)
    second = psycopg.connect(pg_conninfo)
    try:
        for db in (first, second):
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            db.execute(f"SELECT n FROM {table} WHERE id = 1").fetchone()
        first.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 1")
        first.commit()
        error = translate(
            _raised(lambda: second.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 1"))
        )
    finally:
        first.close()
        second.close()
    assert type(error) is StoreError
    assert error.retryable
    assert error.details["sqlstate"] == "40001"


async def test_postgres_connection_failures_are_retryable_store_errors(pg_conninfo: str) -> None:
    # libpq reports connection failures without a SQLSTATE, so a missing database
    # cannot be told from a server that is down by code: both say what libpq said.
    with pytest.raises(StoreError) as info:
        await SqlStore.open("postgresql://postgres@127.0.0.1:1/legato")
    assert info.value.retryable
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)
    name = f"missing_{uuid.uuid4().hex[:8]}"
    missing = sa.make_url(pg_conninfo).set(database=name)
    with pytest.raises(StoreError, match=name):
        await SqlStore.open(missing.render_as_string(hide_password=False))


async def test_concurrent_opens_migrate_once(pg_conninfo: str) -> None:
    """Processes starting together on a fresh database serialise their migrations."""
    stores = await asyncio.gather(*(SqlStore.open(pg_conninfo) for _ in range(4)))
    try:
        record = await stores[0].create_run(
            Scope(),
            run_id="r",
            workflow="w",
            workflow_version="1",
            status="running",
            snapshot={},
            now=datetime(2024, 1, 1, tzinfo=UTC),
        )
        assert (await stores[3].get_run(Scope(), "r")).version == record.version
    finally:
        for store in stores:
            await store.close()
