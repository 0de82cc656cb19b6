"""The store contract: every test runs on SQLite (a real WAL file) and on PostgreSQL.

PostgreSQL: one freshly created database per test module (dropped afterwards), emptied
before each test.  The server defaults to postgresql://postgres@127.0.0.1:5432; set
LEGATO_TEST_POSTGRES_URL to use another, or LEGATO_TEST_POSTGRES=skip to skip it
(an unreachable server fails the suite rather than skipping it).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from legato.errors import ConfigurationError, ConflictError, NotFoundError, UsageError
from legato.store import (
    CONFLICT_LEASE,
    CONFLICT_NOT_FOUND,
    CONFLICT_VERSION,
    GENESIS,
    NewEvent,
    NewWork,
    RunCommit,
    Scope,
    SqlStore,
    event_hash,
)
from legato.store._db import resolve_url
from legato.store.migrate import VERSION_TABLE
from legato.store.schema import metadata

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
A = Scope("acme", "prod")
B = Scope("acme", "staging")  # same tenant, other environment
C = Scope("globex", "prod")  # other tenant, same environment name

POSTGRES_SERVER = os.environ.get(
    "LEGATO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TABLES = ("signals", "due_work", "events", "runs", "definitions", "workers")


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this module; dropped afterwards."""
    if os.environ.get("LEGATO_TEST_POSTGRES") == "skip":
        pytest.skip("LEGATO_TEST_POSTGRES=skip")
    import psycopg

    server = sa.make_url(POSTGRES_SERVER)
    conninfo = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"legato_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:  # a missing server is a failure, not a skip
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_SERVER}: {exc}. Start it "
            "(scripts/services.sh) or set LEGATO_TEST_POSTGRES=skip to leave it out knowingly."
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "data" / "legato.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def raw(url: str) -> Iterator[Callable[..., Any]]:
    """Run SQL straight on the database, behind the store's back (autocommit)."""
    engine = sa.create_engine(resolve_url(url), isolation_level="AUTOCOMMIT")

    def execute(sql: str, **params: Any) -> list[Any]:
        with engine.connect() as conn:
            result = conn.execute(sa.text(sql), params)
            return list(result) if result.returns_rows else []

    yield execute
    engine.dispose()


@pytest.fixture
async def store(url: str, raw: Callable[..., Any]) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(url)
    if opened.dialect == "postgresql":
        raw(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    try:
        yield opened
    finally:
        await opened.close()


# -- helpers --------------------------------------------------------------------------


def ev(type: str = "StepCompleted", minutes: int = 0, **payload: Any) -> NewEvent:
    return NewEvent(type=type, at=T0 + timedelta(minutes=minutes), payload=payload)


async def new_run(
    store: SqlStore,
    scope: Scope = A,
    run_id: str | None = None,
    *,
    events: list[NewEvent] | None = None,
    work: list[NewWork] | None = None,
    workflow: str = "onboarding",
    status: str = "running",
    now: datetime = T0,
) -> str:
    run_id = run_id or uuid.uuid4().hex
    await store.create_run(
        scope,
        run_id=run_id,
        workflow=workflow,
        workflow_version="1",
        status=status,
        snapshot={"step": 0},
        events=[ev("RunStarted", input={"x": 1})] if events is None else events,
        work=work or [],
        now=now,
    )
    return run_id


def step(key: str, visible_at: float = 100.0, **kw: Any) -> NewWork:
    return NewWork(kind="step", key=key, visible_at=visible_at, **kw)


def commit_of(run_id: str, expected_version: int, scope: Scope = A, **kw: Any) -> RunCommit:
    kw.setdefault("status", "running")
    kw.setdefault("snapshot", {"v": expected_version + 1})
    return RunCommit(scope=scope, run_id=run_id, expected_version=expected_version, now=T0, **kw)


# -- opening ----------------------------------------------------------------------------


async def test_open_twice_is_idempotent_and_schema_matches_the_models(url: str) -> None:
    async with await SqlStore.open(url) as store:
        assert not store.closed
    async with await SqlStore.open(url, migrate=False) as store:
        pass
    assert store.closed
    # The migrations create exactly what schema.py declares.
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = sa.create_engine(resolve_url(url))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


async def test_closed_store_refuses_calls(store: SqlStore) -> None:
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(UsageError, match="closed"):
        await store.get_run(A, "x")


async def test_open_without_migrate_on_empty_database_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="migrate=True"):
        await SqlStore.open(str(tmp_path / "empty.db"), migrate=False)


