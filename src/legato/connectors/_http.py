"""What the HTTP adapters (REST, GraphQL, SOAP) share: one pooled ``httpx`` client per
service, the headers of a call, the refresh-once on 401, error classification, and the
reading of response bodies and of async status documents; and :class:`HttpConnector`, the
base of the REST and GraphQL adapters (construction and its checks, versions'
endpoints, batches one task at a time, callback headers, closing).

Connector endpoints are operator configuration (ADR 0004): these clients do not go
through the SSRF guard, follow no redirects and ignore proxy environment variables
(``trust_env=False``), so a call goes where ``services.yaml`` says and nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Self
from urllib.parse import quote, unquote, urlsplit

import httpx

from legato.connectors.base import AuthProvider, NoAuth, Result, Task
from legato.connectors.config import MtlsAuth, ServiceConfig
from legato.errors import ConfigurationError, ErrorClass, StepError, UsageError
from legato.net import (
    NetworkPolicy,
    retry_after_seconds,
    safe_url,
    step_error_for_status,
    step_error_from_httpx,
)

__all__ = [
    "DEFAULT_IDEMPOTENCY_HEADER",
    "HttpCall",
    "HttpConnector",
    "call_headers",
    "call_timeout",
    "check_http_endpoint",
    "decode_body",
    "default_ssl_context",
    "error_class_of",
    "legato_envelope",
    "make_client",
    "operation_id_from",
    "read_status",
    "refresh_auth",
    "reported_error",
    "response_error",
    "status_word",
    "tls_verify",
]

DEFAULT_IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "legato-connector/0.1"
_ERROR_TEXT = 300

# Words a status document uses (compared lower-case, with "-" and " " read as "_").
_COMPLETED = frozenset(
    {"completed", "complete", "succeeded", "success", "successful", "done", "finished"}
)
_PENDING = frozenset(
    {
        "pending",
        "in_progress",
        "inprogress",
        "running",
        "queued",
        "accepted",
        "started",
        "processing",
        "submitted",
        "waiting",
    }
)
_FAILED = frozenset(
    {"failed", "failure", "error", "errored", "cancelled", "canceled", "rejected", "aborted"}
)


# ---- the client -------------------------------------------------------------------------------


def check_http_endpoint(config: ServiceConfig, endpoint: str | None = None) -> str:
    """The endpoint, checked: an ``http(s)://`` URL with a host (ConfigurationError if not;
    mTLS needs ``https``)."""
    url = (endpoint or config.endpoint).strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"service {config.name}: endpoint {url!r} must be an http:// or https:// URL "
            "with a host, like 'https://api.example.com/v1'"
        )
    if isinstance(config.auth, MtlsAuth) and parts.scheme.lower() != "https":
        raise ConfigurationError(
            f"service {config.name} uses mTLS but its endpoint {url!r} is plain http; "
            "write https://"
        )
    return url


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """One verifying client context (certifi's CAs) for every service without mTLS:
    building one costs a fraction of a second, so the clients share it."""
    return httpx.create_ssl_context(trust_env=False)


def tls_verify(auth: AuthProvider) -> ssl.SSLContext:
    """The auth provider's context (the client certificate, for mTLS), else the default."""
    context = auth.ssl_context()
    return context if context is not None else default_ssl_context()


def make_client(config: ServiceConfig, auth: AuthProvider) -> httpx.AsyncClient:
    """The service's pooled client: ``timeout.connect`` to connect, ``timeout.request`` for
    the rest, the auth provider's client certificate (mTLS) when it has one."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(float(config.timeout.request), connect=float(config.timeout.connect)),
        verify=tls_verify(auth),
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        headers={"User-Agent": USER_AGENT},
    )


# ---- one call ---------------------------------------------------------------------------------


def call_headers(
    config: ServiceConfig,
    task: Task | None,
    credentials: Mapping[str, str],
    *,
    idempotency_key: str | None = None,
    extra: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
) -> httpx.Headers:
    """The headers of a call: ``defaults`` (``Accept``), the service's ``headers``, the
    credentials, then the task's idempotency key (under the service's idempotency header,
    ``Idempotency-Key`` by default), ``X-Correlation-Id``, ``traceparent``,
    ``X-Legato-Attempt`` and ``X-Legato-Run-Id``, then ``extra``. Later ones replace
    earlier ones of the same name (names are case-insensitive)."""
    headers = httpx.Headers()
    for source in (defaults or {}, config.headers, credentials):
        for name, value in source.items():
            headers[name] = value
    key = idempotency_key if idempotency_key is not None else (task.idempotency_key if task else "")
    if key:
        headers[config.header_for_idempotency() or DEFAULT_IDEMPOTENCY_HEADER] = key
    if task is not None:
        if task.correlation_id:
            headers["X-Correlation-Id"] = task.correlation_id
        if task.traceparent:
            headers["traceparent"] = task.traceparent
        headers["X-Legato-Attempt"] = str(task.attempt)
        if task.run_id:
            headers["X-Legato-Run-Id"] = task.run_id
    for name, value in (extra or {}).items():
        headers[name] = value
    return headers


def call_timeout(config: ServiceConfig, task: Task | None, what: str) -> float:
    """``timeout.request``, or less when the task's deadline is nearer (TIMEOUT if it
    has passed)."""
    timeout = float(config.timeout.request)
    if task is not None and task.deadline is not None:
        deadline = task.deadline
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=UTC)
        left = (deadline - datetime.now(UTC)).total_seconds()
        if left <= 0:
            raise StepError(
                f"{what}: the deadline of step {task.task_id} passed before the call",
                error_class=ErrorClass.TIMEOUT,
                details={"service": config.name, "deadline": str(task.deadline)},
            )
        timeout = min(timeout, left)
    return timeout


async def refresh_auth(auth: AuthProvider, stale: Mapping[str, str]) -> None:
    """``auth.refresh()``, handing it the rejected headers if it takes them (the providers
    of :mod:`legato.connectors.auth` do: a token renewed meanwhile is not fetched again)."""
    refresh: Any = auth.refresh
    try:
        takes_stale = bool(inspect.signature(refresh).parameters)
    except (TypeError, ValueError):
        takes_stale = False
    await (refresh(stale) if takes_stale else refresh())


class HttpCall:
    """Sends one request of an adapter: credentials from the auth provider, bounded by the
    call's timeout, retried once after ``auth.refresh()`` when the answer says the
    credentials were refused (a 401 by default)."""

    def __init__(
        self,
        *,
        config: ServiceConfig,
        auth: AuthProvider,
        client: httpx.AsyncClient,
        what: str,
        details: Mapping[str, Any],
    ) -> None:
        self.config = config
        self.auth = auth
        self.client = client
        self.what = what
        self.details = dict(details)

    async def send(
        self,
        method: str,
        url: str,
        *,
        task: Task | None,
        headers: Callable[[Mapping[str, str]], httpx.Headers],
        refused: Callable[[httpx.Response], Awaitable[bool]] | None = None,
        **kwargs: Any,
    ) -> tuple[httpx.Response, bool]:
        """``(response, refreshed)``; transport failures raise a classified StepError."""
        refreshed = False
        while True:
            timeout = call_timeout(self.config, task, self.what)
            credentials = await self.auth.headers()
            connect = min(float(self.config.timeout.connect), timeout)
            try:
                async with asyncio.timeout(timeout):
                    response = await self.client.request(
                        method,
                        url,
                        headers=headers(credentials),
                        timeout=httpx.Timeout(timeout, connect=connect),
                        **kwargs,
                    )
            except TimeoutError:
                raise StepError(
                    f"{self.what}: no answer from {method} {safe_url(url)} within "
                    f"{timeout:g}s (raise timeout.request in services.yaml if it is slow)",
                    error_class=ErrorClass.TIMEOUT,
                    details={**self.details, "method": method, "url": safe_url(url)},
                ) from None
            except httpx.HTTPError as exc:
                error = step_error_from_httpx(exc)
                raise StepError(
                    f"{self.what}: {error.message}",
                    error_class=error.error_class,
                    details={**self.details, **error.details},
                    retry_after=error.retry_after,
                ) from None
            is_refused = (
                await refused(response) if refused is not None else response.status_code == 401
            )
            if is_refused and not refreshed:
                refreshed = True
                await refresh_auth(self.auth, credentials)
                continue
            return response, refreshed


# ---- responses --------------------------------------------------------------------------------


def decode_body(response: httpx.Response) -> Any:
    """The body as JSON data when it is JSON, else its text (None when empty)."""
    if not response.content:
        return None
    content_type = response.headers.get("content-type", "").lower()
    text = response.text
    if "json" in content_type or not content_type or text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _error_text(body: Any) -> str:
    """The service's own words about a failure, from the usual places in a JSON body."""
    if isinstance(body, str):
        return body.strip()[:_ERROR_TEXT]
    if not isinstance(body, Mapping):
        return ""
    error = body.get("error")
    if isinstance(error, Mapping):
        for key in ("message", "detail", "description"):
            if isinstance(error.get(key), str):
                return str(error[key])[:_ERROR_TEXT]
    if isinstance(error, str):
        text = error
        if isinstance(body.get("error_description"), str):
            text += f": {body['error_description']}"
        return text[:_ERROR_TEXT]
    for key in ("message", "detail", "title"):
        if isinstance(body.get(key), str):
            return str(body[key])[:_ERROR_TEXT]
    errors = body.get("errors")  # GraphQL
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        message = errors[0].get("message")
        if isinstance(message, str):
            return message[:_ERROR_TEXT]
    return ""


