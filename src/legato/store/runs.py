"""Runs and their hash-chained event logs, including the group commit.

Events are append-only: no code path here updates or deletes an event row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from legato.errors import ConflictError, NotFoundError, StoreError
from legato.store import work as work_queries
from legato.store._codec import dumps, loads, parse_ts, parse_ts_or_none, ts, ts_or_none
from legato.store._db import dialect_insert
from legato.store.chain import GENESIS, ChainRow, event_hash, verify
from legato.store.records import (
    CONFLICT_LEASE,
    CONFLICT_NOT_FOUND,
    CONFLICT_VERSION,
    CommitResult,
    EventRecord,
    NewEvent,
    NewWork,
    RunCommit,
    RunRecord,
    WorkItem,
)
from legato.store.schema import due_work, events, runs, signals
from legato.store.scope import Scope

_RunKey = tuple[str, str, str]  # tenant_id, environment_id, run_id


def _scoped(scope: Scope, run_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        runs.c.tenant_id == scope.tenant_id,
        runs.c.environment_id == scope.environment_id,
        runs.c.id == run_id,
    )


def _not_found(scope: Scope, run_id: str) -> NotFoundError:
    return NotFoundError(
        f"run {run_id!r} does not exist in {scope}",
        details={
            "run_id": run_id,
            "tenant_id": scope.tenant_id,
            "environment_id": scope.environment_id,
        },
    )


def _run_record(row: sa.Row[Any]) -> RunRecord:
    mapping = row._mapping
    return RunRecord(
        scope=Scope(row.tenant_id, row.environment_id),
        id=row.id,
        workflow=row.workflow,
        workflow_version=row.workflow_version,
        status=row.status,
        snapshot=loads(mapping["snapshot"]) if "snapshot" in mapping else None,
        version=row.version,
        last_seq=row.last_seq,
        last_hash=row.last_hash,
        parent_run_id=row.parent_run_id,
        created_at=parse_ts(row.created_at),
        updated_at=parse_ts(row.updated_at),
        finished_at=parse_ts_or_none(row.finished_at),
    )


def _event_rows(
    scope: Scope, run_id: str, last_seq: int, last_hash: str, new: Sequence[NewEvent]
) -> tuple[list[dict[str, Any]], int, str]:
    """The rows for ``new`` events continuing a chain; and the chain's new head."""
    rows = []
    for event in new:
        last_seq += 1
        at = ts(event.at, what="NewEvent.at")
        payload = dumps(event.payload, what=f"payload of event {event.type}")
        digest = event_hash(last_hash, run_id, last_seq, event.type, at, payload)
        rows.append(
            {
                "tenant_id": scope.tenant_id,
                "environment_id": scope.environment_id,
                "run_id": run_id,
                "seq": last_seq,
                "type": event.type,
                "at": at,
                "payload": payload,
                "prev_hash": last_hash,
                "hash": digest,
            }
        )
        last_hash = digest
    return rows, last_seq, last_hash


