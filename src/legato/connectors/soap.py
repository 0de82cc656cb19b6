"""The SOAP adapter: an operation is a WSDL operation, called with zeep.

``SoapConnector(config, auth=..., network=...)`` talks to one service of ``services.yaml``
(``type: soap``; needs the ``soap`` extra, ``pip install 'legato[soap]'``)::

    - name: hr-legacy
      type: soap
      endpoint: https://hr.example.com/soap/employees     # where calls are posted
      wsdl: https://hr.example.com/soap/employees?wsdl    # a URL or a file path
      operations:
        employee.lookup: {method: GetEmployee}             # also `service`, `port`
        employee.touch: TouchEmployee                      # short form

The WSDL is read on the first call (on a worker thread: zeep reads it synchronously),
then kept. ``endpoint`` replaces the WSDL's ``soap:address``; without ``wsdl`` the
endpoint is the WSDL's URL and calls go to the address the WSDL gives. An operation
without a mapping calls the WSDL operation of the same name. ``service`` and ``port``
choose one of the WSDL's services and ports (default: the first).

The task input's fields are the operation's keyword arguments (zeep builds the
document/literal or rpc message from them and checks them against the schema). The
answer is serialised to JSON data (``zeep.helpers.serialize_object``, then dates and
times as ISO 8601 strings, ``Decimal`` as a number when a float holds it exactly and as a
string otherwise, bytes as base64, durations as ISO 8601 durations, XML as text).

Calls use ``zeep.AsyncClient`` over one pooled ``httpx.AsyncClient``, so they do not
block the event loop. The HTTP headers carry the service's ``headers``, the credentials,
the idempotency key (``Idempotency-Key`` or the service's ``idempotency_header``),
``X-Correlation-Id``, ``traceparent``, ``X-Legato-Attempt`` and ``X-Legato-Run-Id``.

Errors: a SOAP Fault is classified by its fault code (SOAP 1.1 ``faultcode``, SOAP 1.2
``Code/Value`` and subcodes): ``Server``/``Receiver`` (and ``Server.*``) -> RETRYABLE,
``Client``/``Sender`` (and ``Client.*``) -> VALIDATION, the WS-Security codes
``FailedAuthentication``/``InvalidSecurity``/``InvalidSecurityToken`` -> AUTH_FAILED,
anything else -> PERMANENT. HTTP answers that are not a Fault are classified by status as
REST's (429 RATE_LIMITED with ``Retry-After``, 401/403 AUTH_FAILED, 5xx RETRYABLE, ...;
a 401 refreshes the credentials once); connection failures are RETRYABLE, timeouts
TIMEOUT; input the schema refuses is VALIDATION; a WSDL that cannot be read is
PERMANENT (RETRYABLE when its server is down).

``execute_batch`` runs the tasks ``max_concurrency`` at a time. SOAP has no async
contract: ``start_async``/``check_status`` are PERMANENT failures. ``health_check``
reads the WSDL and calls ``operations.health`` when mapped, else checks that the endpoint
answers HTTP (any status below 500).
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from legato.connectors._http import (
    call_headers,
    call_timeout,
    check_http_endpoint,
    refresh_auth,
    response_error,
    tls_verify,
)
from legato.connectors.base import AuthProvider, NoAuth, Result, Task
from legato.connectors.config import ServiceConfig, SoapOperation
from legato.errors import ConfigurationError, ErrorClass, StepError, UsageError
from legato.net import NetworkPolicy, safe_url, step_error_from_httpx

try:
    import zeep
    import zeep.exceptions
    import zeep.helpers
    import zeep.proxy
    import zeep.transports
    from lxml import etree  # type: ignore[import-untyped,unused-ignore]
except ImportError as exc:  # pragma: no cover - the soap extra is not installed
    raise ImportError("the SOAP adapter needs zeep: pip install 'legato[soap]'") from exc

__all__ = ["SoapConnector", "fault_error_class", "json_safe"]

HEALTH_OPERATION = "health"
_FAULT_TEXT = 500

# The headers of the call in progress (per asyncio task), for the transport to send.
_CALL_HEADERS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "legato_soap_call_headers", default=None
)

_AUTH_CODES = frozenset(
    {"failedauthentication", "invalidsecurity", "invalidsecuritytoken", "failedcheck"}
)


# ---- faults and results -----------------------------------------------------------------------


def _local(code: str) -> str:
    """``soap:Server.Busy`` / ``{ns}Server`` -> ``Server.Busy``."""
    text = code.strip()
    if text.startswith("{"):
        text = text.partition("}")[2]
    return text.rpartition(":")[2]


def fault_error_class(code: str | None, subcodes: list[Any] | None = None) -> ErrorClass:
    """The class of a SOAP Fault, by its code (see the module docstring)."""
    names = [_local(str(c)) for c in [code, *(subcodes or [])] if c]
    for name in names:
        if name.lower() in _AUTH_CODES:
            return ErrorClass.AUTH_FAILED
    if not names:
        return ErrorClass.PERMANENT
    head = names[0].split(".")[0].lower()
    if head in ("server", "receiver"):
        return ErrorClass.RETRYABLE
    if head in ("client", "sender"):
        return ErrorClass.VALIDATION
    return ErrorClass.PERMANENT


def _decimal(value: Decimal) -> Any:
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value() and abs(value) < 2**53:
        return int(value)
    as_float = float(value)
    if math.isfinite(as_float) and Decimal(repr(as_float)) == value:
        return as_float
    return str(value)


def json_safe(value: Any) -> Any:
    """``value`` (a serialised zeep result) as JSON data."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        try:
            import isodate  # type: ignore[import-untyped,unused-ignore]

            return str(isodate.duration_isoformat(value))
        except ImportError:  # pragma: no cover - isodate comes with zeep
            return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, etree._Element):
        return etree.tostring(value, encoding="unicode")
    if isinstance(value, etree.QName):
        return value.text
    duration = type(value).__name__ == "Duration" and hasattr(value, "tdelta")
    if duration:  # isodate.Duration (xsd:duration with years or months)
        import isodate

        return str(isodate.duration_isoformat(value))
    return str(value)


