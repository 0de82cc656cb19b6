"""What the routes do, over one scoped :class:`~legato.runtime.local.Engine` view.

Every function takes ``engine`` already scoped to the caller's tenant and environment
(``engine.for_scope(principal.scope)``) and reads and writes only through it and its
store with ``engine.scope``.  A workflow is a row of ``workflows`` (store/workflows.py)
over immutable versions stored by ``Engine.deploy`` under the name = the workflow's id;
runs are pinned to the version they started on.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import yaml

from legato.dsl.findings import Finding
from legato.dsl.loader import load_document
from legato.dsl.model import Definition
from legato.engine.state import RunState
from legato.engine.views import step_views
from legato.errors import ConflictError, DefinitionError, InputError, NotFoundError
from legato.runtime.local import TERMINAL, Engine
from legato.store._codec import ts
from legato.store.records import DefinitionRecord, EventRecord, RunRecord
from legato.store.workflows import Position, WorkflowRecord

# ---- statuses -----------------------------------------------------------------------------------

RUN_STATUS = {
    "running": "running",
    "compensating": "running",
    "completed": "completed",
    "failed": "failed",
    "compensation_failed": "failed",
    "cancelled": "cancelled",
}
"""Legato's run status -> seed 002's execution status (Legato's stays in legato_status)."""

STATUS_FILTER: dict[str, tuple[str, ...]] = {
    "pending": (),  # an execution is pending only in the trigger's answer
    "running": ("running", "compensating"),
    "completed": ("completed",),
    "failed": ("failed", "compensation_failed"),
    "cancelled": ("cancelled",),
    "compensating": ("compensating",),
    "compensation_failed": ("compensation_failed",),
}

STEP_STATUS = {
    "ready": "pending",
    "pending": "pending",
    "scheduled": "running",
    "running": "running",
    "retrying": "running",
    "waiting": "running",
}

TRIGGER_KEY = "_trigger"
"""Where a trigger (event, webhook, cron) puts its envelope in the run's input; a run
without one was started by hand (this API's trigger route, the CLI)."""


def execution_status(legato_status: str) -> str:
    return RUN_STATUS.get(legato_status, "running")


def _version_number(version: str) -> int | str:
    return int(version) if version.isdigit() else version


def new_workflow_id() -> str:
    return f"wf_{secrets.token_hex(6)}"


def new_execution_id() -> str:
    return f"exec_{uuid.uuid4().hex}"


# ---- cursors ------------------------------------------------------------------------------------


def encode_cursor(position: Position) -> str:
    raw = json.dumps(list(position), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Position | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        value = None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(part, str) for part in value)
    ):
        raise InputError(
            f"cursor {cursor!r} is not one this API gave. Fix: pass the `next_cursor` of the "
            "previous page unchanged, or leave `cursor` out to start from the first page"
        )
    return (value[0], value[1])


# ---- definitions --------------------------------------------------------------------------------


def load(engine: Engine, document: Any) -> tuple[Definition, list[Finding]]:
    """Read and validate a definition in any accepted format; DefinitionError lists every
    error (the warnings are returned)."""
    result = load_document(document, source="<request body>", actions=engine.activities.names())
    if not result.ok or result.definition is None:
        raise DefinitionError(findings=result.errors, source="request body")
    return result.definition, result.warnings


def _trigger_columns(definition: Definition) -> dict[str, Any]:
    trigger = definition.trigger
    if trigger is None:
        return {"trigger_type": "manual", "event_name": None, "schedule": None}
    schedule = trigger.schedule
    if schedule is not None and not isinstance(schedule, str):
        schedule = json.dumps(schedule, sort_keys=True, separators=(",", ":"))
    return {
        "trigger_type": trigger.type,
        "event_name": trigger.event_name,
        "schedule": schedule,
    }


async def _store_version(
    engine: Engine, workflow_id: str, version: int, definition: Definition, source: str
) -> None:
    stored = definition.model_copy(update={"name": workflow_id, "version": str(version)})
    _name, got = await engine.deploy(stored, source=source)
    if got != str(version):
        raise ConflictError(
            f"workflow {workflow_id!r} was updated meanwhile (version {version} is taken); "
            "read it again and resend your update",
            details={"workflow_id": workflow_id},
        )