def create_run(
    conn: sa.Connection,
    scope: Scope,
    *,
    run_id: str,
    workflow: str,
    workflow_version: str,
    status: str,
    snapshot: dict[str, Any],
    events: Sequence[NewEvent] = (),
    work: Sequence[NewWork] = (),
    parent_run_id: str | None = None,
    now: datetime,
) -> RunRecord:
    now_text = ts(now, what="now")
    snapshot_text = dumps(snapshot, what="run snapshot")
    event_rows, last_seq, last_hash = _event_rows(scope, run_id, 0, GENESIS, events)
    values = {
        "tenant_id": scope.tenant_id,
        "environment_id": scope.environment_id,
        "id": run_id,
        "workflow": workflow,
        "workflow_version": workflow_version,
        "status": status,
        "snapshot": snapshot_text,
        "version": 1,
        "last_seq": last_seq,
        "last_hash": last_hash,
        "parent_run_id": parent_run_id,
        "created_at": now_text,
        "updated_at": now_text,
        "finished_at": None,
    }
    insert = dialect_insert(conn, runs).values(values).on_conflict_do_nothing()
    if conn.execute(insert.returning(runs.c.id)).first() is None:
        raise ConflictError(
            f"a run with id {run_id!r} already exists; run ids are unique",
            details={"run_id": run_id},
        )
    if event_rows:
        conn.execute(_INSERT_EVENT, event_rows)
    leased = work_queries.insert_work(
        conn,
        [work_queries.work_row(scope, run_id, item, now_text) for item in work],
        known_runs={(scope.tenant_id, scope.environment_id, run_id)},
    )
    return RunRecord(
        scope=scope,
        id=run_id,
        workflow=workflow,
        workflow_version=workflow_version,
        status=status,
        snapshot=loads(snapshot_text),
        version=1,
        last_seq=last_seq,
        last_hash=last_hash,
        parent_run_id=parent_run_id,
        created_at=parse_ts(now_text),
        updated_at=parse_ts(now_text),
        finished_at=None,
        leased_work=tuple(leased),
    )


def get_run(conn: sa.Connection, scope: Scope, run_id: str) -> RunRecord:
    row = conn.execute(sa.select(runs).where(_scoped(scope, run_id))).first()
    if row is None:
        raise _not_found(scope, run_id)
    return _run_record(row)


_LIST_COLUMNS = [column for column in runs.c if column.name != "snapshot"]


def list_runs(
    conn: sa.Connection,
    scope: Scope,
    *,
    status: str | None = None,
    workflow: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[RunRecord]:
    """Newest first.  ``snapshot`` is left out (``None``): read it with ``get_run``."""
    query = sa.select(*_LIST_COLUMNS).where(
        runs.c.tenant_id == scope.tenant_id, runs.c.environment_id == scope.environment_id
    )
    if status is not None:
        query = query.where(runs.c.status == status)
    if workflow is not None:
        query = query.where(runs.c.workflow == workflow)
    query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit).offset(offset)
    return [_run_record(row) for row in conn.execute(query)]


def runs_with_status(
    conn: sa.Connection, statuses: Sequence[str], limit: int
) -> list[tuple[Scope, str]]:
    """Infrastructure (recovery), across tenants: runs in these statuses, least recently
    updated first."""
    if not statuses or limit <= 0:
        return []
    query = (
        sa.select(runs.c.tenant_id, runs.c.environment_id, runs.c.id)
        .where(runs.c.status.in_(list(statuses)))
        .order_by(runs.c.updated_at, runs.c.id)
        .limit(limit)
    )
    return [(Scope(row.tenant_id, row.environment_id), row.id) for row in conn.execute(query)]


def _event_query(scope: Scope, run_id: str) -> sa.Select[Any]:
    return (
        sa.select(events)
        .where(
            events.c.tenant_id == scope.tenant_id,
            events.c.environment_id == scope.environment_id,
            events.c.run_id == run_id,
        )
        .order_by(events.c.seq)
    )


def list_events(
    conn: sa.Connection, scope: Scope, run_id: str, *, after_seq: int = 0
) -> list[EventRecord]:
    """The run's events after ``after_seq``, in order (empty if the run is not in scope)."""
    query = _event_query(scope, run_id).where(events.c.seq > after_seq)
    return [
        EventRecord(
            run_id=row.run_id,
            seq=row.seq,
            type=row.type,
            at=parse_ts(row.at),
            payload=loads(row.payload),
            prev_hash=row.prev_hash,
            hash=row.hash,
        )
        for row in conn.execute(query)
    ]


