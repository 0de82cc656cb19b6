"""The GraphQL adapter: an operation is a query or mutation document posted to the endpoint.

``GraphQLConnector(config, auth=..., network=..., callback_url=None)`` talks to one service
of ``services.yaml`` (``type: graphql``) through one pooled ``httpx.AsyncClient``::

    operations:
      customer.create:
        query: "mutation ($name: String!) { createCustomer(name: $name) { id } }"
        result: createCustomer          # optional: a field (or dotted path) of `data`
        operation_name: CreateCustomer  # optional: for documents with several operations

A call is ``POST <endpoint>`` with ``{"query", "variables": <the task input>,
"operationName"?}`` and the headers every HTTP adapter sends (the service's ``headers``,
credentials, the idempotency key, ``X-Correlation-Id``, ``traceparent``,
``X-Legato-Attempt``, ``X-Legato-Run-Id``). The step's output is ``data[result]`` when
``result`` is named, else ``data``. Response ``extensions._legato`` may carry
``side_effects``, ``cost`` and ``metadata`` as with REST.

Errors: HTTP statuses are classified as REST's (429 RATE_LIMITED with ``Retry-After``,
401/403 AUTH_FAILED, 400/422 VALIDATION, 5xx RETRYABLE, ...). A response with an
``errors`` array is a failure, even with partial ``data``; each error is classified by
``extensions.code``: UNAUTHENTICATED / FORBIDDEN -> AUTH_FAILED, BAD_USER_INPUT /
GRAPHQL_VALIDATION_FAILED / GRAPHQL_PARSE_FAILED / BAD_REQUEST -> VALIDATION,
RATE_LIMITED / TOO_MANY_REQUESTS -> RATE_LIMITED (``extensions.retryAfter`` seconds, or
``Retry-After``), INTERNAL_SERVER_ERROR / SERVICE_UNAVAILABLE / TIMEOUT -> RETRYABLE
(TIMEOUT for TIMEOUT), anything else -> PERMANENT. With several errors the one that
makes retrying pointless wins (AUTH_FAILED, VALIDATION, PERMANENT, then RATE_LIMITED,
TIMEOUT, RETRYABLE). A 401 or an UNAUTHENTICATED error refreshes the credentials once.

``execute_batch`` sends the tasks one by one, ``max_concurrency`` at a time.
``start_async(task, token)`` runs the operation with ``X-Callback-Token`` (and
``X-Callback-Url``) headers and reads ``operation_id`` or ``id`` from its result;
``check_status`` runs ``async.status_operation``'s document with the variable
``$operation_id`` and reads ``status`` from its result as REST does. ``health_check``
runs ``operations.health`` (default ``query { __typename }``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from legato.connectors._http import (
    HttpConnector,
    decode_body,
    legato_envelope,
    operation_id_from,
    read_status,
    response_error,
    status_word,
)
from legato.connectors.base import Result, Task
from legato.connectors.config import GraphQLOperation
from legato.errors import ConfigurationError, ErrorClass, StepError
from legato.net import retry_after_seconds

__all__ = ["CODE_CLASS", "Document", "GraphQLConnector", "classify_graphql_errors"]

HEALTH_OPERATION = "health"
HEALTH_QUERY = "query { __typename }"
_MAX_ERRORS_IN_DETAILS = 5

CODE_CLASS: dict[str, ErrorClass] = {
    "UNAUTHENTICATED": ErrorClass.AUTH_FAILED,
    "UNAUTHORIZED": ErrorClass.AUTH_FAILED,
    "FORBIDDEN": ErrorClass.AUTH_FAILED,
    "BAD_USER_INPUT": ErrorClass.VALIDATION,
    "GRAPHQL_VALIDATION_FAILED": ErrorClass.VALIDATION,
    "GRAPHQL_PARSE_FAILED": ErrorClass.VALIDATION,
    "BAD_REQUEST": ErrorClass.VALIDATION,
    "VALIDATION": ErrorClass.VALIDATION,
    "RATE_LIMITED": ErrorClass.RATE_LIMITED,
    "TOO_MANY_REQUESTS": ErrorClass.RATE_LIMITED,
    "INTERNAL_SERVER_ERROR": ErrorClass.RETRYABLE,
    "SERVICE_UNAVAILABLE": ErrorClass.RETRYABLE,
    "TIMEOUT": ErrorClass.TIMEOUT,
}
# Which error decides when a response has several: the first in this order.
_PRECEDENCE = (
    ErrorClass.AUTH_FAILED,
    ErrorClass.VALIDATION,
    ErrorClass.PERMANENT,
    ErrorClass.RATE_LIMITED,
    ErrorClass.TIMEOUT,
    ErrorClass.RETRYABLE,
)


@dataclass(frozen=True, slots=True)
class Document:
    """An operation's GraphQL document, the field of ``data`` it returns, its name."""

    query: str
    result: str | None = None
    operation_name: str | None = None


