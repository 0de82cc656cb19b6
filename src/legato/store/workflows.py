"""Workflows: a stable id over a series of immutable definition versions.

A workflow (``wf_<12 hex>``) is one row of ``workflows``: its display name, whether it is
enabled, its current version and its trigger (type, event name, schedule), copied from the
current version so that event fan-out and the cron scheduler need not read documents.
Its versions are rows of ``definitions`` whose ``name`` is the workflow's id; a run names
the workflow id and the version it started on, so updating a workflow never changes a run.

Every query here filters by tenant and environment, except the two marked
*infrastructure* (the cron scheduler's ``list_scheduled`` and the callback route's
``scope_of_run``), which look across tenants by design.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from legato.errors import ConflictError, NotFoundError
from legato.store._codec import parse_ts, ts
from legato.store._db import dialect_insert
from legato.store.definitions import _record as definition_record
from legato.store.records import DefinitionRecord, RunRecord
from legato.store.runs import _LIST_COLUMNS, _run_record
from legato.store.schema import definitions, runs, workflows
from legato.store.scope import Scope

t = workflows

ACTIVE_RUN_STATUSES = ("running", "compensating")
"""Run statuses of an execution that has not ended (EC-2 counts these)."""

Position = tuple[str, str]
"""A keyset position in a newest-first listing: (created_at as stored, id)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowRecord:
    scope: Scope
    id: str
    name: str
    description: str | None
    enabled: bool
    current_version: int
    trigger_type: str
    event_name: str | None
    schedule: str | None
    deleted: bool
    created_by: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def position(self) -> Position:
        """Where this row sits in a newest-first listing (for a ``next_cursor``)."""
        return (ts(self.created_at), self.id)


def _scoped(scope: Scope) -> sa.ColumnElement[bool]:
    return sa.and_(t.c.tenant_id == scope.tenant_id, t.c.environment_id == scope.environment_id)


def _record(row: sa.Row[Any]) -> WorkflowRecord:
    return WorkflowRecord(
        scope=Scope(row.tenant_id, row.environment_id),
        id=row.id,
        name=row.name,
        description=row.description,
        enabled=bool(row.enabled),
        current_version=int(row.current_version),
        trigger_type=row.trigger_type,
        event_name=row.event_name,
        schedule=row.schedule,
        deleted=bool(row.deleted),
        created_by=row.created_by,
        created_at=parse_ts(row.created_at),
        updated_at=parse_ts(row.updated_at),
    )


def _not_found(scope: Scope, workflow_id: str) -> NotFoundError:
    return NotFoundError(
        f"workflow {workflow_id!r} does not exist in {scope}; list the workflows you can "
        "see with GET /api/v1/workflows/definitions",
        details={
            "workflow_id": workflow_id,
            "tenant_id": scope.tenant_id,
            "environment_id": scope.environment_id,
        },
    )


def _after(
    created_at: sa.ColumnElement[Any], id_: sa.ColumnElement[Any], position: Position
) -> sa.ColumnElement[bool]:
    """Rows after ``position`` in newest-first order (created_at desc, id desc)."""
    at, last_id = position
    return sa.or_(created_at < at, sa.and_(created_at == at, id_ < last_id))


# ---- workflows ---------------------------------------------------------------------------------


def create_workflow(
    conn: sa.Connection,
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
) -> WorkflowRecord:
    now_text = ts(now, what="now")
    values = {
        "tenant_id": scope.tenant_id,
        "environment_id": scope.environment_id,
        "id": workflow_id,
        "name": name,
        "description": description,
        "enabled": enabled,
        "current_version": current_version,
        "trigger_type": trigger_type,
        "event_name": event_name,
        "schedule": schedule,
        "deleted": False,
        "created_by": created_by,
        "created_at": now_text,
        "updated_at": now_text,
    }
    insert = dialect_insert(conn, t).values(values).on_conflict_do_nothing()
    if conn.execute(insert.returning(t.c.id)).first() is None:
        raise ConflictError(
            f"a workflow with id {workflow_id!r} already exists in {scope}",
            details={"workflow_id": workflow_id},
        )
    return get_workflow(conn, scope, workflow_id)


