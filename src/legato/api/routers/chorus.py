"""The "Chorus" API of seed 001: ``/api/v1/templates`` and ``/api/v1/instances``.

A thin layer over the services the rest of the API uses (``legato.api.service``): a
template *is* a workflow definition (the same storage and versions, the same tenant and
environment, the same scopes) and an instance *is* an execution (a run), so both are
visible through ``/api/v1/workflows/...`` too.

An instance is created before it is started (``POST /instances``, then
``PUT /instances/{id}/start``): it is a run created paused (``RunStarted.suspended``),
which enters no state until the start resumes it, and shows as ``created`` until then.
Pause, resume and cancel are the engine's. See docs/decisions/0007-pause-and-chorus.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from legato.api import service
from legato.api.bodies import definition_body, json_body
from legato.api.deps import Executor, Reader, Writer
from legato.api.problems import responses
from legato.api.schemas import Finding
from legato.engine.state import RunState
from legato.engine.views import step_views, suspension
from legato.errors import ConflictError
from legato.runtime.local import Engine
from legato.store._codec import ts
from legato.store.records import RunRecord
from legato.store.workflows import WorkflowRecord

templates = APIRouter(prefix="/api/v1/templates", tags=["chorus"])
instances = APIRouter(prefix="/api/v1/instances", tags=["chorus"])

TemplateId = Annotated[
    str,
    Path(description="The template's id (a workflow id: `wf_` and 12 hex digits)", max_length=200),
]
InstanceId = Annotated[str, Path(description="The instance's id (an execution id)", max_length=200)]

InstanceStatus = Literal["created", "running", "paused", "completed", "failed", "cancelled"]

STEP_TYPE = {"task": "action", "choice": "condition"}
"""Legato's state type -> seed 001's step type, where they differ."""


# ---- what the routes take and answer ------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemplateSummary(_Out):
    id: str = Field(description="`wf_` and 12 hex digits (the workflow's id)")
    name: str
    description: str | None = None
    version: int = Field(description="The current version (every update adds one)")
    enabled: bool
    tenant_id: str
    environment_id: str
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime


class Template(TemplateSummary):
    source_format: str = Field(description="steps (seed 001), canonical, states or ordered")
    definition: Any = Field(description="The template as it was sent")
    canonical: dict[str, Any] = Field(description="The same in Legato's canonical form")
    warnings: list[Finding] = Field(
        default_factory=list, description="Lint warnings (the template was accepted)"
    )


class TemplatePage(_Out):
    items: list[TemplateSummary]
    limit: int
    offset: int
    next_cursor: str | None = None


class TemplateDeleted(_Out):
    id: str
    deleted: Literal[True] = True
    cancelled_instances: int = Field(description="Instances cancelled by `force=true`")


class InstanceRequest(BaseModel):
    """``POST /api/v1/instances``: which template, with which variables."""

    model_config = ConfigDict(extra="forbid")

    template_id: str = Field(max_length=200, description="The template to instantiate")
    variables: dict[str, Any] = Field(
        default_factory=dict,
        description="The instance's input; `{{variables.x}}` in the template reads `x`",
        examples=[{"email": "ada@example.com"}],
    )


class InstanceSummary(_Out):
    id: str
    template_id: str
    template_name: str | None = None
    template_version: int | str
    status: InstanceStatus = Field(
        description="created (not started yet), running, paused, completed, failed, cancelled"
    )
    legato_status: str = Field(
        description="running, compensating, completed, failed, cancelled, compensation_failed"
    )
    created_at: datetime
    completed_at: datetime | None = None


class Instance(InstanceSummary):
    tenant_id: str
    environment_id: str
    started_at: datetime | None = Field(None, description="When it was started (null before)")
    paused_reason: str | None = None
    input: Any = Field(None, description="The variables the instance was created with")
    variables: dict[str, Any] | None = Field(None, description="The instance's variables now")
    output: Any = None
    error: dict[str, Any] | None = None


class InstancePage(_Out):
    items: list[InstanceSummary]
    limit: int
    offset: int
    next_cursor: str | None = None


class InstanceStep(_Out):
    id: str = Field(description="The step's path: `send_welcome`, `fan[a].x`, `each[3].x`")
    name: str = Field(description="The step's id in the template")
    type: str = Field(description="action, condition, parallel, wait, subflow, ...")
    status: str = Field(
        description="pending, running, completed, failed, skipped, cancelled or compensated"
    )
    legato_status: str
    attempts: int
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


class InstanceSteps(_Out):
    instance_id: str
    status: InstanceStatus
    steps: list[InstanceStep]


# ---- views --------------------------------------------------------------------------------------

_TEMPLATE_SUMMARY = tuple(TemplateSummary.model_fields)
_TEMPLATE = tuple(Template.model_fields)


def _template_summary(record: WorkflowRecord) -> dict[str, Any]:
    view = service.definition_summary(record)
    return {key: view[key] for key in _TEMPLATE_SUMMARY}


def _template(view: Mapping[str, Any]) -> dict[str, Any]:
    return {key: view[key] for key in _TEMPLATE}


def instance_status(legato_status: str, state: RunState | None) -> str:
    """``created`` or ``paused`` for a suspended run, else the execution's status."""
    held = suspension(state) if state is not None else None
    return held or service.execution_status(legato_status)