async def test_sqlite_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "legato.db"
    for synchronous, level in (("FULL", 2), ("normal", 1)):
        async with await SqlStore.open(str(path), sqlite_synchronous=synchronous) as store:
            with store._engine.connect() as conn:
                pragma = conn.exec_driver_sql
                assert pragma("PRAGMA journal_mode").scalar() == "wal"
                assert pragma("PRAGMA synchronous").scalar() == level
                assert pragma("PRAGMA busy_timeout").scalar() == 5000
                assert pragma("PRAGMA foreign_keys").scalar() == 1
    assert path.exists()
    with pytest.raises(ConfigurationError, match="sqlite_synchronous"):
        await SqlStore.open(str(path), sqlite_synchronous="OFF")


def _size(path: Path) -> int:
    return path.stat().st_size


async def test_sqlite_wal_is_zero_filled_ahead_and_its_commits_read_back(
    tmp_path: Path,
) -> None:
    import sqlite3

    from legato.store._db import _preallocate_wal

    path = tmp_path / "legato.db"
    async with await SqlStore.open(str(path)) as store:
        wal = Path(f"{path}-wal")
        # past the size it reaches before a checkpoint (1000 pages of 4 KiB + headers)
        assert _size(wal) > 1000 * (4096 + 24)
        run_ids = [await new_run(store) for _ in range(50)]
        for run_id in run_ids[:10]:
            [result] = await store.commit([commit_of(run_id, 1, snapshot={"done": run_id})])
            assert result.ok
        # another connection, recovering the WAL from its header, sees every commit and
        # nothing of the zeros
        other = sqlite3.connect(path)
        try:
            assert other.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert other.execute("SELECT count(*) FROM runs").fetchone() == (50,)
            assert other.execute("SELECT count(*) FROM runs WHERE version = 2").fetchone() == (10,)
            # with the write lock taken elsewhere, the zero-filling steps aside at once
            other.execute("BEGIN IMMEDIATE")
            size = _size(wal)
            mine = sqlite3.connect(path, isolation_level=None)
            try:
                _preallocate_wal(mine, f"{path}-wal")
                assert _size(wal) == size
                assert mine.execute("PRAGMA busy_timeout").fetchone() == (5000,)
            finally:
                mine.close()
                other.execute("ROLLBACK")
        finally:
            other.close()
        assert (await store.get_run(A, run_ids[0])).snapshot == {"done": run_ids[0]}


def test_urls_are_normalised(tmp_path: Path) -> None:
    assert resolve_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert resolve_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert resolve_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    path_url = resolve_url(str(tmp_path / "x.db"))
    assert path_url.drivername == "sqlite+pysqlite"
    assert path_url.database == str(tmp_path / "x.db")
    assert resolve_url("sqlite:///rel.db").database == "rel.db"
    with pytest.raises(ConfigurationError, match="unsupported"):
        resolve_url("mysql://u@h/db")
    with pytest.raises(ConfigurationError, match="unsupported"):
        resolve_url("postgresql+psycopg2://u@h/db")


# -- definitions ----------------------------------------------------------------------


async def put(store: SqlStore, scope: Scope, version: str, content_hash: str, **kw: Any) -> Any:
    return await store.put_definition(
        scope,
        name=kw.pop("name", "onboarding"),
        version=version,
        source_format="canonical",
        document={"name": "onboarding", "version": version, "hash": content_hash},
        source="name: onboarding\n",
        content_hash=content_hash,
        now=kw.pop("now", T0),
    )


async def test_definitions_are_immutable_versions(store: SqlStore) -> None:
    first = await put(store, A, "1", "h1")
    assert first.document == {"name": "onboarding", "version": "1", "hash": "h1"}
    assert first.enabled
    assert (first.created_at, first.scope) == (T0, A)
    # Same version, same content: the stored record, unchanged.
    again = await put(store, A, "1", "h1", now=T0 + timedelta(hours=1))
    assert again == first
    # Same version, other content: refused, and the message says what to do.
    with pytest.raises(ConflictError, match="bump `version`") as info:
        await put(store, A, "1", "h2")
    assert info.value.details["stored_hash"] == "h1"
    assert (await store.get_definition(A, "onboarding", "1")).content_hash == "h1"