def get_workflow(
    conn: sa.Connection, scope: Scope, workflow_id: str, *, include_deleted: bool = False
) -> WorkflowRecord:
    query = sa.select(t).where(_scoped(scope), t.c.id == workflow_id)
    if not include_deleted:
        query = query.where(t.c.deleted == sa.false())
    row = conn.execute(query).first()
    if row is None:
        raise _not_found(scope, workflow_id)
    return _record(row)


def get_workflows(
    conn: sa.Connection, scope: Scope, workflow_ids: Sequence[str]
) -> dict[str, WorkflowRecord]:
    """The workflows (deleted ones too) among ``workflow_ids``, by id; unknown ids are
    left out."""
    ids = sorted(set(workflow_ids))
    if not ids:
        return {}
    query = sa.select(t).where(_scoped(scope), t.c.id.in_(ids))
    return {row.id: _record(row) for row in conn.execute(query)}


def list_workflows(
    conn: sa.Connection,
    scope: Scope,
    *,
    enabled: bool | None = None,
    name: str | None = None,
    trigger_type: str | None = None,
    after: Position | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[WorkflowRecord]:
    """Workflows that are not deleted, newest first; ``after`` continues a listing."""
    query = sa.select(t).where(_scoped(scope), t.c.deleted == sa.false())
    if enabled is not None:
        query = query.where(t.c.enabled == enabled)
    if name is not None:
        query = query.where(t.c.name == name)
    if trigger_type is not None:
        query = query.where(t.c.trigger_type == trigger_type)
    if after is not None:
        query = query.where(_after(t.c.created_at, t.c.id, after))
    query = query.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit).offset(offset)
    return [_record(row) for row in conn.execute(query)]


def set_current_version(
    conn: sa.Connection,
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
    enabled: bool | None,
    now: datetime,
) -> WorkflowRecord:
    """Point the workflow at a newly stored version and copy that version's trigger;
    ConflictError when another update moved it on since ``expected_version``."""
    values: dict[str, Any] = {
        "current_version": version,
        "name": name,
        "description": description,
        "trigger_type": trigger_type,
        "event_name": event_name,
        "schedule": schedule,
        "updated_at": ts(now, what="now"),
    }
    if enabled is not None:
        values["enabled"] = enabled
    stmt = (
        sa.update(t)
        .where(
            _scoped(scope),
            t.c.id == workflow_id,
            t.c.deleted == sa.false(),
            t.c.current_version == expected_version,
        )
        .values(values)
    )
    if conn.execute(stmt).rowcount != 1:
        current = get_workflow(conn, scope, workflow_id)  # NotFoundError when it went away
        raise ConflictError(
            f"workflow {workflow_id!r} was updated meanwhile (it is at version "
            f"{current.current_version}, this update started from {expected_version}); "
            "read it again and resend your update",
            details={"workflow_id": workflow_id, "current_version": current.current_version},
        )
    return get_workflow(conn, scope, workflow_id)


def set_enabled(
    conn: sa.Connection, scope: Scope, workflow_id: str, enabled: bool, *, now: datetime
) -> WorkflowRecord:
    stmt = (
        sa.update(t)
        .where(_scoped(scope), t.c.id == workflow_id, t.c.deleted == sa.false())
        .values(enabled=enabled, updated_at=ts(now, what="now"))
    )
    if conn.execute(stmt).rowcount != 1:
        raise _not_found(scope, workflow_id)
    return get_workflow(conn, scope, workflow_id)


def mark_deleted(
    conn: sa.Connection, scope: Scope, workflow_id: str, *, now: datetime
) -> WorkflowRecord:
    """Mark the workflow deleted (its versions and runs stay, for history)."""
    stmt = (
        sa.update(t)
        .where(_scoped(scope), t.c.id == workflow_id, t.c.deleted == sa.false())
        .values(deleted=True, enabled=False, updated_at=ts(now, what="now"))
    )
    if conn.execute(stmt).rowcount != 1:
        raise _not_found(scope, workflow_id)
    return get_workflow(conn, scope, workflow_id, include_deleted=True)


