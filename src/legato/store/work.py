"""Due work (steps, timers, children...), leases with fencing tokens, and workers.

``claim_due``, ``extend_leases``, ``release_leases``, ``next_visible_at`` and the worker
registry are worker infrastructure: they are the only queries not scoped by tenant and
environment (a worker serves every tenant), and the rows they return carry their scope.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import sqlalchemy as sa

from legato.store import _raw
from legato.store._codec import dumps_fast, loads
from legato.store._db import dialect_insert
from legato.store.records import NewWork, WorkItem
from legato.store.schema import due_work as w
from legato.store.schema import workers
from legato.store.scope import Scope

WORK_COLUMNS = (
    "id",
    "tenant_id",
    "environment_id",
    "run_id",
    "kind",
    "key",
    "attempt",
    "payload",
    "visible_at",
    "fence",
    "lease_owner",
    "lease_expires_at",
)
_COLS = ", ".join(WORK_COLUMNS)
_INSERT_COLUMNS = (
    "tenant_id",
    "environment_id",
    "run_id",
    "kind",
    "key",
    "attempt",
    "payload",
    "visible_at",
    "lease_owner",
    "lease_expires_at",
    "fence",
    "created_at",
)


def work_item(row: Any, payload_of: dict[tuple[Any, ...], Any] | None = None) -> WorkItem:
    """A WorkItem from a SQLAlchemy row or a driver tuple in WORK_COLUMNS order.
    ``payload_of`` maps (run_id, kind, key, attempt) to a payload already in hand (a row
    this transaction inserted), so its JSON text is not parsed again."""
    (id_, tenant, environment, run_id, kind, key, attempt, payload, visible, fence, owner, exp) = (
        tuple(row)
    )
    if payload_of is not None and (run_id, kind, key, attempt) in payload_of:
        payload = payload_of[(run_id, kind, key, attempt)]
    else:
        payload = loads(payload)
    return WorkItem(
        id=id_,
        scope=Scope(tenant, environment),
        run_id=run_id,
        kind=kind,
        key=key,
        attempt=attempt,
        payload=payload,
        visible_at=float(visible),
        fence=fence,
        lease_owner=owner,
        lease_expires_at=None if exp is None else float(exp),
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
        "payload": dumps_fast(item.payload, what=f"payload of work {item.kind}:{item.key}"),
        "payload_value": item.payload,  # not a column: the leased rows' WorkItems take it
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
    cur = _raw.cursor(conn)
    found: set[tuple[str, str, str]] = set()
    for key in sorted(keys):
        cur.execute(
            _raw.sql(
                conn, "SELECT 1 FROM runs WHERE tenant_id = ? AND environment_id = ? AND id = ?"
            ),
            key,
        )
        if cur.fetchone() is not None:
            found.add(key)
    return found


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
    cur = _raw.cursor(conn)
    plain = [_values(row) for row in rows if row["lease_owner"] is None]
    leased = [_values(row) for row in rows if row["lease_owner"] is not None]
    if plain:
        cur.executemany(_raw.sql(conn, _INSERT_WORK), plain)
        if _raw.is_pg(conn):
            # Workers LISTEN: they claim it at once instead of at their next poll. The
            # notice goes out when (and only if) this transaction commits.
            cur.execute(f"NOTIFY {WORK_CHANNEL}")
    items: list[WorkItem] = []
    payload_of: dict[tuple[Any, ...], Any] = {}
    for row in rows:
        if row["lease_owner"] is not None:
            identity = (row["run_id"], row["kind"], row["key"], row["attempt"])
            payload_of.setdefault(identity, row["payload_value"])
    for part in _raw.chunks(leased):
        row_marks = f"({_raw.marks(len(_INSERT_COLUMNS))})"
        text = (
            f"INSERT INTO due_work ({', '.join(_INSERT_COLUMNS)}) "
            f"VALUES {', '.join([row_marks] * len(part))} "
            f"ON CONFLICT (run_id, kind, key, attempt) DO NOTHING RETURNING {_COLS}"
        )
        cur.execute(_raw.sql(conn, text), [value for row in part for value in row])
        items.extend(work_item(found, payload_of) for found in cur.fetchall())
    return items


_INSERT_WORK = (
    f"INSERT INTO due_work ({', '.join(_INSERT_COLUMNS)}) "
    f"VALUES ({_raw.marks(len(_INSERT_COLUMNS))}) "
    "ON CONFLICT (run_id, kind, key, attempt) DO NOTHING"
)


WORK_CHANNEL = "legato_work"
"""PostgreSQL: the channel notified when claimable work is inserted."""


_values = operator.itemgetter(*_INSERT_COLUMNS)
"""A work row's values in _INSERT_COLUMNS order (one C call per row)."""