async def test_get_definition_latest_and_not_found(store: SqlStore) -> None:
    await put(store, A, "1", "h1", now=T0)
    await put(store, A, "2", "h2", now=T0 + timedelta(minutes=1))
    await put(store, A, "1", "hx", name="other", now=T0 + timedelta(minutes=2))
    assert (await store.get_definition(A, "onboarding")).version == "2"
    assert (await store.get_definition(A, "onboarding", "1")).version == "1"
    with pytest.raises(NotFoundError) as info:
        await store.get_definition(A, "onboarding", "3")
    for part in ("'onboarding'", "'3'", "'acme'", "'prod'"):
        assert part in str(info.value)
    with pytest.raises(NotFoundError):
        await store.get_definition(A, "missing")
    listed = await store.list_definitions(A)
    assert [(d.name, d.version) for d in listed] == [
        ("onboarding", "1"),
        ("onboarding", "2"),
        ("other", "1"),
    ]


# -- tenant and environment isolation ----------------------------------------------------


@pytest.mark.parametrize("other", [B, C], ids=["other-environment", "other-tenant"])
async def test_every_scoped_method_hides_other_scopes(store: SqlStore, other: Scope) -> None:
    await put(store, A, "1", "h1")
    run_id = await new_run(store, A, work=[step("a")])
    signal = await store.add_signal(A, run_id=run_id, name="go", payload={}, now=T0)

    with pytest.raises(NotFoundError):
        await store.get_definition(other, "onboarding")
    with pytest.raises(NotFoundError):
        await store.get_definition(other, "onboarding", "1")
    assert await store.list_definitions(other) == []
    with pytest.raises(NotFoundError):
        await store.get_run(other, run_id)
    assert await store.list_runs(other) == []
    assert await store.list_events(other, run_id) == []
    with pytest.raises(NotFoundError):
        await store.verify_run(other, run_id)
    assert await store.list_work(other, run_id) == []
    assert await store.delete_work(other, run_id) == 0
    assert await store.pending_signals(other, run_id) == []
    with pytest.raises(NotFoundError):
        await store.add_signal(other, run_id=run_id, name="go", payload={}, now=T0)
    [result] = await store.commit(
        [commit_of(run_id, 1, scope=other, events=[ev()], signals_delivered=[signal.id])]
    )
    assert (result.conflict, result.reason) == (True, CONFLICT_NOT_FOUND)
    # The same run id cannot be taken in another scope either (ids are global).
    with pytest.raises(ConflictError):
        await new_run(store, other, run_id)

    # Nothing of A's was touched through the other scope.
    run = await store.get_run(A, run_id)
    assert (run.version, run.last_seq) == (1, 1)
    assert len(await store.list_work(A, run_id)) == 1
    assert [s.id for s in await store.pending_signals(A, run_id)] == [signal.id]
    # A put in the other scope is a different definition, not a conflict.
    assert (await put(store, other, "1", "different")).content_hash == "different"


# -- runs ---------------------------------------------------------------------------------


async def test_create_and_get_run(store: SqlStore) -> None:
    leased = NewWork(kind="step", key="b", visible_at=50.0, lease_owner="w1", lease_seconds=30)
    record = await store.create_run(
        A,
        run_id="run-1",
        workflow="onboarding",
        workflow_version="1",
        status="running",
        snapshot={"ctx": {"name": "Ada"}},
        events=[ev("RunStarted", input={"name": "Ada"}), ev("StepScheduled", 1, path="a")],
        work=[step("a"), leased],
        parent_run_id="parent-0",
        now=T0,
    )
    got = await store.get_run(A, "run-1")
    assert got.snapshot == {"ctx": {"name": "Ada"}}
    assert (got.version, got.last_seq, got.status) == (1, 2, "running")
    assert (got.workflow, got.workflow_version) == ("onboarding", "1")
    assert got.parent_run_id == "parent-0"
    assert got.created_at == got.updated_at == T0
    assert got.finished_at is None
    assert got.last_hash == record.last_hash != GENESIS
    # Work inserted leased comes back with what is needed to finish it.
    [item] = record.leased_work
    assert (item.key, item.fence, item.lease_owner) == ("b", 1, "w1")
    assert item.lease_expires_at == 80.0
    assert {w.key for w in await store.list_work(A, "run-1")} == {"a", "b"}

    with pytest.raises(ConflictError, match="already exists"):
        await new_run(store, A, "run-1")
    with pytest.raises(NotFoundError, match=r"'nope'.*'acme'.*'prod'"):
        await store.get_run(A, "nope")
    with pytest.raises(UsageError, match="timezone-aware"):
        await new_run(store, A, now=datetime(2024, 1, 1))  # naive on purpose
    with pytest.raises(UsageError, match="Scope"):
        await store.get_run("acme", "run-1")  # type: ignore[arg-type]