def list_enabled_by_event(
    conn: sa.Connection, scope: Scope, event_name: str, *, enabled_only: bool = True
) -> list[WorkflowRecord]:
    """Workflows of this scope whose trigger is ``type: event`` with ``event_name``
    (enabled ones only, unless ``enabled_only`` is false), by id."""
    query = sa.select(t).where(
        _scoped(scope),
        t.c.deleted == sa.false(),
        t.c.trigger_type == "event",
        t.c.event_name == event_name,
    )
    if enabled_only:
        query = query.where(t.c.enabled == sa.true())
    return [_record(row) for row in conn.execute(query.order_by(t.c.id))]


def list_scheduled(conn: sa.Connection) -> list[WorkflowRecord]:
    """Infrastructure, across tenants: enabled workflows with a ``scheduled`` trigger and
    a schedule, by tenant, environment and id."""
    query = (
        sa.select(t)
        .where(
            t.c.trigger_type == "scheduled",
            t.c.schedule.is_not(None),
            t.c.enabled == sa.true(),
            t.c.deleted == sa.false(),
        )
        .order_by(t.c.tenant_id, t.c.environment_id, t.c.id)
    )
    return [_record(row) for row in conn.execute(query)]


def list_versions(conn: sa.Connection, scope: Scope, workflow_id: str) -> list[DefinitionRecord]:
    """The stored versions of a workflow (rows of ``definitions`` named by its id), oldest
    first."""
    d = definitions
    query = (
        sa.select(d)
        .where(
            d.c.tenant_id == scope.tenant_id,
            d.c.environment_id == scope.environment_id,
            d.c.name == workflow_id,
        )
        .order_by(d.c.created_at, d.c.version)
    )
    return [definition_record(scope, row) for row in conn.execute(query)]


# ---- the runs of workflows ---------------------------------------------------------------------


def _runs_scoped(scope: Scope) -> sa.ColumnElement[bool]:
    return sa.and_(
        runs.c.tenant_id == scope.tenant_id, runs.c.environment_id == scope.environment_id
    )


def active_run_ids(conn: sa.Connection, scope: Scope, workflow: str) -> list[str]:
    """Ids of the workflow's runs that have not ended, oldest first."""
    query = (
        sa.select(runs.c.id)
        .where(
            _runs_scoped(scope),
            runs.c.workflow == workflow,
            runs.c.status.in_(ACTIVE_RUN_STATUSES),
        )
        .order_by(runs.c.created_at, runs.c.id)
    )
    return [row.id for row in conn.execute(query)]


def count_active_runs(conn: sa.Connection, scope: Scope, workflow: str) -> int:
    query = sa.select(sa.func.count()).where(
        _runs_scoped(scope),
        runs.c.workflow == workflow,
        runs.c.status.in_(ACTIVE_RUN_STATUSES),
    )
    return int(conn.execute(query).scalar_one())


def list_executions(
    conn: sa.Connection,
    scope: Scope,
    *,
    workflow: str | None = None,
    statuses: Sequence[str] | None = None,
    started_after: datetime | None = None,
    started_before: datetime | None = None,
    after: Position | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[RunRecord]:
    """Runs newest first, filtered by workflow, any of ``statuses`` and the instant they
    started (``started_after <= started < started_before``); without snapshots."""
    query = sa.select(*_LIST_COLUMNS).where(_runs_scoped(scope))
    if workflow is not None:
        query = query.where(runs.c.workflow == workflow)
    if statuses is not None:
        query = query.where(runs.c.status.in_(list(statuses)))
    if started_after is not None:
        query = query.where(runs.c.created_at >= ts(started_after, what="started_after"))
    if started_before is not None:
        query = query.where(runs.c.created_at < ts(started_before, what="started_before"))
    if after is not None:
        query = query.where(_after(runs.c.created_at, runs.c.id, after))
    query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit).offset(offset)
    return [_run_record(row) for row in conn.execute(query)]


def scope_of_run(conn: sa.Connection, run_id: str) -> Scope | None:
    """Infrastructure, across tenants: the scope of a run, or None.  Only for a caller
    that proves its right to the run otherwise (a callback's unguessable token)."""
    row = conn.execute(
        sa.select(runs.c.tenant_id, runs.c.environment_id).where(runs.c.id == run_id)
    ).first()
    return None if row is None else Scope(row.tenant_id, row.environment_id)