def _document(service: str, name: str, spec: Any) -> Document:
    where = f"service {service}: operations.{name}"
    if isinstance(spec, str):
        spec = {"query": spec}
    if not isinstance(spec, Mapping):
        raise ConfigurationError(
            f"{where} must be a mapping like {{query: 'mutation ... {{ ... }}', result: field}}"
            f", got {type(spec).__name__}"
        )
    data = dict(spec)
    operation_name = data.pop("operation_name", None)
    if operation_name is not None and not isinstance(operation_name, str):
        raise ConfigurationError(f"{where}.operation_name must be a string")
    try:
        parsed = GraphQLOperation.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"{where}: {problems}") from None
    if not parsed.query.strip():
        raise ConfigurationError(f"{where}.query is empty")
    return Document(parsed.query, parsed.result or None, operation_name)


def _retry_after(extensions: Mapping[str, Any]) -> float | None:
    for key in ("retryAfter", "retry_after", "retryAfterSeconds"):
        value = extensions.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            return max(0.0, float(value))
        if isinstance(value, str):
            return retry_after_seconds(value)
    return None


def classify_graphql_errors(
    errors: list[Any], *, retry_after_header: str | None = None
) -> tuple[ErrorClass, int, float | None]:
    """``(class, index of the deciding error, retry_after)`` of a response's ``errors``."""
    classes: list[ErrorClass] = []
    retry_after: float | None = None
    for error in errors:
        extensions = error.get("extensions") if isinstance(error, Mapping) else None
        code = extensions.get("code") if isinstance(extensions, Mapping) else None
        error_class = (
            CODE_CLASS.get(code.strip().upper(), ErrorClass.PERMANENT)
            if isinstance(code, str)
            else ErrorClass.PERMANENT
        )
        classes.append(error_class)
        limited = error_class is ErrorClass.RATE_LIMITED and isinstance(extensions, Mapping)
        if limited and retry_after is None:
            assert isinstance(extensions, Mapping)
            retry_after = _retry_after(extensions)
    chosen = min(classes, key=_PRECEDENCE.index) if classes else ErrorClass.PERMANENT
    if chosen is ErrorClass.RATE_LIMITED and retry_after is None:
        retry_after = retry_after_seconds(retry_after_header)
    if chosen is not ErrorClass.RATE_LIMITED:
        retry_after = None
    return chosen, classes.index(chosen) if classes else 0, retry_after


def _unauthenticated(body: Any) -> bool:
    if not isinstance(body, Mapping) or not isinstance(body.get("errors"), list):
        return False
    for error in body["errors"]:
        extensions = error.get("extensions") if isinstance(error, Mapping) else None
        code = extensions.get("code") if isinstance(extensions, Mapping) else None
        if isinstance(code, str) and code.strip().upper() in ("UNAUTHENTICATED", "UNAUTHORIZED"):
            return True
    return False