async def create_definition(
    engine: Engine, document: Any, source: str, *, created_by: str | None
) -> tuple[WorkflowRecord, DefinitionRecord, list[Finding]]:
    definition, warnings = load(engine, document)
    workflow_id = new_workflow_id()
    await _store_version(engine, workflow_id, 1, definition, source)
    record = await engine.store.create_workflow(
        engine.scope,
        workflow_id=workflow_id,
        name=definition.name,
        description=definition.description,
        enabled=definition.enabled,
        current_version=1,
        created_by=created_by,
        now=engine.clock.now(),
        **_trigger_columns(definition),
    )
    stored = await engine.store.get_definition(engine.scope, workflow_id, "1")
    return record, stored, warnings


async def update_definition(
    engine: Engine, workflow_id: str, document: Any, source: str
) -> tuple[WorkflowRecord, DefinitionRecord, list[Finding]]:
    current = await engine.store.get_workflow(engine.scope, workflow_id)
    definition, warnings = load(engine, document)
    version = current.current_version + 1
    await _store_version(engine, workflow_id, version, definition, source)
    record = await engine.store.set_workflow_version(
        engine.scope,
        workflow_id,
        expected_version=current.current_version,
        version=version,
        name=definition.name,
        description=definition.description,
        enabled=definition.enabled if "enabled" in definition.model_fields_set else None,
        now=engine.clock.now(),
        **_trigger_columns(definition),
    )
    stored = await engine.store.get_definition(engine.scope, workflow_id, str(version))
    return record, stored, warnings


async def get_definition(
    engine: Engine, workflow_id: str, version: int | None = None
) -> tuple[WorkflowRecord, DefinitionRecord]:
    record = await engine.store.get_workflow(engine.scope, workflow_id)
    wanted = record.current_version if version is None else version
    if wanted > record.current_version:
        raise NotFoundError(
            f"workflow {workflow_id!r} has no version {wanted} (its current version is "
            f"{record.current_version}). Fix: list them with GET "
            f"/api/v1/workflows/definitions/{workflow_id}/versions",
            details={"workflow_id": workflow_id, "version": wanted},
        )
    stored = await engine.store.get_definition(engine.scope, workflow_id, str(wanted))
    return record, stored


async def list_versions(
    engine: Engine, workflow_id: str
) -> tuple[WorkflowRecord, list[DefinitionRecord]]:
    record = await engine.store.get_workflow(engine.scope, workflow_id)
    versions = [
        v
        for v in await engine.store.list_workflow_versions(engine.scope, workflow_id)
        if v.version.isdigit() and int(v.version) <= record.current_version
    ]
    return record, sorted(versions, key=lambda v: int(v.version))


async def delete_definition(engine: Engine, workflow_id: str, *, force: bool, who: str) -> int:
    """Delete (EC-2): refused while executions run, unless ``force``, which cancels them
    first.  Returns how many executions were cancelled."""
    await engine.store.get_workflow(engine.scope, workflow_id)
    active = await engine.store.active_run_ids(engine.scope, workflow_id)
    if active and not force:
        raise ConflictError(
            f"workflow {workflow_id!r} has {len(active)} running execution(s), so it cannot "
            "be deleted. Fix: wait for them to end, cancel them, or delete with ?force=true "
            "to cancel them and delete",
            details={"workflow_id": workflow_id, "running_executions": active[:100]},
        )
    # Delete first, so that no trigger starts another run while the others are cancelled.
    await engine.store.delete_workflow(engine.scope, workflow_id, now=engine.clock.now())
    for run_id in active:
        await engine.cancel(run_id, reason=f"workflow {workflow_id} was deleted by {who}")
    return len(active)


async def set_enabled(engine: Engine, workflow_id: str, enabled: bool) -> WorkflowRecord:
    return await engine.store.set_workflow_enabled(
        engine.scope, workflow_id, enabled, now=engine.clock.now()
    )


