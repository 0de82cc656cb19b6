"""Runs and their hash-chained event logs, including the group commit.

Events are append-only: no code path here updates or deletes an event row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from legato.errors import ConflictError, LegatoError, NotFoundError, StoreError, UsageError
from legato.store import _raw
from legato.store import definitions as definition_queries
from legato.store import work as work_queries
from legato.store._codec import (
    dumps,
    dumps_snapshot,
    loads,
    parse_ts,
    parse_ts_or_none,
    ts,
    ts_or_none,
)
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
    StaleVersionError,
    WorkItem,
)
from legato.store.schema import events, runs
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


RUN_COLUMNS = (
    "tenant_id",
    "environment_id",
    "id",
    "workflow",
    "workflow_version",
    "status",
    "snapshot",
    "version",
    "last_seq",
    "last_hash",
    "parent_run_id",
    "created_at",
    "updated_at",
    "finished_at",
)
_GET_RUN = (
    f"SELECT {', '.join(RUN_COLUMNS)} FROM runs "
    "WHERE tenant_id = ? AND environment_id = ? AND id = ?"
)
_INSERT_RUN = (
    f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({_raw.marks(len(RUN_COLUMNS))}) "
    "ON CONFLICT DO NOTHING"
)
_EVENT_COLUMNS = (
    "tenant_id",
    "environment_id",
    "run_id",
    "seq",
    "type",
    "at",
    "payload",
    "prev_hash",
    "hash",
)
_INSERT_EVENT_TEXT = (
    f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES ({_raw.marks(len(_EVENT_COLUMNS))})"
)


def _event_rows(
    scope: Scope, run_id: str, last_seq: int, last_hash: str, new: Sequence[NewEvent]
) -> tuple[list[tuple[Any, ...]], int, str]:
    """The rows (in _EVENT_COLUMNS order) for ``new`` events continuing a chain; and
    the chain's new head."""
    rows = []
    for event in new:
        last_seq += 1
        at = ts(event.at, what="NewEvent.at")
        payload = dumps(event.payload, what=f"payload of event {event.type}")
        digest = event_hash(last_hash, run_id, last_seq, event.type, at, payload)
        rows.append(
            (
                scope.tenant_id,
                scope.environment_id,
                run_id,
                last_seq,
                event.type,
                at,
                payload,
                last_hash,
                digest,
            )
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
    snapshot: dict[str, Any] | str,
    events: Sequence[NewEvent] = (),
    work: Sequence[NewWork] = (),
    parent_run_id: str | None = None,
    now: datetime,
    latest_only: bool = False,
) -> RunRecord:
    now_text = ts(now, what="now")
    snapshot_text = dumps_snapshot(snapshot)
    event_rows, last_seq, last_hash = _event_rows(scope, run_id, 0, GENESIS, events)
    values = (
        scope.tenant_id,
        scope.environment_id,
        run_id,
        workflow,
        workflow_version,
        status,
        snapshot_text,
        1,
        last_seq,
        last_hash,
        parent_run_id,
        now_text,
        now_text,
        None,
    )
    if latest_only:
        newest = definition_queries.latest_version(conn, scope, workflow)
        if newest != workflow_version:
            raise StaleVersionError(
                f"workflow {workflow!r} has a newer version {newest!r} than "
                f"{workflow_version!r}; start it again",
                details={"workflow": workflow, "version": workflow_version, "newest": newest},
            )
    # Everything that can refuse this run is done before its first write: create_runs
    # relies on it to refuse one run of a group without a SAVEPOINT.
    work_rows = [work_queries.work_row(scope, run_id, item, now_text) for item in work]
    cur = _raw.cursor(conn)
    cur.execute(_raw.sql(conn, _INSERT_RUN), values)
    if cur.rowcount != 1:
        raise ConflictError(
            f"a run with id {run_id!r} already exists; run ids are unique",
            details={"run_id": run_id},
        )
    if event_rows:
        cur.executemany(_raw.sql(conn, _INSERT_EVENT_TEXT), event_rows)
    leased = work_queries.insert_work(
        conn, work_rows, known_runs={(scope.tenant_id, scope.environment_id, run_id)}
    )
    return RunRecord(
        scope=scope,
        id=run_id,
        workflow=workflow,
        workflow_version=workflow_version,
        status=status,
        snapshot=None if isinstance(snapshot, str) else snapshot,
        version=1,
        last_seq=last_seq,
        last_hash=last_hash,
        parent_run_id=parent_run_id,
        created_at=parse_ts(now_text),
        updated_at=parse_ts(now_text),
        finished_at=None,
        leased_work=tuple(leased),
    )