class GraphQLConnector(HttpConnector):
    """The adapter for one ``type: graphql`` service (see the module docstring)."""

    KIND = "GraphQL"
    ACCEPT = "application/graphql-response+json, application/json"

    # ---- the Connector protocol -----------------------------------------------------------

    async def execute(self, task: Task) -> Result:
        document = self._document(task.operation, task.version)
        return await self._run(task, task.operation, document, self._variables(task))

    async def execute_batch(self, tasks: list[Task]) -> list[Result | Exception]:
        """Each task on its own, ``max_concurrency`` at a time (GraphQL has no standard
        batch); one Result or StepError per task, in order."""
        return await self._each(tasks, self.execute)

    async def start_async(self, task: Task, callback_token: str) -> Result:
        """Run the operation with ``X-Callback-Token`` (and ``X-Callback-Url``) headers; its
        result's ``operation_id`` or ``id`` is ``Result.operation_id``."""
        document = self._document(task.operation, task.version)
        extra = self._callback_headers(callback_token)
        result = await self._run(task, task.operation, document, self._variables(task), extra)
        what = self._what(task.operation)
        details = self._details(task.operation, task)
        operation_id = operation_id_from(result.output)
        if operation_id is None:
            raise StepError(
                f"{what}: the async start returned no operation id; its result (the "
                "operation's `result` field of `data`) must have `operation_id` or `id`",
                error_class=ErrorClass.PERMANENT,
                details=details,
            )
        if status_word(result.output) in ("completed", "failed"):
            done = read_status(result.output, what=what, details=details, operation_id=operation_id)
            assert done is not None
            return done
        status = result.output.get("status") if isinstance(result.output, Mapping) else None
        return Result(
            operation_id=operation_id,
            metadata={"task_status": status.upper() if isinstance(status, str) else "ACCEPTED"},
        )

    async def check_status(self, task: Task, operation_id: str) -> Result | None:
        """Run ``async.status_operation`` with ``$operation_id``; read its ``status``."""
        name = self._status_operation(task, operation_id)
        what = self._what(task.operation)
        document = self._document(name, task.version)
        result = await self._run(
            task, name, document, {"operation_id": operation_id}, idempotency_key=""
        )
        details = {**self._details(task.operation, task), "status_operation": name}
        return read_status(result.output, what=what, details=details, operation_id=operation_id)

    async def health_check(self) -> None:
        """Run ``operations.health`` (default ``query { __typename }``); a StepError unless
        it answers data without errors."""
        spec = self.config.operations.get(HEALTH_OPERATION)
        document = (
            _document(self.name, HEALTH_OPERATION, spec)
            if spec is not None
            else Document(HEALTH_QUERY)
        )
        await self._run(None, HEALTH_OPERATION, document, {})

    # ---- calls -----------------------------------------------------------------------------

    def _check_operation(self, name: str, spec: Any) -> None:
        _document(self.name, name, spec)

    def _document(self, operation: str, version: str | None) -> Document:
        operations: Mapping[str, Any] = self.config.operations
        if version and version in self.config.versions:
            operations = self.config.versions[version].operations or operations
        spec = operations.get(operation)
        if spec is None:
            raise StepError(
                f"{self._what(operation)}: service {self.name} has no GraphQL document for "
                f"{operation!r}; add operations.{operation}.query to services.yaml",
                error_class=ErrorClass.PERMANENT,
                details={"service": self.name, "operation": operation},
            )
        return _document(self.name, operation, spec)

    def _variables(self, task: Task) -> dict[str, Any]:
        if task.input is None:
            return {}
        if not isinstance(task.input, Mapping):
            raise StepError(
                f"{self._what(task.operation)}: the input is the GraphQL variables and must "
                f"be an object, got {type(task.input).__name__}",
                error_class=ErrorClass.VALIDATION,
                details=self._details(task.operation, task),
            )
        return dict(task.input)

    async def _run(
        self,
        task: Task | None,
        operation: str,
        document: Document,
        variables: dict[str, Any],
        extra: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Result:
        call = self._call(operation, task)
        what, details = call.what, self._details(operation, task)
        payload: dict[str, Any] = {"query": document.query, "variables": variables}
        if document.operation_name:
            payload["operationName"] = document.operation_name

        async def refused(response: httpx.Response) -> bool:
            if response.status_code == 401:
                return True
            return 200 <= response.status_code < 300 and _unauthenticated(decode_body(response))

        response, refreshed = await call.send(
            "POST",
            self._endpoint(task.version if task is not None else None),
            task=task,
            headers=self._headers(task, idempotency_key=idempotency_key, extra=extra),
            refused=refused,
            json=payload,
        )
        error = response_error(response, what=what, details=details, refreshed=refreshed)
        if error is not None:
            raise error
        body = decode_body(response)
        if not isinstance(body, Mapping) or ("data" not in body and "errors" not in body):
            raise StepError(
                f"{what}: the answer is not a GraphQL response (no `data` nor `errors`); "
                "check that the endpoint is the GraphQL URL",
                error_class=ErrorClass.PERMANENT,
                details={**details, "status": response.status_code},
            )
        data = body.get("data")
        if isinstance(body.get("errors"), list) and body["errors"]:
            raise self._error(body["errors"], data, response, what, details, refreshed)
        if data is None:
            raise StepError(
                f"{what}: the GraphQL response has neither data nor errors",
                error_class=ErrorClass.PERMANENT,
                details=details,
            )
        output = self._pick(data, document.result, what, details)
        extensions = body.get("extensions")
        envelope = extensions.get("_legato") if isinstance(extensions, Mapping) else None
        _, side_effects, cost, metadata = legato_envelope({"_legato": envelope or {}})
        return Result(output=output, side_effects=side_effects, cost=cost, metadata=metadata)

    def _pick(self, data: Any, result: str | None, what: str, details: dict[str, Any]) -> Any:
        if result is None:
            return data
        value = data
        for part in result.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise StepError(
                    f"{what}: the response's data has no field {result!r} (the operation's "
                    "`result` in services.yaml)",
                    error_class=ErrorClass.PERMANENT,
                    details={**details, "result": result},
                )
            value = value[part]
        return value

    def _error(
        self,
        errors: list[Any],
        data: Any,
        response: httpx.Response,
        what: str,
        details: dict[str, Any],
        refreshed: bool,
    ) -> StepError:
        error_class, index, retry_after = classify_graphql_errors(
            errors, retry_after_header=response.headers.get("retry-after")
        )
        deciding = errors[index] if isinstance(errors[index], Mapping) else {}
        message = deciding.get("message") if isinstance(deciding, Mapping) else None
        extensions = deciding.get("extensions")
        code = extensions.get("code") if isinstance(extensions, Mapping) else None
        text = f"{what}: GraphQL error: {message if isinstance(message, str) else 'no message'}"
        if isinstance(code, str):
            text += f" ({code})"
        if len(errors) > 1:
            text += f" and {len(errors) - 1} more error(s)"
        listed: list[dict[str, Any]] = []
        for error in errors[:_MAX_ERRORS_IN_DETAILS]:
            if not isinstance(error, Mapping):
                continue
            item: dict[str, Any] = {"message": error.get("message")}
            ext = error.get("extensions")
            if isinstance(ext, Mapping) and "code" in ext:
                item["code"] = ext["code"]
            if "path" in error:
                item["path"] = error["path"]
            listed.append(item)
        extra: dict[str, Any] = {
            **details,
            "status": response.status_code,
            "errors": listed,
            "error_count": len(errors),
        }
        if data is not None:
            extra["partial_data"] = True
        if refreshed:
            extra["refreshed"] = True
        if retry_after is not None:
            extra["retry_after"] = retry_after
        return StepError(text, error_class=error_class, details=extra, retry_after=retry_after)
