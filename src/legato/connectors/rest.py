"""The REST adapter: an operation is an HTTP request to the service's base URL.

``RestConnector(config, auth=..., network=..., callback_url=None)`` talks to one service
of ``services.yaml`` (``type: rest``) through one pooled ``httpx.AsyncClient``, created on
first use and reused by every call::

    connector = RestConnector(config, auth=build_auth(config.auth))
    result = await connector.execute(task)          # Result, or a classified StepError
    await connector.aclose()

Routes
------
``operations: {"payment.charge": {method: POST, path: "/charges"}}`` maps an operation to
a method and a path under the endpoint (``endpoint`` + ``path``; a query string of the
endpoint is kept). An operation without a mapping is ``POST /<operation with dots
replaced by slashes>`` (``payment.charge`` -> ``POST /payment/charge``). A mapping may
also be written as a string, ``"GET /customers/{id}"`` or ``"/charges"`` (POST).

``{placeholders}`` in the path are filled from the task input's fields (URL-encoded, so
``a/b`` stays one segment) and those fields are removed from what is sent; GET and
DELETE send the remaining fields as query parameters (lists repeat the parameter,
objects are JSON text, booleans ``true``/``false``, nulls are left out), the other
methods send the remaining input as the JSON body. ``query`` adds fixed parameters.

Every call carries the service's ``headers``, the auth provider's headers, the idempotency
key (under ``idempotency_header``, ``Idempotency-Key`` by default), ``X-Correlation-Id``,
``traceparent``, ``X-Legato-Attempt`` and ``X-Legato-Run-Id``. A 401 refreshes the
credentials (``auth.refresh()``) and tries once more.

Answers
-------
A 2xx answer's JSON body (its text if it is not JSON) is the step's output. A JSON
object may carry a ``_legato`` member, removed from the output:
``{"_legato": {"side_effects": [{...}], "cost": {...}, "metadata": {...}}}``.

Failures are :class:`~legato.errors.StepError` by status: 429 -> RATE_LIMITED with
``retry_after`` from ``Retry-After`` (seconds or an HTTP date), 401/403 -> AUTH_FAILED,
400/422 -> VALIDATION, 408 -> TIMEOUT, other 4xx and 3xx -> PERMANENT, 5xx ->
RETRYABLE; connection failures are RETRYABLE and timeouts TIMEOUT.

Batches, async operations, health
---------------------------------
``execute_batch``: with ``batch: {operation: X}`` the list of the tasks' inputs is sent in
one request to X's route, which answers a list (or ``{"results": [...]}``) with one item
per task, in order: a result, or ``{"error": {"class": ..., "message": ...}}``. Without
it the tasks are sent one by one, at most ``max_concurrency`` at a time.

``start_async(task, token)`` sends the task's request with ``X-Callback-Token: token``
(and ``X-Callback-Url`` when ``callback_url`` is given; ``{token}`` in it is replaced by
the token) and reads the operation's id from the answer's ``operation_id`` or ``id``, or
the last segment of its ``Location`` header. ``check_status`` requests the route of
``async.status_operation`` (GET unless its mapping says otherwise; default path
``/<status operation with dots as slashes>/{operation_id}``), whose ``{operation_id}``
(and other placeholders, from the task input) are filled in, and reads ``status``:
completed/succeeded/done -> the Result (``result``, else the whole document),
pending/in_progress/running -> None, failed -> the StepError of its ``error``.

``health_check`` requests ``GET /health`` (``operations.health`` to change it); a
non-2xx answer, or a JSON ``status`` of down/unhealthy/fail, is a StepError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from pydantic import ValidationError

from legato.connectors._http import (
    HttpConnector,
    decode_body,
    error_class_of,
    legato_envelope,
    operation_id_from,
    read_status,
    response_error,
    status_word,
)
from legato.connectors.base import Result, Task
from legato.connectors.config import RestOperation
from legato.errors import ConfigurationError, ErrorClass, StepError

__all__ = ["RestConnector", "Route"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_\-]*)\}")
_NO_BODY = frozenset({"GET", "DELETE"})
_UNHEALTHY = frozenset({"down", "unhealthy", "fail", "failed", "failing", "not_serving", "error"})
_ERROR_ITEM_KEYS = frozenset({"error", "status", "task_id", "retry_after"})
HEALTH_OPERATION = "health"


@dataclass(frozen=True, slots=True)
class Route:
    """Where an operation goes: ``method`` and ``path`` (with ``{placeholders}``)."""

    method: str
    path: str
    query: tuple[tuple[str, Any], ...] = ()

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_PLACEHOLDER.findall(self.path)))


def _route(service: str, name: str, spec: Any, *, default_method: str) -> Route:
    """The Route of one ``operations`` entry (ConfigurationError if it is not one)."""
    where = f"service {service}: operations.{name}"
    if isinstance(spec, str):
        method, _, path = spec.strip().rpartition(" ")
        spec = {"method": method.strip(), "path": path} if method.strip() else {"path": path}
    if not isinstance(spec, Mapping):
        raise ConfigurationError(
            f"{where} must be a mapping like {{method: POST, path: /charges}}, got "
            f"{type(spec).__name__}"
        )
    data = dict(spec)
    data["method"] = str(data.get("method") or default_method).upper()
    try:
        parsed = RestOperation.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"{where}: {problems}") from None
    path = parsed.path if parsed.path.startswith("/") else f"/{parsed.path}"
    return Route(parsed.method, path, tuple((parsed.query or {}).items()))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _query_params(items: Mapping[str, Any] | tuple[tuple[str, Any], ...]) -> list[tuple[str, str]]:
    pairs = items.items() if isinstance(items, Mapping) else items
    out: list[tuple[str, str]] = []
    for name, value in pairs:
        if value is None:
            continue
        if isinstance(value, list | tuple):
            out.extend((str(name), _text(v)) for v in value if v is not None)
        else:
            out.append((str(name), _text(value)))
    return out


class RestConnector(HttpConnector):
    """The adapter for one ``type: rest`` service (see the module docstring)."""

    KIND = "REST"

    def _check_config(self) -> None:
        super()._check_config()
        batch = self._batch_operation()
        if batch is not None:
            route = self._route(batch, None)
            if route.placeholders:
                raise ConfigurationError(
                    f"service {self.name}: the batch operation {batch!r} has the path "
                    f"{route.path!r}; a batch path cannot have {{placeholders}}"
                )

    # ---- the Connector protocol -----------------------------------------------------------

    async def execute(self, task: Task) -> Result:
        route = self._route(task.operation, task.version)
        url, params, body = self._request_parts(task, route, task.input)
        response, refreshed = await self._send(task, route.method, url, params=params, json=body)
        return self._result(response, task, refreshed)

    async def execute_batch(self, tasks: list[Task]) -> list[Result | Exception]:
        """One call to the batch operation (``batch.operation``), else each task on its own,
        ``max_concurrency`` at a time; one Result or StepError per task, in order."""
        if not tasks:
            return []
        if self._batch_operation() is not None:
            return await self._batch_call(tasks)
        return await self._each(tasks, self.execute)

    async def start_async(self, task: Task, callback_token: str) -> Result:
        """Send the task with ``X-Callback-Token`` (and ``X-Callback-Url``); the answer's
        operation id is ``Result.operation_id``. An answer whose ``status`` says it is
        already done gives the full Result; one that says it failed, the StepError."""
        route = self._route(task.operation, task.version)
        url, params, body = self._request_parts(task, route, task.input)
        response, refreshed = await self._send(
            task,
            route.method,
            url,
            params=params,
            json=body,
            extra=self._callback_headers(callback_token),
        )
        what = self._what(task.operation)
        details = self._details(task.operation, task)
        error = response_error(response, what=what, details=details, refreshed=refreshed)
        if error is not None:
            raise error
        answer = decode_body(response)
        operation_id = operation_id_from(answer, response)
        if operation_id is None:
            raise StepError(
                f"{what}: the service answered {response.status_code} to an async start "
                "without an operation id; expected `operation_id` or `id` in the JSON body, "
                "or a Location header",
                error_class=ErrorClass.PERMANENT,
                details={**details, "status": response.status_code},
            )
        metadata = {"http_status": str(response.status_code)}
        if response.headers.get("location"):
            metadata["location"] = response.headers["location"]
        word = status_word(answer)
        if word in ("completed", "failed"):
            done = read_status(answer, what=what, details=details, operation_id=operation_id)
            assert done is not None
            return dataclasses.replace(done, metadata={**metadata, **done.metadata})
        status = answer.get("status") if isinstance(answer, Mapping) else None
        metadata["task_status"] = status.upper() if isinstance(status, str) else "ACCEPTED"
        return Result(operation_id=operation_id, metadata=metadata)

    async def check_status(self, task: Task, operation_id: str) -> Result | None:
        """Request ``async.status_operation``: the Result when it is done, None while it
        runs, the StepError when it failed."""
        name = self._status_operation(
            task,
            operation_id,
            example="e.g. status_operation: operation.status with operations.operation.status: "
            "{method: GET, path: /operations/{operation_id}}",
        )
        what = self._what(task.operation)
        route = self._route(name, task.version, default_method="GET", status=True)
        values = dict(task.input) if isinstance(task.input, Mapping) else {}
        values["operation_id"] = operation_id
        url, params, _ = self._request_parts(task, route, values, operation=name, send_rest=False)
        response, refreshed = await self._send(
            task, route.method, url, params=params, json=None, idempotency_key=""
        )
        details = {**self._details(task.operation, task), "status_operation": name}
        error = response_error(response, what=what, details=details, refreshed=refreshed)
        if error is not None:
            raise error
        answer = decode_body(response)
        if response.status_code == 202 and status_word(answer) is None:
            return None  # accepted, not done: still running
        return read_status(answer, what=what, details=details, operation_id=operation_id)

    async def health_check(self) -> None:
        """``GET /health`` (or ``operations.health``): a StepError unless it answers 2xx
        and its JSON ``status``, if any, is not down/unhealthy/fail."""
        route = self._route(HEALTH_OPERATION, None, default_method="GET", health=True)
        url, params, _ = self._request_parts(
            None, route, None, operation=HEALTH_OPERATION, send_rest=False
        )
        response, refreshed = await self._send(None, route.method, url, params=params, json=None)
        what = f"{self.name} health check"
        details = {"service": self.name, "operation": HEALTH_OPERATION}
        error = response_error(response, what=what, details=details, refreshed=refreshed)
        if error is not None:
            raise error
        answer = decode_body(response)
        status = answer.get("status") if isinstance(answer, Mapping) else None
        if isinstance(status, str) and status.strip().lower().replace(" ", "_") in _UNHEALTHY:
            raise StepError(
                f"{what}: the service reports {status!r}",
                error_class=ErrorClass.RETRYABLE,
                details={**details, "health": status},
            )

    # ---- routes and requests ---------------------------------------------------------------

    def _check_operation(self, name: str, spec: Any) -> None:
        self._parse(name, spec)

    def _parse(self, name: str, spec: Any) -> Route:
        status = self.config.async_ is not None and name == self.config.async_.status_operation
        default = "GET" if name == HEALTH_OPERATION or status else "POST"
        return _route(self.name, name, spec, default_method=default)

    def _operations(self, version: str | None) -> Mapping[str, Any]:
        if version and version in self.config.versions:
            chosen = self.config.versions[version].operations
            if chosen is not None:
                return chosen
        return self.config.operations

    def _route(
        self,
        operation: str,
        version: str | None,
        *,
        default_method: str = "POST",
        health: bool = False,
        status: bool = False,
    ) -> Route:
        spec = self._operations(version).get(operation)
        if spec is not None:
            return self._parse(operation, spec)
        if health:
            return Route("GET", "/health")
        path = "/" + operation.replace(".", "/")
        if status:
            path += "/{operation_id}"
        return Route(default_method, path)

    def _batch_operation(self) -> str | None:
        batch = self.config.batch
        return batch.operation if batch is not None and batch.operation else None

    def _request_parts(
        self,
        task: Task | None,
        route: Route,
        values: Any,
        *,
        operation: str | None = None,
        send_rest: bool = True,
    ) -> tuple[str, list[tuple[str, str]], Any]:
        """``(url, query params, JSON body)`` of a request on ``route`` with ``values``."""
        name = operation or (task.operation if task is not None else "")
        what = self._what(name)
        path = route.path
        rest: Any = values
        if route.placeholders:
            if not isinstance(values, Mapping):
                raise StepError(
                    f"{what}: the path {route.path} needs the fields "
                    f"{', '.join(route.placeholders)} from an object input, got "
                    f"{type(values).__name__}",
                    error_class=ErrorClass.VALIDATION,
                    details={**self._details(name, task), "path": route.path},
                )
            missing = [p for p in route.placeholders if values.get(p) is None]
            if missing:
                raise StepError(
                    f"{what}: the input has no {', '.join(missing)} for the path {route.path}",
                    error_class=ErrorClass.VALIDATION,
                    details={**self._details(name, task), "path": route.path, "missing": missing},
                )
            for placeholder in route.placeholders:
                value = values[placeholder]
                if isinstance(value, Mapping | list | tuple):
                    raise StepError(
                        f"{what}: the input's {placeholder} goes in the path {route.path} "
                        f"and must be a string or a number, got {type(value).__name__}",
                        error_class=ErrorClass.VALIDATION,
                        details={**self._details(name, task), "path": route.path},
                    )
                path = path.replace(f"{{{placeholder}}}", quote(_text(value), safe=""))
            rest = {k: v for k, v in values.items() if k not in route.placeholders}
        params = _query_params(route.query)
        body: Any = None
        if route.method in _NO_BODY:
            if send_rest and rest is not None:
                if not isinstance(rest, Mapping):
                    raise StepError(
                        f"{what}: a {route.method} operation sends its input as query "
                        f"parameters, so the input must be an object, got {type(rest).__name__}",
                        error_class=ErrorClass.VALIDATION,
                        details=self._details(name, task),
                    )
                given = {str(k) for k in rest}
                params = [p for p in params if p[0] not in given] + _query_params(rest)
        elif send_rest:
            body = rest
        base = urlsplit(self._endpoint(task.version if task is not None else None).strip())
        url = urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + path, base.query, ""))
        return url, params, body

    async def _send(
        self,
        task: Task | None,
        method: str,
        url: str,
        *,
        params: list[tuple[str, str]],
        json: Any,
        extra: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[httpx.Response, bool]:
        operation = task.operation if task is not None else HEALTH_OPERATION
        kwargs: dict[str, Any] = {"params": params or None}
        if json is not None:
            kwargs["json"] = json
        return await self._call(operation, task).send(
            method,
            url,
            task=task,
            headers=self._headers(task, idempotency_key=idempotency_key, extra=extra),
            **kwargs,
        )

    def _result(self, response: httpx.Response, task: Task, refreshed: bool) -> Result:
        error = response_error(
            response,
            what=self._what(task.operation),
            details=self._details(task.operation, task),
            refreshed=refreshed,
        )
        if error is not None:
            raise error
        output, side_effects, cost, metadata = legato_envelope(decode_body(response))
        return Result(
            output=output,
            side_effects=side_effects,
            cost=cost,
            metadata={"http_status": str(response.status_code), **metadata},
        )

    # ---- batches ---------------------------------------------------------------------------

    async def _batch_call(self, tasks: list[Task]) -> list[Result | Exception]:
        name = self._batch_operation()
        assert name is not None
        first = tasks[0]
        route = self._route(name, first.version)
        url, params, _ = self._request_parts(first, route, None, operation=name, send_rest=False)
        keys = "\n".join(t.idempotency_key or t.task_id for t in tasks)
        batch_key = "batch-" + hashlib.sha256(keys.encode()).hexdigest()[:24]
        timed = min(
            tasks, key=lambda t: t.deadline.timestamp() if t.deadline is not None else float("inf")
        )
        lead = dataclasses.replace(first, deadline=timed.deadline)
        what = self._what(name)
        details = {"service": self.name, "operation": name, "batch_size": len(tasks)}
        try:
            response, refreshed = await self._send(
                lead,
                route.method,
                url,
                params=params,
                json=[t.input for t in tasks],
                idempotency_key=batch_key,
                extra={"X-Legato-Batch-Size": str(len(tasks))},
            )
            error = response_error(response, what=what, details=details, refreshed=refreshed)
            if error is not None:
                raise error
        except StepError as exc:
            return [exc] * len(tasks)
        answer = decode_body(response)
        if isinstance(answer, Mapping) and isinstance(answer.get("results"), list):
            answer = answer["results"]
        if not isinstance(answer, list):
            error = StepError(
                f'{what}: the batch answer is not a list (nor {{"results": [...]}}) of one '
                f"item per task; got {type(answer).__name__}",
                error_class=ErrorClass.PERMANENT,
                details=details,
            )
            return [error] * len(tasks)
        out: list[Result | Exception] = []
        for index, task in enumerate(tasks):
            if index >= len(answer):
                out.append(
                    StepError(
                        f"{what}: the batch answer has no item for step {task.task_id} "
                        f"(it has {len(answer)} for {len(tasks)} tasks); it will be retried",
                        error_class=ErrorClass.RETRYABLE,
                        details={**details, "task_id": task.task_id, "index": index},
                    )
                )
                continue
            out.append(self._batch_item(answer[index], task, index, what, details))
        return out

    def _batch_item(
        self, item: Any, task: Task, index: int, what: str, details: Mapping[str, Any]
    ) -> Result | Exception:
        if (
            isinstance(item, Mapping)
            and isinstance(item.get("error"), Mapping)
            and set(item) <= _ERROR_ITEM_KEYS
        ):
            error = item["error"]
            error_class = error_class_of(error.get("class", error.get("error_class")))
            message = error.get("message")
            retry_after = error.get("retry_after", item.get("retry_after"))
            seconds = (
                max(0.0, float(retry_after))
                if isinstance(retry_after, int | float) and not isinstance(retry_after, bool)
                else None
            )
            return StepError(
                f"{self._what(task.operation)}: "
                + (message if isinstance(message, str) and message else "failed in the batch"),
                error_class=error_class,
                details={**details, "task_id": task.task_id, "index": index},
                retry_after=seconds,
            )
        output, side_effects, cost, metadata = legato_envelope(item)
        return Result(output=output, side_effects=side_effects, cost=cost, metadata=metadata)