def create_runs(
    conn: sa.Connection, requests: Sequence[dict[str, Any]]
) -> list[RunRecord | LegatoError]:
    """``create_run`` for each request (its keyword arguments) in this one transaction.
    A run whose id is taken, whose values are unusable or whose version is no longer the
    newest gets its error in the list and the others are created: each is found before
    anything of that run is written."""
    out: list[RunRecord | LegatoError] = []
    for request in requests:
        try:
            out.append(create_run(conn, **request))
        except (ConflictError, UsageError, NotFoundError) as exc:
            out.append(exc)
    return out


def get_run(conn: sa.Connection, scope: Scope, run_id: str) -> RunRecord:
    cur = _raw.cursor(conn)
    cur.execute(_raw.sql(conn, _GET_RUN), (scope.tenant_id, scope.environment_id, run_id))
    row = cur.fetchone()
    if row is None:
        raise _not_found(scope, run_id)
    (tenant, environment, id_, workflow, version_name, status, snapshot, version, seq, head,
     parent, created, updated, finished) = row  # fmt: skip
    return RunRecord(
        scope=Scope(tenant, environment),
        id=id_,
        workflow=workflow,
        workflow_version=version_name,
        status=status,
        snapshot=loads(snapshot),
        version=version,
        last_seq=seq,
        last_hash=head,
        parent_run_id=parent,
        created_at=parse_ts(created),
        updated_at=parse_ts(updated),
        finished_at=parse_ts_or_none(finished),
    )


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
        found = conn.execute(head_query).first()
        if found is None:
            raise _not_found(scope, run_id)
        head = found
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

_SCOPED = "tenant_id = ? AND environment_id = ?"
_UPDATE_RUN = (
    "UPDATE runs SET status = ?, snapshot = ?, version = version + 1, last_seq = ?, "
    f"last_hash = ?, updated_at = ?, finished_at = ? WHERE {_SCOPED} AND id = ? AND version = ?"
)
# Most commits leave the status as it is. SQLite rewrites every index on a column the
# SET clause names, changed or not: leaving `status` out spares two index pages (and
# their WAL frames, and their share of the fsync) per commit.
_UPDATE_RUN_KEEP_STATUS = (
    "UPDATE runs SET snapshot = ?, version = version + 1, last_seq = ?, "
    f"last_hash = ?, updated_at = ?, finished_at = ? WHERE {_SCOPED} AND id = ? AND version = ?"
)
_DELETE_DONE = f"DELETE FROM due_work WHERE {_SCOPED} AND run_id = ? AND id = ? AND fence = ?"
_DROP_WORK = f"DELETE FROM due_work WHERE {_SCOPED} AND run_id = ? AND kind = ? AND key = ?"
_DELIVER_SIGNAL = (
    f"UPDATE signals SET delivered_at = ? WHERE {_SCOPED} AND run_id = ? AND id = ? "
    "AND delivered_at IS NULL"
)


def _by_scope(batch: Sequence[RunCommit]) -> dict[Scope, list[str]]:
    ids: dict[Scope, set[str]] = {}
    for commit in batch:
        ids.setdefault(commit.scope, set()).add(commit.run_id)
    return {scope: sorted(run_ids) for scope, run_ids in ids.items()}


def _scoped_in(column: str, by_scope: dict[Scope, list[str]]) -> tuple[str, list[Any]]:
    """``(tenant = ? AND environment = ? AND column IN (...)) OR ...`` and its values."""
    clauses: list[str] = []
    values: list[Any] = []
    for scope, run_ids in by_scope.items():
        clauses.append(f"({_SCOPED} AND {column} IN ({_raw.marks(len(run_ids))}))")
        values += [scope.tenant_id, scope.environment_id, *run_ids]
    return " OR ".join(clauses), values


def _lock_heads(
    conn: sa.Connection, batch: Sequence[RunCommit]
) -> dict[_RunKey, tuple[int, int, str, str]]:
    """version, last_seq, last_hash and status of the batch's runs, locked, in one query."""
    where, values = _scoped_in("id", _by_scope(batch))
    # Rows are locked in id order: no lock-order deadlocks between workers. (On SQLite
    # the transaction's BEGIN IMMEDIATE already holds the only write lock.)
    lock = " FOR UPDATE" if _raw.is_pg(conn) else ""
    cur = _raw.cursor(conn)
    cur.execute(
        _raw.sql(
            conn,
            "SELECT tenant_id, environment_id, id, version, last_seq, last_hash, status FROM runs "
            f"WHERE {where} ORDER BY id{lock}",
        ),
        values,
    )
    return {(t, e, r): (v, seq, head, status) for t, e, r, v, seq, head, status in cur.fetchall()}