def verify_run(conn: sa.Connection, scope: Scope, run_id: str) -> int | None:
    """The seq of the first event that breaks the chain, or ``None`` when intact.

    Besides each link, the chain's end must be the run's recorded head (``last_seq``,
    ``last_hash``), so deleting or appending events at the end is detected too.
    """
    head_query = sa.select(runs.c.last_seq, runs.c.last_hash).where(_scoped(scope, run_id))
    # Read the head, the events, and the head again: under READ COMMITTED (PostgreSQL)
    # each statement sees its own snapshot, and a commit landing between them would look
    # like a broken chain. If the head moved, read again.
    for _ in range(5):
        head = conn.execute(head_query).first()
        if head is None:
            raise _not_found(scope, run_id)
        rows = [
            ChainRow(r.run_id, r.seq, r.type, r.at, r.payload, r.prev_hash, r.hash)
            for r in conn.execute(_event_query(scope, run_id))
        ]
        again = conn.execute(head_query).first()
        if again is not None and tuple(again) == tuple(head):
            break
    broken = verify(rows)
    if broken is not None:
        return broken
    count, last_seq = len(rows), int(head.last_seq)
    if count != last_seq:
        return min(count, last_seq) + 1
    if (rows[-1].hash if rows else GENESIS) != head.last_hash:
        return max(count, 1)
    return None


# -- group commit ------------------------------------------------------------------------
#
# A batch is checked first and written afterwards.  The run rows and the finished work
# rows it names are read once, locked (SELECT ... FOR UPDATE on PostgreSQL; on SQLite the
# transaction's BEGIN IMMEDIATE already holds the only write lock), and every RunCommit
# is checked against them in memory: its run exists in its scope, its version is the
# expected one, each finished (id, fence) still matches.  A RunCommit that fails a check
# is left out and reported as a conflict; the others are written with one executemany
# per statement.  The locks keep the checks true until the transaction commits, so a
# conflict in one RunCommit cannot affect the others, as a SAVEPOINT per RunCommit
# would guarantee, with a fixed number of statements per batch instead of four or five
# per RunCommit.

_INSERT_EVENT = sa.insert(events)


def _where_scoped(table: sa.Table, run_column: str = "run_id") -> list[sa.ColumnElement[bool]]:
    """WHERE tenant, environment and run match the w_tenant/w_environment/w_run params."""
    return [
        table.c.tenant_id == sa.bindparam("w_tenant"),
        table.c.environment_id == sa.bindparam("w_environment"),
        table.c[run_column] == sa.bindparam("w_run"),
    ]


_UPDATE_RUN = (
    sa.update(runs)
    .where(*_where_scoped(runs, "id"), runs.c.version == sa.bindparam("w_version"))
    .values(
        status=sa.bindparam("status"),
        snapshot=sa.bindparam("snapshot"),
        version=runs.c.version + 1,
        last_seq=sa.bindparam("last_seq"),
        last_hash=sa.bindparam("last_hash"),
        updated_at=sa.bindparam("updated_at"),
        finished_at=sa.bindparam("finished_at"),
    )
)

_DELETE_DONE = sa.delete(due_work).where(
    *_where_scoped(due_work),
    due_work.c.id == sa.bindparam("w_id"),
    due_work.c.fence == sa.bindparam("w_fence"),
)

_DROP_WORK = sa.delete(due_work).where(
    *_where_scoped(due_work),
    due_work.c.kind == sa.bindparam("w_kind"),
    due_work.c.key == sa.bindparam("w_key"),
)

_DELIVER_SIGNAL = (
    sa.update(signals)
    .where(
        *_where_scoped(signals),
        signals.c.id == sa.bindparam("w_id"),
        signals.c.delivered_at.is_(None),
    )
    .values(delivered_at=sa.bindparam("delivered_at"))
)


def _by_scope(batch: Sequence[RunCommit]) -> dict[Scope, list[str]]:
    ids: dict[Scope, set[str]] = {}
    for commit in batch:
        ids.setdefault(commit.scope, set()).add(commit.run_id)
    return {scope: sorted(run_ids) for scope, run_ids in ids.items()}


