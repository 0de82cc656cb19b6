"""Signals sent to runs, kept until a commit marks them delivered."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from legato.errors import NotFoundError
from legato.store._codec import dumps, loads, parse_ts, parse_ts_or_none, ts
from legato.store.records import SignalRecord
from legato.store.schema import runs, signals
from legato.store.scope import Scope


def _record(row: sa.Row[Any]) -> SignalRecord:
    return SignalRecord(
        id=row.id,
        scope=Scope(row.tenant_id, row.environment_id),
        run_id=row.run_id,
        name=row.name,
        payload=loads(row.payload),
        correlation=row.correlation,
        created_at=parse_ts(row.created_at),
        delivered_at=parse_ts_or_none(row.delivered_at),
    )


def add_signal(
    conn: sa.Connection,
    scope: Scope,
    *,
    run_id: str,
    name: str,
    payload: Any,
    correlation: str | None = None,
    now: datetime,
) -> SignalRecord:
    exists = conn.execute(
        sa.select(runs.c.id).where(
            runs.c.tenant_id == scope.tenant_id,
            runs.c.environment_id == scope.environment_id,
            runs.c.id == run_id,
        )
    ).first()
    if exists is None:
        raise NotFoundError(
            f"cannot signal run {run_id!r}: it does not exist in {scope}",
            details={
                "run_id": run_id,
                "signal": name,
                "tenant_id": scope.tenant_id,
                "environment_id": scope.environment_id,
            },
        )
    values = {
        "tenant_id": scope.tenant_id,
        "environment_id": scope.environment_id,
        "run_id": run_id,
        "name": name,
        "payload": dumps(payload, what=f"payload of signal {name}"),
        "correlation": correlation,
        "created_at": ts(now, what="now"),
        "delivered_at": None,
    }
    row = conn.execute(sa.insert(signals).values(values).returning(*signals.c)).one()
    return _record(row)


def pending_signals(conn: sa.Connection, scope: Scope, run_id: str) -> list[SignalRecord]:
    """The run's undelivered signals, oldest first."""
    query = (
        sa.select(signals)
        .where(
            signals.c.tenant_id == scope.tenant_id,
            signals.c.environment_id == scope.environment_id,
            signals.c.run_id == run_id,
            signals.c.delivered_at.is_(None),
        )
        .order_by(signals.c.id)
    )
    return [_record(row) for row in conn.execute(query)]


def undelivered_signals(conn: sa.Connection, limit: int) -> list[SignalRecord]:
    """Infrastructure, across tenants: undelivered signals, oldest first."""
    query = (
        sa.select(signals)
        .where(signals.c.delivered_at.is_(None))
        .order_by(signals.c.id)
        .limit(limit)
    )
    return [_record(row) for row in conn.execute(query)]
