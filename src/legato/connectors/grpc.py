"""The gRPC adapter: a service that implements the ExternalTaskExecutor contract.

``GrpcConnector(config, auth=..., network=...)`` talks to one service of
``services.yaml`` (``type: grpc``) over one ``grpc.aio`` channel per endpoint, created on
first use and reused by every call (HTTP/2 multiplexes them)::

    connector = GrpcConnector(config, auth=auth)
    result = await connector.execute(task)          # Result, or a classified StepError
    await connector.aclose()

The endpoint decides the transport: ``grpcs://`` / ``https://`` is TLS, ``grpc://`` /
``http://`` is plaintext, and a bare ``host:port`` is plaintext on loopback (``127.0.0.1``,
``localhost``, ``::1``) and TLS anywhere else; ``mtls`` auth always means TLS with the
client certificate. Connector endpoints are operator configuration, so the SSRF guard
(``NetworkPolicy``, ADR 0004) does not apply to them.

Every call carries metadata: the service's configured ``headers``, the auth provider's
``headers()`` (keys lower-cased), ``idempotency-key`` (or the service's
``idempotency_header``), ``x-correlation-id`` and ``traceparent``. It waits at most
``timeout.connect`` for the connection and ``timeout.request`` (or less, until the task's
deadline) for the answer.

Failures are :class:`~legato.errors.StepError` with the contract's classes: a FAILED or
RETRY response carries its own ``error_class`` (NONE is read as PERMANENT for FAILED,
RETRYABLE for RETRY) and ``retry_after_seconds``; a gRPC status is classified by code
(:func:`step_error_from_grpc`). UNAUTHENTICATED refreshes the credentials
(``auth.refresh()``) and tries once more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import ipaddress
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio
from google.protobuf import empty_pb2

from legato.connectors.base import AuthProvider, NoAuth, Result, Task
from legato.connectors.config import MtlsAuth, ServiceConfig
from legato.connectors.proto import codec, pb, pb_grpc
from legato.errors import ConfigurationError, ErrorClass, StepError, UsageError
from legato.net import NetworkPolicy

__all__ = ["GrpcConnector", "RemoteCapabilities", "parse_endpoint", "step_error_from_grpc"]

_USER_AGENT = "legato-grpc/0.1"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


# ---- endpoints --------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    name = host.strip("[]").lower().rstrip(".")
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """``(target, tls)`` for an endpoint of ``services.yaml``.

    ``grpcs://h:p`` / ``https://h:p`` -> TLS (port 443 by default); ``grpc://h:p`` /
    ``http://h:p`` -> plaintext (port 80 by default); ``unix:path`` -> plaintext; a bare
    ``h:p`` (or a gRPC name like ``dns:///h:p``) -> plaintext on loopback, TLS elsewhere.
    """
    text = endpoint.strip()
    if text.startswith(("unix:", "unix-abstract:")):
        return text, False
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    scheme = scheme.lower()
    if scheme in ("grpcs", "https", "grpc", "http"):
        parts = urlsplit(f"//{rest}")
        if parts.path not in ("", "/") or not parts.hostname:
            raise ConfigurationError(
                f"gRPC endpoint {endpoint!r} must be host:port with no path, like "
                "'grpcs://hr.example.com:443' or 'grpc://127.0.0.1:50051'"
            )
        tls = scheme in ("grpcs", "https")
        port = parts.port or (443 if tls else 80)
        host = parts.hostname
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{port}", tls
    if scheme == "dns":
        authority = rest.lstrip("/")
        host = urlsplit(f"//{authority}").hostname or ""
        return text, not _is_loopback(host)
    if scheme:
        raise ConfigurationError(
            f"gRPC endpoint {endpoint!r} has the scheme {scheme!r}; use grpcs:// (TLS), "
            "grpc:// (plaintext), or write host:port"
        )
    host = urlsplit(f"//{text}").hostname or ""
    if not host:
        raise ConfigurationError(f"gRPC endpoint {endpoint!r} has no host; write host:port")
    return text, not _is_loopback(host)


# ---- errors -----------------------------------------------------------------------------------

_CODE_CLASS: dict[grpc.StatusCode, ErrorClass] = {
    grpc.StatusCode.CANCELLED: ErrorClass.RETRYABLE,
    grpc.StatusCode.UNKNOWN: ErrorClass.RETRYABLE,
    grpc.StatusCode.INVALID_ARGUMENT: ErrorClass.VALIDATION,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorClass.TIMEOUT,
    grpc.StatusCode.NOT_FOUND: ErrorClass.PERMANENT,
    grpc.StatusCode.ALREADY_EXISTS: ErrorClass.PERMANENT,
    grpc.StatusCode.PERMISSION_DENIED: ErrorClass.AUTH_FAILED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorClass.RATE_LIMITED,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorClass.PERMANENT,
    grpc.StatusCode.ABORTED: ErrorClass.RETRYABLE,
    grpc.StatusCode.OUT_OF_RANGE: ErrorClass.VALIDATION,
    grpc.StatusCode.UNIMPLEMENTED: ErrorClass.PERMANENT,
    grpc.StatusCode.INTERNAL: ErrorClass.RETRYABLE,
    grpc.StatusCode.UNAVAILABLE: ErrorClass.RETRYABLE,
    grpc.StatusCode.DATA_LOSS: ErrorClass.PERMANENT,
    grpc.StatusCode.UNAUTHENTICATED: ErrorClass.AUTH_FAILED,
}

_CODE_HINT: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAUTHENTICATED: "check the service's credentials (auth in services.yaml)",
    grpc.StatusCode.PERMISSION_DENIED: "the credentials are not allowed to do this operation",
    grpc.StatusCode.UNIMPLEMENTED: (
        "check that the endpoint serves workflow.v1.ExternalTaskExecutor and this method"
    ),
    grpc.StatusCode.UNAVAILABLE: "the service is down or unreachable; it will be retried",
    grpc.StatusCode.DEADLINE_EXCEEDED: "raise timeout.request in services.yaml if it is slow",
}


def _retry_after(metadata: Any) -> float | None:
    for key, value in metadata or ():
        if str(key).lower() == "retry-after":
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return None
            return max(0.0, seconds)
    return None


def step_error_from_grpc(
    exc: grpc.aio.AioRpcError, *, service: str = "", method: str = "", target: str = ""
) -> StepError:
    """Classify a failed call by its status code (never by its message).

    UNAVAILABLE, ABORTED, INTERNAL, UNKNOWN, CANCELLED -> RETRYABLE; RESOURCE_EXHAUSTED ->
    RATE_LIMITED (``retry_after`` from a ``retry-after`` trailer); DEADLINE_EXCEEDED ->
    TIMEOUT; UNAUTHENTICATED, PERMISSION_DENIED -> AUTH_FAILED; INVALID_ARGUMENT,
    OUT_OF_RANGE -> VALIDATION; NOT_FOUND, UNIMPLEMENTED and the rest -> PERMANENT.
    """
    code = exc.code()
    error_class = _CODE_CLASS.get(code, ErrorClass.PERMANENT)
    retry_after = _retry_after(exc.trailing_metadata())
    where = " ".join(part for part in (service, method) if part) or "gRPC call"
    text = f"{where} failed with gRPC status {code.name}"
    if exc.details():
        text += f": {exc.details()}"
    hint = _CODE_HINT.get(code)
    if hint:
        text += f" ({hint})"
    details: dict[str, Any] = {"grpc_status": code.name}
    for key, value in (("service", service), ("method", method), ("target", target)):
        if value:
            details[key] = value
    if retry_after is not None:
        details["retry_after"] = retry_after
    return StepError(text, error_class=error_class, details=details, retry_after=retry_after)


async def _refresh(auth: AuthProvider, stale: Mapping[str, str]) -> None:
    """``auth.refresh()``, handing it the rejected headers if it takes them (the providers
    of :mod:`legato.connectors.auth` do: a token renewed meanwhile is not fetched again)."""
    refresh: Any = auth.refresh
    try:
        takes_stale = bool(inspect.signature(refresh).parameters)
    except (TypeError, ValueError):
        takes_stale = False
    await (refresh(stale) if takes_stale else refresh())


# ---- capabilities -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoteCapabilities:
    """What the service says about itself (GetCapabilities)."""

    service_name: str
    version: str
    operations: frozenset[str]
    async_operations: frozenset[str] = frozenset()
    supports_batch: bool = False
    supports_streaming: bool = False
    max_batch_size: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


# ---- the adapter ------------------------------------------------------------------------------


class GrpcConnector:
    """The adapter for one ``type: grpc`` service (see the module docstring)."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        auth: AuthProvider | None = None,
        network: NetworkPolicy | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._auth: AuthProvider = auth if auth is not None else NoAuth()
        self._network = network  # not applied: endpoints are operator configuration
        self._channels: dict[str, tuple[grpc.aio.Channel, pb_grpc.ExternalTaskExecutorStub]] = {}
        self._closed = False
        parse_endpoint(config.endpoint)  # fail at construction on a malformed endpoint

    # ---- the Connector protocol -----------------------------------------------------------

    async def execute(self, task: Task) -> Result:
        request = self._request(task)
        response = await self._unary(task, "ExecuteTask", request, deadline=task.deadline)
        return self._completed(response, task, method="ExecuteTask")

    async def execute_batch(self, tasks: list[Task]) -> list[Result | Exception]:
        """One ExecuteBatch call; one Result or StepError per task, in order.

        A failure of the call itself (UNAVAILABLE, a timeout) is every task's error.
        """
        if not tasks:
            return []
        outcomes: list[Result | Exception | None] = [None] * len(tasks)
        sent: list[int] = []
        requests: list[pb.TaskRequest] = []
        for index, task in enumerate(tasks):
            try:
                requests.append(self._request(task))
            except StepError as exc:
                outcomes[index] = exc
                continue
            sent.append(index)
        if requests:
            keys = "\n".join(r.idempotency_key or r.task_id for r in requests)
            batch = pb.BatchTaskRequest(
                tasks=requests, batch_id="batch-" + hashlib.sha256(keys.encode()).hexdigest()[:24]
            )
            deadlines = [t.deadline for t in tasks if t.deadline is not None]
            try:
                reply = await self._unary(
                    tasks[sent[0]],
                    "ExecuteBatch",
                    batch,
                    deadline=min(deadlines) if deadlines else None,
                    per_task=False,
                )
            except StepError as exc:
                for index in sent:
                    outcomes[index] = exc
            else:
                self._match_batch(tasks, sent, list(reply.responses), outcomes)
        return [o if o is not None else self._missing(tasks[i]) for i, o in enumerate(outcomes)]

    async def start_async(self, task: Task, callback_token: str) -> Result:
        """ExecuteTask with ``legato-async: true`` and ``legato-callback-token`` metadata.

        A PENDING/IN_PROGRESS answer gives ``Result(operation_id=...)`` (the response's
        ``metadata["operation_id"]``, else its task_id); a service that finished at once
        gives its full Result. ``metadata["task_status"]`` says which.
        """
        request = self._request(task)
        extra = (("legato-async", "true"), ("legato-callback-token", callback_token))
        response = await self._unary(
            task, "ExecuteTask", request, deadline=task.deadline, extra=extra
        )
        operation_id = response.metadata.get("operation_id") or response.task_id or task.task_id
        status = pb.TaskStatus.Name(response.status)
        if response.status in (pb.PENDING, pb.IN_PROGRESS):
            metadata = {**response.metadata, "task_status": status}
            return Result(operation_id=operation_id, metadata=metadata)
        result = self._completed(response, task, method="ExecuteTask")
        return dataclasses.replace(
            result, operation_id=operation_id, metadata={**result.metadata, "task_status": status}
        )

    async def check_status(self, task: Task, operation_id: str) -> Result | None:
        """CheckStatus: the Result when COMPLETED, None while PENDING/IN_PROGRESS."""
        request = pb.CheckStatusRequest(
            operation_id=operation_id,
            task_id=task.task_id,
            task_type=self._task_type(task),
            idempotency_key=task.idempotency_key,
        )
        response = await self._unary(task, "CheckStatus", request, deadline=None)
        if response.status in (pb.PENDING, pb.IN_PROGRESS):
            return None
        result = self._completed(response, task, method="CheckStatus")
        return dataclasses.replace(result, operation_id=operation_id)

    async def health_check(self) -> None:
        """HealthCheck; a StepError (RETRYABLE) unless the service is SERVING or DEGRADED."""
        status = await self._unary(None, "HealthCheck", empty_pb2.Empty(), deadline=None)
        if status.status in (pb.HealthStatus.SERVING, pb.HealthStatus.DEGRADED):
            return
        name = pb.HealthStatus.ServingStatus.Name(status.status)
        raise StepError(
            f"service {self.name} reports {name}"
            + (f": {status.message}" if status.message else ""),
            error_class=ErrorClass.RETRYABLE,
            details={"service": self.name, "health": name, **dict(status.details)},
        )

    def capabilities(self) -> set[str]:
        """The operations ``services.yaml`` lists for the service (empty: not declared)."""
        return set(self.config.capabilities)

    async def fetch_capabilities(self) -> RemoteCapabilities:
        """Ask the service (GetCapabilities)."""
        caps = await self._unary(None, "GetCapabilities", empty_pb2.Empty(), deadline=None)
        return RemoteCapabilities(
            service_name=caps.service_name,
            version=caps.version,
            operations=frozenset(caps.operations),
            async_operations=frozenset(caps.async_operations),
            supports_batch=caps.supports_batch,
            supports_streaming=caps.supports_streaming,
            max_batch_size=caps.max_batch_size,
            metadata=dict(caps.metadata),
        )

    async def stream(
        self,
        tasks: Iterable[Task] | AsyncIterable[Task],
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[Result | StepError]:
        """StreamTask: send the tasks on one stream, yield one outcome per response.

        A task's failure is yielded (a StepError), not raised; a failure of the stream
        itself is raised. ``timeout`` bounds the whole stream (default: none). Responses
        come in the service's order; match them by ``Result.metadata`` or order.
        """
        target, stub = await self._connect(None)
        by_id: dict[str, Task] = {}
        rejected: list[StepError] = []  # tasks whose input cannot be sent

        def accept(task: Task) -> pb.TaskRequest | None:
            try:
                request = self._request(task)
            except StepError as exc:
                rejected.append(exc)
                return None
            by_id[task.task_id] = task
            return request

        async def requests() -> AsyncIterator[pb.TaskRequest]:
            if isinstance(tasks, AsyncIterable):
                async for task in tasks:
                    if (request := accept(task)) is not None:
                        yield request
            else:
                for task in tasks:
                    if (request := accept(task)) is not None:
                        yield request

        call = stub.StreamTask(
            requests(),
            timeout=timeout,
            metadata=self._metadata(None, await self._auth.headers(), per_task=False),
        )
        try:
            async for response in call:
                task = by_id.get(response.task_id)
                try:
                    yield self._completed(response, task, method="StreamTask")
                except StepError as exc:
                    yield exc
        except grpc.aio.AioRpcError as exc:
            raise step_error_from_grpc(
                exc, service=self.name, method="StreamTask", target=target
            ) from exc
        finally:
            call.cancel()
        for error in rejected:
            yield error

    async def aclose(self) -> None:
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        for channel, _ in channels:
            await channel.close()

    async def __aenter__(self) -> GrpcConnector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- requests and responses ----------------------------------------------------------

    def _task_type(self, task: Task) -> str:
        """The operation's name at the service: ``operations.<op>.task_type`` if set."""
        operations: Mapping[str, Any] = self.config.operations
        if task.version and task.version in self.config.versions:
            operations = self.config.versions[task.version].operations or operations
        spec = operations.get(task.operation)
        if isinstance(spec, str):
            return spec
        if isinstance(spec, Mapping) and isinstance(spec.get("task_type"), str):
            return str(spec["task_type"])
        return task.operation

    def _request(self, task: Task) -> pb.TaskRequest:
        try:
            payload = codec.pack_json(task.input)
        except TypeError as exc:
            raise StepError(
                f"the input of step {task.task_id} for {self.name} {task.operation} cannot "
                f"be sent: {exc}",
                error_class=ErrorClass.VALIDATION,
                details={"service": self.name, "operation": task.operation},
            ) from exc
        request = pb.TaskRequest(
            task_id=task.task_id,
            workflow_id=task.run_id,
            task_type=self._task_type(task),
            idempotency_key=task.idempotency_key,
            metadata=dict(task.metadata),
            correlation_id=task.correlation_id,
            trace_parent=task.traceparent,
            auth=pb.AuthContext(tenant_id=task.tenant_id, environment_id=task.environment_id),
            attempt_number=task.attempt,
        )
        if payload is not None:
            request.payload.CopyFrom(payload)
        if task.deadline is not None:
            request.deadline.CopyFrom(codec.timestamp_to_proto(task.deadline))
        return request

    def _completed(self, response: pb.TaskResponse, task: Task | None, *, method: str) -> Result:
        """The Result of a COMPLETED response; raise the StepError of any other status."""
        try:
            status = pb.TaskStatus.Name(response.status)
        except ValueError:  # a status this build of the contract does not know
            status = str(response.status)
        operation = task.operation if task is not None else ""
        details: dict[str, Any] = {
            "service": self.name,
            "method": method,
            "task_id": response.task_id,
            "status": status,
        }
        if operation:
            details["operation"] = operation
        if response.status == pb.COMPLETED:
            return Result(
                output=codec.unpack_json(response.result if response.HasField("result") else None),
                side_effects=tuple(codec.side_effect_from_proto(e) for e in response.side_effects),
                cost=codec.cost_from_proto(response.cost) if response.HasField("cost") else None,
                metadata=dict(response.metadata),
            )
        where = f"{self.name} {operation}".strip()
        if response.status in (pb.FAILED, pb.RETRY):
            default = ErrorClass.RETRYABLE if response.status == pb.RETRY else ErrorClass.PERMANENT
            error_class = codec.error_class_from_proto(response.error_class, default)
            retry_after = float(response.retry_after_seconds) or None
            if response.side_effects:
                details["side_effects"] = [
                    codec.side_effect_from_proto(e) for e in response.side_effects
                ]
            if retry_after is not None:
                details["retry_after"] = retry_after
            message = response.error_message or f"the service answered {status}"
            raise StepError(
                f"{where}: {message}",
                error_class=error_class,
                details=details,
                retry_after=retry_after,
            )
        if response.status in (pb.PENDING, pb.IN_PROGRESS):
            raise StepError(
                f"{where}: the service answered {status} to a synchronous call; mark the "
                "task `async: true` so Legato waits for its callback or polls CheckStatus",
                error_class=ErrorClass.PERMANENT,
                details=details,
            )
        raise StepError(
            f"{where}: the service answered {status}, which a task call cannot end with",
            error_class=ErrorClass.PERMANENT,
            details=details,
        )

    def _match_batch(
        self,
        tasks: list[Task],
        sent: list[int],
        responses: list[pb.TaskResponse],
        outcomes: list[Result | Exception | None],
    ) -> None:
        ids = [tasks[i].task_id for i in sent]
        by_id = {r.task_id: r for r in responses if r.task_id}
        matched: list[pb.TaskResponse | None]
        if len(set(ids)) == len(ids) and all(i in by_id for i in ids):
            matched = [by_id[i] for i in ids]
        else:  # not every response names its task: the contract's order decides
            matched = [responses[n] if n < len(responses) else None for n in range(len(sent))]
        for index, response in zip(sent, matched, strict=True):
            if response is None:
                continue
            try:
                outcomes[index] = self._completed(response, tasks[index], method="ExecuteBatch")
            except StepError as exc:
                outcomes[index] = exc

    def _missing(self, task: Task) -> StepError:
        return StepError(
            f"{self.name} {task.operation}: the batch response has no answer for step "
            f"{task.task_id}; it will be retried",
            error_class=ErrorClass.RETRYABLE,
            details={"service": self.name, "operation": task.operation, "task_id": task.task_id},
        )

    # ---- calls ---------------------------------------------------------------------------

    async def _unary(
        self,
        task: Task | None,
        method: str,
        request: Any,
        *,
        deadline: datetime | None,
        extra: tuple[tuple[str, str], ...] = (),
        per_task: bool = True,
    ) -> Any:
        """Call ``method``; on UNAUTHENTICATED refresh the credentials and call once more."""
        target, stub = await self._connect(task)
        call = getattr(stub, method)
        for attempt in (1, 2):
            timeout = self._timeout(task, deadline, method)
            credentials = await self._auth.headers()
            metadata = self._metadata(task, credentials, per_task=per_task) + extra
            try:
                return await call(request, timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and attempt == 1:
                    await _refresh(self._auth, credentials)
                    continue
                error = step_error_from_grpc(exc, service=self.name, method=method, target=target)
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    error.details["refreshed"] = True
                raise error from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout(self, task: Task | None, deadline: datetime | None, method: str) -> float:
        timeout = float(self.config.timeout.request)
        if deadline is not None:
            left = (deadline - datetime.now(UTC)).total_seconds()
            if left <= 0:
                raise StepError(
                    f"{self.name} {method}: the deadline of step "
                    f"{task.task_id if task else ''} passed before the call",
                    error_class=ErrorClass.TIMEOUT,
                    details={"service": self.name, "method": method, "deadline": str(deadline)},
                )
            timeout = min(timeout, left)
        return timeout

    def _metadata(
        self, task: Task | None, credentials: Mapping[str, str], *, per_task: bool = True
    ) -> tuple[tuple[str, str], ...]:
        headers: dict[str, str] = {k.lower(): v for k, v in self.config.headers.items()}
        headers.update({k.lower(): v for k, v in credentials.items()})
        if task is not None:
            if per_task and task.idempotency_key:
                name = (self.config.header_for_idempotency() or "idempotency-key").lower()
                headers[name] = task.idempotency_key
            if task.correlation_id:
                headers["x-correlation-id"] = task.correlation_id
            if task.traceparent:
                headers["traceparent"] = task.traceparent
        return tuple(headers.items())

    def _endpoint(self, task: Task | None) -> str:
        if task is not None and task.version and task.version in self.config.versions:
            return self.config.versions[task.version].endpoint or self.config.endpoint
        return self.config.endpoint

    async def _connect(self, task: Task | None) -> tuple[str, pb_grpc.ExternalTaskExecutorStub]:
        """The channel for the task's endpoint (created once), connected within
        ``timeout.connect``."""
        if self._closed:
            raise UsageError(f"the gRPC connector of {self.name} is closed")
        endpoint = self._endpoint(task)
        entry = self._channels.get(endpoint)
        if entry is None:
            entry = self._open(endpoint)
            self._channels[endpoint] = entry
        channel, stub = entry
        target = parse_endpoint(endpoint)[0]
        if channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            connect = float(self.config.timeout.connect)
            try:
                async with asyncio.timeout(connect):
                    await channel.channel_ready()
            except TimeoutError as exc:
                raise StepError(
                    f"could not connect to {self.name} at {target} within {connect:g}s; check "
                    "that the service is up and the endpoint is right (it will be retried)",
                    error_class=ErrorClass.TIMEOUT,
                    details={"service": self.name, "target": target, "phase": "connect"},
                ) from exc
        return target, stub

    def _open(self, endpoint: str) -> tuple[grpc.aio.Channel, pb_grpc.ExternalTaskExecutorStub]:
        target, tls = parse_endpoint(endpoint)
        mtls = isinstance(self.config.auth, MtlsAuth) or self._auth.ssl_context() is not None
        scheme = endpoint.partition("://")[0].lower() if "://" in endpoint else ""
        if mtls and scheme in ("grpc", "http"):
            raise ConfigurationError(
                f"service {self.name} uses mTLS but its endpoint {endpoint!r} says plaintext; "
                "write grpcs://host:port"
            )
        options = [("grpc.primary_user_agent", _USER_AGENT)]
        if tls or mtls:
            channel = grpc.aio.secure_channel(target, self._credentials(), options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
        return channel, pb_grpc.ExternalTaskExecutorStub(channel)

    def _credentials(self) -> grpc.ChannelCredentials:
        custom = getattr(self._auth, "grpc_credentials", None)
        if callable(custom):
            credentials = custom()
            if credentials is not None:
                return credentials
        auth = self.config.auth
        if isinstance(auth, MtlsAuth):
            try:
                return grpc.ssl_channel_credentials(
                    root_certificates=Path(auth.ca).read_bytes() if auth.ca else None,
                    private_key=Path(auth.key).read_bytes(),
                    certificate_chain=Path(auth.cert).read_bytes(),
                )
            except OSError as exc:
                raise ConfigurationError(
                    f"service {self.name}: cannot read the mTLS certificate files ({exc}); "
                    "check auth.cert, auth.key and auth.ca in services.yaml"
                ) from exc
        if self._auth.ssl_context() is not None:
            raise ConfigurationError(
                f"service {self.name}: the auth provider has a client certificate "
                "(ssl_context) but gRPC needs PEM files; give it grpc_credentials() or use "
                "`auth: {type: mtls, cert, key, ca}`"
            )
        return grpc.ssl_channel_credentials()