def _wsdl_file(wsdl: str) -> str | None:
    """The path of a WSDL file (``file://`` allowed), None if there is no such file."""
    path = Path(wsdl.removeprefix("file://")).expanduser()
    return str(path) if path.is_file() else None


# ---- the transport ----------------------------------------------------------------------------


class _HttpRefused(Exception):
    """An HTTP answer that is not a SOAP message (a 401, a 429, an HTML 502 ...)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _is_soap(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "").lower()
    return "xml" in content_type and b"Envelope" in response.content[:4096]


class _Transport(zeep.transports.AsyncTransport):
    """zeep's AsyncTransport, sending the call's headers and stopping at HTTP errors that
    are not SOAP Faults (so their status and Retry-After are classified)."""

    async def post(self, address: str, message: Any, headers: Any) -> httpx.Response:
        merged = httpx.Headers(headers)
        for name, value in (_CALL_HEADERS.get() or {}).items():
            merged[name] = value
        response = await self.client.post(address, content=message, headers=merged)
        if response.status_code >= 400 and not (
            response.status_code in (400, 500) and _is_soap(response)
        ):
            raise _HttpRefused(response)
        return response


# ---- the adapter ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Binding:
    method: str
    service: str | None = None
    port: str | None = None


def _binding(service: str, name: str, spec: Any) -> _Binding:
    where = f"service {service}: operations.{name}"
    if isinstance(spec, str):
        spec = {"method": spec}
    if not isinstance(spec, Mapping):
        raise ConfigurationError(
            f"{where} must be a mapping like {{method: GetEmployee}}, got {type(spec).__name__}"
        )
    try:
        parsed = SoapOperation.model_validate(dict(spec))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"{where}: {problems}") from None
    return _Binding(parsed.method, parsed.service, parsed.port)


class SoapConnector:
    """The adapter for one ``type: soap`` service (see the module docstring)."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        auth: AuthProvider | None = None,
        network: NetworkPolicy | None = None,
        max_concurrency: int = 10,
    ) -> None:
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be 1 or more, got {max_concurrency}")
        self.config = config
        self.name = config.name
        self._auth: AuthProvider = auth if auth is not None else NoAuth()
        self._network = network  # not applied: endpoints are operator configuration (ADR 0004)
        self._max_concurrency = max_concurrency
        self._wsdl = (config.wsdl or config.endpoint).strip()
        self._address = check_http_endpoint(config) if config.wsdl else None
        for name, spec in config.operations.items():
            _binding(self.name, name, spec)
        self._client: zeep.AsyncClient | None = None
        self._transport: _Transport | None = None
        self._proxies: dict[tuple[str | None, str | None], Any] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    # ---- the Connector protocol -----------------------------------------------------------

    async def execute(self, task: Task) -> Result:
        binding = self._binding(task.operation)
        kwargs = self._arguments(task)
        answer = await self._call(task, task.operation, binding, kwargs)
        serialised = zeep.helpers.serialize_object(answer, target_cls=dict)  # type: ignore[no-untyped-call,unused-ignore]
        return Result(output=json_safe(serialised))

    async def execute_batch(self, tasks: list[Task]) -> list[Result | Exception]:
        """Each task on its own, ``max_concurrency`` at a time; one Result or StepError
        per task, in order."""
        gate = asyncio.Semaphore(self._max_concurrency)

        async def one(task: Task) -> Result | Exception:
            async with gate:
                try:
                    return await self.execute(task)
                except Exception as exc:  # each task's own outcome
                    return exc

        return list(await asyncio.gather(*(one(t) for t in tasks)))

    async def start_async(self, task: Task, callback_token: str) -> Result:
        raise self._no_async(task)

    async def check_status(self, task: Task, operation_id: str) -> Result | None:
        raise self._no_async(task)

    async def health_check(self) -> None:
        """Read the WSDL; call ``operations.health`` when mapped, else check that the
        endpoint answers HTTP below 500."""
        what = f"{self.name} health check"
        await self._soap_client(None, what)
        spec = self.config.operations.get(HEALTH_OPERATION)
        if spec is not None:
            await self._call(None, HEALTH_OPERATION, _binding(self.name, "health", spec), {})
            return
        proxy = await self._proxy(None, _Binding(method=""), what)
        address = proxy._binding_options.get("address") or self._address
        if not address:
            return
        assert self._transport is not None
        details = {"service": self.name, "operation": HEALTH_OPERATION}
        try:
            async with asyncio.timeout(float(self.config.timeout.request)):
                response = await self._transport.client.get(address)
        except TimeoutError:
            raise StepError(
                f"{what}: no answer from {safe_url(address)}",
                error_class=ErrorClass.TIMEOUT,
                details=details,
            ) from None
        except httpx.HTTPError as exc:
            error = step_error_from_httpx(exc)
            raise StepError(
                f"{what}: {error.message}",
                error_class=error.error_class,
                details={**details, **error.details},
            ) from None
        if response.status_code >= 500:
            failure = response_error(response, what=what, details=details)
            assert failure is not None
            raise failure

    def capabilities(self) -> set[str]:
        """The operations ``services.yaml`` lists for the service (empty: not declared)."""
        return set(self.config.capabilities)

    async def aclose(self) -> None:
        self._closed = True
        transport, self._transport = self._transport, None
        self._client = None
        self._proxies.clear()
        if transport is not None:
            await transport.client.aclose()
            transport.wsdl_client.close()

    async def __aenter__(self) -> SoapConnector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- calls -----------------------------------------------------------------------------

    def _binding(self, operation: str) -> _Binding:
        spec = self.config.operations.get(operation)
        if spec is None:
            return _Binding(method=operation)
        return _binding(self.name, operation, spec)

    def _arguments(self, task: Task) -> dict[str, Any]:
        if task.input is None:
            return {}
        if not isinstance(task.input, Mapping):
            raise StepError(
                f"{self._what(task.operation)}: the input's fields are the SOAP operation's "
                f"arguments, so it must be an object, got {type(task.input).__name__}",
                error_class=ErrorClass.VALIDATION,
                details=self._details(task.operation, task),
            )
        return {str(k): v for k, v in task.input.items()}

    async def _call(
        self, task: Task | None, operation: str, binding: _Binding, kwargs: dict[str, Any]
    ) -> Any:
        what = self._what(operation) if task is not None else f"{self.name} health check"
        details = {**self._details(operation, task), "soap_operation": binding.method}
        proxy = await self._proxy(task, binding, what)
        try:
            method = proxy[binding.method]
        except AttributeError:
            known = sorted(proxy._operations)
            raise StepError(
                f"{what}: the WSDL has no operation {binding.method!r} (it has "
                f"{', '.join(known) or 'none'}); correct operations.{operation}.method",
                error_class=ErrorClass.PERMANENT,
                details={**details, "known": known},
            ) from None
        refreshed = False
        while True:
            timeout = call_timeout(self.config, task, what)
            credentials = await self._auth.headers()
            token = _CALL_HEADERS.set(call_headers(self.config, task, credentials))
            try:
                async with asyncio.timeout(timeout):
                    return await method(**kwargs)
            except _HttpRefused as exc:
                if exc.response.status_code == 401 and not refreshed:
                    refreshed = True
                    await refresh_auth(self._auth, credentials)
                    continue
                error = response_error(
                    exc.response, what=what, details=details, refreshed=refreshed
                )
                assert error is not None
                raise error from None
            except TimeoutError:
                raise StepError(
                    f"{what}: no answer within {timeout:g}s (raise timeout.request in "
                    "services.yaml if it is slow)",
                    error_class=ErrorClass.TIMEOUT,
                    details=details,
                ) from None
            except httpx.HTTPError as exc:
                error = step_error_from_httpx(exc)
                raise StepError(
                    f"{what}: {error.message}",
                    error_class=error.error_class,
                    details={**details, **error.details},
                ) from None
            except zeep.exceptions.Fault as exc:
                raise self._fault(exc, what, details) from None
            except (zeep.exceptions.ValidationError, TypeError) as exc:
                raise StepError(
                    f"{what}: the input does not fit the operation's message: {exc}",
                    error_class=ErrorClass.VALIDATION,
                    details=details,
                ) from None
            except zeep.exceptions.TransportError as exc:
                status = exc.status_code or 0
                error_class = (
                    ErrorClass.RETRYABLE if status == 0 or status >= 500 else ErrorClass.PERMANENT
                )
                raise StepError(
                    f"{what}: the service's answer is not a SOAP message "
                    f"(HTTP {status}): {str(exc.message)[:_FAULT_TEXT]}",
                    error_class=error_class,
                    details={**details, "status": status},
                ) from None
            except zeep.exceptions.Error as exc:
                raise StepError(
                    f"{what}: {type(exc).__name__}: {str(exc)[:_FAULT_TEXT]}",
                    error_class=ErrorClass.PERMANENT,
                    details=details,
                ) from None
            finally:
                _CALL_HEADERS.reset(token)

    def _fault(self, exc: zeep.exceptions.Fault, what: str, details: dict[str, Any]) -> StepError:
        error_class = fault_error_class(exc.code, exc.subcodes)
        extra: dict[str, Any] = {**details, "fault_code": exc.code}
        if exc.subcodes:
            extra["fault_subcodes"] = [str(c) for c in exc.subcodes]
        if exc.actor:
            extra["fault_actor"] = exc.actor
        if exc.detail is not None:
            detail = exc.detail
            text = (
                etree.tostring(detail, encoding="unicode")
                if isinstance(detail, etree._Element)
                else str(detail)
            )
            extra["fault_detail"] = text[:_FAULT_TEXT]
        return StepError(
            f"{what}: SOAP Fault {exc.code or '(no code)'}: {exc.message or 'no reason given'}",
            error_class=error_class,
            details=extra,
        )

    # ---- the WSDL --------------------------------------------------------------------------

    async def _proxy(self, task: Task | None, binding: _Binding, what: str) -> Any:
        client = await self._soap_client(task, what)
        key = (binding.service, binding.port)
        proxy = self._proxies.get(key)
        if proxy is None:
            try:
                bound = client.bind(binding.service, binding.port)
            except (ValueError, KeyError, zeep.exceptions.Error) as exc:
                raise StepError(
                    f"{what}: the WSDL has no service/port {binding.service or '(first)'}/"
                    f"{binding.port or '(first)'}: {exc}",
                    error_class=ErrorClass.PERMANENT,
                    details={"service": self.name, "wsdl": self._wsdl_label()},
                ) from None
            if bound is None:
                raise StepError(
                    f"{what}: the WSDL {self._wsdl_label()} defines no wsdl:service",
                    error_class=ErrorClass.PERMANENT,
                    details={"service": self.name, "wsdl": self._wsdl_label()},
                )
            options = dict(bound._binding_options)
            if self._address:
                options["address"] = self._address
            proxy = zeep.proxy.AsyncServiceProxy(client, bound._binding, **options)  # type: ignore[no-untyped-call,unused-ignore]
            self._proxies[key] = proxy
        return proxy

    async def _soap_client(self, task: Task | None, what: str) -> zeep.AsyncClient:
        if self._closed:
            raise UsageError(f"the SOAP connector of {self.name} is closed")
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                if self._transport is None:
                    self._transport = self._make_transport()
                self._client = await self._load(self._transport, what)
            return self._client

    def _make_transport(self) -> _Transport:
        verify = tls_verify(self._auth)
        timeout = httpx.Timeout(
            float(self.config.timeout.request), connect=float(self.config.timeout.connect)
        )
        return _Transport(  # type: ignore[no-untyped-call,unused-ignore]
            client=httpx.AsyncClient(
                timeout=timeout,
                verify=verify,
                trust_env=False,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            ),
            wsdl_client=httpx.Client(
                timeout=timeout, verify=verify, trust_env=False, follow_redirects=True
            ),
        )

    async def _load(self, transport: _Transport, what: str) -> zeep.AsyncClient:
        """Read the WSDL (on a thread: zeep does it synchronously)."""
        wsdl = self._wsdl
        details = {"service": self.name, "wsdl": self._wsdl_label()}
        if urlsplit(wsdl).scheme.lower() not in ("http", "https"):
            path = _wsdl_file(wsdl)
            if path is None:
                raise StepError(
                    f"{what}: the WSDL file {wsdl!r} does not exist; check `wsdl` in services.yaml",
                    error_class=ErrorClass.PERMANENT,
                    details=details,
                )
            wsdl = path
        try:
            return await asyncio.to_thread(zeep.AsyncClient, wsdl, transport=transport)
        except httpx.HTTPError as exc:
            error = step_error_from_httpx(exc)
            raise StepError(
                f"{what}: cannot read the WSDL: {error.message}",
                error_class=error.error_class,
                details={**details, **error.details},
            ) from None
        except zeep.exceptions.TransportError as exc:
            status = exc.status_code or 0
            raise StepError(
                f"{what}: cannot read the WSDL {self._wsdl_label()}: HTTP {status}",
                error_class=ErrorClass.RETRYABLE if status >= 500 else ErrorClass.PERMANENT,
                details={**details, "status": status},
            ) from None
        except (zeep.exceptions.Error, etree.LxmlError, OSError, ValueError) as exc:
            raise StepError(
                f"{what}: the WSDL {self._wsdl_label()} cannot be used: "
                f"{type(exc).__name__}: {str(exc)[:_FAULT_TEXT]}",
                error_class=ErrorClass.PERMANENT,
                details=details,
            ) from None

    # ---- plumbing --------------------------------------------------------------------------

    def _no_async(self, task: Task) -> StepError:
        return StepError(
            f"{self._what(task.operation)}: SOAP services have no async contract in Legato; "
            "call the operation synchronously (remove `async: true` from the task)",
            error_class=ErrorClass.PERMANENT,
            details=self._details(task.operation, task),
        )

    def _wsdl_label(self) -> str:
        scheme = urlsplit(self._wsdl).scheme.lower()
        return safe_url(self._wsdl) if scheme in ("http", "https") else self._wsdl

    def _what(self, operation: str) -> str:
        return f"{self.name} {operation}".strip()

    def _details(self, operation: str, task: Task | None) -> dict[str, Any]:
        details: dict[str, Any] = {"service": self.name}
        if operation:
            details["operation"] = operation
        if task is not None:
            details["task_id"] = task.task_id
        return details
