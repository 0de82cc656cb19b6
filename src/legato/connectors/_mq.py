"""What the message-queue adapters (AMQP, NATS) and their server helper share: the JSON
envelopes of a task request and of its reply, the headers, and how a reply becomes a
:class:`~legato.connectors.base.Result` or a classified :class:`~legato.errors.StepError`.

Both ends (:mod:`legato.connectors.amqp`, :mod:`legato.connectors.nats` and
:mod:`legato.mq_executor`) use these functions, so they agree by construction.

The request (UTF-8 JSON, ``content-type: application/json``) mirrors the gRPC
``TaskRequest``::

    {"task_id": "...", "workflow_id": "<run id>", "workflow": "<workflow name>",
     "task_type": "<operation>", "idempotency_key": "...", "payload": <task input>,
     "metadata": {...}, "attempt_number": 1, "correlation_id": "<run id>:<task id>",
     "trace_parent": "00-...", "deadline": "2025-01-01T00:00:00+00:00" | null,
     "auth": {"tenant_id": "...", "environment_id": "..."}}

The reply mirrors ``TaskResponse``::

    {"task_id": "...", "status": "COMPLETED" | "FAILED" | "RETRY" | "IN_PROGRESS" | "PENDING",
     "result": <JSON>, "error_class": "RETRYABLE" | ..., "error_message": "...",
     "retry_after_seconds": 30, "side_effects": [{...}], "cost": {...},
     "metadata": {...}, "operation_id": "..."}
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from legato.connectors.base import AuthProvider, Result, Task
from legato.connectors.config import QueueOperation, ServiceConfig
from legato.errors import ConfigurationError, ErrorClass, StepError

__all__ = [
    "ASYNC_HEADER",
    "CALLBACK_TOKEN_HEADER",
    "CORRELATION_HEADER",
    "IDEMPOTENCY_HEADER",
    "TRACEPARENT_HEADER",
    "completed_reply",
    "decode_json",
    "encode_json",
    "failed_reply",
    "is_final",
    "message_headers",
    "parse_request",
    "parse_routes",
    "redacted_endpoint",
    "refresh_auth",
    "reply_to_ack",
    "reply_to_result",
    "reply_to_status",
    "request_envelope",
    "request_timeout",
]

CONTENT_TYPE = "application/json"
CORRELATION_HEADER = "Correlation-Id"
TRACEPARENT_HEADER = "traceparent"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ASYNC_HEADER = "legato-async"
CALLBACK_TOKEN_HEADER = "legato-callback-token"

_RUNNING = ("IN_PROGRESS", "PENDING")
_EFFECT_FIELDS = ("effect_id", "effect_type", "description", "reversible", "compensation_method")


# ---- configuration ----------------------------------------------------------------------------


def parse_routes(config: ServiceConfig, kind: str) -> dict[str, QueueOperation]:
    """``config.operations`` as :class:`QueueOperation` per operation name.

    An entry is a mapping (``{queue, exchange}`` for AMQP, ``{subject}`` for NATS) or a
    string (the queue / subject). Raises ConfigurationError naming the operation.
    """
    routes: dict[str, QueueOperation] = {}
    for name, spec in config.operations.items():
        if spec is None:
            continue
        if isinstance(spec, str):
            spec = {"subject": spec} if kind == "nats" else {"queue": spec}
        try:
            routes[name] = QueueOperation.model_validate(spec)
        except ValueError as exc:
            fields = "`subject`" if kind == "nats" else "`queue` and `exchange`"
            raise ConfigurationError(
                f"service {config.name}, operations.{name}: {exc}; a {kind} operation takes "
                f"{fields} (or a string: the {'subject' if kind == 'nats' else 'queue'})"
            ) from None
    return routes


def redacted_endpoint(endpoint: str) -> str:
    """``scheme://host:port/path`` without credentials or query (for messages)."""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid endpoint>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}"


# ---- requests ---------------------------------------------------------------------------------


def encode_json(value: Any) -> bytes:
    """Strict JSON (no NaN, string keys), UTF-8. Raises TypeError/ValueError otherwise."""
    return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()


def decode_json(body: bytes) -> Any:
    return json.loads(body.decode("utf-8"))