async def test_runs_created_together_share_a_transaction_and_fail_alone(store: SqlStore) -> None:
    await new_run(store, A, "taken")
    results = await asyncio.gather(
        *(new_run(store, A, f"batch-{i}") for i in range(20)),
        new_run(store, A, "taken"),
        new_run(store, A, "naive", now=datetime(2024, 1, 1)),  # naive on purpose
        new_run(store, A, "unusable", work=[step("a", payload={"not json": object()})]),
        return_exceptions=True,
    )
    assert results[:20] == [f"batch-{i}" for i in range(20)]
    assert isinstance(results[20], ConflictError)
    assert isinstance(results[21], UsageError)
    assert isinstance(results[22], UsageError)
    for i in range(20):
        assert await store.verify_run(A, f"batch-{i}") is None
    for refused in ("naive", "unusable"):  # nothing of a refused run was written
        with pytest.raises(NotFoundError):
            await store.get_run(A, refused)


async def test_run_without_events_starts_at_genesis(store: SqlStore) -> None:
    run_id = await new_run(store, events=[])
    run = await store.get_run(A, run_id)
    assert (run.last_seq, run.last_hash) == (0, GENESIS)
    assert await store.verify_run(A, run_id) is None


async def test_list_runs_newest_first_with_filters(store: SqlStore) -> None:
    for i in range(5):
        await new_run(
            store,
            run_id=f"r{i}",
            workflow="even" if i % 2 == 0 else "odd",
            status="succeeded" if i == 4 else "running",
            now=T0 + timedelta(minutes=i),
        )
    await new_run(store, C, "other-tenant")
    runs = await store.list_runs(A)
    assert [r.id for r in runs] == ["r4", "r3", "r2", "r1", "r0"]
    assert all(r.snapshot is None for r in runs)  # documented: use get_run
    assert [r.id for r in await store.list_runs(A, status="succeeded")] == ["r4"]
    assert [r.id for r in await store.list_runs(A, workflow="odd")] == ["r3", "r1"]
    assert [r.id for r in await store.list_runs(A, limit=2, offset=1)] == ["r3", "r2"]
    found = await store.runs_with_status(("running",), limit=10)
    # Infrastructure query: across tenants.
    assert set(found) == {(A, "r0"), (A, "r1"), (A, "r2"), (A, "r3"), (C, "other-tenant")}
    assert len(await store.runs_with_status(("running",), limit=2)) == 2


# -- events and the hash chain ------------------------------------------------------------