def _lock_done_work(
    conn: sa.Connection, batch: Sequence[RunCommit]
) -> dict[int, tuple[str, str, str, int]]:
    """(tenant, environment, run, fence) of the work rows the batch finished, locked."""
    finishing = [c for c in batch if c.done_work]
    if not finishing:
        return {}
    ids = sorted({work_id for c in finishing for work_id, _ in c.done_work})
    where, values = _scoped_in("run_id", _by_scope(finishing))
    lock = " FOR UPDATE" if _raw.is_pg(conn) else ""
    cur = _raw.cursor(conn)
    cur.execute(
        _raw.sql(
            conn,
            "SELECT id, tenant_id, environment_id, run_id, fence FROM due_work "
            f"WHERE id IN ({_raw.marks(len(ids))}) AND ({where}) ORDER BY id{lock}",
        ),
        [*ids, *values],
    )
    return {id_: (t, e, r, fence) for id_, t, e, r, fence in cur.fetchall()}


@dataclass
class _Pending:
    """The writes of accepted RunCommits, sent one executemany per statement."""

    done: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    kept: list[tuple[Any, ...]] = field(default_factory=list)  # updates keeping the status
    drops: list[tuple[Any, ...]] = field(default_factory=list)
    work: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    signals: list[tuple[Any, ...]] = field(default_factory=list)
    runs: set[_RunKey] = field(default_factory=set)  # runs with writes in here
    leased_by: dict[tuple[Any, ...], int] = field(default_factory=dict)  # work -> batch index

    def add(
        self,
        index: int,
        c: RunCommit,
        update: tuple[Any, ...],
        events: list[Any],
        now: str,
        keep_status: bool,
    ) -> None:
        where = (c.scope.tenant_id, c.scope.environment_id, c.run_id)
        self.runs.add(where)
        self.done.extend((*where, i, f) for i, f in set(c.done_work))
        if keep_status:
            self.kept.append((*update[1:], *where, c.expected_version))
        else:
            self.updates.append((*update, *where, c.expected_version))
        self.drops.extend((*where, k, v) for k, v in c.drop_work_keys or ())
        for item in c.add_work:
            row = work_queries.work_row(c.scope, c.run_id, item, now)
            self.work.append(row)
            if row["lease_owner"] is not None:
                self.leased_by[(row["run_id"], row["kind"], row["key"], row["attempt"])] = index
        self.events.extend(events)
        self.signals.extend((now, *where, signal_id) for signal_id in c.signals_delivered)

    def flush(self, conn: sa.Connection) -> dict[int, list[WorkItem]]:
        """Write everything; returns the work inserted leased, by batch index."""
        cur = _raw.cursor(conn)
        if self.done:
            cur.executemany(_raw.sql(conn, _DELETE_DONE), self.done)
            if cur.rowcount != len(self.done):  # both drivers report executemany's total
                raise _moved("finished work rows")
        # Drops before adds: a commit may replace a row (drop attempt 1, add attempt 2).
        if self.drops:
            cur.executemany(_raw.sql(conn, _DROP_WORK), self.drops)
        leased = work_queries.insert_work(conn, self.work, known_runs=self.runs)
        if self.events:
            cur.executemany(_raw.sql(conn, _INSERT_EVENT_TEXT), self.events)
        if self.signals:
            cur.executemany(_raw.sql(conn, _DELIVER_SIGNAL), self.signals)
        for statement, rows in ((_UPDATE_RUN, self.updates), (_UPDATE_RUN_KEEP_STATUS, self.kept)):
            if rows:
                cur.executemany(_raw.sql(conn, statement), rows)
                if cur.rowcount != len(rows):
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
        version, last_seq, last_hash, status = head
        if version != c.expected_version:
            results[index] = _conflict(CONFLICT_VERSION)
            continue
        event_rows, new_seq, new_hash = _event_rows(
            c.scope, c.run_id, last_seq, last_hash, c.events
        )
        now = ts(c.now, what="RunCommit.now")
        update = (
            c.status,
            dumps_snapshot(c.snapshot),
            new_seq,
            new_hash,
            now,
            ts_or_none(c.finished_at, what="RunCommit.finished_at"),
        )
        pending.add(index, c, update, event_rows, now, keep_status=c.status == status)
        heads[key] = (version + 1, new_seq, new_hash, c.status)
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