def _summary(
    record: RunRecord, state: RunState | None, workflow: WorkflowRecord | None
) -> dict[str, Any]:
    return {
        "id": record.id,
        "template_id": record.workflow,
        "template_name": workflow.name if workflow is not None else None,
        "template_version": int(record.workflow_version)
        if record.workflow_version.isdigit()
        else record.workflow_version,
        "status": instance_status(record.status, state),
        "legato_status": record.status,
        "created_at": record.created_at,
        "completed_at": record.finished_at,
    }


async def _read(engine: Engine, instance_id: str) -> tuple[RunRecord, RunState]:
    record = await engine.store.get_run(engine.scope, instance_id)
    assert record.snapshot is not None
    return record, RunState.from_dict(record.snapshot)


async def instance_view(engine: Engine, instance_id: str) -> dict[str, Any]:
    record, state = await _read(engine, instance_id)
    workflows = await engine.store.get_workflows(engine.scope, [record.workflow])
    view = _summary(record, state, workflows.get(record.workflow))
    top = state.frames.get("")
    view.update(
        {
            "tenant_id": engine.scope.tenant_id,
            "environment_id": engine.scope.environment_id,
            "started_at": state.started_at,
            "paused_reason": state.suspended_reason,
            "input": state.input,
            "variables": top.context if top is not None else None,
            "output": state.output,
            "error": state.error,
        }
    )
    return view


def _step(view: Mapping[str, Any]) -> dict[str, Any]:
    legato_status = str(view["status"])
    return {
        "id": view["id"],
        "name": view["state"],
        "type": STEP_TYPE.get(view["type"], view["type"]),
        "status": service.STEP_STATUS.get(legato_status, legato_status),
        "legato_status": legato_status,
        "attempts": view.get("attempts") or 0,
        "input": view.get("input"),
        "output": view.get("output"),
        "error": view.get("error"),
        "started_at": view.get("started_at") or view.get("entered_at"),
        "completed_at": view.get("finished_at"),
    }


def _not_started(instance_id: str, what: str) -> ConflictError:
    return ConflictError(
        f"instance {instance_id!r} has not been started yet, so there is nothing to {what}. "
        f"Fix: start it with PUT /api/v1/instances/{instance_id}/start (or cancel it)",
        details={"instance_id": instance_id, "status": "created"},
    )


# ---- templates ----------------------------------------------------------------------------------

_EXAMPLE = {
    "name": "user_welcome",
    "description": "Welcome a new user",
    "steps": [
        {
            "id": "validate_input",
            "name": "Validate Input Data",
            "type": "condition",
            "conditions": [{"field": "email", "operator": "contains", "value": "@"}],
            "next_steps": ["send_welcome", "send_error"],
        },
        {
            "id": "send_welcome",
            "type": "action",
            "config": {"action": "log_message", "message": "welcome {{variables.email}}"},
        },
        {
            "id": "send_error",
            "type": "action",
            "config": {"action": "log_message", "message": "invalid email", "level": "error"},
        },
    ],
}

_TEMPLATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A workflow template: seed 001's `steps` (with `next_steps`), or any "
        "other Legato definition format (canonical `states`, ...), as JSON or YAML.",
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "example": _EXAMPLE,
            },
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


