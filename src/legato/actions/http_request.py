"""``http_request``: call an HTTP endpoint through the registry's guarded client.

Input::

    {url, method="GET", headers?, query?, json? | body?, timeout="30s",
     expect_status?, follow_redirects=false}

Every call carries ``Idempotency-Key: <ctx.idempotency_key>`` (unless the step sets its
own), ``X-Legato-Run-Id`` and ``X-Legato-Step``.  Output::

    {status, headers: {a safe subset, lower-case}, json: ... | text: ...}

A status of 400 or more (or, with ``expect_status``, any other status) is raised as a
classified StepError (:func:`legato.net.step_error_for_status`); the destination is
checked by the registry's :class:`~legato.net.NetworkPolicy` on every connection.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from typing import Any

import httpx

from legato.activity import ActivityContext, activity
from legato.dsl.durations import parse_duration
from legato.errors import ErrorClass, StepError
from legato.net import safe_url, step_error_for_status, step_error_from_httpx

MAX_RESPONSE_BYTES = 1024 * 1024
"""Responses larger than this fail the step (PERMANENT): step results live in the log."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_KEYS = frozenset(
    {
        "url",
        "method",
        "headers",
        "query",
        "json",
        "body",
        "timeout",
        "expect_status",
        "follow_redirects",
    }
)
SAFE_RESPONSE_HEADERS = frozenset(
    {
        "cache-control",
        "content-language",
        "content-length",
        "content-location",
        "content-type",
        "date",
        "etag",
        "expires",
        "idempotency-key",
        "last-modified",
        "link",
        "location",
        "request-id",
        "retry-after",
        "x-request-id",
        "x-correlation-id",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }
)
"""Response headers copied into the result (cookies and auth challenges never are)."""


def _invalid(message: str, **details: Any) -> StepError:
    return StepError(f"http_request: {message}", error_class=ErrorClass.VALIDATION, details=details)


def _scalar_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{what} must be an object of names to values")
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            item = "true" if item else "false"
        elif isinstance(item, int | float):
            item = str(item)
        if not isinstance(item, str):
            raise _invalid(f"{what}[{key!r}] must be a string or a number", key=key)
        if any(c in item for c in "\r\n") or any(c in key for c in "\r\n:"):
            raise _invalid(f"{what}[{key!r}] contains a line break or a colon", key=key)
        out[key] = item
    return out


def _statuses(value: Any) -> frozenset[int] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise _invalid("expect_status must be a status code or a list of them")
    return frozenset(items)


async def _read_capped(response: httpx.Response) -> bytes:
    size = int(response.headers.get("content-length") or 0)
    if size > MAX_RESPONSE_BYTES:
        raise _too_large(response)
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > MAX_RESPONSE_BYTES:
            raise _too_large(response)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(response: httpx.Response) -> StepError:
    return StepError(
        f"http_request: the response from {safe_url(response.request.url)} is larger than "
        f"{MAX_RESPONSE_BYTES} bytes; step results are stored in the run's history, so "
        "fetch large documents in an activity of your own",
        error_class=ErrorClass.PERMANENT,
        details={"status": response.status_code, "limit": MAX_RESPONSE_BYTES},
    )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


@activity("http_request")
async def http_request(request: Any, /, *, ctx: ActivityContext) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise _invalid("the input must be an object with at least `url`")
    unknown = sorted(set(request) - _KEYS)
    if unknown:
        raise _invalid(
            f"unknown input key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(_KEYS))}",
            unknown=unknown,
        )
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise _invalid("`url` is required (an http or https URL)")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise _invalid(f"`url` is not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _invalid(
            f"`url` must be an absolute http or https URL, got {safe_url(url)!r}",
            url=safe_url(url),
        )
    method = str(request.get("method") or "GET").upper()
    if method not in _METHODS:
        raise _invalid(f"method {method!r} is not one of {', '.join(sorted(_METHODS))}")
    if "json" in request and "body" in request:
        raise _invalid("give `json` or `body`, not both")
    body = request.get("body")
    if body is not None and not isinstance(body, str):
        raise _invalid("`body` must be a string; send objects with `json`")
    try:
        timeout = parse_duration(request.get("timeout", "30s"))
    except (TypeError, ValueError) as exc:
        raise _invalid(f"timeout: {exc}") from exc
    expected = _statuses(request.get("expect_status"))
    headers = _scalar_map(request.get("headers"), "headers")
    query = _scalar_map(request.get("query"), "query")
    lowered = {k.lower() for k in headers}
    if "idempotency-key" not in lowered:
        headers["Idempotency-Key"] = ctx.idempotency_key
    headers["X-Legato-Run-Id"] = ctx.run_id
    headers["X-Legato-Step"] = ctx.step

    send: dict[str, Any] = {}
    if "json" in request:
        send["json"] = request["json"]
    elif body is not None:
        send["content"] = body.encode()
    try:
        async with (
            asyncio.timeout(timeout),
            ctx.http.stream(
                method,
                parsed,
                params=query or None,
                headers=headers,
                timeout=httpx.Timeout(timeout),
                follow_redirects=bool(request.get("follow_redirects", False)),
                **send,
            ) as response,
        ):
            raw = await _read_capped(response)
    except httpx.HTTPError as exc:
        raise step_error_from_httpx(exc) from exc
    except TimeoutError as exc:  # the whole exchange took longer than `timeout`
        raise StepError(
            f"http_request: {method} {safe_url(parsed)} did not complete within {timeout:g}s",
            error_class=ErrorClass.TIMEOUT,
            details={"url": safe_url(parsed), "method": method, "timeout": timeout},
        ) from exc

    content_type = response.headers.get("content-type", "")
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    status = response.status_code
    ok = status in expected if expected is not None else status < 400
    if not ok:
        error = step_error_for_status(
            status, method=method, url=parsed, headers=response.headers, body=text
        ) or StepError(
            f"{method} {safe_url(parsed)} returned {status}; the step expects "
            f"{', '.join(str(s) for s in sorted(expected or ()))}",
            error_class=ErrorClass.PERMANENT,
            details={"status": status, "url": safe_url(parsed), "method": method},
        )
        raise error

    result: dict[str, Any] = {
        "status": status,
        "headers": {
            k.lower(): v for k, v in response.headers.items() if k.lower() in SAFE_RESPONSE_HEADERS
        },
    }
    if raw and _is_json(content_type):
        try:
            result["json"] = jsonlib.loads(raw)
            return result
        except ValueError:
            pass
    result["text"] = text
    return result
