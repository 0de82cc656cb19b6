"""The mock service's model: operations, their scripted behaviour, and the call record.

Transport-neutral and thread-safe: the HTTP server (threads) and the gRPC server (asyncio)
ask :meth:`MockService._arrive` what to do with a call (it records the call and consumes
one step of the operation's error sequence) and then do it, each in its own way.
"""

from __future__ import annotations

import dataclasses
import http
import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from legato.dsl import expr
from legato.errors import ErrorClass, UsageError
from legato.net import step_error_for_status

__all__ = ["Call", "Callback", "MockOperation", "MockRequest", "MockService", "Operation"]

Responder = Callable[["MockRequest"], Any]

_DEFAULT_HANG = 3600.0  # a `timeout` answers after this long (or when the server stops)


# ---- requests, calls, callbacks -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class MockRequest:
    """A call as an operation's responder sees it."""

    operation: str
    transport: Literal["http", "grpc"]
    method: str  # the HTTP method, or the gRPC method (ExecuteTask, ...)
    path: str
    body: Any  # parsed JSON (the TaskRequest payload over gRPC); text if not JSON
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    params: dict[str, str] = field(default_factory=dict)  # {placeholders} of the path
    query: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    attempt: int | None = None
    task_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # TaskRequest.metadata (gRPC)

    def scope(self) -> dict[str, Any]:
        """What a YAML response template sees: ``{{ input.x }}`` is the body's ``x``;
        ``{{ headers.x }}``, ``{{ params.id }}``, ``{{ idempotency_key }}``, ... the rest."""
        context = {
            "body": self.body,
            "headers": self.headers,
            "params": self.params,
            "query": self.query,
            "idempotency_key": self.idempotency_key,
            "attempt": self.attempt,
            "operation": self.operation,
            "task_id": self.task_id,
            "metadata": self.metadata,
        }
        return {**context, "context": context, "input": self.body}


@dataclass(frozen=True, kw_only=True, slots=True)
class Call:
    """One recorded call. ``outcome`` is ``ok``, ``error``, ``timeout``, ``accepted``
    (an async operation started) or ``unknown`` (no such operation); ``status`` is the
    HTTP status answered (over gRPC: the equivalent one)."""

    seq: int
    operation: str
    transport: Literal["http", "grpc"]
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    idempotency_key: str | None
    attempt: int | None
    outcome: str
    status: int
    at: float  # time.time() on arrival
    operation_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Callback:
    """One callback delivery attempt of an async operation."""

    operation: str
    operation_id: str
    url: str
    body: Any
    status: int | None  # the receiver's HTTP status; None if it could not be reached
    error: str | None = None
    at: float = 0.0


# ---- behaviour ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class _Step:
    kind: Literal["error", "timeout"]
    times: int | None  # None: every call from here on
    status: int = 503
    body: Any = None
    retry_after: float | None = None
    error_class: ErrorClass | None = None
    grpc_code: str | None = None
    hang: float = _DEFAULT_HANG


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """What to do with one call (after waiting ``delay`` seconds)."""

    kind: Literal["respond", "error", "timeout", "accept"]
    delay: float = 0.0
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    step: _Step | None = None
    operation_id: str | None = None
    seq: int = 0

    @property
    def error_class(self) -> ErrorClass:
        if self.step is not None and self.step.error_class is not None:
            return self.step.error_class
        error = step_error_for_status(self.status)
        return error.error_class if error is not None else ErrorClass.PERMANENT

    @property
    def retry_after(self) -> float | None:
        return self.step.retry_after if self.step is not None else None

    def error_body(self) -> Any:
        if self.step is not None and self.step.body is not None:
            return self.step.body
        return {"error": {"status": self.status, "message": self.message()}}

    def message(self) -> str:
        if self.kind == "timeout":
            return "the mock service timed out (scripted)"
        try:
            phrase = http.HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        return f"{self.status} {phrase} (scripted by the mock service)"


