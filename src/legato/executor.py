"""Serve Python functions as an ExternalTaskExecutor (the gRPC side of a service).

A team that owns a service exposes its operations to Legato with a few lines::

    from legato import StepError
    from legato.executor import Executor

    executor = Executor(name="hr", version="1")

    @executor.operation("employee.create")
    async def create_employee(payload: dict, request) -> dict:
        if not payload.get("email"):
            raise StepError("email is required", error_class="VALIDATION")
        employee = await db.create(payload, key=request.idempotency_key)
        return executor.result(
            {"employeeId": employee.id},
            side_effects=[{"effect_id": employee.id, "effect_type": "record.created",
                           "reversible": True, "compensation_method": "employee.delete"}],
            cost={"currency": "USD", "amount": 0.02},
        )

    async with executor.running(port=50051) as address:   # or: port = await executor.serve()
        ...

An operation is a function, sync (run in a worker thread) or async, of the task's payload
(the JSON input, a dict for an object) and, if it asks for it, ``request`` (a
:class:`Request`: idempotency key, attempt, metadata, deadline, the call's headers). It

* returns JSON data, or ``executor.result(output, side_effects=..., cost=...,
  metadata=...)``: the task is COMPLETED;
* raises :class:`legato.StepError`: FAILED with its error class, message and
  ``retry_after`` (rounded up to whole seconds);
* raises :class:`Abort`: the call ends with that gRPC status (for a whole batch or stream);
* raises anything else: FAILED, RETRYABLE (the exception is logged);
* returns ``executor.defer(awaitable)``: the task goes on in the background; the call
  answers IN_PROGRESS with ``metadata["operation_id"]`` and CheckStatus reports the outcome.

``@executor.operation(name, async_=True)`` defers the whole function: every call answers
IN_PROGRESS at once. ``Executor(dedup=True)`` remembers answers by (task type,
idempotency key) in memory: a repeated key gets the stored answer (with
``metadata["replayed"] = "true"``) instead of running the function again; failures that
may be retried are not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import empty_pb2

from legato.connectors.proto import codec, pb, pb_grpc
from legato.errors import ErrorClass, StepError, UsageError

__all__ = ["Abort", "Deferred", "Executor", "Reply", "Request", "result"]

log = logging.getLogger("legato.executor")

F = TypeVar("F", bound=Callable[..., Any])

_HEALTH = {
    "SERVING": pb.HealthStatus.SERVING,
    "NOT_SERVING": pb.HealthStatus.NOT_SERVING,
    "DEGRADED": pb.HealthStatus.DEGRADED,
    "UNKNOWN": pb.HealthStatus.UNKNOWN,
}

_ABORT_CLASS: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "RETRYABLE",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "RATE_LIMITED",
    grpc.StatusCode.DEADLINE_EXCEEDED: "TIMEOUT",
    grpc.StatusCode.INVALID_ARGUMENT: "VALIDATION",
    grpc.StatusCode.UNAUTHENTICATED: "AUTH_FAILED",
    grpc.StatusCode.PERMISSION_DENIED: "AUTH_FAILED",
}


# ---- what an operation sees and returns -------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """The task around the payload, for operations that take a ``request`` argument."""

    task_id: str
    workflow_id: str
    task_type: str
    idempotency_key: str
    attempt: int
    metadata: dict[str, str] = field(default_factory=dict)  # TaskRequest.metadata
    correlation_id: str = ""
    trace_parent: str = ""
    deadline: datetime | None = None
    tenant_id: str = ""
    environment_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # the call's gRPC metadata
    callback_token: str | None = None  # `legato-callback-token`, on async starts
    is_async: bool = False  # the caller started it with `legato-async: true`
    rpc: str = "ExecuteTask"  # or "ExecuteBatch" / "StreamTask": how the task arrived
    batch_size: int = 1  # tasks in the ExecuteBatch call that carried this one


@dataclass(frozen=True, kw_only=True, slots=True)
class Reply:
    """A COMPLETED answer with more than the output: side effects, cost, metadata."""

    output: Any = None
    side_effects: tuple[Mapping[str, Any], ...] = ()
    cost: Mapping[str, Any] | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Deferred:
    """Finish the task in the background (see ``Executor.defer``)."""

    work: Awaitable[Any]
    operation_id: str | None = None


class Abort(Exception):
    """End the call with a gRPC status instead of a TaskResponse.

    ``retry_after`` is sent as a ``retry-after`` trailer (seconds), which Legato's client
    reads for RESOURCE_EXHAUSTED.
    """

    def __init__(
        self, code: grpc.StatusCode, details: str = "", *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code.name}: {details}" if details else code.name)
        self.code = code
        self.details = details
        self.retry_after = retry_after


def result(
    output: Any = None,
    *,
    side_effects: Iterable[Mapping[str, Any]] = (),
    cost: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Reply:
    """A COMPLETED answer that reports side effects (SideEffect fields) and cost
    (CostMetrics fields: currency, amount, units, unit, breakdown)."""
    return Reply(
        output=output, side_effects=tuple(side_effects), cost=cost, metadata=dict(metadata or {})
    )


# ---- the executor -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Operation:
    name: str
    fn: Callable[..., Any]
    is_async_fn: bool
    request_arg: str | None  # "request" (by keyword), "positional", or None
    async_: bool


@dataclass(slots=True)
class _Background:
    operation_id: str
    task_id: str
    task: asyncio.Task[None] | None = None
    response: pb.TaskResponse | None = None


def _request_arg(fn: Callable[..., Any]) -> str | None:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.name == "request" for p in params):
        return "request"
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) >= 2 or any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return "positional"
    return None


class Executor:
    """Python functions served as the ExternalTaskExecutor gRPC service."""

    def __init__(
        self,
        name: str,
        version: str = "1",
        *,
        dedup: bool = False,
        max_batch_size: int = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.dedup = dedup
        self.max_batch_size = max_batch_size
        self.metadata = dict(metadata or {})
        self._operations: dict[str, _Operation] = {}
        self._health: tuple[int, str] = (pb.HealthStatus.SERVING, "")
        self._stored: dict[tuple[str, str], pb.TaskResponse] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._background: dict[str, _Background] = {}
        self._server: grpc.aio.Server | None = None

    # ---- registration ----------------------------------------------------------------------

    def operation(self, task_type: str, *, async_: bool = False) -> Callable[[F], F]:
        """Register the decorated function as the operation ``task_type``."""

        def register(fn: F) -> F:
            self.add(task_type, fn, async_=async_)
            return fn

        return register

    def add(self, task_type: str, fn: Callable[..., Any], *, async_: bool = False) -> None:
        if not task_type:
            raise UsageError("an operation needs a name (its task_type)")
        if task_type in self._operations:
            raise UsageError(f"operation {task_type!r} is registered twice on {self.name}")
        self._operations[task_type] = _Operation(
            name=task_type,
            fn=fn,
            is_async_fn=inspect.iscoroutinefunction(fn),
            request_arg=_request_arg(fn),
            async_=async_,
        )

    @property
    def operations(self) -> list[str]:
        return sorted(self._operations)

    result = staticmethod(result)

    @staticmethod
    def defer(work: Awaitable[Any], *, operation_id: str | None = None) -> Deferred:
        """Answer IN_PROGRESS now; ``work``'s outcome (what an operation may return or
        raise) is reported by CheckStatus."""
        return Deferred(work, operation_id)

    def set_health(self, status: str = "SERVING", message: str = "") -> None:
        """What HealthCheck answers: SERVING, DEGRADED, NOT_SERVING or UNKNOWN."""
        try:
            self._health = (_HEALTH[status.upper()], message)
        except KeyError:
            raise UsageError(f"health status {status!r}; use one of {sorted(_HEALTH)}") from None

    # ---- serving ---------------------------------------------------------------------------

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Serve this executor on an application's own ``grpc.aio`` server."""
        pb_grpc.add_ExternalTaskExecutorServicer_to_server(_Servicer(self), server)

    async def serve(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        credentials: grpc.ServerCredentials | None = None,
    ) -> int:
        """Start a server (TLS with ``credentials``); return the port it listens on."""
        if self._server is not None:
            raise UsageError(f"executor {self.name} is already serving; stop() it first")
        server = grpc.aio.server()
        self.add_to_server(server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if credentials is not None:
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
        await server.start()
        self._server = server
        return int(bound)

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving (in-flight calls get ``grace`` seconds) and cancel background work."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        tasks = [b.task for b in self._background.values() if b.task and not b.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def running(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        credentials: grpc.ServerCredentials | None = None,
        grace: float | None = None,
    ) -> AsyncIterator[str]:
        """Serve while the block runs; yields the address (``127.0.0.1:PORT``)."""
        bound = await self.serve(port, host, credentials=credentials)
        try:
            yield f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        finally:
            await self.stop(grace)

    # ---- the calls -------------------------------------------------------------------------

    async def execute(
        self, request: pb.TaskRequest, headers: Mapping[str, str] | None = None
    ) -> pb.TaskResponse:
        """Answer one TaskRequest (what ExecuteTask does); raises :class:`Abort`."""
        headers = dict(headers or {})
        op = self._operations.get(request.task_type)
        if op is None:
            known = ", ".join(self.operations) or "none"
            return codec.failed_response(
                request.task_id,
                StepError(
                    f"service {self.name} has no operation {request.task_type!r} "
                    f"(it offers: {known})",
                    error_class=ErrorClass.PERMANENT,
                ),
            )
        if not (self.dedup and request.idempotency_key):
            return await self._run(op, request, headers)
        key = (request.task_type, request.idempotency_key)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            stored = self._stored.get(key)
            if stored is not None:
                replay = pb.TaskResponse()
                replay.CopyFrom(stored)
                replay.task_id = request.task_id
                replay.metadata["replayed"] = "true"
                return replay
            response = await self._run(op, request, headers)
            if _final(response):
                kept = pb.TaskResponse()
                kept.CopyFrom(response)
                self._stored[key] = kept
            return response

    async def check_status(self, request: pb.CheckStatusRequest) -> pb.TaskResponse:
        """Answer CheckStatus; raises :class:`Abort` (NOT_FOUND) for an unknown id."""
        background = self._background.get(request.operation_id)
        if background is None:
            raise Abort(
                grpc.StatusCode.NOT_FOUND,
                f"service {self.name} knows no operation {request.operation_id!r}",
            )
        if background.response is None:
            return pb.TaskResponse(
                task_id=background.task_id,
                status=pb.IN_PROGRESS,
                metadata={"operation_id": background.operation_id},
            )
        return background.response

    def capabilities(self) -> pb.ServiceCapabilities:
        return pb.ServiceCapabilities(
            service_name=self.name,
            version=self.version,
            operations=self.operations,
            async_operations=sorted(n for n, op in self._operations.items() if op.async_),
            supports_batch=True,
            supports_streaming=True,
            max_batch_size=self.max_batch_size,
            metadata=self.metadata,
        )

    def health(self) -> pb.HealthStatus:
        status, message = self._health
        return pb.HealthStatus(status=status, message=message)  # type: ignore[arg-type]

    # ---- running an operation --------------------------------------------------------------

    def _context(self, request: pb.TaskRequest, headers: dict[str, str]) -> Request:
        return Request(
            task_id=request.task_id,
            workflow_id=request.workflow_id,
            task_type=request.task_type,
            idempotency_key=request.idempotency_key,
            attempt=request.attempt_number,
            metadata=dict(request.metadata),
            correlation_id=request.correlation_id,
            trace_parent=request.trace_parent,
            deadline=(
                codec.timestamp_from_proto(request.deadline)
                if request.HasField("deadline")
                else None
            ),
            tenant_id=request.auth.tenant_id,
            environment_id=request.auth.environment_id,
            headers=headers,
            callback_token=headers.get("legato-callback-token"),
            is_async=headers.get("legato-async", "").lower() == "true",
            rpc=headers.get(_RPC, "ExecuteTask"),
            batch_size=int(headers.get(_BATCH_SIZE, "1")),
        )

    async def _run(
        self, op: _Operation, request: pb.TaskRequest, headers: dict[str, str]
    ) -> pb.TaskResponse:
        context = self._context(request, headers)
        if context.deadline is not None and context.deadline <= datetime.now(UTC):
            return codec.failed_response(
                request.task_id,
                StepError(
                    f"the deadline of task {request.task_id} had passed when it arrived",
                    error_class=ErrorClass.TIMEOUT,
                ),
            )
        payload = codec.unpack_json(request.payload if request.HasField("payload") else None)
        if op.async_:
            return self._start(request, self._call(op, payload, context), None)
        try:
            outcome = await self._call(op, payload, context)
        except Abort:
            raise
        except Exception as exc:
            return self._failure(request, exc)
        if isinstance(outcome, Deferred):
            return self._start(request, outcome.work, outcome.operation_id)
        return self._response(request.task_id, outcome)

    async def _call(self, op: _Operation, payload: Any, context: Request) -> Any:
        args: list[Any] = [payload]
        kwargs: dict[str, Any] = {}
        if op.request_arg == "request":
            kwargs["request"] = context
        elif op.request_arg == "positional":
            args.append(context)
        if op.is_async_fn:
            return await op.fn(*args, **kwargs)
        outcome = await asyncio.to_thread(op.fn, *args, **kwargs)
        if inspect.isawaitable(outcome):  # a sync function that returned a coroutine
            return await outcome
        return outcome

    def _failure(self, request: pb.TaskRequest, exc: Exception) -> pb.TaskResponse:
        if isinstance(exc, StepError):
            return codec.failed_response(request.task_id, exc)
        log.exception(
            "operation failed with an unexpected exception",
            extra={"service": self.name, "task_type": request.task_type, "task": request.task_id},
        )
        return codec.failed_response(
            request.task_id,
            StepError(
                f"{request.task_type} raised {type(exc).__name__}: {exc}",
                error_class=ErrorClass.RETRYABLE,
            ),
        )

    def _response(self, task_id: str, outcome: Any) -> pb.TaskResponse:
        if isinstance(outcome, pb.TaskResponse):
            if not outcome.task_id:
                outcome.task_id = task_id
            return outcome
        reply = outcome if isinstance(outcome, Reply) else Reply(output=outcome)
        response = pb.TaskResponse(task_id=task_id, status=pb.COMPLETED)
        try:
            packed = codec.pack_json(reply.output)
            response.side_effects.extend(codec.side_effect_to_proto(e) for e in reply.side_effects)
            if reply.cost is not None:
                response.cost.CopyFrom(codec.cost_to_proto(reply.cost))
        except (TypeError, ValueError) as exc:
            return codec.failed_response(
                task_id,
                StepError(
                    f"the operation's answer cannot be sent: {exc}",
                    error_class=ErrorClass.PERMANENT,
                ),
            )
        if packed is not None:
            response.result.CopyFrom(packed)
        response.metadata.update(dict(reply.metadata))
        return response

    def _start(
        self, request: pb.TaskRequest, work: Awaitable[Any], operation_id: str | None
    ) -> pb.TaskResponse:
        operation_id = operation_id or f"op-{uuid.uuid4().hex}"
        if operation_id in self._background:
            _close(work)
            raise Abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"operation {operation_id!r} was started already",
            )
        background = _Background(operation_id=operation_id, task_id=request.task_id)
        self._background[operation_id] = background

        async def finish() -> None:
            response: pb.TaskResponse
            try:
                outcome = await work
            except Abort as abort:  # no call to end any more: report it as a failure
                response = codec.failed_response(
                    request.task_id,
                    StepError(str(abort), error_class=_ABORT_CLASS.get(abort.code, "PERMANENT")),
                )
            except Exception as exc:
                response = self._failure(request, exc)
            else:
                response = self._response(request.task_id, outcome)
            response.metadata["operation_id"] = operation_id
            background.response = response

        background.task = asyncio.get_running_loop().create_task(
            finish(), name=f"legato-executor-{operation_id}"
        )
        return pb.TaskResponse(
            task_id=request.task_id,
            status=pb.IN_PROGRESS,
            metadata={"operation_id": operation_id},
        )


