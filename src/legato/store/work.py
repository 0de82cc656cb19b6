"""Due work (steps, timers, children...), leases with fencing tokens, and workers.

``claim_due``, ``extend_leases``, ``release_leases``, ``next_visible_at`` and the worker
registry are worker infrastructure: they are the only queries not scoped by tenant and
environment (a worker serves every tenant), and the rows they return carry their scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import sqlalchemy as sa

from legato.store._codec import dumps, loads
from legato.store._db import dialect_insert
from legato.store.records import NewWork, WorkItem
from legato.store.schema import due_work as w
from legato.store.schema import runs, workers
from legato.store.scope import Scope


def work_item(row: sa.Row[Any]) -> WorkItem:
    return WorkItem(
        id=row.id,
        scope=Scope(row.tenant_id, row.environment_id),
        run_id=row.run_id,
        kind=row.kind,
        key=row.key,
        attempt=row.attempt,
        payload=loads(row.payload),
        visible_at=float(row.visible_at),
        fence=row.fence,
        lease_owner=row.lease_owner,
        lease_expires_at=None if row.lease_expires_at is None else float(row.lease_expires_at),
    )


def work_row(scope: Scope, run_id: str, item: NewWork, now: str) -> dict[str, Any]:
    expires = None
    if item.lease_owner is not None and item.lease_seconds is not None:
        expires = item.visible_at + item.lease_seconds
    return {
        "tenant_id": scope.tenant_id,
        "environment_id": scope.environment_id,
        "run_id": item.run_id or run_id,
        "kind": item.kind,
        "key": item.key,
        "attempt": item.attempt,
        "payload": dumps(item.payload, what=f"payload of work {item.kind}:{item.key}"),
        "visible_at": float(item.visible_at),
        "lease_owner": item.lease_owner,
        "lease_expires_at": expires,
        "fence": 0 if expires is None else 1,
        "created_at": now,
    }


def _run_key(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row["tenant_id"], row["environment_id"], row["run_id"])


def _existing_runs(
    conn: sa.Connection, keys: AbstractSet[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    query = sa.select(runs.c.tenant_id, runs.c.environment_id, runs.c.id).where(
        sa.or_(
            *(
                sa.and_(
                    runs.c.tenant_id == tenant,
                    runs.c.environment_id == environment,
                    runs.c.id == run_id,
                )
                for tenant, environment, run_id in sorted(keys)
            )
        )
    )
    return {(row.tenant_id, row.environment_id, row.id) for row in conn.execute(query)}


def insert_work(
    conn: sa.Connection,
    rows: Sequence[dict[str, Any]],
    known_runs: AbstractSet[tuple[str, str, str]],
) -> list[WorkItem]:
    """Insert work rows, ignoring any whose (run_id, kind, key, attempt) already exists
    (a re-sent command must not fail a commit), and any for a run that does not exist
    in the row's scope (``known_runs`` exist; others are looked up).  Returns the rows
    inserted leased."""
    unknown = {_run_key(row) for row in rows} - known_runs
    if unknown:
        existing = known_runs | _existing_runs(conn, unknown)
        rows = [row for row in rows if _run_key(row) in existing]
    if not rows:
        return []
    stmt = dialect_insert(conn, w).on_conflict_do_nothing(
        index_elements=["run_id", "kind", "key", "attempt"]
    )
    plain = [row for row in rows if row["lease_owner"] is None]
    leased = [row for row in rows if row["lease_owner"] is not None]
    if plain:
        conn.execute(stmt, plain)
    if not leased:
        return []
    return [work_item(row) for row in conn.execute(stmt.returning(*w.c), leased)]


def _scoped(scope: Scope, run_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        w.c.tenant_id == scope.tenant_id,
        w.c.environment_id == scope.environment_id,
        w.c.run_id == run_id,
    )


def list_work(conn: sa.Connection, scope: Scope, run_id: str) -> list[WorkItem]:
    query = sa.select(w).where(_scoped(scope, run_id)).order_by(w.c.id)
    return [work_item(row) for row in conn.execute(query)]


def delete_work(conn: sa.Connection, scope: Scope, run_id: str, kind: str | None = None) -> int:
    stmt = sa.delete(w).where(_scoped(scope, run_id))
    if kind is not None:
        stmt = stmt.where(w.c.kind == kind)
    return conn.execute(stmt).rowcount


# -- worker infrastructure: not scoped by tenant (see the module docstring) -------------


def claim_due(
    conn: sa.Connection,
    owner: str,
    *,
    now: float,
    limit: int,
    lease_seconds: float,
    kinds: tuple[str, ...] | None = None,
) -> list[WorkItem]:
    if limit <= 0 or (kinds is not None and not kinds):
        return []
    pick = sa.select(w.c.id).where(
        w.c.visible_at <= now,
        sa.or_(w.c.lease_owner.is_(None), w.c.lease_expires_at < now),
    )
    if kinds is not None:
        pick = pick.where(w.c.kind.in_(kinds))
    pick = pick.order_by(w.c.visible_at, w.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        # Rows another worker is claiming right now are skipped, not waited for.  (On
        # SQLite the transaction's BEGIN IMMEDIATE already excludes other writers.)
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        sa.update(w)
        .where(w.c.id.in_(pick.scalar_subquery()))
        .values(lease_owner=owner, lease_expires_at=now + lease_seconds, fence=w.c.fence + 1)
        .returning(*w.c)
    )
    items = [work_item(row) for row in conn.execute(stmt)]
    items.sort(key=lambda item: (item.visible_at, item.id))
    return items


def extend_leases(
    conn: sa.Connection, owner: str, ids: Sequence[int], *, now: float, lease_seconds: float
) -> int:
    if not ids:
        return 0
    stmt = (
        sa.update(w)
        .where(w.c.lease_owner == owner, w.c.id.in_(list(ids)))
        .values(lease_expires_at=now + lease_seconds)
    )
    return conn.execute(stmt).rowcount


def release_leases(conn: sa.Connection, owners: Sequence[str]) -> int:
    """Make the owners' rows claimable at once.  The fence moves on, so a released
    owner that was only slow cannot finish the work under its old lease."""
    if not owners:
        return 0
    stmt = (
        sa.update(w)
        .where(w.c.lease_owner.in_(list(owners)))
        .values(lease_owner=None, lease_expires_at=None, fence=w.c.fence + 1)
    )
    return conn.execute(stmt).rowcount


def next_visible_at(conn: sa.Connection) -> float | None:
    """When the next row becomes claimable: the earliest ``visible_at`` of unleased rows
    or ``lease_expires_at`` of leased ones (in the past when some are claimable now)."""
    unleased = sa.select(sa.func.min(w.c.visible_at)).where(w.c.lease_owner.is_(None))
    leased = sa.select(sa.func.min(w.c.lease_expires_at)).where(w.c.lease_owner.is_not(None))
    row = conn.execute(sa.select(unleased.scalar_subquery(), leased.scalar_subquery())).one()
    times = [value for value in row if value is not None]
    return min(times) if times else None


def register_worker(conn: sa.Connection, owner: str, hostname: str, pid: int, now: float) -> None:
    stmt = dialect_insert(conn, workers).values(
        id=owner, hostname=hostname, pid=pid, started_at=now, heartbeat_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={"hostname": hostname, "pid": pid, "started_at": now, "heartbeat_at": now},
    )
    conn.execute(stmt)


def heartbeat(conn: sa.Connection, owner: str, now: float) -> bool:
    """False when the worker is not registered (it was found stale and removed)."""
    stmt = sa.update(workers).where(workers.c.id == owner).values(heartbeat_at=now)
    return conn.execute(stmt).rowcount == 1


def stale_workers(conn: sa.Connection, now: float, older_than: float) -> list[tuple[str, str, int]]:
    query = (
        sa.select(workers.c.id, workers.c.hostname, workers.c.pid)
        .where(workers.c.heartbeat_at < now - older_than)
        .order_by(workers.c.heartbeat_at)
    )
    return [(row.id, row.hostname, row.pid) for row in conn.execute(query)]


def remove_workers(conn: sa.Connection, owners: Sequence[str]) -> int:
    if not owners:
        return 0
    return conn.execute(sa.delete(workers).where(workers.c.id.in_(list(owners)))).rowcount
