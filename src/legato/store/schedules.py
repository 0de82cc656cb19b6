"""Cron progress: the ``schedules`` table.

One row per scheduled workflow: the schedule it was computed for (``schedule``: the cron
expression and time zone), the latest tick fired or deliberately skipped (``last_tick``)
and the next tick due (``next_tick``).  The row is only progress: what makes a tick fire
once is its run's deterministic id (``triggers/cron.py``).  Updates only move a row
forward, so a slow scheduler can never move it back.

Like ``runs_with_status`` these are infrastructure queries of the scheduler, which serves
every tenant: the reads are across tenants, and every row still carries its tenant and
environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from legato.store._codec import parse_ts, parse_ts_or_none, ts, ts_or_none
from legato.store._db import dialect_insert
from legato.store.schema import schedules as t
from legato.store.scope import Scope


@dataclass(frozen=True, slots=True)
class ScheduleProgress:
    """Where a workflow's schedule stands."""

    scope: Scope
    workflow_id: str
    schedule: str
    last_tick: datetime | None
    next_tick: datetime
    updated_at: datetime


def _progress(row: sa.Row[Any]) -> ScheduleProgress:
    return ScheduleProgress(
        scope=Scope(row.tenant_id, row.environment_id),
        workflow_id=row.workflow_id,
        schedule=row.schedule,
        last_tick=parse_ts_or_none(row.last_tick),
        next_tick=parse_ts(row.next_tick),
        updated_at=parse_ts(row.updated_at),
    )


def _key(scope: Scope, workflow_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        t.c.tenant_id == scope.tenant_id,
        t.c.environment_id == scope.environment_id,
        t.c.workflow_id == workflow_id,
    )


def list_progress(conn: sa.Connection) -> list[ScheduleProgress]:
    """Every row, across tenants."""
    query = sa.select(t).order_by(t.c.tenant_id, t.c.environment_id, t.c.workflow_id)
    return [_progress(row) for row in conn.execute(query)]


def get_progress(conn: sa.Connection, scope: Scope, workflow_id: str) -> ScheduleProgress | None:
    row = conn.execute(sa.select(t).where(_key(scope, workflow_id))).first()
    return None if row is None else _progress(row)


def advance(
    conn: sa.Connection,
    scope: Scope,
    workflow_id: str,
    *,
    schedule: str,
    last_tick: datetime | None,
    next_tick: datetime,
    now: datetime,
) -> bool:
    """Record progress: insert the row, or move it forward.  A row is moved only when its
    ``next_tick`` is earlier than this one, or it was computed for another schedule.
    Returns whether anything was written."""
    values = {
        "schedule": schedule,
        "last_tick": ts_or_none(last_tick, what="last_tick"),
        "next_tick": ts(next_tick, what="next_tick"),
        "updated_at": ts(now, what="now"),
    }
    inserted = conn.execute(
        dialect_insert(conn, t)
        .values(
            tenant_id=scope.tenant_id,
            environment_id=scope.environment_id,
            workflow_id=workflow_id,
            **values,
        )
        .on_conflict_do_nothing()
        .returning(t.c.workflow_id)
    ).first()
    if inserted is not None:
        return True
    if last_tick is None:
        values.pop("last_tick")  # re-anchoring keeps the last tick fired
    result = conn.execute(
        sa.update(t)
        .where(
            _key(scope, workflow_id),
            sa.or_(t.c.schedule != schedule, t.c.next_tick < values["next_tick"]),
        )
        .values(**values)
    )
    return bool(result.rowcount)


def delete_progress(conn: sa.Connection, scope: Scope, workflow_id: str) -> int:
    """Forget a workflow's progress (its schedule starts afresh from its ``since``)."""
    return conn.execute(sa.delete(t).where(_key(scope, workflow_id))).rowcount or 0
