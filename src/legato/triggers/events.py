"""Event triggers: a CloudEvents 1.0 event starts every matching workflow of its scope.

:func:`accept_event` takes one event in the CloudEvents JSON format (structured mode)::

    {"specversion": "1.0", "id": "evt-42", "source": "/billing/customers",
     "type": "customer.created", "time": "2024-12-19T10:00:00Z",
     "datacontenttype": "application/json", "data": {"customer_id": "c_1", "tier": "gold"}}

and starts every **enabled** workflow of the same tenant and environment whose trigger is
``{type: event, event_name: <the event's type>}`` and whose ``conditions`` all hold.  Each
start is its own run (EC-1: one event, one execution per workflow, running in parallel).

Dedup: a run's id is ``evt_`` + SHA-256(tenant, environment, workflow, source, event id),
so a redelivered event (same ``source`` and ``id``, as the CloudEvents spec defines
identity) meets ``ConflictError`` in ``create_run`` and starts nothing.  The runs table is
the dedup table: it holds across processes and restarts, and needs nothing of its own.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from legato.errors import ConflictError, InputError, LegatoError
from legato.runtime.local import Engine
from legato.store import Scope
from legato.triggers._common import (
    check_conditions,
    condition_scope,
    derive_run_id,
    run_input,
)
from legato.triggers.catalog import Candidate, event_candidates

__all__ = [
    "EventResult",
    "SkippedWorkflow",
    "TriggeredRun",
    "accept_event",
    "accept_events",
    "event_run_id",
    "validate_cloud_event",
]

log = logging.getLogger("legato.triggers.events")

SPECVERSION = "1.0"
MAX_ATTRIBUTE_LENGTH = 1024
MAX_BATCH = 100
_REQUIRED = ("specversion", "id", "source", "type")
_EXAMPLE = (
    '{"specversion": "1.0", "id": "evt-42", "source": "/billing", '
    '"type": "customer.created", "data": {...}}'
)


@dataclass(frozen=True, slots=True)
class TriggeredRun:
    workflow_id: str
    workflow: str
    version: str | None
    run_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "workflow": self.workflow,
            "version": self.version,
            "execution_id": self.run_id,
        }


@dataclass(frozen=True, slots=True)
class SkippedWorkflow:
    """A matching workflow that did not start: ``disabled``, ``condition_false``,
    ``condition_error`` (a condition could not be evaluated), ``duplicate`` (this event
    started it already: ``run_id`` is that run) or ``error`` (starting failed; deliver the
    event again, it is safe)."""

    workflow_id: str
    workflow: str
    reason: str
    run_id: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workflow_id": self.workflow_id,
            "workflow": self.workflow,
            "reason": self.reason,
        }
        if self.run_id is not None:
            out["execution_id"] = self.run_id
        if self.detail is not None:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True, slots=True)
class EventResult:
    event_id: str
    event_type: str
    source: str
    started: tuple[TriggeredRun, ...] = ()
    skipped: tuple[SkippedWorkflow, ...] = ()
    failed: tuple[SkippedWorkflow, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "source": self.source,
            "started": [s.to_json() for s in self.started],
            "skipped": [s.to_json() for s in self.skipped],
            "failed": [s.to_json() for s in self.failed],
        }


def _invalid(message: str, field_name: str | None = None) -> InputError:
    details = {"field": field_name} if field_name else {}
    return InputError(message, details=details)


def validate_cloud_event(event: Any) -> dict[str, Any]:
    """Check a CloudEvents 1.0 JSON event; return it (a shallow copy).  InputError names
    the attribute that is wrong and how to fix it."""
    if not isinstance(event, Mapping):
        raise _invalid(
            f"an event must be a CloudEvents JSON object, not {type(event).__name__}; "
            f"send {_EXAMPLE}"
        )
    for name in _REQUIRED:
        if name not in event or event[name] is None:
            raise _invalid(
                f"the event has no `{name}`; CloudEvents 1.0 requires specversion, id, "
                f"source and type, for example {_EXAMPLE}",
                name,
            )
        value = event[name]
        if not isinstance(value, str) or not value.strip():
            raise _invalid(f"the event's `{name}` must be a non-empty string", name)
        if len(value) > MAX_ATTRIBUTE_LENGTH:
            raise _invalid(
                f"the event's `{name}` is longer than {MAX_ATTRIBUTE_LENGTH} characters", name
            )
    if event["specversion"] != SPECVERSION:
        raise _invalid(
            f"specversion {event['specversion']!r} is not supported; send "
            f'"specversion": "{SPECVERSION}" (CloudEvents 1.0)',
            "specversion",
        )
    when = event.get("time")
    if when is not None:
        if not isinstance(when, str):
            raise _invalid("the event's `time` must be an RFC 3339 timestamp string", "time")
        try:
            parsed = datetime.fromisoformat(when)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise _invalid(
                f"the event's `time` {when!r:.60} is not an RFC 3339 timestamp with a zone; "
                'write it like "2024-12-19T10:00:00Z"',
                "time",
            )
    if "data_base64" in event:
        raise _invalid(
            "binary event data (`data_base64`) cannot start a workflow; send JSON `data`",
            "data_base64",
        )
    content_type = event.get("datacontenttype")
    if content_type is not None and not isinstance(content_type, str):
        raise _invalid("the event's `datacontenttype` must be a string", "datacontenttype")
    return dict(event)


def event_run_id(scope: Scope, workflow_id: str, source: str, event_id: str) -> str:
    """The run an event starts for a workflow: the same for every delivery of the event."""
    return derive_run_id("evt", scope, workflow_id, source, event_id)


async def accept_event(engine: Engine, scope: Scope, cloud_event: Any) -> EventResult:
    """Start every enabled workflow of ``scope`` that the event triggers; see the module."""
    event = validate_cloud_event(cloud_event)
    data = copy.deepcopy(event.get("data"))
    envelope = {k: v for k, v in event.items() if k != "data"}
    names = condition_scope(data, event=event)
    started: list[TriggeredRun] = []
    skipped: list[SkippedWorkflow] = []
    failed: list[SkippedWorkflow] = []
    candidates = await event_candidates(engine.store, engine.programs, scope, event["type"])
    for candidate in candidates:
        outcome = await _start_one(engine, scope, candidate, event, envelope, data, names)
        if isinstance(outcome, TriggeredRun):
            started.append(outcome)
        elif outcome.reason == "error":
            failed.append(outcome)
        else:
            skipped.append(outcome)
    return EventResult(
        event_id=event["id"],
        event_type=event["type"],
        source=event["source"],
        started=tuple(started),
        skipped=tuple(skipped),
        failed=tuple(failed),
    )


async def accept_events(engine: Engine, scope: Scope, batch: Sequence[Any]) -> list[EventResult]:
    """A batch (``application/cloudevents-batch+json``): every event is validated first,
    so an invalid one starts nothing; then each is accepted in order."""
    if not isinstance(batch, Sequence) or isinstance(batch, str | bytes):
        raise _invalid("a batch of events must be a JSON array of CloudEvents")
    if len(batch) > MAX_BATCH:
        raise _invalid(f"a batch holds at most {MAX_BATCH} events; split it")
    for index, item in enumerate(batch):
        try:
            validate_cloud_event(item)
        except InputError as exc:
            raise InputError(f"event [{index}]: {exc.message}", details=exc.details) from None
    return [await accept_event(engine, scope, item) for item in batch]


async def _start_one(
    engine: Engine,
    scope: Scope,
    candidate: Candidate,
    event: dict[str, Any],
    envelope: dict[str, Any],
    data: Any,
    names: dict[str, Any],
) -> TriggeredRun | SkippedWorkflow:
    wid, name = candidate.workflow_id, candidate.workflow
    if not candidate.enabled:
        return SkippedWorkflow(wid, name, "disabled")
    outcome = check_conditions(candidate.trigger, names)
    if not outcome.holds:
        return SkippedWorkflow(wid, name, outcome.reason or "condition_false", None, outcome.detail)
    run_id = event_run_id(scope, wid, event["source"], event["id"])
    trigger = {"type": "event", "workflow_id": wid, "event": envelope}
    try:
        await engine.for_scope(scope).start(
            name, run_input(data, trigger), version=candidate.version, run_id=run_id
        )
    except ConflictError:
        return SkippedWorkflow(wid, name, "duplicate", run_id, "this event started it already")
    except LegatoError as exc:
        log.warning(
            "event %r could not start workflow %r (%s): %s",
            event["id"],
            wid,
            scope,
            exc.message,
            extra={"workflow": wid, "tenant": scope.tenant_id},
        )
        return SkippedWorkflow(wid, name, "error", run_id, exc.message)
    return TriggeredRun(wid, name, candidate.version, run_id)