@templates.get(
    "",
    response_model=TemplatePage,
    summary="List workflow templates",
    responses=responses(401, 403, 422),
)
async def list_templates(
    caller: Reader,
    name: Annotated[str | None, Query(max_length=500, description="Exact name")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    cursor: Annotated[
        str | None, Query(max_length=1000, description="`next_cursor` of the previous page")
    ] = None,
) -> dict[str, Any]:
    """Newest first (the same list as `GET /api/v1/workflows/definitions`)."""
    return await service.workflow_page(
        caller.engine,
        summary=_template_summary,
        enabled=None,
        name=name,
        trigger_type=None,
        limit=limit,
        offset=offset,
        cursor=cursor,
    )


@templates.post(
    "",
    status_code=201,
    response_model=Template,
    summary="Create a workflow template",
    openapi_extra=_TEMPLATE_BODY,
    responses=responses(401, 403, 413, 415, 422),
)
async def create_template(request: Request, caller: Writer) -> dict[str, Any]:
    """Validated like any definition: an invalid one is refused with 422 listing every
    finding (code, pointer into what you sent, message, fix)."""
    document, text, _kind = await definition_body(request)
    record, stored, warnings = await service.create_definition(
        caller.engine, document, text, created_by=caller.principal.subject
    )
    return _template(service.definition_view(record, stored, warnings))


@templates.get(
    "/{template_id}",
    response_model=Template,
    summary="Get a workflow template (its current version)",
    responses=responses(401, 403, 404, 422),
)
async def get_template(template_id: TemplateId, caller: Reader) -> dict[str, Any]:
    record, stored = await service.get_definition(caller.engine, template_id)
    return _template(service.definition_view(record, stored))


@templates.put(
    "/{template_id}",
    response_model=Template,
    summary="Update a workflow template (adds a version)",
    openapi_extra=_TEMPLATE_BODY,
    responses=responses(401, 403, 404, 409, 413, 415, 422),
)
async def update_template(
    template_id: TemplateId, request: Request, caller: Writer
) -> dict[str, Any]:
    """A new immutable version; instances already created keep the version they have."""
    document, text, _kind = await definition_body(request)
    record, stored, warnings = await service.update_definition(
        caller.engine, template_id, document, text
    )
    return _template(service.definition_view(record, stored, warnings))


@templates.delete(
    "/{template_id}",
    response_model=TemplateDeleted,
    summary="Delete a workflow template",
    responses=responses(401, 403, 404, 409, 422),
)
async def delete_template(
    template_id: TemplateId,
    caller: Writer,
    force: Annotated[
        bool, Query(description="Cancel the unfinished instances first, then delete")
    ] = False,
) -> dict[str, Any]:
    """409 while instances of it are unfinished (created, running or paused), unless
    `force=true`, which cancels them. Instances stay readable."""
    cancelled = await service.delete_definition(
        caller.engine, template_id, force=force, who=caller.who
    )
    return {"id": template_id, "deleted": True, "cancelled_instances": cancelled}


# ---- instances ----------------------------------------------------------------------------------


@instances.get(
    "",
    response_model=InstancePage,
    summary="List workflow instances",
    responses=responses(401, 403, 422),
)
async def list_instances(
    caller: Reader,
    template_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> dict[str, Any]:
    """Newest first. (Whether an unfinished instance is created, running or paused is read
    from its state, one read per unfinished instance of the page.)"""
    engine = caller.engine
    records = await engine.store.list_executions(
        engine.scope,
        workflow=template_id,
        after=service.decode_cursor(cursor),
        limit=limit + 1,
        offset=offset,
    )
    more = len(records) > limit
    records = records[:limit]
    workflows = await engine.store.get_workflows(engine.scope, [r.workflow for r in records])
    items = []
    for record in records:
        state = None
        if record.status == "running":  # created, running or paused: the state tells
            _, state = await _read(engine, record.id)
        items.append(_summary(record, state, workflows.get(record.workflow)))
    next_cursor = None
    if more and records:
        last = records[-1]
        next_cursor = service.encode_cursor((ts(last.created_at), last.id))
    return {"items": items, "limit": limit, "offset": offset, "next_cursor": next_cursor}


@instances.post(
    "",
    status_code=201,
    response_model=Instance,
    summary="Create a workflow instance (start it with PUT .../start)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": InstanceRequest.model_json_schema()}},
        }
    },
    responses=responses(401, 403, 404, 409, 413, 415, 422),
)
async def create_instance(request: Request, caller: Executor) -> dict[str, Any]:
    """The instance of the template's current version is created with its variables and
    status `created`; nothing runs until it is started. 409 when the template is
    disabled."""
    body = await json_body(request)
    try:
        data = InstanceRequest.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None
    instance_id, _record = await service.trigger(
        caller.engine, data.template_id, data.variables, suspended=True
    )
    return await instance_view(caller.engine, instance_id)


