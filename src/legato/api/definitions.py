"""``/api/v1/workflows/definitions``: create, read, list, update (a new version), delete,
enable, disable and trigger workflows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from legato.api import service
from legato.api.bodies import definition_body, json_body
from legato.api.deps import Executor, Reader, Writer
from legato.api.problems import responses
from legato.api.schemas import (
    Definition,
    DefinitionPage,
    DefinitionSummary,
    TriggerAccepted,
    TriggerRequest,
    VersionList,
)

router = APIRouter(prefix="/api/v1/workflows/definitions", tags=["definitions"])

WorkflowId = Annotated[
    str,
    Path(
        description="The workflow's id (`wf_` and 12 hex digits)",
        max_length=200,
        examples=["wf_3f9a1c2b7d4e"],
    ),
]

_EXAMPLE = {
    "name": "Customer Onboarding - Standard",
    "trigger": {"type": "event", "event_name": "customer.created"},
    "steps": [
        {
            "id": "step_1",
            "order": 1,
            "type": "log",
            "config": {"message": "assign plan_starter to {{ input.customer_id }}"},
        }
    ],
    "enabled": True,
    "retry_policy": {"max_attempts": 3, "initial_interval_seconds": 1, "backoff_coefficient": 2},
}

_DEFINITION_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A workflow definition in any Legato format (ordered steps as in "
        "seed 002, canonical `states`, ...), as JSON or YAML.",
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "example": _EXAMPLE,
            },
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def _trigger_body_schema() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": TriggerRequest.model_json_schema()}},
        }
    }


@router.post(
    "",
    status_code=201,
    response_model=Definition,
    summary="Create a workflow definition",
    openapi_extra=_DEFINITION_BODY,
    responses=responses(401, 403, 413, 415, 422),
)
async def create_definition(request: Request, caller: Writer) -> dict[str, Any]:
    """Validate and store a definition as version 1 of a new workflow. An invalid one is
    refused with 422 listing every finding (code, severity, pointer, message, fix)."""
    document, text, _kind = await definition_body(request)
    record, stored, warnings = await service.create_definition(
        caller.engine, document, text, created_by=caller.principal.subject
    )
    return service.definition_view(record, stored, warnings)


@router.get(
    "",
    response_model=DefinitionPage,
    summary="List workflow definitions",
    responses=responses(401, 403, 422),
)
async def list_definitions(
    caller: Reader,
    enabled: bool | None = None,
    name: Annotated[str | None, Query(max_length=500, description="Exact name")] = None,
    trigger_type: Literal["manual", "api", "event", "scheduled", "webhook"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    cursor: Annotated[
        str | None, Query(max_length=1000, description="`next_cursor` of the previous page")
    ] = None,
) -> dict[str, Any]:
    """Newest first. Page with `limit` and `offset`, or follow `next_cursor`."""
    return await service.workflow_page(
        caller.engine,
        summary=service.definition_summary,
        enabled=enabled,
        name=name,
        trigger_type=trigger_type,
        limit=limit,
        offset=offset,
        cursor=cursor,
    )


@router.get(
    "/{workflow_id}",
    response_model=Definition,
    summary="Get a workflow definition (its current version)",
    responses=responses(401, 403, 404, 422),
)
async def get_definition(workflow_id: WorkflowId, caller: Reader) -> dict[str, Any]:
    record, stored = await service.get_definition(caller.engine, workflow_id)
    return service.definition_view(record, stored)


@router.put(
    "/{workflow_id}",
    response_model=Definition,
    summary="Update a workflow definition (adds a version)",
    openapi_extra=_DEFINITION_BODY,
    responses=responses(401, 403, 404, 409, 413, 415, 422),
)
async def update_definition(
    workflow_id: WorkflowId, request: Request, caller: Writer
) -> dict[str, Any]:
    """Every update stores a new immutable version and makes it current; executions
    already running keep the version they started on."""
    document, text, _kind = await definition_body(request)
    record, stored, warnings = await service.update_definition(
        caller.engine, workflow_id, document, text
    )
    return service.definition_view(record, stored, warnings)


@router.delete(
    "/{workflow_id}",
    summary="Delete a workflow definition",
    responses=responses(401, 403, 404, 409, 422),
)
async def delete_definition(
    workflow_id: WorkflowId,
    caller: Writer,
    force: Annotated[
        bool, Query(description="Cancel the running executions first, then delete")
    ] = False,
) -> dict[str, Any]:
    """Refused with 409 while executions of the workflow are running, unless `force=true`,
    which cancels them (their compensations run) and deletes. Executions stay readable."""
    cancelled = await service.delete_definition(
        caller.engine, workflow_id, force=force, who=caller.who
    )
    return {"id": workflow_id, "deleted": True, "cancelled_executions": cancelled}


@router.post(
    "/{workflow_id}/enable",
    response_model=DefinitionSummary,
    summary="Enable a workflow",
    responses=responses(401, 403, 404, 422),
)
async def enable_definition(workflow_id: WorkflowId, caller: Writer) -> dict[str, Any]:
    return service.definition_summary(await service.set_enabled(caller.engine, workflow_id, True))


@router.post(
    "/{workflow_id}/disable",
    response_model=DefinitionSummary,
    summary="Disable a workflow (it cannot be triggered; running executions go on)",
    responses=responses(401, 403, 404, 422),
)
async def disable_definition(workflow_id: WorkflowId, caller: Writer) -> dict[str, Any]:
    return service.definition_summary(await service.set_enabled(caller.engine, workflow_id, False))


@router.post(
    "/{workflow_id}/trigger",
    status_code=202,
    response_model=TriggerAccepted,
    summary="Trigger a workflow (start an execution)",
    openapi_extra=_trigger_body_schema(),
    responses=responses(401, 403, 404, 409, 413, 415, 422),
)
async def trigger_definition(
    workflow_id: WorkflowId, request: Request, caller: Executor
) -> dict[str, Any]:
    """Start an execution of the current version with `trigger_data` as its input. A
    disabled workflow answers 409."""
    body = await json_body(request, default={})
    try:
        data = TriggerRequest.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None
    run_id, record = await service.trigger(caller.engine, workflow_id, data.trigger_data)
    return {
        "execution_id": run_id,
        "status": "pending",
        "workflow_id": workflow_id,
        "workflow_version": record.current_version,
    }


@router.get(
    "/{workflow_id}/versions",
    response_model=VersionList,
    summary="List the versions of a workflow",
    responses=responses(401, 403, 404, 422),
)
async def list_versions(workflow_id: WorkflowId, caller: Reader) -> dict[str, Any]:
    record, versions = await service.list_versions(caller.engine, workflow_id)
    return {
        "workflow_id": workflow_id,
        "current_version": record.current_version,
        "versions": [
            {
                "version": int(v.version),
                "created_at": v.created_at,
                "source_format": v.source_format,
                "content_hash": v.content_hash,
                "current": int(v.version) == record.current_version,
            }
            for v in versions
        ],
    }


@router.get(
    "/{workflow_id}/versions/{version}",
    response_model=Definition,
    summary="Get one version of a workflow definition",
    responses=responses(401, 403, 404, 422),
)
async def get_version(
    workflow_id: WorkflowId,
    version: Annotated[int, Path(ge=1, le=2**31)],
    caller: Reader,
) -> dict[str, Any]:
    record, stored = await service.get_definition(caller.engine, workflow_id, version)
    return service.definition_view(record, stored)