def response_error(
    response: httpx.Response,
    *,
    what: str,
    details: Mapping[str, Any],
    refreshed: bool = False,
) -> StepError | None:
    """The classified StepError of a non-2xx answer (None for 2xx): 429 -> RATE_LIMITED
    with ``Retry-After`` (seconds or an HTTP date), 401/403 -> AUTH_FAILED, 400/422 ->
    VALIDATION, 408 -> TIMEOUT, other 4xx -> PERMANENT, 5xx -> RETRYABLE (see
    :func:`legato.net.step_error_for_status`); a 3xx is PERMANENT (redirects are not
    followed)."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    request = response.request
    body = decode_body(response)
    said = _error_text(body)
    extra: dict[str, Any] = {**details}
    if refreshed:
        extra["refreshed"] = True
    if status < 400:
        location = response.headers.get("location")
        return StepError(
            f"{what}: {request.method} {safe_url(request.url)} answered {status} "
            + (f"(to {safe_url(location)}) " if location else "")
            + "; Legato does not follow redirects of service calls: correct the endpoint "
            "or the operation's path in services.yaml",
            error_class=ErrorClass.PERMANENT,
            details={**extra, "status": status, "url": safe_url(request.url)},
        )
    error = step_error_for_status(
        status,
        method=request.method,
        url=request.url,
        headers=response.headers,
        body=response.text if response.content else None,
    )
    assert error is not None
    text = f"{what}: {error.message}" + (f": {said}" if said else "")
    if status == 401 and refreshed:
        text += " (the credentials were refreshed and refused again; check auth in services.yaml)"
    return StepError(
        text,
        error_class=error.error_class,
        details={**extra, **error.details},
        retry_after=error.retry_after,
    )


def legato_envelope(
    body: Any,
) -> tuple[Any, tuple[dict[str, Any], ...], dict[str, Any] | None, dict[str, str]]:
    """Split the optional ``_legato`` member off a JSON object body:
    ``{"...": ..., "_legato": {"side_effects": [...], "cost": {...}, "metadata": {...}}}``
    -> ``(body without it, side_effects, cost, metadata)``."""
    if not isinstance(body, dict) or not isinstance(body.get("_legato"), Mapping):
        return body, (), None, {}
    envelope = body["_legato"]
    output = {k: v for k, v in body.items() if k != "_legato"}
    effects = envelope.get("side_effects")
    side_effects = (
        tuple(dict(e) for e in effects if isinstance(e, Mapping))
        if isinstance(effects, list)
        else ()
    )
    cost = dict(envelope["cost"]) if isinstance(envelope.get("cost"), Mapping) else None
    raw_metadata = envelope.get("metadata")
    metadata = (
        {str(k): str(v) for k, v in raw_metadata.items()}
        if isinstance(raw_metadata, Mapping)
        else {}
    )
    return output, side_effects, cost, metadata


def error_class_of(value: Any, default: ErrorClass = ErrorClass.PERMANENT) -> ErrorClass:
    """An error class named by a service (``"retryable"``, ``"RATE_LIMITED"``, ...)."""
    if isinstance(value, str):
        name = value.strip().upper().replace("-", "_").replace(" ", "_")
        try:
            return ErrorClass(name)
        except ValueError:
            return default
    return default


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return max(0.0, float(value))
    if isinstance(value, str):
        return retry_after_seconds(value)
    return None


def reported_error(
    error: Any, body: Mapping[str, Any], *, default: ErrorClass
) -> tuple[ErrorClass, str, float | None]:
    """``(class, message, retry_after)`` of an error a service reports in a document:
    ``{"error": {"class" | "error_class", "message", "retry_after"}}`` or a string."""
    if isinstance(error, Mapping):
        error_class = error_class_of(
            error.get("class", error.get("error_class", body.get("error_class"))), default
        )
        message = error.get("message")
        retry_after = _number(error.get("retry_after", body.get("retry_after")))
        text = message if isinstance(message, str) else ""
    else:
        error_class = error_class_of(body.get("error_class"), default)
        text = error if isinstance(error, str) else _error_text(body)
        retry_after = _number(body.get("retry_after"))
    return error_class, text[:_ERROR_TEXT], retry_after


def operation_id_from(body: Any, response: httpx.Response | None = None) -> str | None:
    """The handle of a started operation: the body's ``operation_id`` or ``id``, else the
    last segment of the ``Location`` header."""
    if isinstance(body, Mapping):
        for key in ("operation_id", "operationId", "id"):
            value = body.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)
    if response is not None:
        location = response.headers.get("location")
        if location:
            segments = [s for s in urlsplit(location).path.split("/") if s]
            if segments:
                return unquote(segments[-1])
    return None


def status_word(body: Any) -> str | None:
    """``"completed"``, ``"pending"`` or ``"failed"`` for a document whose ``status`` says
    so; None without a ``status`` or for a word Legato does not know."""
    if not isinstance(body, Mapping) or not isinstance(body.get("status"), str):
        return None
    word = body["status"].strip().lower().replace("-", "_").replace(" ", "_")
    if word in _COMPLETED:
        return "completed"
    if word in _PENDING:
        return "pending"
    if word in _FAILED:
        return "failed"
    return None


def read_status(
    body: Any, *, what: str, details: Mapping[str, Any], operation_id: str
) -> Result | None:
    """Interpret a status document: ``status`` completed/succeeded/done -> the Result
    (``result`` if the document has it, else the document), pending/in_progress/running
    -> None, failed -> the StepError of its ``error`` (``class``, ``message``)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("status"), str):
        raise StepError(
            f"{what}: the status of operation {operation_id} has no `status` field; expected "
            'a JSON object like {"status": "completed", "result": ...}',
            error_class=ErrorClass.PERMANENT,
            details={**details, "operation_id": operation_id},
        )
    status = body["status"]
    word = status_word(body)
    if word == "pending":
        return None
    if word == "completed":
        payload = body["result"] if "result" in body else dict(body)
        output, side_effects, cost, metadata = legato_envelope(payload)
        if side_effects == () and cost is None and isinstance(body.get("_legato"), Mapping):
            _, side_effects, cost, metadata = legato_envelope(dict(body))
        return Result(
            output=output,
            side_effects=side_effects,
            cost=cost,
            metadata={**metadata, "task_status": "COMPLETED"},
            operation_id=operation_id,
        )
    if word == "failed":
        error_class, text, retry_after = reported_error(
            body.get("error"), body, default=ErrorClass.PERMANENT
        )
        extra: dict[str, Any] = {**details, "operation_id": operation_id, "status": status}
        if retry_after is not None:
            extra["retry_after"] = retry_after
        raise StepError(
            f"{what}: operation {operation_id} {status}" + (f": {text}" if text else ""),
            error_class=error_class,
            details=extra,
            retry_after=retry_after,
        )
    raise StepError(
        f"{what}: operation {operation_id} has the status {body['status']!r}, which Legato "
        "does not know; use completed/succeeded/done, pending/in_progress/running or failed",
        error_class=ErrorClass.PERMANENT,
        details={**details, "operation_id": operation_id, "status": body["status"]},
    )


