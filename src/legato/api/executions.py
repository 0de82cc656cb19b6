"""Executions: read, list, cancel, pause, resume, retry, history; signals to a running
execution; and the callback route through which async service operations report their
result."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AfterValidator

from legato.api import service
from legato.api.bodies import json_body
from legato.api.deps import Executor, Reader, engine_of
from legato.api.problems import responses
from legato.api.schemas import (
    CallbackAccepted,
    Execution,
    ExecutionPage,
    History,
    SignalAccepted,
)
from legato.errors import ConflictError, InputError, NotFoundError
from legato.runtime.local import Engine

router = APIRouter(prefix="/api/v1/workflows/executions", tags=["executions"])
signals = APIRouter(prefix="/api/v1/executions", tags=["executions"])
callbacks = APIRouter(prefix="/api/v1/callbacks", tags=["callbacks"])

ExecutionId = Annotated[str, Path(description="The execution's id", max_length=200)]

_ANY_JSON: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {}}},
    }
}


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.utcoffset() is None:
        raise ValueError("give a time zone, for example 2024-12-19T10:00:00Z")
    return value


Instant = Annotated[datetime | None, AfterValidator(_aware)]


@router.get(
    "",
    response_model=ExecutionPage,
    summary="List executions",
    responses=responses(401, 403, 422),
)
async def list_executions(
    caller: Reader,
    workflow_id: Annotated[str | None, Query(max_length=200)] = None,
    status: Literal[
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
        "compensating",
        "compensation_failed",
    ]
    | None = None,
    started_after: Annotated[
        Instant, Query(description="Started at or after this instant (with a time zone)")
    ] = None,
    started_before: Annotated[
        Instant, Query(description="Started before this instant (with a time zone)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> dict[str, Any]:
    """Newest first; read one execution for its steps and context."""
    items, next_cursor = await service.list_executions(
        caller.engine,
        workflow_id=workflow_id,
        status=status,
        started_after=started_after,
        started_before=started_before,
        cursor=cursor,
        limit=limit,
        offset=offset,
    )
    return {"items": items, "limit": limit, "offset": offset, "next_cursor": next_cursor}


@router.get(
    "/{execution_id}",
    response_model=Execution,
    summary="Get an execution with its steps",
    responses=responses(401, 403, 404, 422),
)
async def get_execution(execution_id: ExecutionId, caller: Reader) -> dict[str, Any]:
    return await service.execution_view(caller.engine, execution_id)


@router.post(
    "/{execution_id}/cancel",
    response_model=Execution,
    summary="Cancel an execution (the compensations of completed steps run)",
    responses=responses(401, 403, 404, 409, 422),
)
async def cancel_execution(execution_id: ExecutionId, caller: Executor) -> dict[str, Any]:
    """Cancelling a cancelled execution changes nothing; one that ended otherwise is 409."""
    await service.cancel(caller.engine, execution_id, who=caller.who)
    return await service.execution_view(caller.engine, execution_id)


@router.post(
    "/{execution_id}/pause",
    response_model=Execution,
    summary="Pause an execution (no new step starts until it is resumed)",
    responses=responses(401, 403, 404, 409, 422),
)
async def pause_execution(execution_id: ExecutionId, caller: Executor) -> dict[str, Any]:
    """Steps already running finish; timers and signals are still recorded, and what they
    make ready waits. 409 when the execution has ended, is compensating or is paused."""
    await caller.engine.pause(execution_id, reason=f"paused through the API by {caller.who}")
    return await service.execution_view(caller.engine, execution_id)


@router.post(
    "/{execution_id}/resume",
    response_model=Execution,
    summary="Resume a paused execution",
    responses=responses(401, 403, 404, 409, 422),
)
async def resume_execution(execution_id: ExecutionId, caller: Executor) -> dict[str, Any]:
    """The steps it held back start now. 409 when the execution is not paused."""
    await caller.engine.resume(execution_id, reason=f"resumed through the API by {caller.who}")
    return await service.execution_view(caller.engine, execution_id)


@router.post(
    "/{execution_id}/retry",
    response_model=Execution,
    summary="Retry a failed execution from its failed step",
    responses=responses(401, 403, 404, 409, 422),
)
async def retry_execution(execution_id: ExecutionId, caller: Executor) -> dict[str, Any]:
    """The failed step runs again; the outputs of completed steps are kept. 409 when the
    execution has not failed."""
    await caller.engine.retry(execution_id)
    return await service.execution_view(caller.engine, execution_id)


@router.get(
    "/{execution_id}/history",
    response_model=History,
    summary="The execution's event log",
    responses=responses(401, 403, 404, 422),
)
async def execution_history(execution_id: ExecutionId, caller: Reader) -> dict[str, Any]:
    """Every recorded event, in order, hash-chained (`legato verify` checks the chain)."""
    events = await caller.engine.history(execution_id)
    return service.history_view(execution_id, events)


@signals.post(
    "/{execution_id}/signals/{name}",
    response_model=SignalAccepted,
    summary="Send a signal (an event) to an execution",
    openapi_extra=_ANY_JSON,
    responses=responses(401, 403, 404, 409, 413, 415, 422),
)
async def send_signal(
    execution_id: ExecutionId,
    name: Annotated[str, Path(max_length=200, description="The signal's name")],
    request: Request,
    caller: Executor,
    correlation: Annotated[
        str | None, Query(max_length=500, description="Matched against the wait's correlation")
    ] = None,
) -> dict[str, Any]:
    """The body (any JSON) is the signal's data. A waiting execution wakes up; a signal
    nobody waits for yet is kept for the execution. 409 when the execution has ended."""
    data = await json_body(request)
    result = await caller.engine.signal(execution_id, name, data, correlation=correlation)
    return {
        "execution_id": execution_id,
        "signal": name,
        "status": service.execution_status(result.status),
        "legato_status": result.status,
    }


async def callback_engine(
    token: Annotated[str, Path(max_length=500, description="The callback token")],
    engine: Annotated[Engine, Depends(engine_of)],
) -> Engine:
    """The engine scoped to the run the token names.  The token is the credential: the
    engine accepts it only if its digest (keyed by the run's secret) matches a waiting
    step; an unknown run answers exactly like a wrong digest (409)."""
    run_id, sep, _digest = token.partition("~")
    scope = await engine.store.scope_of_run(run_id) if sep and run_id else None
    if scope is None:
        raise _unexpected()
    return engine.for_scope(scope)


@callbacks.post(
    "/{token}",
    response_model=CallbackAccepted,
    summary="Deliver the result of an async service operation",
    openapi_extra=_ANY_JSON,
    responses=responses(409, 413, 415, 422),
)
async def deliver_callback(
    token: Annotated[str, Path(max_length=500, description="The callback token")],
    request: Request,
    engine: Annotated[Engine, Depends(callback_engine)],
) -> dict[str, Any]:
    """Authenticated by its unguessable token (no bearer token). The body is the result,
    or `{"error": {"message": ..., "error_class": ...}}` for a failure. An unexpected or
    duplicate callback answers 409 and changes nothing."""
    output, error = service.callback_parts(await json_body(request))
    try:
        result = await engine.callback(token, output, error=error)
    except (NotFoundError, InputError, ConflictError):
        # one answer whether the run exists or not: the route is no oracle of run ids
        raise _unexpected() from None
    return {
        "execution_id": result.run_id,
        "status": service.execution_status(result.status),
        "legato_status": result.status,
    }


def _unexpected() -> ConflictError:
    return ConflictError(
        "unexpected callback: no step is waiting for this token (it was answered already, "
        "timed out, or never existed). Fix: send the token exactly as the service was given it"
    )
