"""PostgreSQL specifics of the store: Alembic migrations on an empty database, and claims
that skip the rows another transaction holds (``FOR UPDATE SKIP LOCKED``) instead of
waiting for them.

(The store contract itself, fencing included, runs on both backends in test_store.py.)
Each test gets a fresh database; an unreachable server fails them (scripts/services.sh).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from legato.errors import ConfigurationError
from legato.store import NewWork, Scope, SqlStore
from legato.store._db import resolve_url
from legato.store.migrate import VERSION_TABLE, alembic_config, current_revision, head_revision
from legato.store.schema import metadata

if TYPE_CHECKING:
    from conftest import PostgresServer  # tests/integration/conftest.py

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SCOPE = Scope("acme", "prod")


@pytest.fixture
def empty_db(postgres: PostgresServer) -> Iterator[str]:
    """A brand-new database with no tables at all (not a copy of the migrated template)."""
    url = postgres.create("legato_empty")
    try:
        yield url
    finally:
        postgres.drop(url)


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(resolve_url(url), poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _alembic_current(url: str) -> str:
    """What ``alembic current`` prints, run through Alembic's own command on our script
    directory (Legato has no alembic.ini: it hands Alembic a connection)."""
    engine = sa.create_engine(resolve_url(url), poolclass=sa.pool.NullPool)
    buffer = io.StringIO()
    try:
        with engine.connect() as conn:
            config = alembic_config(conn)
            config.stdout = buffer
            command.current(config)
    finally:
        engine.dispose()
    return buffer.getvalue()


async def test_open_on_an_empty_database_migrates_it_to_head(empty_db: str) -> None:
    assert _tables(empty_db) == set()
    head = head_revision()
    assert head is not None

    async with await SqlStore.open(empty_db) as store:
        assert store.dialect == "postgresql"

    assert f"{head} (head)" in _alembic_current(empty_db)
    engine = sa.create_engine(resolve_url(empty_db), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert current_revision(conn) == head
            # the migrations create exactly what schema.py declares, on PostgreSQL too
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()
    assert _tables(empty_db) == set(metadata.tables) | {VERSION_TABLE}

    # Now current: it opens without migrating, and a second migrating open changes nothing.
    async with await SqlStore.open(empty_db, migrate=False):
        pass
    async with await SqlStore.open(empty_db):
        pass
    assert f"{head} (head)" in _alembic_current(empty_db)


async def test_without_migrate_an_empty_database_is_refused_with_the_fix(empty_db: str) -> None:
    with pytest.raises(ConfigurationError, match="migrate=True"):
        await SqlStore.open(empty_db, migrate=False)
    assert _tables(empty_db) == set()


async def test_processes_opening_an_empty_database_at_once_migrate_one_after_the_other(
    empty_db: str,
) -> None:
    """Workers started together all migrate: the advisory lock serialises them, the
    first creates the schema and the others find it current."""
    stores = await asyncio.gather(*(SqlStore.open(empty_db) for _ in range(4)))
    for store in stores:
        await store.close()
    assert f"{head_revision()} (head)" in _alembic_current(empty_db)


async def test_a_claim_skips_rows_another_transaction_holds_instead_of_waiting(
    postgres_db: str,
) -> None:
    async with await SqlStore.open(postgres_db) as store:
        await store.create_run(
            SCOPE,
            run_id="r1",
            workflow="w",
            workflow_version="1",
            status="running",
            snapshot={},
            work=[
                NewWork(kind="step", key=f"s{i}", attempt=1, payload={}, visible_at=float(i))
                for i in range(3)
            ],
            now=T0,
        )
        first, *others = [w.id for w in await store.list_work(SCOPE, "r1")]

        # Another session locks the oldest due row and keeps its transaction open.
        holder = sa.create_engine(resolve_url(postgres_db), poolclass=sa.pool.NullPool)
        try:
            with holder.connect() as conn, conn.begin():
                conn.execute(
                    sa.text("SELECT id FROM due_work WHERE id = :id FOR UPDATE"), {"id": first}
                )
                claimed = await asyncio.wait_for(
                    store.claim_due("w1", now=100.0, limit=10, lease_seconds=30), timeout=5
                )
                assert sorted(w.id for w in claimed) == sorted(others)
            # Released: the next claim takes it.
            again = await store.claim_due("w2", now=100.0, limit=10, lease_seconds=30)
            assert [w.id for w in again] == [first]
            assert again[0].fence == 1
            assert {w.fence for w in claimed} == {1}
        finally:
            holder.dispose()