# ---- the REST and GraphQL adapters' base --------------------------------------------------------


class HttpConnector:
    """What the REST and GraphQL adapters share. The constructor checks the endpoints (the
    service's and each version's) and every ``operations`` entry (the subclass's
    ``_check_operation``), so a malformed ``services.yaml`` fails at once; the rest is the
    plumbing of a call. A subclass gives ``KIND`` (its name in messages), ``ACCEPT`` (the
    ``Accept`` header of its calls) and ``_check_operation``, and may extend
    ``_check_config``."""

    KIND: ClassVar[str] = "HTTP"
    ACCEPT: ClassVar[str] = "application/json"

    def __init__(
        self,
        config: ServiceConfig,
        *,
        auth: AuthProvider | None = None,
        network: NetworkPolicy | None = None,
        callback_url: str | None = None,
        max_concurrency: int = 10,
    ) -> None:
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be 1 or more, got {max_concurrency}")
        self.config = config
        self.name = config.name
        self._auth: AuthProvider = auth if auth is not None else NoAuth()
        self._network = network  # not applied: endpoints are operator configuration (ADR 0004)
        self._callback_url = callback_url
        self._max_concurrency = max_concurrency
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._check_config()

    def _check_config(self) -> None:
        """Fail at construction on a malformed endpoint or operation mapping (a subclass
        that checks more calls this first)."""
        config = self.config
        check_http_endpoint(config)
        for version in config.versions.values():
            if version.endpoint:
                check_http_endpoint(config, version.endpoint)
        tables = [config.operations] + [
            v.operations for v in config.versions.values() if v.operations is not None
        ]
        for table in tables:
            for name, spec in table.items():
                self._check_operation(name, spec)

    def _check_operation(self, name: str, spec: Any) -> None:
        """ConfigurationError when ``operations.<name>`` is not one the adapter can use."""
        raise NotImplementedError

    def capabilities(self) -> set[str]:
        """The operations ``services.yaml`` lists for the service (empty: not declared)."""
        return set(self.config.capabilities)

    async def aclose(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- plumbing --------------------------------------------------------------------------

    def _endpoint(self, version: str | None) -> str:
        if version and version in self.config.versions:
            return self.config.versions[version].endpoint or self.config.endpoint
        return self.config.endpoint

    def _status_operation(self, task: Task, operation_id: str, *, example: str = "") -> str:
        """``async.status_operation``; a PERMANENT StepError when the service has none."""
        polling = self.config.async_
        name = polling.status_operation if polling is not None else None
        if not name:
            raise StepError(
                f"{self._what(task.operation)}: service {self.name} has no "
                f"async.status_operation, so the status of operation {operation_id} cannot "
                "be asked; set it in services.yaml" + (f" ({example})" if example else ""),
                error_class=ErrorClass.PERMANENT,
                details={"service": self.name, "operation_id": operation_id},
            )
        return name

    def _callback_headers(self, callback_token: str) -> dict[str, str]:
        """``X-Callback-Token``, and ``X-Callback-Url`` when there is a ``callback_url``
        (its ``{token}`` replaced by the token)."""
        headers = {"X-Callback-Token": callback_token}
        if self._callback_url:
            headers["X-Callback-Url"] = self._callback_url.replace(
                "{token}", quote(callback_token, safe="")
            )
        return headers

    async def _each(
        self, tasks: list[Task], call: Callable[[Task], Awaitable[Result]]
    ) -> list[Result | Exception]:
        """``call`` for each task, ``max_concurrency`` at a time; one outcome per task."""
        gate = asyncio.Semaphore(self._max_concurrency)

        async def one(task: Task) -> Result | Exception:
            async with gate:
                try:
                    return await call(task)
                except Exception as exc:  # each task's own outcome
                    return exc

        return list(await asyncio.gather(*(one(t) for t in tasks)))

    def _call(self, operation: str, task: Task | None) -> HttpCall:
        """The sender of one request for ``operation`` (no task: the health check)."""
        return HttpCall(
            config=self.config,
            auth=self._auth,
            client=self._http(),
            what=self._what(operation) if task is not None else f"{self.name} health check",
            details=self._details(operation, task),
        )

    def _headers(
        self,
        task: Task | None,
        *,
        idempotency_key: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Callable[[Mapping[str, str]], httpx.Headers]:
        """The headers of a call, given the credentials (see :func:`call_headers`)."""
        return lambda credentials: call_headers(
            self.config,
            task,
            credentials,
            idempotency_key=idempotency_key,
            extra=extra,
            defaults={"Accept": self.ACCEPT},
        )

    def _what(self, operation: str) -> str:
        return f"{self.name} {operation}".strip()

    def _details(self, operation: str, task: Task | None) -> dict[str, Any]:
        details: dict[str, Any] = {"service": self.name}
        if operation:
            details["operation"] = operation
        if task is not None:
            details["task_id"] = task.task_id
        return details

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise UsageError(f"the {self.KIND} connector of {self.name} is closed")
        if self._client is None:
            self._client = make_client(self.config, self._auth)
        return self._client
