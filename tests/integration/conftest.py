"""Shared fixtures of the integration tests: a real database per test (a SQLite file, or a
fresh PostgreSQL database), an open Engine, and checks of a run's recorded history.

``db_path`` (and so ``engine``) is parametrized: each test that uses it runs on SQLite
and on PostgreSQL.  The PostgreSQL database of a test is created for it from a template
database that is made (and migrated to head) once per session, as procrastinate does,
and dropped after the test.  The server defaults to postgresql://postgres@127.0.0.1:5432;
set LEGATO_TEST_POSTGRES_URL (any database on the server) to use another.  An
unreachable server fails the tests that need it: start it with scripts/services.sh.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from legato import Engine, WorkerOptions

# Poll often and heartbeat quickly so short waits and backoffs are honoured promptly.
FAST_OPTIONS = WorkerOptions(poll_interval=0.05, heartbeat_interval=0.5)


@pytest.fixture
def fast_options() -> WorkerOptions:
    """Worker options for tests: the defaults, with a short poll interval."""
    return FAST_OPTIONS


POSTGRES_SERVER = os.environ.get(
    "LEGATO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class PostgresServer:
    """Creates and drops uniquely named databases on the test server (autocommit DDL)."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        self._conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._lock = threading.Lock()
        self.created: list[str] = []

    def check(self) -> None:
        """Fail (never skip) with instructions when the server is not reachable."""
        import psycopg

        try:
            with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            problem = str(exc).strip()
        else:
            return
        pytest.fail(
            f"PostgreSQL is not reachable at {self.url.render_as_string()}: {problem}\n"
            "These tests need it. Start it with scripts/services.sh (or point "
            "LEGATO_TEST_POSTGRES_URL at a server where this user may CREATE DATABASE).",
            pytrace=False,
        )

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create(self, prefix: str = "legato_test", *, template: str | None = None) -> str:
        """A new empty database (or a copy of ``template``); returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        copy = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{copy}')
        with self._lock:
            self.created.append(name)
        return self.url_of(name)

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url_or_name: str) -> None:
        name = sa.make_url(url_or_name).database if "://" in url_or_name else url_or_name
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with self._lock:
            if name in self.created:
                self.created.remove(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The PostgreSQL test server; every database made through it is dropped at the end."""
    server = PostgresServer(POSTGRES_SERVER)
    server.check()
    yield server
    for name in list(server.created):
        server.drop(name)


@pytest.fixture(scope="session")
def postgres_template(postgres: PostgresServer) -> str:
    """The name of a database migrated to head once per session: each test's database is
    a copy of it (CREATE DATABASE ... TEMPLATE), so no test pays for the migrations."""
    from legato.store._db import resolve_url
    from legato.store.migrate import upgrade

    url = postgres.create("legato_template")
    engine = sa.create_engine(resolve_url(url), poolclass=sa.pool.NullPool)
    try:
        upgrade(engine)
    finally:
        engine.dispose()  # a template must have no connections when it is copied
    name = sa.make_url(url).database
    assert name is not None
    return name


@pytest.fixture
def postgres_db(postgres: PostgresServer, postgres_template: str) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database at the schema's head, for this test only;
    dropped afterwards (WITH (FORCE): a killed worker's connections do not keep it)."""
    url = postgres.create(template=postgres_template)
    try:
        yield url
    finally:
        postgres.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """This test's database: a SQLite file, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "legato.db")
    return str(request.getfixturevalue("postgres_db"))


# Tests of the suite whose expectation holds on SQLite only, and why.  They still run on
# PostgreSQL, as non-strict xfails: a pass there is fine, a failure is the reason below.
SQLITE_ONLY: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("db_path") != "postgresql":
            continue
        reason = SQLITE_ONLY.get(f"{item.path.name}::{getattr(item, 'originalname', '')}")
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))


@pytest.fixture
async def engine(db_path: str, fast_options: WorkerOptions) -> AsyncIterator[Engine]:
    """An Engine with the built-in actions and a worker, on this test's database."""
    async with Engine.open(db_path, options=fast_options) as eng:
        yield eng


HistoryCheck = Callable[..., Awaitable[list[Any]]]


@pytest.fixture
def check_history() -> HistoryCheck:
    """``await check_history(engine, run_id)``: assert the run's hash chain is intact, no
    attempt is scheduled or recorded twice, and (unless ``all_outcomes=False``: steps
    cancelled while running) every scheduled attempt has its outcome; return the history."""

    async def check(engine: Engine, run_id: str, *, all_outcomes: bool = True) -> list[Any]:
        assert await engine.verify(run_id) == {run_id: None}
        history = await engine.history(run_id)
        assert [e.seq for e in history] == list(range(1, len(history) + 1))
        assert history[0].type == "RunStarted"
        scheduled = [
            (e.payload["path"], e.payload["attempt"]) for e in history if e.type == "StepScheduled"
        ]
        outcomes = [
            (e.payload["path"], e.payload["attempt"])
            for e in history
            if e.type in ("StepCompleted", "StepFailed")
        ]
        assert len(set(scheduled)) == len(scheduled), f"an attempt was scheduled twice: {scheduled}"
        assert len(set(outcomes)) == len(outcomes), f"an outcome was recorded twice: {outcomes}"
        assert set(outcomes) <= set(scheduled), "an outcome without its StepScheduled"
        assert len([e for e in history if e.type == "RunFinished"]) <= 1
        if all_outcomes:
            missing = set(scheduled) - set(outcomes)
            assert not missing, f"attempts without an outcome: {sorted(missing)}"
        return history

    return check