def _scoped(scope: Scope, run_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        w.c.tenant_id == scope.tenant_id,
        w.c.environment_id == scope.environment_id,
        w.c.run_id == run_id,
    )


def list_work(conn: sa.Connection, scope: Scope, run_id: str) -> list[WorkItem]:
    columns = [w.c[name] for name in WORK_COLUMNS]
    query = sa.select(*columns).where(_scoped(scope, run_id)).order_by(w.c.id)
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
    exclude: tuple[str, ...] = (),
) -> list[WorkItem]:
    if limit <= 0 or (kinds is not None and not kinds):
        return []
    kind_filter = "" if kinds is None else f" AND kind IN ({_raw.marks(len(kinds))})"
    if exclude:
        kind_filter += f" AND kind NOT IN ({_raw.marks(len(exclude))})"
    # Rows another worker is claiming right now are skipped, not waited for, on
    # PostgreSQL.  (On SQLite the transaction's BEGIN IMMEDIATE already excludes other
    # writers.)
    lock = " FOR UPDATE SKIP LOCKED" if _raw.is_pg(conn) else ""
    text = (
        "UPDATE due_work SET lease_owner = ?, lease_expires_at = ?, fence = fence + 1 "
        "WHERE id IN (SELECT id FROM due_work WHERE visible_at <= ? "
        f"AND (lease_owner IS NULL OR lease_expires_at < ?){kind_filter} "
        f"ORDER BY visible_at, id LIMIT ?{lock}) RETURNING {_COLS}"
    )
    cur = _raw.cursor(conn)
    params = (owner, now + lease_seconds, now, now, *(kinds or ()), *exclude, limit)
    cur.execute(_raw.sql(conn, text), params)
    items = [work_item(row) for row in cur.fetchall()]
    items.sort(key=lambda item: (item.visible_at, item.id))
    return items


BOOKKEEPING = ("timer", "cancel", "child_done")
"""Work kinds that only record an event (no step runs): a worker claims them beside its
concurrency limit."""


def claim_round(
    conn: sa.Connection,
    owner: str,
    *,
    now: float,
    limit: int,
    bookkeeping_limit: int,
    lease_seconds: float,
) -> tuple[list[WorkItem], float | None]:
    """One claim loop's round in one transaction: up to ``bookkeeping_limit`` due rows of
    the BOOKKEEPING kinds, up to ``limit`` of the others, and when the next row becomes
    claimable after those (``next_visible_at``)."""
    items = claim_due(
        conn, owner, now=now, limit=bookkeeping_limit, lease_seconds=lease_seconds,
        kinds=BOOKKEEPING,
    )  # fmt: skip
    items += claim_due(
        conn, owner, now=now, limit=limit, lease_seconds=lease_seconds, exclude=BOOKKEEPING
    )
    return items, next_visible_at(conn)


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
    cur = _raw.cursor(conn)
    cur.execute(_NEXT_VISIBLE)
    times = [value for value in cur.fetchone() if value is not None]
    return float(min(times)) if times else None


_NEXT_VISIBLE = (
    "SELECT (SELECT min(visible_at) FROM due_work WHERE lease_owner IS NULL), "
    "(SELECT min(lease_expires_at) FROM due_work WHERE lease_owner IS NOT NULL)"
)


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