@dataclass(slots=True)
class _AsyncOp:
    operation_id: str
    operation: str
    task_id: str | None
    status: str = "IN_PROGRESS"  # then COMPLETED or FAILED
    result: Any = None
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "operation_id": self.operation_id,
            "operation": self.operation,
            "status": self.status,
        }
        if self.task_id:
            data["task_id"] = self.task_id
        if self.status == "COMPLETED":
            data["result"] = self.result
        if self.error is not None:
            data["error"] = self.error
        return data


class MockOperation:
    """One operation's scripted behaviour. Every method returns the operation, so calls
    chain: ``svc.operation("x").respond({...}).after_errors(2, status=503).latency(0.05)``.

    Errors are a sequence consumed one call at a time, in the order they were added
    (``after_errors``, ``fail``, ``rate_limited``, ``timeout``); when it is used up, calls
    get the response. Calls are counted per operation, or per idempotency key after
    :meth:`per_key`.
    """

    def __init__(self, service: MockService, name: str, method: str, path: str) -> None:
        self.service = service
        self.name = name
        self.method = method.upper()
        self.path = path
        self._body: Any = None
        self._responder: Responder | None = None
        self._template = False
        self._status = 200
        self._headers: dict[str, str] = {}
        self._latency = (0.0, 0.0)
        self._steps: list[_Step] = []
        self._per_key = False
        self._async: dict[str, Any] | None = None
        self._side_effects: tuple[dict[str, Any], ...] = ()
        self._cost: dict[str, Any] | None = None

    # ---- the response ----------------------------------------------------------------------

    def respond(
        self,
        body: Any = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        template: bool = False,
    ) -> MockOperation:
        """Answer with ``body``: JSON data, or a function of the :class:`MockRequest`
        returning JSON data. ``template=True`` resolves ``{{ }}`` and ``$.`` templates in
        the data against the request (see :meth:`MockRequest.scope`)."""
        if callable(body):
            self._responder, self._body = body, None
        else:
            self._responder, self._body = None, body
        self._status = status
        self._headers = dict(headers or {})
        self._template = template
        return self

    def side_effects(self, effects: Iterable[Mapping[str, Any]]) -> MockOperation:
        """Side effects reported with a gRPC response (SideEffect fields)."""
        self._side_effects = tuple(dict(e) for e in effects)
        return self

    def cost(self, cost: Mapping[str, Any]) -> MockOperation:
        """Cost reported with a gRPC response (CostMetrics fields)."""
        self._cost = dict(cost)
        return self

    def latency(self, low: float, high: float | None = None) -> MockOperation:
        """Wait ``low`` seconds before answering (uniformly ``low``..``high`` if given)."""
        high = low if high is None else high
        if low < 0 or high < low:
            raise UsageError(f"latency must be 0 <= low <= high seconds, got {low}, {high}")
        self._latency = (float(low), float(high))
        return self

    # ---- errors -----------------------------------------------------------------------------

    def after_errors(
        self,
        times: int,
        *,
        status: int = 503,
        body: Any = None,
        retry_after: float | None = None,
        error_class: ErrorClass | str | None = None,
        grpc_code: str | None = None,
    ) -> MockOperation:
        """The next ``times`` calls fail with ``status`` (then the response, or whatever
        comes next in the sequence)."""
        return self.fail(
            times,
            status=status,
            body=body,
            retry_after=retry_after,
            error_class=error_class,
            grpc_code=grpc_code,
        )

    def fail(
        self,
        times: int | None = None,
        *,
        status: int = 503,
        body: Any = None,
        retry_after: float | None = None,
        error_class: ErrorClass | str | None = None,
        grpc_code: str | None = None,
    ) -> MockOperation:
        """Fail ``times`` calls (None: every call from here on) with HTTP ``status``.

        Over gRPC the call answers FAILED with the status's error class (503 ->
        RETRYABLE, 429 -> RATE_LIMITED, 401/403 -> AUTH_FAILED, 400/422 -> VALIDATION,
        408 -> TIMEOUT, other 4xx -> PERMANENT) unless ``error_class`` says otherwise, or
        ends with the gRPC status ``grpc_code`` (``"UNAVAILABLE"``) if given.
        """
        if times is not None and times < 1:
            raise UsageError(f"times must be 1 or more (or None for always), got {times}")
        if not 400 <= status <= 599:
            raise UsageError(f"an error status is 400..599, got {status}")
        if grpc_code is not None:
            import grpc  # only checked here; the HTTP mock does not need grpc

            if grpc_code.upper() not in grpc.StatusCode.__members__:
                raise UsageError(f"{grpc_code!r} is not a gRPC status code name")
            grpc_code = grpc_code.upper()
        self._steps.append(
            _Step(
                kind="error",
                times=times,
                status=status,
                body=body,
                retry_after=retry_after,
                error_class=ErrorClass(error_class) if error_class is not None else None,
                grpc_code=grpc_code,
            )
        )
        return self

    def rate_limited(self, times: int | None = 1, *, retry_after: float = 1) -> MockOperation:
        """The next ``times`` calls get 429 with ``Retry-After`` (gRPC: FAILED,
        RATE_LIMITED, ``retry_after_seconds``)."""
        return self.fail(times, status=429, retry_after=retry_after)

    def timeout(self, times: int | None = 1, *, hang: float = _DEFAULT_HANG) -> MockOperation:
        """The next ``times`` calls get no answer for ``hang`` seconds (the client's
        timeout fires first); the server stopping ends the wait."""
        if times is not None and times < 1:
            raise UsageError(f"times must be 1 or more (or None for always), got {times}")
        self._steps.append(_Step(kind="timeout", times=times, status=504, hang=hang))
        return self

    def per_key(self, enabled: bool = True) -> MockOperation:
        """Count calls per idempotency key: each key goes through the error sequence."""
        self._per_key = enabled
        return self

    def async_(
        self,
        delay: float = 0.0,
        *,
        callback_url: str | None = None,
        callback_body: Any = None,
    ) -> MockOperation:
        """Answer at once that the operation started (HTTP 202 ``{"operation_id",
        "status": "IN_PROGRESS"}``; gRPC IN_PROGRESS), and finish it ``delay`` seconds
        later: its response becomes the operation's result, POSTed to the callback URL
        (``callback_url``, else the request's callback header or ``callback_url`` field;
        gRPC: ``legato-callback-url`` metadata) and kept for polling (HTTP ``GET
        /_mock/operations/{id}``; gRPC CheckStatus).

        ``callback_body`` (a template over ``operation_id``, ``status``, ``result``,
        ``callback_token``, ``request``) replaces the default callback body
        ``{"operation_id", "status", "result", "callback_token"}``.
        """
        self._async = {"delay": float(delay), "url": callback_url, "body": callback_body}
        return self

    def reset(self) -> MockOperation:
        """Forget the behaviour (errors, latency, async); the response stays."""
        self._steps.clear()
        self._latency = (0.0, 0.0)
        self._async = None
        return self

    @property
    def is_async(self) -> bool:
        return self._async is not None

    # ---- used by the servers ----------------------------------------------------------------

    def _step_for(self, number: int) -> _Step | None:
        for step in self._steps:
            if step.times is None or number < step.times:
                return step
            number -= step.times
        return None

    def _response_body(self, request: MockRequest) -> Any:
        if self._responder is not None:
            return self._responder(request)
        if self._template:
            return expr.resolve(self._body, request.scope())
        return self._body


