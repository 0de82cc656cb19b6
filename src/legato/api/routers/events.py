"""``POST /api/v1/events``: publish a CloudEvent; every matching, enabled workflow of the
caller's tenant and environment starts (``legato.triggers.events``).

Structured mode (the body is the event, ``application/cloudevents+json`` or
``application/json``), a batch (``application/cloudevents-batch+json``: a JSON array) or
binary mode (``ce-specversion``, ``ce-id``, ``ce-source``, ``ce-type`` headers; the body
is the event's JSON ``data``).  Needs ``workflows:execute``.  Delivering an event again
is safe: it starts nothing that it started already.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from legato.api.bodies import json_body, media_type, parse_json, read_text
from legato.api.deps import Executor
from legato.api.problems import problem, responses
from legato.errors import InputError
from legato.triggers.events import EventResult, accept_event, accept_events

router = APIRouter(prefix="/api/v1/events", tags=["events"])

_CE_HEADER = "ce-"
_EXAMPLE = {
    "specversion": "1.0",
    "id": "evt_01HF3Z",
    "source": "/billing/customers",
    "type": "customer.created",
    "time": "2024-12-19T10:00:00Z",
    "datacontenttype": "application/json",
    "data": {"customer_id": "cust_123", "tier": "gold"},
}


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartedOut(_Out):
    workflow_id: str
    workflow: str
    version: str | None
    execution_id: str


class SkippedOut(_Out):
    workflow_id: str
    workflow: str
    reason: Literal["disabled", "condition_false", "condition_error", "duplicate", "error"]
    execution_id: str | None = Field(
        None, description="For `duplicate`: the execution this event started before"
    )
    detail: str | None = None


class EventAccepted(_Out):
    event_id: str
    event_type: str
    source: str
    started: list[StartedOut]
    skipped: list[SkippedOut]
    failed: list[SkippedOut] = Field(
        description="Workflows that could not be started (the answer is then 503; send "
        "the event again)"
    )


class BatchAccepted(_Out):
    results: list[EventAccepted]


_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A CloudEvents 1.0 event (structured mode), or an array of them",
        "content": {
            "application/cloudevents+json": {"schema": {"type": "object"}, "example": _EXAMPLE},
            "application/json": {"schema": {"type": "object"}, "example": _EXAMPLE},
            "application/cloudevents-batch+json": {
                "schema": {"type": "array", "items": {"type": "object"}}
            },
        },
    }
}


async def _binary_event(request: Request) -> dict[str, Any]:
    """A binary-mode event: attributes from ``ce-*`` headers, ``data`` from the body."""
    event: dict[str, Any] = {}
    for name, value in request.headers.items():
        if name.lower().startswith(_CE_HEADER) and len(name) > len(_CE_HEADER):
            event[name.lower()[len(_CE_HEADER) :]] = value
    kind = media_type(request)
    if kind:
        event["datacontenttype"] = kind
    text = await read_text(request)
    if text.strip():
        if kind and kind != "application/json" and not kind.endswith("+json"):
            raise InputError(
                f"binary-mode event data must be JSON, not {kind!r}. Fix: send "
                "`Content-Type: application/json`"
            )
        event["data"] = parse_json(text, what="the event's data")
    return event


def _incomplete(request: Request, body: dict[str, Any]) -> JSONResponse:
    return problem(
        503,
        slug="trigger-incomplete",
        title="Some workflows could not be started",
        detail=(
            "The event was accepted, but some of its workflows could not be started (see "
            "`result.failed`). Fix: send the same event again; the workflows it started "
            "already will not start twice"
        ),
        instance=request.url.path,
        headers={"Retry-After": "1"},
        extra={"result": body},
    )


@router.post(
    "",
    status_code=202,
    response_model=EventAccepted | BatchAccepted,
    summary="Publish an event (CloudEvents 1.0); matching workflows start",
    openapi_extra=_BODY,
    responses=responses(401, 403, 413, 415, 422, 503),
)
async def publish_event(request: Request, caller: Executor) -> Any:
    """Starts every enabled workflow of your tenant and environment whose trigger is
    `{type: event, event_name: <type>}` and whose conditions hold. The answer says which
    started and which were skipped (disabled, condition false, duplicate delivery)."""
    engine, scope = caller.engine, caller.principal.scope
    if request.headers.get("ce-specversion") is not None:
        body: Any = await _binary_event(request)
    else:
        body = await json_body(request)
    if body is None:
        raise InputError(
            "the request has no event. Fix: send a CloudEvents 1.0 JSON event as the body"
        )
    if isinstance(body, list):
        if media_type(request) != "application/cloudevents-batch+json":
            raise InputError(
                "a list of events is a batch. Fix: send it with Content-Type "
                "application/cloudevents-batch+json, or send one event as a JSON object"
            )
        results: list[EventResult] = await accept_events(engine, scope, body)
        out: dict[str, Any] = {"results": [r.to_json() for r in results]}
        if any(r.failed for r in results):
            return _incomplete(request, out)
        return out
    result = await accept_event(engine, scope, body)
    if result.failed:
        return _incomplete(request, result.to_json())
    return result.to_json()