def request_envelope(task: Task, *, task_type: str | None = None, payload: Any = None) -> bytes:
    """The JSON request for ``task`` (see the module docstring); ``payload`` replaces the
    task's input when given. Raises a VALIDATION StepError for input that is not JSON."""
    envelope = {
        "task_id": task.task_id,
        "workflow_id": task.run_id,
        "workflow": task.workflow,
        "task_type": task_type or task.operation,
        "idempotency_key": task.idempotency_key,
        "payload": task.input if payload is None else payload,
        "metadata": dict(task.metadata),
        "attempt_number": task.attempt,
        "correlation_id": task.correlation_id,
        "trace_parent": task.traceparent,
        "deadline": task.deadline.astimezone(UTC).isoformat() if task.deadline else None,
        "auth": {"tenant_id": task.tenant_id, "environment_id": task.environment_id},
    }
    try:
        return encode_json(envelope)
    except (TypeError, ValueError) as exc:
        raise StepError(
            f"the input of step {task.task_id} for {task.service} {task.operation} cannot be "
            f"sent as JSON: {exc}",
            error_class=ErrorClass.VALIDATION,
            details={"service": task.service, "operation": task.operation},
        ) from exc


def message_headers(
    config: ServiceConfig,
    task: Task,
    credentials: Mapping[str, str],
    *,
    idempotency: bool = True,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The service's ``headers``, the credentials, then ``Idempotency-Key`` (or the
    service's ``idempotency_header``), ``Correlation-Id``, ``traceparent`` and ``extra``."""
    headers: dict[str, str] = dict(config.headers)
    headers.update(credentials)
    if idempotency and task.idempotency_key:
        headers[config.header_for_idempotency() or IDEMPOTENCY_HEADER] = task.idempotency_key
    if task.correlation_id:
        headers[CORRELATION_HEADER] = task.correlation_id
    if task.traceparent:
        headers[TRACEPARENT_HEADER] = task.traceparent
    headers.update(extra or {})
    return headers


def request_timeout(config: ServiceConfig, task: Task, *, use_deadline: bool = True) -> float:
    """``timeout.request``, or less when the task's deadline is nearer; a TIMEOUT
    StepError when the deadline has passed."""
    timeout = float(config.timeout.request)
    if use_deadline and task.deadline is not None:
        left = (task.deadline - datetime.now(UTC)).total_seconds()
        if left <= 0:
            raise StepError(
                f"{config.name} {task.operation}: the deadline of step {task.task_id} passed "
                "before the call",
                error_class=ErrorClass.TIMEOUT,
                details={"service": config.name, "operation": task.operation},
            )
        timeout = min(timeout, left)
    return timeout


async def refresh_auth(auth: AuthProvider, stale: Mapping[str, str]) -> None:
    """``auth.refresh()``, handing it the rejected headers if it takes them."""
    refresh: Any = auth.refresh
    try:
        takes_stale = bool(inspect.signature(refresh).parameters)
    except (TypeError, ValueError):
        takes_stale = False
    await (refresh(stale) if takes_stale else refresh())


# ---- replies (client side) --------------------------------------------------------------------


def decode_reply(body: bytes, *, where: str, details: Mapping[str, Any]) -> dict[str, Any]:
    """The reply object; a PERMANENT StepError when it is not a JSON object with a status."""
    try:
        reply = decode_json(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StepError(
            f"{where}: the reply is not JSON ({exc}); the service must answer with the Legato "
            "reply envelope",
            error_class=ErrorClass.PERMANENT,
            details=dict(details),
        ) from None
    if not isinstance(reply, dict) or not isinstance(reply.get("status"), str):
        raise StepError(
            f"{where}: the reply is not a Legato reply envelope (a JSON object with `status`)",
            error_class=ErrorClass.PERMANENT,
            details=dict(details),
        )
    return reply


def _status(reply: Mapping[str, Any]) -> str:
    return str(reply.get("status", "")).upper()


def _metadata(reply: Mapping[str, Any]) -> dict[str, str]:
    metadata = reply.get("metadata")
    if not isinstance(metadata, Mapping):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def _effects(reply: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    effects = reply.get("side_effects")
    if not isinstance(effects, list):
        return ()
    return tuple(dict(e) for e in effects if isinstance(e, Mapping))


def _retry_after(reply: Mapping[str, Any]) -> float | None:
    value = reply.get("retry_after_seconds")
    if isinstance(value, bool) or value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _error_class(value: Any, default: ErrorClass) -> ErrorClass:
    if not isinstance(value, str) or not value or value.upper() == "NONE":
        return default
    try:
        return ErrorClass(value.upper())
    except ValueError:
        return default


def reply_to_result(reply: Mapping[str, Any], *, where: str, details: Mapping[str, Any]) -> Result:
    """The Result of a COMPLETED reply; raise the StepError of any other status.

    FAILED / RETRY carry their own ``error_class`` (missing, NONE or unknown: PERMANENT for
    FAILED, RETRYABLE for RETRY) and ``retry_after_seconds``; IN_PROGRESS / PENDING to a
    synchronous call, and unknown statuses, are PERMANENT.
    """
    status = _status(reply)
    info: dict[str, Any] = {**details, "status": status}
    if isinstance(reply.get("task_id"), str):
        info["task_id"] = reply["task_id"]
    if status == "COMPLETED":
        cost = reply.get("cost")
        return Result(
            output=reply.get("result"),
            side_effects=_effects(reply),
            cost=dict(cost) if isinstance(cost, Mapping) and cost else None,
            metadata=_metadata(reply),
        )
    if status in ("FAILED", "RETRY"):
        default = ErrorClass.RETRYABLE if status == "RETRY" else ErrorClass.PERMANENT
        error_class = _error_class(reply.get("error_class"), default)
        retry_after = _retry_after(reply)
        effects = _effects(reply)
        if effects:
            info["side_effects"] = list(effects)
        if retry_after is not None:
            info["retry_after"] = retry_after
        message = reply.get("error_message") or f"the service answered {status}"
        raise StepError(
            f"{where}: {message}", error_class=error_class, details=info, retry_after=retry_after
        )
    if status in _RUNNING:
        raise StepError(
            f"{where}: the service answered {status} to a synchronous call; mark the task "
            "`async: true` so Legato waits for its callback or polls the status operation",
            error_class=ErrorClass.PERMANENT,
            details=info,
        )
    raise StepError(
        f"{where}: the service answered {status or 'no status'}, which a task call cannot end with",
        error_class=ErrorClass.PERMANENT,
        details=info,
    )


def _operation_id(reply: Mapping[str, Any], fallback: str) -> str:
    value = reply.get("operation_id")
    if isinstance(value, str) and value:
        return value
    metadata = reply.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("operation_id"), str):
        return str(metadata["operation_id"])
    task_id = reply.get("task_id")
    return task_id if isinstance(task_id, str) and task_id else fallback


def reply_to_ack(
    reply: Mapping[str, Any], *, task: Task, where: str, details: Mapping[str, Any]
) -> Result:
    """What ``start_async`` returns: ``Result(operation_id=...)`` for IN_PROGRESS / PENDING
    (``metadata["task_status"]`` says which), the full Result when the service finished at
    once; the StepError of a failure."""
    status = _status(reply)
    operation_id = _operation_id(reply, task.task_id)
    if status in _RUNNING:
        metadata = {**_metadata(reply), "task_status": status, "operation_id": operation_id}
        return Result(operation_id=operation_id, metadata=metadata)
    result = reply_to_result(reply, where=where, details=details)
    return Result(
        output=result.output,
        side_effects=result.side_effects,
        cost=result.cost,
        metadata={**result.metadata, "task_status": status},
        operation_id=operation_id,
    )


def reply_to_status(
    reply: Mapping[str, Any], *, operation_id: str, where: str, details: Mapping[str, Any]
) -> Result | None:
    """What ``check_status`` returns: None while IN_PROGRESS / PENDING, else the Result
    (or the StepError of a failure)."""
    if _status(reply) in _RUNNING:
        return None
    result = reply_to_result(reply, where=where, details=details)
    return Result(
        output=result.output,
        side_effects=result.side_effects,
        cost=result.cost,
        metadata=result.metadata,
        operation_id=operation_id,
    )


# ---- the server side ------------------------------------------------------------------------


def parse_request(body: bytes) -> dict[str, Any]:
    """A request envelope; raises a VALIDATION StepError when it is not one."""
    try:
        envelope = decode_json(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StepError(
            f"the message is not JSON ({exc})", error_class=ErrorClass.VALIDATION
        ) from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("task_type"), str):
        raise StepError(
            "the message is not a Legato task envelope (a JSON object with `task_type`)",
            error_class=ErrorClass.VALIDATION,
        )
    return envelope


def completed_reply(
    task_id: str,
    output: Any,
    *,
    side_effects: Any = (),
    cost: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    effects = []
    for effect in side_effects or ():
        unknown = sorted(set(effect) - set(_EFFECT_FIELDS))
        if unknown:
            raise ValueError(
                f"side effect fields {unknown} are not in the contract; use {list(_EFFECT_FIELDS)}"
            )
        effects.append(dict(effect))
    reply: dict[str, Any] = {"task_id": task_id, "status": "COMPLETED", "result": output}
    if effects:
        reply["side_effects"] = effects
    if cost:
        reply["cost"] = dict(cost)
    if metadata:
        reply["metadata"] = {str(k): str(v) for k, v in metadata.items()}
    return reply


def failed_reply(task_id: str, error: StepError) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "task_id": task_id,
        "status": "FAILED",
        "error_class": error.error_class.value,
        "error_message": error.message,
    }
    if error.retry_after is not None and error.retry_after > 0:
        reply["retry_after_seconds"] = min(math.ceil(error.retry_after), 2**31 - 1)
    return reply


def is_final(reply: Mapping[str, Any]) -> bool:
    """Whether a reply may be replayed for the same idempotency key: success, a started
    operation, or a failure that retrying would not change."""
    status = _status(reply)
    if status in ("COMPLETED", *_RUNNING):
        return True
    if status == "FAILED":
        return _error_class(reply.get("error_class"), ErrorClass.PERMANENT) in (
            ErrorClass.PERMANENT,
            ErrorClass.VALIDATION,
        )
    return False


class RequestReplyConnector:
    """What the AMQP and NATS adapters share: the calls of the Connector contract built on
    one request/reply round trip. A subclass gives ``config``, ``name``, ``_auth``,
    ``_request`` (send one envelope, return the reply), ``_where`` and ``_details``."""

    config: ServiceConfig
    name: str
    _auth: AuthProvider

    async def _request(
        self, task: Task, body: bytes, headers: dict[str, str], *, use_deadline: bool
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _where(self, task: Task) -> str:
        raise NotImplementedError

    def _details(self, task: Task) -> dict[str, Any]:
        raise NotImplementedError

    async def execute(self, task: Task) -> Result:
        reply = await self._call(task)
        return reply_to_result(reply, where=self._where(task), details=self._details(task))

    async def execute_batch(self, tasks: list[Task]) -> list[Result | Exception]:
        """One request per task, all at once; one Result or StepError per task, in order."""
        if not tasks:
            return []
        outcomes = await asyncio.gather(*(self.execute(t) for t in tasks), return_exceptions=True)
        out: list[Result | Exception] = []
        for outcome in outcomes:
            if isinstance(outcome, Result | Exception):
                out.append(outcome)
            else:  # a BaseException (cancellation): not ours to swallow
                raise outcome
        return out

    async def start_async(self, task: Task, callback_token: str) -> Result:
        """The request with headers ``legato-async: true`` and ``legato-callback-token``.

        An IN_PROGRESS / PENDING reply gives ``Result(operation_id=...)`` (its
        ``operation_id``, else ``metadata.operation_id``, else the task id); a service that
        finished at once gives its full Result. ``metadata["task_status"]`` says which.
        """
        extra = {ASYNC_HEADER: "true", CALLBACK_TOKEN_HEADER: callback_token}
        reply = await self._call(task, extra=extra)
        return reply_to_ack(reply, task=task, where=self._where(task), details=self._details(task))

    async def check_status(self, task: Task, operation_id: str) -> Result | None:
        """A request to the ``async.status_operation`` with ``{operation_id, operation,
        task_id}``: None while IN_PROGRESS / PENDING, else the Result (or StepError)."""
        status_operation = self.config.async_.status_operation if self.config.async_ else None
        if not status_operation:
            raise StepError(
                f"service {self.name} has no `async.status_operation`, so the status of "
                f"operation {operation_id!r} cannot be polled; set it in services.yaml or let "
                "the service call back",
                error_class=ErrorClass.PERMANENT,
                details={"service": self.name, "operation": task.operation},
            )
        status_task = dataclasses.replace(task, operation=status_operation, idempotency_key="")
        payload = {
            "operation_id": operation_id,
            "operation": task.operation,
            "task_id": task.task_id,
        }
        reply = await self._call(status_task, payload=payload, use_deadline=False)
        return reply_to_status(
            reply,
            operation_id=operation_id,
            where=self._where(status_task),
            details=self._details(status_task),
        )

    def capabilities(self) -> set[str]:
        """The operations ``services.yaml`` lists for the service (empty: not declared)."""
        return set(self.config.capabilities)

    async def _call(
        self,
        task: Task,
        *,
        extra: Mapping[str, str] | None = None,
        payload: Any = None,
        use_deadline: bool = True,
    ) -> dict[str, Any]:
        """Send the request and return the reply envelope. An AUTH_FAILED reply to a call
        that carried credentials refreshes them and tries once more."""
        body = request_envelope(task, payload=payload)
        for attempt in (1, 2):
            credentials = await self._auth.headers()
            headers = message_headers(
                self.config, task, credentials, idempotency=bool(task.idempotency_key), extra=extra
            )
            reply = await self._request(task, body, headers, use_deadline=use_deadline)
            failed_auth = (
                str(reply.get("status", "")).upper() == "FAILED"
                and str(reply.get("error_class", "")).upper() == ErrorClass.AUTH_FAILED
            )
            if failed_auth and credentials and attempt == 1:
                await refresh_auth(self._auth, credentials)
                continue
            return reply
        raise AssertionError("unreachable")  # pragma: no cover