def _final(response: pb.TaskResponse) -> bool:
    """Whether a response may be replayed for the same key: success, a started
    operation, or a failure that retrying would not change."""
    if response.status in (pb.COMPLETED, pb.IN_PROGRESS, pb.PENDING):
        return True
    if response.status == pb.FAILED:
        error_class = codec.error_class_from_proto(response.error_class)
        return error_class in (ErrorClass.PERMANENT, ErrorClass.VALIDATION)
    return False


def _close(work: Awaitable[Any]) -> None:
    close = getattr(work, "close", None)
    if callable(close):
        close()  # a coroutine that will never run: no "never awaited" warning


def _headers(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {
        str(key).lower(): value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }


async def _abort(context: grpc.aio.ServicerContext[Any, Any], abort: Abort) -> None:
    trailers: tuple[tuple[str, str], ...] = ()
    if abort.retry_after is not None:
        trailers = (("retry-after", str(math.ceil(abort.retry_after))),)
    await context.abort(abort.code, abort.details, trailers)


# how a task arrived, passed along with the call's metadata (gRPC keys never start with ":")
_RPC = ":rpc"
_BATCH_SIZE = ":batch-size"


class _Servicer(pb_grpc.ExternalTaskExecutorServicer):
    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def ExecuteTask(
        self, request: pb.TaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TaskResponse:
        try:
            return await self._executor.execute(request, _headers(context))
        except Abort as abort:
            await _abort(context, abort)
            raise AssertionError("unreachable") from None  # pragma: no cover

    async def ExecuteBatch(
        self, request: pb.BatchTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BatchTaskResponse:
        executor = self._executor
        if executor.max_batch_size and len(request.tasks) > executor.max_batch_size:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a batch of {len(request.tasks)} tasks; {executor.name} takes at most "
                f"{executor.max_batch_size}",
            )
        headers = {
            **_headers(context),
            _RPC: "ExecuteBatch",
            _BATCH_SIZE: str(len(request.tasks)),
        }
        try:
            responses = await asyncio.gather(*(executor.execute(t, headers) for t in request.tasks))
        except Abort as abort:
            await _abort(context, abort)
            raise AssertionError("unreachable") from None  # pragma: no cover
        return pb.BatchTaskResponse(responses=responses, batch_id=request.batch_id)

    async def StreamTask(
        self,
        request_iterator: AsyncIterator[pb.TaskRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.TaskResponse]:
        headers = _headers(context)
        try:
            async for request in request_iterator:
                yield await self._executor.execute(request, headers)
        except Abort as abort:
            await _abort(context, abort)

    async def HealthCheck(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HealthStatus:
        return self._executor.health()

    async def GetCapabilities(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServiceCapabilities:
        return self._executor.capabilities()

    async def CheckStatus(
        self, request: pb.CheckStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TaskResponse:
        try:
            return await self._executor.check_status(request)
        except Abort as abort:
            await _abort(context, abort)
            raise AssertionError("unreachable") from None  # pragma: no cover