async def trigger(
    engine: Engine, workflow_id: str, trigger_data: dict[str, Any], *, suspended: bool = False
) -> tuple[str, WorkflowRecord]:
    """Start an execution of the workflow's current version (created paused with
    ``suspended``: it runs nothing until resumed)."""
    record = await engine.store.get_workflow(engine.scope, workflow_id)
    if not record.enabled:
        raise ConflictError(
            f"workflow {workflow_id!r} is disabled, so it cannot be triggered. Fix: enable it "
            f"with POST /api/v1/workflows/definitions/{workflow_id}/enable, then trigger it",
            details={"workflow_id": workflow_id},
        )
    run_id = await engine.start(
        workflow_id,
        trigger_data,
        version=str(record.current_version),
        run_id=new_execution_id(),
        suspended=suspended,
    )
    return run_id, record


async def workflow_page(
    engine: Engine,
    *,
    summary: Callable[[WorkflowRecord], dict[str, Any]],
    enabled: bool | None,
    name: str | None,
    trigger_type: str | None,
    limit: int,
    offset: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of workflows, newest first: ``items`` (by ``summary``), ``limit``,
    ``offset`` and the ``next_cursor`` to follow (None on the last page)."""
    records = await engine.store.list_workflows(
        engine.scope,
        enabled=enabled,
        name=name,
        trigger_type=trigger_type,
        after=decode_cursor(cursor),
        limit=limit + 1,
        offset=offset,
    )
    more = len(records) > limit
    records = records[:limit]
    return {
        "items": [summary(r) for r in records],
        "limit": limit,
        "offset": offset,
        "next_cursor": encode_cursor(records[-1].position) if more and records else None,
    }


def definition_summary(record: WorkflowRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "description": record.description,
        "version": record.current_version,
        "status": "published",
        "enabled": record.enabled,
        "trigger": {
            "type": record.trigger_type,
            "event_name": record.event_name,
            "schedule": record.schedule,
        },
        "tenant_id": record.scope.tenant_id,
        "environment_id": record.scope.environment_id,
        "created_by": record.created_by,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def definition_view(
    record: WorkflowRecord, stored: DefinitionRecord, warnings: list[Finding] | None = None
) -> dict[str, Any]:
    view = definition_summary(record)
    view.update(
        {
            "version": int(stored.version),
            "current_version": record.current_version,
            "source_format": stored.source_format,
            "definition": _as_sent(stored),
            "canonical": stored.document,
            "warnings": [f.to_dict() for f in warnings or ()],
        }
    )
    return view


def _as_sent(stored: DefinitionRecord) -> Any:
    """The definition as it was sent (JSON or YAML text, parsed again)."""
    if stored.source is None:
        return None
    try:
        return json.loads(stored.source)
    except ValueError:
        pass
    try:
        # aliases and non-JSON values were refused when it was sent: this is plain data
        return yaml.safe_load(stored.source)
    except yaml.YAMLError:
        return None


# ---- executions ---------------------------------------------------------------------------------


def _step(view: Mapping[str, Any]) -> dict[str, Any]:
    legato_status = str(view["status"])
    return {
        "step_id": view["id"],
        "state": view["state"],
        "type": view["type"],
        "status": STEP_STATUS.get(legato_status, legato_status),
        "legato_status": legato_status,
        "attempts": view.get("attempts") or 0,
        "output": view.get("output"),
        "error": view.get("error"),
        "started_at": view.get("started_at") or view.get("entered_at"),
        "completed_at": view.get("finished_at"),
    }


def _trigger_of(state: RunState) -> str:
    if state.parent_run_id:
        return "subflow"
    data = state.input
    if isinstance(data, Mapping):
        envelope = data.get(TRIGGER_KEY)
        if isinstance(envelope, Mapping) and isinstance(envelope.get("type"), str):
            return str(envelope["type"])
    return "manual"


async def execution_view(engine: Engine, run_id: str) -> dict[str, Any]:
    record = await engine.store.get_run(engine.scope, run_id)
    assert record.snapshot is not None
    state = RunState.from_dict(record.snapshot)
    program = await engine.programs.get(engine.scope, record.workflow, record.workflow_version)
    workflows = await engine.store.get_workflows(engine.scope, [record.workflow])
    view = _summary(record, workflows.get(record.workflow))
    top = state.frames.get("")
    view.update(
        {
            "tenant_id": engine.scope.tenant_id,
            "environment_id": engine.scope.environment_id,
            "paused": state.suspended,
            "started_at": state.started_at or record.created_at,
            "trigger_type": _trigger_of(state),
            "trigger_event": state.input,
            "step_executions": [_step(v) for v in step_views(program, state, engine.clock.now())],
            "context": top.context if top is not None else None,
            "output": state.output,
            "error": state.error,
        }
    )
    return view


def _summary(record: RunRecord, workflow: WorkflowRecord | None) -> dict[str, Any]:
    return {
        "id": record.id,
        "workflow_id": record.workflow,
        "workflow_name": workflow.name if workflow is not None else None,
        "workflow_version": _version_number(record.workflow_version),
        "status": execution_status(record.status),
        "legato_status": record.status,
        "started_at": record.created_at,
        "completed_at": record.finished_at,
        "parent_execution_id": record.parent_run_id,
    }


async def list_executions(
    engine: Engine,
    *,
    workflow_id: str | None,
    status: str | None,
    started_after: datetime | None,
    started_before: datetime | None,
    cursor: str | None,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], str | None]:
    records = await engine.store.list_executions(
        engine.scope,
        workflow=workflow_id,
        statuses=None if status is None else STATUS_FILTER[status],
        started_after=started_after,
        started_before=started_before,
        after=decode_cursor(cursor),
        limit=limit + 1,
        offset=offset,
    )
    more = len(records) > limit
    records = records[:limit]
    workflows = await engine.store.get_workflows(engine.scope, [r.workflow for r in records])
    items = [_summary(r, workflows.get(r.workflow)) for r in records]
    next_cursor = None
    if more and records:
        last = records[-1]
        next_cursor = encode_cursor((ts(last.created_at), last.id))
    return items, next_cursor


async def cancel(engine: Engine, run_id: str, *, who: str) -> None:
    current = await engine.get(run_id)
    if current.status in TERMINAL:
        if current.status == "cancelled":
            return
        raise ConflictError(
            f"execution {run_id!r} has already ended ({current.status}); there is nothing "
            "to cancel",
            details={"execution_id": run_id, "legato_status": current.status},
        )
    await engine.cancel(run_id, reason=f"cancelled through the API by {who}")


def history_view(run_id: str, events: list[EventRecord]) -> dict[str, Any]:
    return {
        "execution_id": run_id,
        "events": [
            {
                "seq": e.seq,
                "type": e.type,
                "at": e.at,
                "payload": e.payload,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
            }
            for e in events
        ],
    }


def callback_parts(body: Any) -> tuple[Any, dict[str, Any] | None]:
    """A callback's body: the result, or ``{"error": {...}}`` for a failure."""
    from legato.errors import ErrorClass

    if not (isinstance(body, Mapping) and set(body) == {"error"}):
        return body, None
    error = body["error"]
    if not isinstance(error, Mapping):
        raise InputError(
            '`error` must be an object such as {"message": "...", "error_class": '
            '"PERMANENT"}. Fix: send the failure as an object, or the result itself'
        )
    message = error.get("message", "the service reported a failure")
    if not isinstance(message, str):
        raise InputError("`error.message` must be a string. Fix: describe the failure in text")
    error_class = error.get("error_class", ErrorClass.PERMANENT.value)
    if error_class not in {c.value for c in ErrorClass}:
        raise InputError(
            f"`error.error_class` {error_class!r} is not one of "
            f"{', '.join(c.value for c in ErrorClass)}. Fix: use one of those"
        )
    return None, {**error, "message": message, "error_class": error_class}