def _lock_heads(
    conn: sa.Connection, batch: Sequence[RunCommit]
) -> dict[_RunKey, tuple[int, int, str]]:
    """version, last_seq and last_hash of the batch's runs, locked, in one query."""
    query = (
        sa.select(
            runs.c.tenant_id,
            runs.c.environment_id,
            runs.c.id,
            runs.c.version,
            runs.c.last_seq,
            runs.c.last_hash,
        )
        .where(
            sa.or_(
                *(
                    sa.and_(
                        runs.c.tenant_id == scope.tenant_id,
                        runs.c.environment_id == scope.environment_id,
                        runs.c.id.in_(run_ids),
                    )
                    for scope, run_ids in _by_scope(batch).items()
                )
            )
        )
        .order_by(runs.c.id)  # rows are locked in this order: no lock-order deadlocks
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {
        (row.tenant_id, row.environment_id, row.id): (row.version, row.last_seq, row.last_hash)
        for row in conn.execute(query)
    }


def _lock_done_work(
    conn: sa.Connection, batch: Sequence[RunCommit]
) -> dict[int, tuple[str, str, str, int]]:
    """(tenant, environment, run, fence) of the work rows the batch finished, locked."""
    finishing = [c for c in batch if c.done_work]
    if not finishing:
        return {}
    query = (
        sa.select(
            due_work.c.id,
            due_work.c.tenant_id,
            due_work.c.environment_id,
            due_work.c.run_id,
            due_work.c.fence,
        )
        .where(
            due_work.c.id.in_(sorted({work_id for c in finishing for work_id, _ in c.done_work})),
            sa.or_(
                *(
                    sa.and_(
                        due_work.c.tenant_id == scope.tenant_id,
                        due_work.c.environment_id == scope.environment_id,
                        due_work.c.run_id.in_(run_ids),
                    )
                    for scope, run_ids in _by_scope(finishing).items()
                )
            ),
        )
        .order_by(due_work.c.id)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {
        row.id: (row.tenant_id, row.environment_id, row.run_id, row.fence)
        for row in conn.execute(query)
    }


@dataclass
class _Pending:
    """The writes of accepted RunCommits, sent one executemany per statement."""

    done: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    drops: list[dict[str, Any]] = field(default_factory=list)
    work: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    signals: list[dict[str, Any]] = field(default_factory=list)
    runs: set[_RunKey] = field(default_factory=set)  # runs with writes in here
    leased_by: dict[tuple[Any, ...], int] = field(default_factory=dict)  # work -> batch index

    def add(self, index: int, c: RunCommit, update: dict[str, Any], events: list[Any]) -> None:
        where = {
            "w_tenant": c.scope.tenant_id,
            "w_environment": c.scope.environment_id,
            "w_run": c.run_id,
        }
        now = update["updated_at"]
        self.runs.add((c.scope.tenant_id, c.scope.environment_id, c.run_id))
        self.done.extend({**where, "w_id": i, "w_fence": f} for i, f in set(c.done_work))
        self.updates.append({**where, **update})
        self.drops.extend({**where, "w_kind": k, "w_key": v} for k, v in c.drop_work_keys or ())
        for item in c.add_work:
            row = work_queries.work_row(c.scope, c.run_id, item, now)
            self.work.append(row)
            if row["lease_owner"] is not None:
                self.leased_by[(row["run_id"], row["kind"], row["key"], row["attempt"])] = index
        self.events.extend(events)
        self.signals.extend(
            {**where, "w_id": signal_id, "delivered_at": now} for signal_id in c.signals_delivered
        )

    def flush(self, conn: sa.Connection) -> dict[int, list[WorkItem]]:
        """Write everything; returns the work inserted leased, by batch index."""
        if self.done and conn.execute(_DELETE_DONE, self.done).rowcount != len(self.done):
            raise _moved("finished work rows")
        # Drops before adds: a commit may replace a row (drop attempt 1, add attempt 2).
        if self.drops:
            conn.execute(_DROP_WORK, self.drops)
        leased = work_queries.insert_work(conn, self.work, known_runs=self.runs)
        if self.events:
            conn.execute(_INSERT_EVENT, self.events)
        if self.signals:
            conn.execute(_DELIVER_SIGNAL, self.signals)
        if self.updates and conn.execute(_UPDATE_RUN, self.updates).rowcount != len(self.updates):
            raise _moved("runs")
        by_index: dict[int, list[WorkItem]] = {}
        for item in leased:
            identity = (item.run_id, item.kind, item.key, item.attempt)
            by_index.setdefault(self.leased_by[identity], []).append(item)
        return by_index


def _moved(what: str) -> StoreError:
    # The rows were locked and checked in this transaction; this cannot happen unless
    # something outside Legato changed them.  Retrying the whole batch is safe.
    return StoreError(f"locked {what} changed during a group commit; retry the batch")


def _conflict(reason: str) -> CommitResult:
    return CommitResult(ok=False, conflict=True, version=None, last_seq=None, reason=reason)


def commit(conn: sa.Connection, batch: Sequence[RunCommit]) -> list[CommitResult]:
    """Apply every RunCommit in this one transaction; each succeeds or conflicts alone.

    See the comment above for how.  Each RunCommit's finished work must still be leased
    under the given fence (else ``CONFLICT_LEASE``, checked first: an outcome whose lease
    was lost is to be dropped whatever happened to the run), its run must be at
    ``expected_version`` (else ``CONFLICT_VERSION``) and exist in its scope (else
    ``CONFLICT_NOT_FOUND``).  Events continue the run's chain.  Results come back in the
    batch's order; a run may appear more than once (its commits apply in batch order).
    """
    if not batch:
        return []
    heads = _lock_heads(conn, batch)
    fences = _lock_done_work(conn, batch)
    results: dict[int, CommitResult] = {}
    accepted: dict[int, tuple[int, int]] = {}
    leased: dict[int, list[WorkItem]] = {}
    pending = _Pending()

    for index, c in enumerate(batch):
        key: _RunKey = (c.scope.tenant_id, c.scope.environment_id, c.run_id)
        if key in pending.runs:
            # The same run again: write its earlier commit first, and re-read the work
            # rows that commit may have dropped.
            leased.update(pending.flush(conn))
            pending = _Pending()
            fences = _lock_done_work(conn, batch[index:])
        head = heads.get(key)
        if head is None:
            results[index] = _conflict(CONFLICT_NOT_FOUND)
            continue
        if any(fences.get(i) != (*key, f) for i, f in c.done_work):
            results[index] = _conflict(CONFLICT_LEASE)
            continue
        version, last_seq, last_hash = head
        if version != c.expected_version:
            results[index] = _conflict(CONFLICT_VERSION)
            continue
        event_rows, new_seq, new_hash = _event_rows(
            c.scope, c.run_id, last_seq, last_hash, c.events
        )
        update = {
            "w_version": c.expected_version,
            "status": c.status,
            "snapshot": dumps(c.snapshot, what="run snapshot"),
            "last_seq": new_seq,
            "last_hash": new_hash,
            "updated_at": ts(c.now, what="RunCommit.now"),
            "finished_at": ts_or_none(c.finished_at, what="RunCommit.finished_at"),
        }
        pending.add(index, c, update, event_rows)
        heads[key] = (version + 1, new_seq, new_hash)
        for work_id, _ in c.done_work:
            fences.pop(work_id, None)
        accepted[index] = (version + 1, new_seq)
    leased.update(pending.flush(conn))

    for index, (version, last_seq) in accepted.items():
        results[index] = CommitResult(
            ok=True,
            conflict=False,
            version=version,
            last_seq=last_seq,
            leased=tuple(leased.get(index, ())),
        )
    return [results[index] for index in range(len(batch))]
