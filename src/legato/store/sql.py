"""``SqlStore``: the durable store on SQLite or PostgreSQL.

Each public method is ``async`` and runs one whole transaction of synchronous
SQLAlchemy Core code on the store's own worker thread(s) (one thread hop per
transaction; see docs/decisions/0003-store-sync-sqlalchemy-in-a-thread.md).  SQLite gets
a single thread, which serialises this process's writers; PostgreSQL gets a few.

A cancelled call does not cancel its transaction: the thread finishes it, and it
commits or rolls back as it would have.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa

from legato.errors import LegatoError, UsageError
from legato.store import definitions as definition_queries
from legato.store import migrate as migrations
from legato.store import ratelimits as rate_limit_queries
from legato.store import runs as run_queries
from legato.store import signals as signal_queries
from legato.store import work as work_queries
from legato.store import workflows as workflow_queries
from legato.store._db import READ_ONLY, create_engine, resolve_url
from legato.store.batching import GroupCommit
from legato.store.errors import translated
from legato.store.records import (
    CommitResult,
    DefinitionRecord,
    EventRecord,
    NewEvent,
    NewWork,
    RunCommit,
    RunRecord,
    SignalRecord,
    WorkItem,
)
from legato.store.scope import Scope
from legato.store.threads import LATER, URGENT, StoreThreads

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_POSTGRES_THREADS = 4


def _scope(scope: Any) -> Scope:
    if not isinstance(scope, Scope):
        raise UsageError(f"the first argument must be a Scope, got {scope!r}")
    return scope


def _prepare_schema(engine: sa.Engine, migrate: bool) -> None:
    with translated():
        if migrate:
            migrations.upgrade(engine)
        else:
            migrations.check(engine)


log = logging.getLogger("legato.store")


class SqlStore:
    """The store.  Open it with ``await SqlStore.open(url)``; close it with ``close()``
    or use it as ``async with await SqlStore.open(url) as store: ...``."""

    def __init__(self, engine: sa.Engine, threads: StoreThreads) -> None:
        self._engine = engine
        self._threads = threads
        self._closed = False
        self._sqlite = engine.dialect.name == "sqlite"
        self._held: sa.Connection | None = None  # SQLite: the store thread's connection
        # Runs started at about the same time are created in one transaction.
        self._creations: GroupCommit[dict[str, Any], RunRecord] = GroupCommit(self._create_runs)

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        sqlite_synchronous: str = "FULL",
        threads: int | None = None,
    ) -> SqlStore:
        """Open the store at ``url`` (a file path, ``sqlite:///...`` or ``postgresql://...``).

        With ``migrate`` the schema is brought to the current revision; without it the
        schema must already be current (ConfigurationError otherwise).
        ``sqlite_synchronous`` is ``FULL`` (an fsync per commit, the default) or ``NORMAL``
        (faster; a power cut may lose the last commits, never corrupt the file).
        ``threads`` sizes the PostgreSQL thread pool and connection pool (SQLite always
        uses one).
        """
        resolved = resolve_url(url)
        sqlite = resolved.get_backend_name() == "sqlite"
        size = 1 if sqlite else max(1, threads or DEFAULT_POSTGRES_THREADS)
        engine = create_engine(resolved, sqlite_synchronous=sqlite_synchronous, pool_size=size)
        store = cls(engine, StoreThreads(size, "legato-store"))
        try:
            await store._call(_prepare_schema, engine, migrate)
        except BaseException:
            await store.close()
            raise
        return store

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Wait for running transactions, then close every connection.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._held is not None:  # closed on the thread that uses it
            await asyncio.wrap_future(self._threads.submit(self._release))
        await asyncio.to_thread(self._threads.shutdown)
        await asyncio.to_thread(self._engine.dispose)

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    async def __aenter__(self) -> SqlStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- running transactions on the store's thread ---------------------------------------

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._on_thread(URGENT, functools.partial(fn, *args, **kwargs))

    async def _on_thread(self, priority: int, fn: Callable[[], T]) -> T:
        if self._closed:
            raise UsageError("the store is closed; open a new one with SqlStore.open()")
        return await self._threads.call(fn, priority)  # type: ignore[no-any-return]

    def _transaction(self, read_only: bool, work: Callable[[sa.Connection], T]) -> T:
        if self._sqlite:
            return self._sqlite_transaction(read_only, work)
        with translated(), self._engine.connect() as conn:
            if read_only:
                conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                return work(conn)

    def _sqlite_transaction(self, read_only: bool, work: Callable[[sa.Connection], T]) -> T:
        # SQLite: the store's one thread keeps its connection (no pool checkout, reset
        # and checkin per transaction); it is dropped after any error, to start clean.
        with translated():
            conn = self._held
            if conn is None or conn.closed:
                conn = self._held = self._engine.connect()
            try:
                conn.execution_options(**{READ_ONLY: read_only})
                with conn.begin():
                    return work(conn)
            except BaseException:
                self._held = None
                conn.close()
                raise

    async def _write(
        self, fn: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, *args, **kwargs)`` in a write transaction on the store's thread."""
        return await self._call(self._transaction, False, lambda conn: fn(conn, *args, **kwargs))

    async def _read(
        self, fn: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Like ``_write``, in a read-only transaction (SQLite: a deferred BEGIN)."""
        return await self._call(self._transaction, True, lambda conn: fn(conn, *args, **kwargs))

    # -- definitions ------------------------------------------------------------------------

    async def put_definition(
        self,
        scope: Scope,
        *,
        name: str,
        version: str,
        source_format: str,
        document: dict[str, Any],
        source: str | None,
        content_hash: str,
        now: datetime,
    ) -> DefinitionRecord:
        """Store a definition version.  Versions are immutable: the same name and version
        with the same ``content_hash`` returns the stored record; with another hash it
        raises ConflictError (bump ``version``)."""
        return await self._write(
            definition_queries.put_definition,
            _scope(scope),
            name=name,
            version=version,
            source_format=source_format,
            document=document,
            source=source,
            content_hash=content_hash,
            now=now,
        )

    async def get_definition(
        self, scope: Scope, name: str, version: str | None = None
    ) -> DefinitionRecord:
        """That version, or the latest stored when ``version`` is None; NotFoundError."""
        return await self._read(definition_queries.get_definition, _scope(scope), name, version)

    async def latest_version(self, scope: Scope, name: str) -> str:
        """The newest stored version of ``name`` (NotFoundError if none)."""
        return await self._read(definition_queries.latest_version, _scope(scope), name)

    async def list_definitions(self, scope: Scope) -> list[DefinitionRecord]:
        """Every version of every definition, by name then age."""
        return await self._read(definition_queries.list_definitions, _scope(scope))

    # -- runs and events --------------------------------------------------------------------

    async def create_run(
        self,
        scope: Scope,
        *,
        run_id: str,
        workflow: str,
        workflow_version: str,
        status: str,
        snapshot: dict[str, Any] | str,
        events: Sequence[NewEvent] = (),
        work: Sequence[NewWork] = (),
        parent_run_id: str | None = None,
        now: datetime,
        latest_only: bool = False,
    ) -> RunRecord:
        """Insert the run (version 1), its first events (seq 1..n, chained from GENESIS)
        and its first work, in one transaction.  ConflictError if ``run_id`` is taken.
        Work inserted already leased is returned in ``RunRecord.leased_work``.
        With ``latest_only``, ``workflow_version`` must still be the newest stored version
        of ``workflow`` (else StaleVersionError, and nothing is written).

        Runs created concurrently share a transaction (group commit), each succeeding
        or conflicting alone."""
        return await self._creations.submit(
            {
                "scope": _scope(scope),
                "run_id": run_id,
                "workflow": workflow,
                "workflow_version": workflow_version,
                "status": status,
                "snapshot": snapshot,
                "events": events,
                "work": work,
                "parent_run_id": parent_run_id,
                "now": now,
                "latest_only": latest_only,
            }
        )

    async def _create_runs(self, requests: list[dict[str, Any]]) -> list[RunRecord | LegatoError]:
        # after the worker's commits and claims (store/threads.py): finish what runs
        # before starting more
        return await self._on_thread(
            LATER,
            functools.partial(
                self._transaction, False, lambda conn: run_queries.create_runs(conn, requests)
            ),
        )

    async def get_run(self, scope: Scope, run_id: str) -> RunRecord:
        """The run with its snapshot; NotFoundError if it is not in this scope."""
        return await self._read(run_queries.get_run, _scope(scope), run_id)

    async def list_runs(
        self,
        scope: Scope,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Newest first.  For speed the records' ``snapshot`` is None; use ``get_run``."""
        return await self._read(
            run_queries.list_runs,
            _scope(scope),
            status=status,
            workflow=workflow,
            limit=limit,
            offset=offset,
        )

    async def list_events(
        self, scope: Scope, run_id: str, *, after_seq: int = 0
    ) -> list[EventRecord]:
        """The run's events with ``seq > after_seq`` in order; empty for an unknown run."""
        return await self._read(run_queries.list_events, _scope(scope), run_id, after_seq=after_seq)

    async def verify_run(self, scope: Scope, run_id: str) -> int | None:
        """The seq of the first event whose hash chain is broken, or None when intact."""
        return await self._read(run_queries.verify_run, _scope(scope), run_id)

    async def commit(self, batch: Sequence[RunCommit]) -> list[CommitResult]:
        """Group commit: every RunCommit in one transaction (one fsync), each guarded by
        the run's version and its leases' fences, each succeeding or conflicting alone.
        Results are in the batch's order."""
        for item in batch:
            if not isinstance(item, RunCommit):
                raise UsageError(f"commit() takes RunCommit items, got {item!r}")
        if not batch:
            return []
        return await self._write(run_queries.commit, list(batch))

    async def runs_with_status(
        self, statuses: tuple[str, ...], limit: int
    ) -> list[tuple[Scope, str]]:
        """Infrastructure (recovery), across tenants: (scope, run id) of runs in these
        statuses, least recently updated first."""
        return await self._read(run_queries.runs_with_status, statuses, limit)

    # -- work notices (PostgreSQL) ----------------------------------------------------------

    async def listen_for_work(self, wake: Callable[[], None]) -> None:
        """PostgreSQL: call ``wake`` whenever a transaction inserts work that others may
        claim (``NOTIFY legato_work``), until cancelled; reconnects after errors.
        SQLite: returns at once (workers there poll)."""
        if self.dialect != "postgresql":
            return
        import psycopg

        url = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {work_queries.WORK_CHANNEL}")
                    wake()  # anything inserted while we were not listening
                    async for _notice in conn.notifies():
                        wake()
            except psycopg.Error as exc:
                log.warning(
                    "listening for work notices failed; polling until it reconnects",
                    extra={"error": str(exc)},
                )
                await asyncio.sleep(1.0)

    # -- due work (worker infrastructure: not scoped by tenant) -----------------------------

    async def claim_due(
        self,
        owner: str,
        *,
        now: float,
        limit: int,
        lease_seconds: float,
        kinds: tuple[str, ...] | None = None,
    ) -> list[WorkItem]:
        """Lease up to ``limit`` rows due at ``now`` (unleased or lease expired), oldest
        first: owner set, lease until ``now + lease_seconds``, fence incremented."""
        return await self._write(
            work_queries.claim_due,
            owner,
            now=now,
            limit=limit,
            lease_seconds=lease_seconds,
            kinds=kinds,
        )

    async def claim_round(
        self,
        owner: str,
        *,
        now: float,
        limit: int,
        bookkeeping_limit: int,
        lease_seconds: float,
    ) -> tuple[list[WorkItem], float | None]:
        """A worker's claim: up to ``bookkeeping_limit`` due timers, cancels and child
        notices (they only record an event), up to ``limit`` other rows, and when the
        next row becomes claimable, in one transaction."""
        return await self._write(
            work_queries.claim_round,
            owner,
            now=now,
            limit=limit,
            bookkeeping_limit=bookkeeping_limit,
            lease_seconds=lease_seconds,
        )

    async def extend_leases(
        self, owner: str, ids: Sequence[int], *, now: float, lease_seconds: float
    ) -> int:
        """Extend the owner's leases on these rows to ``now + lease_seconds``; returns how
        many it still held."""
        return await self._write(
            work_queries.extend_leases, owner, list(ids), now=now, lease_seconds=lease_seconds
        )

    async def release_leases(self, owners: Sequence[str]) -> int:
        """Let others claim the owners' rows at once (their fences move on)."""
        return await self._write(work_queries.release_leases, list(owners))

    async def next_visible_at(self) -> float | None:
        """When the next row becomes claimable (for a worker's sleep); None when none."""
        return await self._read(work_queries.next_visible_at)

    async def delete_work(self, scope: Scope, run_id: str, kind: str | None = None) -> int:
        """Delete the run's work rows (of one kind, or all); returns how many."""
        return await self._write(work_queries.delete_work, _scope(scope), run_id, kind)

    async def list_work(self, scope: Scope, run_id: str) -> list[WorkItem]:
        """The run's work rows, oldest first."""
        return await self._read(work_queries.list_work, _scope(scope), run_id)

    # -- workers (infrastructure) -----------------------------------------------------------

    async def register_worker(self, owner: str, hostname: str, pid: int, now: float) -> None:
        await self._write(work_queries.register_worker, owner, hostname, pid, now)

    async def heartbeat(self, owner: str, now: float) -> bool:
        """False when the worker is no longer registered (it was found stale)."""
        return await self._write(work_queries.heartbeat, owner, now)

    async def stale_workers(self, now: float, older_than: float) -> list[tuple[str, str, int]]:
        """(owner, hostname, pid) of workers without a heartbeat for ``older_than`` s."""
        return await self._read(work_queries.stale_workers, now, older_than)

    async def remove_workers(self, owners: Sequence[str]) -> int:
        return await self._write(work_queries.remove_workers, list(owners))

    # -- signals ----------------------------------------------------------------------------

    async def add_signal(
        self,
        scope: Scope,
        *,
        run_id: str,
        name: str,
        payload: Any,
        correlation: str | None = None,
        now: datetime,
    ) -> SignalRecord:
        """Store a signal for the run; NotFoundError if the run is not in this scope."""
        return await self._write(
            signal_queries.add_signal,
            _scope(scope),
            run_id=run_id,
            name=name,
            payload=payload,
            correlation=correlation,
            now=now,
        )

    async def pending_signals(self, scope: Scope, run_id: str) -> list[SignalRecord]:
        """The run's undelivered signals, oldest first."""
        return await self._read(signal_queries.pending_signals, _scope(scope), run_id)

    async def undelivered_signals(self, limit: int) -> list[SignalRecord]:
        """Infrastructure, across tenants: undelivered signals, oldest first."""
        return await self._read(signal_queries.undelivered_signals, limit)

    # -- rate limits (infrastructure: deployment-wide, not scoped by tenant) ----------------

    async def take_rate_limit_token(
        self,
        key: str,
        *,
        rate: float,
        burst: float,
        max_wait: float,
        now: float | None = None,
    ) -> rate_limit_queries.RateLimitGrant:
        """One acquisition from the token bucket ``key`` (a service name), shared by every
        process on this database: refill ``rate`` tokens/s up to ``burst``, then take one,
        or reserve the next one if it is at most ``max_wait`` s away (``granted`` with a
        ``wait``), or take nothing (not ``granted``; ``wait`` says how long).  One short
        write transaction; ``now`` (epoch seconds) defaults to the database's clock on
        PostgreSQL and ``time.time()`` on SQLite."""
        return await self._write(
            rate_limit_queries.take_token,
            key,
            rate=rate,
            burst=burst,
            max_wait=max_wait,
            now=now,
        )

    async def reset_rate_limits(self, keys: Sequence[str] | None = None) -> int:
        """Forget token buckets (all when ``keys`` is None); they start full again."""
        return await self._write(rate_limit_queries.reset, None if keys is None else list(keys))

    async def rate_limit_state(self, key: str) -> tuple[float, float] | None:
        """``(tokens, updated_at)`` of a bucket, or None if it was never used."""
        return await self._read(rate_limit_queries.state, key)

    # -- workflows (the API's named, versioned definitions; store/workflows.py) ------------

    async def create_workflow(
        self,
        scope: Scope,
        *,
        workflow_id: str,
        name: str,
        description: str | None,
        enabled: bool,
        current_version: int,
        trigger_type: str,
        event_name: str | None,
        schedule: str | None,
        created_by: str | None,
        now: datetime,
    ) -> workflow_queries.WorkflowRecord:
        """Insert a workflow row; ConflictError if the id is taken in this scope."""
        return await self._write(
            workflow_queries.create_workflow,
            _scope(scope),
            workflow_id=workflow_id,
            name=name,
            description=description,
            enabled=enabled,
            current_version=current_version,
            trigger_type=trigger_type,
            event_name=event_name,
            schedule=schedule,
            created_by=created_by,
            now=now,
        )

    async def get_workflow(
        self, scope: Scope, workflow_id: str, *, include_deleted: bool = False
    ) -> workflow_queries.WorkflowRecord:
        """The workflow; NotFoundError if it is not in this scope (or is deleted)."""
        return await self._read(
            workflow_queries.get_workflow,
            _scope(scope),
            workflow_id,
            include_deleted=include_deleted,
        )

    async def get_workflows(
        self, scope: Scope, workflow_ids: Sequence[str]
    ) -> dict[str, workflow_queries.WorkflowRecord]:
        """The workflows among ``workflow_ids`` (deleted ones too), by id."""
        return await self._read(workflow_queries.get_workflows, _scope(scope), list(workflow_ids))

    async def list_workflows(
        self,
        scope: Scope,
        *,
        enabled: bool | None = None,
        name: str | None = None,
        trigger_type: str | None = None,
        after: workflow_queries.Position | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[workflow_queries.WorkflowRecord]:
        """Workflows that are not deleted, newest first; ``after`` is the position of the
        last one of the previous page."""
        return await self._read(
            workflow_queries.list_workflows,
            _scope(scope),
            enabled=enabled,
            name=name,
            trigger_type=trigger_type,
            after=after,
            limit=limit,
            offset=offset,
        )

    async def set_workflow_version(
        self,
        scope: Scope,
        workflow_id: str,
        *,
        expected_version: int,
        version: int,
        name: str,
        description: str | None,
        trigger_type: str,
        event_name: str | None,
        schedule: str | None,
        enabled: bool | None = None,
        now: datetime,
    ) -> workflow_queries.WorkflowRecord:
        """Make ``version`` (already stored) the workflow's current one, copying its
        trigger; ConflictError if another update got there first."""
        return await self._write(
            workflow_queries.set_current_version,
            _scope(scope),
            workflow_id,
            expected_version=expected_version,
            version=version,
            name=name,
            description=description,
            trigger_type=trigger_type,
            event_name=event_name,
            schedule=schedule,
            enabled=enabled,
            now=now,
        )

    async def set_workflow_enabled(
        self, scope: Scope, workflow_id: str, enabled: bool, *, now: datetime
    ) -> workflow_queries.WorkflowRecord:
        return await self._write(
            workflow_queries.set_enabled, _scope(scope), workflow_id, enabled, now=now
        )

    async def delete_workflow(
        self, scope: Scope, workflow_id: str, *, now: datetime
    ) -> workflow_queries.WorkflowRecord:
        """Mark the workflow deleted; its versions and runs stay readable by id."""
        return await self._write(workflow_queries.mark_deleted, _scope(scope), workflow_id, now=now)

    async def list_enabled_by_event(
        self, scope: Scope, event_name: str, *, enabled_only: bool = True
    ) -> list[workflow_queries.WorkflowRecord]:
        """Event fan-out: the workflows of this scope triggered by ``event_name``."""
        return await self._read(
            workflow_queries.list_enabled_by_event,
            _scope(scope),
            event_name,
            enabled_only=enabled_only,
        )

    async def list_scheduled(self) -> list[workflow_queries.WorkflowRecord]:
        """Infrastructure (the cron scheduler), across tenants: enabled scheduled workflows."""
        return await self._read(workflow_queries.list_scheduled)

    async def list_workflow_versions(
        self, scope: Scope, workflow_id: str
    ) -> list[DefinitionRecord]:
        """The stored versions of a workflow, oldest first."""
        return await self._read(workflow_queries.list_versions, _scope(scope), workflow_id)

    async def count_active_runs(self, scope: Scope, workflow: str) -> int:
        """How many runs of ``workflow`` have not ended (running or compensating)."""
        return await self._read(workflow_queries.count_active_runs, _scope(scope), workflow)

    async def active_run_ids(self, scope: Scope, workflow: str) -> list[str]:
        """Ids of the runs of ``workflow`` that have not ended, oldest first."""
        return await self._read(workflow_queries.active_run_ids, _scope(scope), workflow)

    async def list_executions(
        self,
        scope: Scope,
        *,
        workflow: str | None = None,
        statuses: Sequence[str] | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
        after: workflow_queries.Position | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs newest first with the API's filters; ``snapshot`` is None."""
        return await self._read(
            workflow_queries.list_executions,
            _scope(scope),
            workflow=workflow,
            statuses=None if statuses is None else list(statuses),
            started_after=started_after,
            started_before=started_before,
            after=after,
            limit=limit,
            offset=offset,
        )

    async def scope_of_run(self, run_id: str) -> Scope | None:
        """Infrastructure, across tenants: the scope of a run, for a caller that proves
        its right to the run another way (a callback's unguessable token)."""
        return await self._read(workflow_queries.scope_of_run, run_id)

    async def schema_revision(self) -> tuple[str | None, str | None]:
        """(the database's schema revision, the revision this Legato needs): equal when
        the migrations are current.  Reading it also proves the database answers."""

        def read() -> tuple[str | None, str | None]:
            current = self._transaction(True, migrations.current_revision)
            return current, migrations.head_revision()

        return await self._call(read)

    # -- cron progress (the trigger scheduler; store/schedules.py) --------------------------
    # Imported where used: this block was appended while other blocks were being written.

    async def list_schedule_progress(self) -> list[Any]:
        """Infrastructure (the cron scheduler), across tenants: every ``schedules`` row, as
        ``store.schedules.ScheduleProgress``."""
        from legato.store import schedules as schedule_queries

        return await self._read(schedule_queries.list_progress)

    async def get_schedule_progress(self, scope: Scope, workflow_id: str) -> Any:
        """The workflow's ``ScheduleProgress``, or None before its first pass."""
        from legato.store import schedules as schedule_queries

        return await self._read(schedule_queries.get_progress, _scope(scope), workflow_id)

    async def advance_schedule(
        self,
        scope: Scope,
        workflow_id: str,
        *,
        schedule: str,
        last_tick: datetime | None,
        next_tick: datetime,
        now: datetime,
    ) -> bool:
        """Record a schedule's progress; it only moves forward (or re-anchors when
        ``schedule`` changed).  Returns whether the row changed."""
        from legato.store import schedules as schedule_queries

        return await self._write(
            schedule_queries.advance,
            _scope(scope),
            workflow_id,
            schedule=schedule,
            last_tick=last_tick,
            next_tick=next_tick,
            now=now,
        )

    async def delete_schedule_progress(self, scope: Scope, workflow_id: str) -> int:
        """Forget a workflow's cron progress."""
        from legato.store import schedules as schedule_queries

        return await self._write(schedule_queries.delete_progress, _scope(scope), workflow_id)
