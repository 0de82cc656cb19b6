"""Errors as ``application/problem+json`` (RFC 9457), mapped from Legato's error tree in
one place.

=====================================  ======  ==========================================
raised                                 status  ``type``
=====================================  ======  ==========================================
AuthenticationError                    401     ``urn:legato:problem:unauthenticated``
PermissionDenied                       403     ``urn:legato:problem:forbidden``
NotFoundError, unknown route           404     ``urn:legato:problem:not-found``
ConflictError                          409     ``urn:legato:problem:conflict``
DefinitionError (``errors``: findings) 422     ``urn:legato:problem:invalid-definition``
InputError, ExpressionError, a bad     422     ``urn:legato:problem:invalid-request``
request (``errors``: what and where)
StoreError                             503     ``urn:legato:problem:store-unavailable``
anything else                          500     ``urn:legato:problem:internal`` (logged
                                               with a reference; nothing internal shown)
=====================================  ======  ==========================================
"""

from __future__ import annotations

import http
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from legato.errors import (
    ConflictError,
    DefinitionError,
    ExpressionError,
    InputError,
    LegatoError,
    NotFoundError,
    StoreError,
)

log = logging.getLogger("legato.api")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:legato:problem:"


class ApiError(LegatoError):
    """The request cannot be served."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.headers = dict(headers or {})


class AuthenticationError(ApiError):
    """This route needs a valid bearer token."""

    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class PermissionDenied(ApiError):
    """The token does not allow this."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class PayloadTooLarge(ApiError):
    """The request body is too large."""

    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(ApiError):
    """The request body's media type is not accepted here."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class NotServing(ApiError):
    """The server is starting or stopping."""

    status = 503
    slug = "unavailable"
    title = "Service unavailable"


# (class, status, slug, title), most specific first
_MAPPING: tuple[tuple[type[LegatoError], int, str, str], ...] = (
    (DefinitionError, 422, "invalid-definition", "Invalid workflow definition"),
    (InputError, 422, "invalid-request", "Invalid request"),
    (ExpressionError, 422, "invalid-request", "Invalid request"),
    (NotFoundError, 404, "not-found", "Not found"),
    (ConflictError, 409, "conflict", "Conflict"),
    (StoreError, 503, "store-unavailable", "The database is unavailable"),
)


def problem(
    status: int,
    *,
    slug: str,
    title: str,
    detail: str,
    instance: str | None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors is not None:
        body["errors"] = list(errors)
    if extra:
        body.update(extra)
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


def _instance(request: Request) -> str:
    return request.url.path


def internal_error(instance: str | None, exc: BaseException) -> JSONResponse:
    """The 500 answer: a reference to the log line, nothing of the failure itself."""
    reference = uuid.uuid4().hex[:12]
    log.error("unexpected error serving %s (reference %s)", instance, reference, exc_info=exc)
    return problem(
        500,
        slug="internal",
        title="Internal server error",
        detail=(
            f"Legato failed unexpectedly; the error is logged with reference {reference}. "
            "Fix: try again; if it keeps failing, report the reference to the operator"
        ),
        instance=instance,
        extra={"reference": reference},
    )


async def legato_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LegatoError)
    instance = _instance(request)
    if isinstance(exc, ApiError):
        return problem(
            exc.status,
            slug=exc.slug,
            title=exc.title,
            detail=exc.message,
            instance=instance,
            headers=exc.headers,
        )
    for cls, status, slug, title in _MAPPING:
        if not isinstance(exc, cls):
            continue
        if isinstance(exc, DefinitionError):
            findings = [_finding(f) for f in exc.findings]
            detail = (
                f"The definition has {len(findings)} problem(s); each entry of `errors` says "
                "where (a JSON pointer into what you sent) and how to fix it"
            )
            return problem(
                status, slug=slug, title=title, detail=detail, instance=instance, errors=findings
            )
        if isinstance(exc, StoreError):
            log.warning("store error serving %s: %s", instance, exc.message)
            return problem(
                status,
                slug=slug,
                title=title,
                detail=(
                    "The database did not answer or failed. Fix: try again shortly; if it "
                    "keeps failing, the operator should check the database"
                ),
                instance=instance,
                headers={"Retry-After": "1"} if exc.retryable else None,
            )
        return problem(status, slug=slug, title=title, detail=exc.message, instance=instance)
    # ConfigurationError, UsageError, StepError, ...: a bug or a broken deployment.
    return internal_error(instance, exc)


def _finding(finding: Any) -> dict[str, Any]:
    if hasattr(finding, "to_dict"):
        return dict(finding.to_dict())
    return {"code": "L000", "severity": "error", "pointer": "", "message": str(finding), "fix": ""}


_WHERE = {"query": "query parameter", "path": "path parameter", "header": "header"}


async def request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [request_error(err) for err in exc.errors()]
    return problem(
        422,
        slug="invalid-request",
        title="Invalid request",
        detail=f"The request has {len(errors)} problem(s); each entry of `errors` says which "
        "parameter or part of the body and how to fix it",
        instance=_instance(request),
        errors=errors,
    )


def request_error(err: Mapping[str, Any]) -> dict[str, Any]:
    """One pydantic/FastAPI validation error as an entry of a problem's ``errors``."""
    loc = [str(part) for part in err.get("loc", ())]
    pointer = "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in loc)
    message = str(err.get("msg", "invalid"))
    if loc and loc[0] in _WHERE and len(loc) > 1:
        fix = f"correct the {_WHERE[loc[0]]} `{loc[1]}`: {message[0].lower()}{message[1:]}"
    elif loc and loc[0] == "body":
        where = "/".join(loc[1:]) or "the body"
        fix = f"correct `{where}` in the request body: {message[0].lower()}{message[1:]}"
    else:
        fix = f"correct the request: {message}"
    return {
        "code": "REQUEST",
        "severity": "error",
        "pointer": pointer,
        "message": message,
        "fix": fix,
    }


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    try:
        title = http.HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    detail = exc.detail if isinstance(exc.detail, str) else title
    if status == 404:
        detail = (
            f"There is no route {request.method} {request.url.path}. Fix: see the routes at "
            "/docs (or /openapi.json)"
        )
    elif status == 405:
        detail = (
            f"{request.method} is not allowed on {request.url.path}. Fix: see the methods of "
            "this route at /docs"
        )
    slug = {404: "not-found", 405: "method-not-allowed"}.get(status, "http-error")
    return problem(
        status,
        slug=slug,
        title=title,
        detail=detail,
        instance=_instance(request),
        headers=getattr(exc, "headers", None),
    )


class CatchAll:
    """Outermost but one: an exception no handler took becomes a 500 problem (logged with
    a reference), never a traceback or a bare text answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:
                raise
            response = internal_error(scope.get("path"), exc)
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the handlers and the catch-all on ``app``."""
    app.add_exception_handler(LegatoError, legato_error)
    app.add_exception_handler(RequestValidationError, request_validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(CatchAll)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": ["string", "null"]},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["code", "severity", "pointer", "message", "fix"],
                "properties": {
                    "code": {"type": "string"},
                    "severity": {"type": "string", "enum": ["error", "warning"]},
                    "pointer": {"type": "string"},
                    "message": {"type": "string"},
                    "fix": {"type": "string"},
                    "line": {"type": "integer"},
                    "column": {"type": "integer"},
                },
            },
        },
    },
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses (problem+json)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {
            "description": http.HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out