@instances.get(
    "/{instance_id}",
    response_model=Instance,
    summary="Get a workflow instance",
    responses=responses(401, 403, 404, 422),
)
async def get_instance(instance_id: InstanceId, caller: Reader) -> dict[str, Any]:
    return await instance_view(caller.engine, instance_id)


@instances.put(
    "/{instance_id}/start",
    response_model=Instance,
    summary="Start a created workflow instance",
    responses=responses(401, 403, 404, 409, 422),
)
async def start_instance(instance_id: InstanceId, caller: Executor) -> dict[str, Any]:
    """409 when it has been started already."""
    engine = caller.engine
    record, state = await _read(engine, instance_id)
    if not state.awaiting_start:
        raise ConflictError(
            f"instance {instance_id!r} has already been started (it is "
            f"{instance_status(record.status, state)}). Fix: pause, resume or cancel it, "
            "or create a new instance",
            details={"instance_id": instance_id, "legato_status": record.status},
        )
    await engine.resume(instance_id, reason=f"started through the API by {caller.who}")
    return await instance_view(engine, instance_id)


@instances.put(
    "/{instance_id}/pause",
    response_model=Instance,
    summary="Pause a running workflow instance",
    responses=responses(401, 403, 404, 409, 422),
)
async def pause_instance(instance_id: InstanceId, caller: Executor) -> dict[str, Any]:
    """No new step starts until it is resumed; steps already running finish. 409 when it
    is not running (not started, paused already, or ended)."""
    engine = caller.engine
    _record, state = await _read(engine, instance_id)
    if state.awaiting_start:
        raise _not_started(instance_id, "pause")
    await engine.pause(instance_id, reason=f"paused through the API by {caller.who}")
    return await instance_view(engine, instance_id)


@instances.put(
    "/{instance_id}/resume",
    response_model=Instance,
    summary="Resume a paused workflow instance",
    responses=responses(401, 403, 404, 409, 422),
)
async def resume_instance(instance_id: InstanceId, caller: Executor) -> dict[str, Any]:
    """The steps it held back start now. 409 when it is not paused."""
    engine = caller.engine
    _record, state = await _read(engine, instance_id)
    if state.awaiting_start:
        raise _not_started(instance_id, "resume")
    await engine.resume(instance_id, reason=f"resumed through the API by {caller.who}")
    return await instance_view(engine, instance_id)


@instances.put(
    "/{instance_id}/cancel",
    response_model=Instance,
    summary="Cancel a workflow instance (the compensations of completed steps run)",
    responses=responses(401, 403, 404, 409, 422),
)
async def cancel_instance(instance_id: InstanceId, caller: Executor) -> dict[str, Any]:
    """Created, running or paused instances can be cancelled; cancelling a cancelled one
    changes nothing; one that ended otherwise is 409."""
    await service.cancel(caller.engine, instance_id, who=caller.who)
    return await instance_view(caller.engine, instance_id)


@instances.get(
    "/{instance_id}/steps",
    response_model=InstanceSteps,
    summary="Get the steps of a workflow instance",
    responses=responses(401, 403, 404, 422),
)
async def instance_steps(instance_id: InstanceId, caller: Reader) -> dict[str, Any]:
    """One entry per step visited (a loop's earlier visits included), then the template's
    steps not reached yet (`pending`, or `skipped` once the instance has ended)."""
    engine = caller.engine
    record, state = await _read(engine, instance_id)
    program = await engine.programs.get(engine.scope, record.workflow, record.workflow_version)
    views = step_views(program, state, engine.clock.now())
    return {
        "instance_id": instance_id,
        "status": instance_status(record.status, state),
        "steps": [_step(v) for v in views],
    }