Operation = MockOperation


class MockService:
    """A stand-in for an external service, over HTTP and gRPC (see :mod:`legato.mock`)."""

    def __init__(
        self,
        name: str,
        *,
        idempotency_header: str = "Idempotency-Key",
        attempt_header: str = "X-Legato-Attempt",
        callback_header: str = "X-Callback-Url",
        callback_token_header: str = "X-Callback-Token",
        seed: int | None = None,
    ) -> None:
        self.name = name
        self.idempotency_header = idempotency_header
        self.attempt_header = attempt_header
        self.callback_header = callback_header
        self.callback_token_header = callback_token_header
        self._operations: dict[str, MockOperation] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._calls: list[Call] = []
        self._counts: dict[tuple[str, str | None], int] = {}
        self._async_ops: dict[str, _AsyncOp] = {}
        self._callbacks: list[Callback] = []

    # ---- configuration ----------------------------------------------------------------------

    def operation(
        self, name: str, *, method: str = "POST", path: str | None = None
    ) -> MockOperation:
        """The operation ``name`` (created on first use). Over HTTP it answers
        ``method path`` (default ``POST /<name>``; ``{placeholders}`` match one segment);
        over gRPC, TaskRequests whose task_type is ``name``."""
        op = self._operations.get(name)
        if op is None:
            route = path if path is not None else "/" + name.replace(".", "/")  # as RestConnector
            if not route.startswith("/"):
                raise UsageError(f"path {route!r} of operation {name!r} must start with /")
            op = MockOperation(self, name, method, route)
            self._operations[name] = op
        elif path is not None and (path != op.path or method.upper() != op.method):
            raise UsageError(f"operation {name!r} is already routed to {op.method} {op.path}")
        return op

    @property
    def operations(self) -> dict[str, MockOperation]:
        return dict(self._operations)

    @classmethod
    def from_file(cls, path: str | Any) -> MockService:
        """A service configured by a YAML (or JSON) file; see docs/reference/mock-services.md."""
        from legato.mock._config import load_file

        return load_file(path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MockService:
        from legato.mock._config import build

        return build(data)

    # ---- what happened ---------------------------------------------------------------------

    def calls(
        self, operation: str | None = None, *, idempotency_key: str | None = None
    ) -> list[Call]:
        """The recorded calls in arrival order (of one operation / key, if given)."""
        with self._lock:
            calls = list(self._calls)
        return [
            c
            for c in calls
            if (operation is None or c.operation == operation)
            and (idempotency_key is None or c.idempotency_key == idempotency_key)
        ]

    def attempts(self, idempotency_key: str) -> int:
        """How many calls carried ``idempotency_key``."""
        return len(self.calls(idempotency_key=idempotency_key))

    @property
    def callbacks(self) -> list[Callback]:
        with self._lock:
            return list(self._callbacks)

    def operation_status(self, operation_id: str) -> dict[str, Any] | None:
        """An async operation's state (``status``, ``result``), None if unknown."""
        with self._lock:
            op = self._async_ops.get(operation_id)
            return op.to_dict() if op is not None else None

    def reset(self) -> None:
        """Forget the calls, counts, async operations and callbacks (not the configuration)."""
        with self._lock:
            self._calls.clear()
            self._counts.clear()
            self._async_ops.clear()
            self._callbacks.clear()

    # ---- servers -------------------------------------------------------------------------

    def http(self, port: int = 0, host: str = "127.0.0.1") -> Any:
        """``with svc.http() as url:`` serve over HTTP (threads) while the block runs."""
        from legato.mock._http import serve_http

        return serve_http(self, host=host, port=port)

    def grpc(self, port: int = 0, host: str = "127.0.0.1") -> Any:
        """``async with svc.grpc() as address:`` serve the ExternalTaskExecutor contract."""
        from legato.mock._grpc import serve_grpc

        return serve_grpc(self, host=host, port=port)

    # ---- the call path (used by the servers) -----------------------------------------------

    def _arrive(self, op: MockOperation | None, request: MockRequest) -> Plan:
        """Record the call and decide what to do with it."""
        with self._lock:
            seq = len(self._calls) + 1
            if op is None:
                plan = Plan(kind="error", status=404, seq=seq)
                outcome = "unknown"
            else:
                scope = (op.name, request.idempotency_key if op._per_key else None)
                number = self._counts.get(scope, 0)
                self._counts[scope] = number + 1
                low, high = op._latency
                delay = low if high <= low else self._rng.uniform(low, high)
                step = op._step_for(number)
                if step is None and op._async is not None:
                    operation_id = f"op-{uuid.uuid4().hex[:16]}"
                    self._async_ops[operation_id] = _AsyncOp(
                        operation_id=operation_id, operation=op.name, task_id=request.task_id
                    )
                    plan = Plan(
                        kind="accept",
                        delay=delay,
                        status=202,
                        operation_id=operation_id,
                        seq=seq,
                    )
                elif step is None:
                    plan = Plan(
                        kind="respond",
                        delay=delay,
                        status=op._status,
                        headers=dict(op._headers),
                        seq=seq,
                    )
                else:
                    headers = {}
                    if step.retry_after is not None:
                        headers["Retry-After"] = _retry_after_text(step.retry_after)
                    plan = Plan(
                        kind="timeout" if step.kind == "timeout" else "error",
                        delay=delay,
                        status=step.status,
                        headers=headers,
                        step=step,
                        seq=seq,
                    )
                outcome = {"respond": "ok", "accept": "accepted"}.get(plan.kind, plan.kind)
            self._calls.append(
                Call(
                    seq=seq,
                    operation=op.name if op is not None else "",
                    transport=request.transport,
                    method=request.method,
                    path=request.path,
                    body=request.body,
                    headers=dict(request.headers),
                    idempotency_key=request.idempotency_key,
                    attempt=request.attempt,
                    outcome=outcome,
                    status=plan.status,
                    at=time.time(),
                    operation_id=plan.operation_id,
                )
            )
        return plan

    def _answered(self, seq: int, status: int, outcome: str) -> None:
        """Correct the record when the answer differs from the plan (a responder failed)."""
        with self._lock:
            index = seq - 1
            if 0 <= index < len(self._calls):
                self._calls[index] = dataclasses.replace(
                    self._calls[index], status=status, outcome=outcome
                )

    def _finish_async(
        self,
        op: MockOperation,
        operation_id: str,
        request: MockRequest,
        *,
        callback_url: str | None,
        callback_token: str | None,
    ) -> dict[str, Any]:
        """Complete an async operation (after its delay): compute its result, store it and
        deliver the callback. Runs on a thread."""
        try:
            result = op._response_body(request)
        except Exception as exc:
            status, result = "FAILED", None
            error: dict[str, Any] | None = {
                "message": f"{type(exc).__name__}: {exc}",
                "error_class": "RETRYABLE",
            }
        else:
            status, error = "COMPLETED", None
        with self._lock:
            state = self._async_ops.get(operation_id)
            if state is not None:
                state.status, state.result, state.error = status, result, error
                snapshot = state.to_dict()
            else:
                snapshot = {"operation_id": operation_id, "status": status, "result": result}
        url = (op._async or {}).get("url") or callback_url
        if url:
            body = self._callback_body(op, snapshot, callback_token, request)
            self._deliver(op.name, operation_id, url, body, callback_token)
        return snapshot

    def _callback_body(
        self,
        op: MockOperation,
        snapshot: dict[str, Any],
        token: str | None,
        request: MockRequest,
    ) -> Any:
        template = (op._async or {}).get("body")
        data = {
            "operation_id": snapshot["operation_id"],
            "status": snapshot["status"],
            "result": snapshot.get("result"),
            "callback_token": token,
        }
        if snapshot.get("error") is not None:
            data["error"] = snapshot["error"]
        if template is None:
            return data
        scope = {**data, "request": request.scope()["context"]}
        return expr.resolve(template, {**scope, "context": scope, "input": request.body})

    def _deliver(
        self, operation: str, operation_id: str, url: str, body: Any, token: str | None
    ) -> None:
        headers = {"Content-Type": "application/json"}
        if token:
            headers[self.callback_token_header] = token
        message = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        status: int | None = None
        error: str | None = None
        try:
            with urllib.request.urlopen(message, timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status, error = exc.code, str(exc)
            exc.close()
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._callbacks.append(
                Callback(
                    operation=operation,
                    operation_id=operation_id,
                    url=url,
                    body=body,
                    status=status,
                    error=error,
                    at=time.time(),
                )
            )


def _retry_after_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