async def test_events_are_chained_across_commits(store: SqlStore) -> None:
    run_id = await new_run(store, events=[ev("RunStarted"), ev("StepScheduled", 1)])
    [result] = await store.commit([commit_of(run_id, 1, events=[ev("A", 2), ev("B", 3, n=1)])])
    assert (result.ok, result.version, result.last_seq) == (True, 2, 4)
    events = await store.list_events(A, run_id)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.type for e in events] == ["RunStarted", "StepScheduled", "A", "B"]
    assert (events[3].payload, events[3].at) == ({"n": 1}, T0 + timedelta(minutes=3))
    assert events[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    run = await store.get_run(A, run_id)
    assert (run.last_seq, run.last_hash) == (4, events[-1].hash)
    assert [e.seq for e in await store.list_events(A, run_id, after_seq=2)] == [3, 4]
    assert await store.verify_run(A, run_id) is None


async def test_verify_run_finds_an_edited_event(store: SqlStore, raw: Callable[..., Any]) -> None:
    run_id = await new_run(store, events=[ev("RunStarted"), ev("A", 1), ev("B", 2), ev("C", 3)])
    assert await store.verify_run(A, run_id) is None
    raw(
        "UPDATE events SET payload = :p WHERE run_id = :r AND seq = 3",
        p='{"approved":true}',
        r=run_id,
    )
    assert await store.verify_run(A, run_id) == 3


async def test_verify_run_finds_a_recomputed_forgery_and_truncation(
    store: SqlStore, raw: Callable[..., Any]
) -> None:
    run_id = await new_run(store, events=[ev("RunStarted"), ev("A", 1), ev("B", 2)])
    [row] = raw("SELECT prev_hash, at FROM events WHERE run_id = :r AND seq = 2", r=run_id)
    forged = event_hash(row.prev_hash, run_id, 2, "A", row.at, '{"forged":1}')
    raw(
        "UPDATE events SET payload = :p, hash = :h WHERE run_id = :r AND seq = 2",
        p='{"forged":1}',
        h=forged,
        r=run_id,
    )
    assert await store.verify_run(A, run_id) == 3  # event 3 no longer links to event 2

    other = await new_run(store, events=[ev("RunStarted"), ev("A", 1), ev("B", 2)])
    raw("DELETE FROM events WHERE run_id = :r AND seq = 3", r=other)
    assert await store.verify_run(A, other) == 3  # the run's head says 3 events


# -- group commit ---------------------------------------------------------------------------


async def test_group_commit_isolates_a_conflicting_run(store: SqlStore) -> None:
    good, stale, missing = await new_run(store), await new_run(store), "no-such-run"
    results = await store.commit(
        [
            commit_of(good, 1, events=[ev("Good")], add_work=[step("next")]),
            commit_of(stale, 7, events=[ev("Stale")], add_work=[step("never")]),
            commit_of(missing, 1, events=[ev("Missing")]),
        ]
    )
    assert [(r.ok, r.conflict, r.reason) for r in results] == [
        (True, False, None),
        (False, True, CONFLICT_VERSION),
        (False, True, CONFLICT_NOT_FOUND),
    ]
    assert (results[0].version, results[0].last_seq) == (2, 2)
    assert results[1].version is None
    assert [e.type for e in await store.list_events(A, good)] == ["RunStarted", "Good"]
    assert [w.key for w in await store.list_work(A, good)] == ["next"]
    # The stale commit left no trace.
    assert (await store.get_run(A, stale)).version == 1
    assert [e.type for e in await store.list_events(A, stale)] == ["RunStarted"]
    assert await store.list_work(A, stale) == []


async def test_commit_writes_run_fields(store: SqlStore) -> None:
    run_id = await new_run(store)
    later = T0 + timedelta(hours=1)
    [result] = await store.commit(
        [
            RunCommit(
                scope=A,
                run_id=run_id,
                expected_version=1,
                status="succeeded",
                snapshot={"done": True},
                events=[ev("RunFinished")],
                finished_at=later,
                now=later,
            )
        ]
    )
    assert result.ok
    run = await store.get_run(A, run_id)
    assert (run.status, run.snapshot, run.version) == ("succeeded", {"done": True}, 2)
    assert run.updated_at == run.finished_at == later
    assert run.created_at == T0


async def test_same_run_twice_in_one_batch(store: SqlStore) -> None:
    run_id = await new_run(store, work=[step("a")])
    results = await store.commit(
        [
            commit_of(run_id, 1, events=[ev("X")], add_work=[step("b")]),
            commit_of(run_id, 2, events=[ev("Y")], drop_work_keys=[("step", "b")]),
            commit_of(run_id, 2, events=[ev("Z")]),  # stale by then
        ]
    )
    assert [(r.ok, r.version) for r in results] == [(True, 2), (True, 3), (False, None)]
    assert [e.type for e in await store.list_events(A, run_id)] == ["RunStarted", "X", "Y"]
    assert [w.key for w in await store.list_work(A, run_id)] == ["a"]
    assert await store.verify_run(A, run_id) is None


async def test_a_dropped_row_cannot_be_finished_later_in_the_batch(store: SqlStore) -> None:
    run_id = await new_run(store, work=[step("a", visible_at=1.0)])
    [item] = await store.claim_due("w1", now=1.0, limit=5, lease_seconds=30)
    results = await store.commit(
        [
            commit_of(run_id, 1, drop_work_keys=[("step", "a")]),
            commit_of(run_id, 2, done_work=[(item.id, item.fence)]),
        ]
    )
    assert [r.reason for r in results] == [None, CONFLICT_LEASE]


async def test_concurrent_commits_to_one_run_accept_exactly_one(url: str, store: SqlStore) -> None:
    run_ids = [await new_run(store) for _ in range(4)]
    async with await SqlStore.open(url) as other:
        # Overlapping batches in opposite orders: no deadlock, one winner per run.
        outcomes = await asyncio.gather(
            *(
                s.commit([commit_of(r, 1, events=[ev(name)]) for r in order])
                for s, name, order in (
                    (store, "first", run_ids),
                    (other, "second", run_ids[::-1]),
                    (store, "third", run_ids[1:]),
                )
            )
        )
    wins = [r.ok for results in outcomes for r in results]
    assert wins.count(True) == len(run_ids)
    for run_id in run_ids:
        run = await store.get_run(A, run_id)
        assert (run.version, run.last_seq) == (2, 2)
        assert await store.verify_run(A, run_id) is None


async def test_fencing_rejects_a_stale_lease(store: SqlStore) -> None:
    run_id = await new_run(store, work=[step("a", visible_at=10.0)])
    [first] = await store.claim_due("w1", now=10.0, limit=5, lease_seconds=30)
    assert first.fence == 1
    # w1 stalls; its lease expires and w2 takes the work over.
    [second] = await store.claim_due("w2", now=45.0, limit=5, lease_seconds=30)
    assert (second.id, second.fence, second.lease_owner) == (first.id, 2, "w2")

    [late] = await store.commit(
        [commit_of(run_id, 1, events=[ev("FromW1")], done_work=[(first.id, first.fence)])]
    )
    assert (late.ok, late.conflict, late.reason) == (False, True, CONFLICT_LEASE)
    assert (await store.get_run(A, run_id)).version == 1
    assert [e.type for e in await store.list_events(A, run_id)] == ["RunStarted"]
    assert [w.id for w in await store.list_work(A, run_id)] == [first.id]

    # A fence is only good for its own run's work.
    other_run = await new_run(store)
    [wrong_run] = await store.commit(
        [commit_of(other_run, 1, done_work=[(second.id, second.fence)])]
    )
    assert wrong_run.reason == CONFLICT_LEASE

    [ok] = await store.commit(
        [commit_of(run_id, 1, events=[ev("FromW2")], done_work=[(second.id, second.fence)])]
    )
    assert (ok.ok, ok.version) == (True, 2)
    assert await store.list_work(A, run_id) == []


async def test_lease_conflict_takes_precedence_and_rolls_back_the_savepoint(
    store: SqlStore,
) -> None:
    run_id = await new_run(store, work=[step("a", visible_at=1.0), step("b", visible_at=1.0)])
    a, b = await store.claim_due("w1", now=1.0, limit=5, lease_seconds=30)
    # One of two done rows has a wrong fence: nothing of the commit stays.
    [result] = await store.commit(
        [commit_of(run_id, 1, done_work=[(a.id, a.fence), (b.id, b.fence + 1)])]
    )
    assert result.reason == CONFLICT_LEASE
    assert {w.id for w in await store.list_work(A, run_id)} == {a.id, b.id}
    # A lost lease is reported even when the version is stale as well.
    [result] = await store.commit([commit_of(run_id, 9, done_work=[(a.id, a.fence + 1)])])
    assert result.reason == CONFLICT_LEASE


async def test_duplicate_add_work_is_ignored(store: SqlStore) -> None:
    run_id = await new_run(store, work=[step("a"), step("a")])
    assert len(await store.list_work(A, run_id)) == 1
    [result] = await store.commit(
        [commit_of(run_id, 1, add_work=[step("a", payload={"again": 1}), step("a", attempt=2)])]
    )
    assert result.ok
    work = await store.list_work(A, run_id)
    assert [(w.key, w.attempt, w.payload) for w in work] == [("a", 1, {}), ("a", 2, {})]


async def test_commit_leases_new_work_and_hands_work_to_another_run(store: SqlStore) -> None:
    parent = await new_run(store)
    child = await new_run(store)
    elsewhere = await new_run(store, C)
    [result] = await store.commit(
        [
            commit_of(
                child,
                1,
                add_work=[
                    NewWork(
                        kind="step", key="x", visible_at=5.0, lease_owner="w1", lease_seconds=10
                    ),
                    NewWork(kind="timer", key="t", visible_at=99.0),
                    NewWork(kind="child_done", key=child, run_id=parent, visible_at=5.0),
                    # Work for a run that is not in this scope is ignored.
                    NewWork(kind="child_done", key=child, run_id="ghost", visible_at=5.0),
                    NewWork(kind="child_done", key=child, run_id=elsewhere, visible_at=5.0),
                ],
            )
        ]
    )
    assert await store.list_work(C, elsewhere) == []
    [item] = result.leased
    assert (item.run_id, item.key, item.fence, item.lease_expires_at) == (child, "x", 1, 15.0)
    assert [(w.kind, w.key) for w in await store.list_work(A, parent)] == [("child_done", child)]
    # The leased row is not claimable by others until its lease expires.
    claimed = await store.claim_due("w2", now=10.0, limit=10, lease_seconds=5)
    assert [w.kind for w in claimed] == ["child_done"]


async def test_drop_work_keys_deletes_regardless_of_lease(store: SqlStore) -> None:
    run_id = await new_run(store, work=[step("a", visible_at=1.0), step("b", visible_at=1.0)])
    await store.claim_due("w1", now=1.0, limit=10, lease_seconds=30)
    [result] = await store.commit(
        [
            commit_of(
                run_id,
                1,
                drop_work_keys=[("step", "a"), ("step", "zzz")],
                add_work=[step("a", attempt=2)],  # a commit can replace a row
            )
        ]
    )
    assert result.ok
    work = await store.list_work(A, run_id)
    assert [(w.key, w.attempt) for w in work] == [("b", 1), ("a", 2)]  # by id
    assert await store.delete_work(A, run_id, kind="timer") == 0
    assert await store.delete_work(A, run_id, kind="step") == 2
    assert await store.list_work(A, run_id) == []


# -- claiming due work ----------------------------------------------------------------------


async def test_claim_due_leases_in_order_and_respects_expiry(store: SqlStore) -> None:
    run_id = await new_run(
        store,
        work=[
            step("late", visible_at=30.0),
            step("first", visible_at=10.0),
            step("second", visible_at=20.0),
            NewWork(kind="timer", key="t", visible_at=15.0),
        ],
    )
    assert await store.next_visible_at() == 10.0
    assert await store.claim_due("w1", now=5.0, limit=10, lease_seconds=30) == []

    claimed = await store.claim_due("w1", now=20.0, limit=2, lease_seconds=30)
    assert [w.key for w in claimed] == ["first", "t"]
    assert all(w.fence == 1 and w.lease_owner == "w1" for w in claimed)
    assert all(w.lease_expires_at == 50.0 and w.scope == A for w in claimed)
    assert claimed[0].run_id == run_id

    steps_only = await store.claim_due("w2", now=20.0, limit=10, lease_seconds=30, kinds=("step",))
    assert [w.key for w in steps_only] == ["second"]
    assert await store.claim_due("w2", now=25.0, limit=10, lease_seconds=30, kinds=()) == []
    # Nothing unleased is due; the next is "late" at 30.
    assert await store.next_visible_at() == 30.0

    # Extending keeps w1's rows past their first expiry.
    ids = [w.id for w in claimed]
    assert await store.extend_leases("w1", ids, now=40.0, lease_seconds=30) == 2
    assert await store.extend_leases("w2", ids, now=40.0, lease_seconds=30) == 0
    again = await store.claim_due("w3", now=60.0, limit=10, lease_seconds=30)
    assert sorted(w.key for w in again) == ["late", "second"]  # w2's expired at 50
    assert {w.fence for w in again if w.key == "second"} == {2}

    later = await store.claim_due("w3", now=75.0, limit=10, lease_seconds=30)
    assert sorted(w.key for w in later) == ["first", "t"]
    assert {w.fence for w in later} == {2}


async def test_release_leases_frees_rows_at_once_and_moves_the_fence(store: SqlStore) -> None:
    await new_run(store, work=[step("a", visible_at=1.0), step("b", visible_at=1.0)])
    claimed = await store.claim_due("dead", now=1.0, limit=10, lease_seconds=300)
    assert await store.claim_due("w2", now=2.0, limit=10, lease_seconds=30) == []
    assert await store.release_leases(["dead", "nobody"]) == 2
    assert await store.next_visible_at() == 1.0
    reclaimed = await store.claim_due("w2", now=2.0, limit=10, lease_seconds=30)
    assert sorted(w.id for w in reclaimed) == sorted(w.id for w in claimed)
    assert {w.fence for w in reclaimed} == {3}  # 1 at the claim, 2 at release, 3 now


async def test_concurrent_claimers_never_share_a_row(url: str, store: SqlStore) -> None:
    rows = 60
    run_id = await new_run(store, work=[step(f"s{i}", visible_at=float(i)) for i in range(rows)])
    async with await SqlStore.open(url) as other:

        async def drain(claimer: SqlStore, owner: str) -> list[int]:
            got: list[int] = []
            while True:
                batch = await claimer.claim_due(owner, now=1000.0, limit=3, lease_seconds=60)
                if not batch:
                    return got
                got.extend(w.id for w in batch)

        results = await asyncio.gather(
            *(drain(s, f"{name}-{i}") for i in range(3) for s, name in ((store, "a"), (other, "b")))
        )
    claimed = [work_id for ids in results for work_id in ids]
    assert len(claimed) == rows
    assert len(set(claimed)) == rows
    assert {w.fence for w in await store.list_work(A, run_id)} == {1}


# -- signals ---------------------------------------------------------------------------------


async def test_signals_pending_until_a_commit_delivers_them(store: SqlStore) -> None:
    run_id = await new_run(store)
    other_run = await new_run(store, C)
    first = await store.add_signal(
        A, run_id=run_id, name="approve", payload={"by": "ada"}, correlation="c-1", now=T0
    )
    second = await store.add_signal(A, run_id=run_id, name="note", payload=[1, 2], now=T0)
    elsewhere = await store.add_signal(C, run_id=other_run, name="x", payload=None, now=T0)
    assert (first.payload, first.correlation, first.delivered_at) == ({"by": "ada"}, "c-1", None)
    assert [s.id for s in await store.pending_signals(A, run_id)] == [first.id, second.id]
    assert [s.id for s in await store.undelivered_signals(10)] == [
        first.id,
        second.id,
        elsewhere.id,
    ]
    assert [s.scope for s in await store.undelivered_signals(10)] == [A, A, C]

    [result] = await store.commit(
        [commit_of(run_id, 1, events=[ev("SignalReceived")], signals_delivered=[first.id])]
    )
    assert result.ok
    assert [s.id for s in await store.pending_signals(A, run_id)] == [second.id]
    assert [s.id for s in await store.undelivered_signals(1)] == [second.id]

    with pytest.raises(NotFoundError, match="'ghost'"):
        await store.add_signal(A, run_id="ghost", name="x", payload={}, now=T0)
    with pytest.raises(UsageError, match="JSON"):
        await store.add_signal(A, run_id=run_id, name="x", payload={"at": T0}, now=T0)


# -- workers ----------------------------------------------------------------------------------


async def test_worker_registry(store: SqlStore) -> None:
    await store.register_worker("w1", "host-a", 101, now=100.0)
    await store.register_worker("w2", "host-b", 202, now=100.0)
    assert await store.heartbeat("w1", now=160.0)
    assert await store.stale_workers(now=170.0, older_than=30.0) == [("w2", "host-b", 202)]
    assert await store.remove_workers(["w2"]) == 1
    assert not await store.heartbeat("w2", now=170.0)
    await store.register_worker("w1", "host-a", 303, now=500.0)  # restarted: replaced
    assert await store.stale_workers(now=500.0, older_than=-1.0) == [("w1", "host-a", 303)]
