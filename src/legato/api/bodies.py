"""Reading request bodies strictly: bounded size, JSON without NaN or Infinity, YAML
without aliases.  Untrusted input becomes plain data or a 4xx problem, never a crash."""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from fastapi import Request

from legato.api.problems import PayloadTooLarge, UnsupportedMediaType
from legato.dsl.findings import Finding
from legato.dsl.formats._common import SYNTAX
from legato.errors import DefinitionError, InputError

MAX_BODY_BYTES = 1024 * 1024
JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_text(request: Request) -> str:
    """The body as UTF-8 text, at most MAX_BODY_BYTES."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"the request body is not UTF-8 text (byte {exc.start}). Fix: send it as UTF-8"
        ) from None


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB. Fix: send less; "
        "split a very large definition into subflows"
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large a number")
    return value


def parse_json(text: str, *, what: str = "the request body") -> Any:
    """Strict JSON: NaN, Infinity and numbers that overflow are refused (InputError)."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
            "Fix: send a JSON document"
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InputError(
            f"{what} is not usable JSON: {reason}. Fix: send plain JSON data"
        ) from None


async def json_body(request: Request, *, default: Any = None) -> Any:
    """The JSON body (``default`` when empty); 415 for a body that says it is not JSON."""
    text = await read_text(request)
    if not text.strip():
        return default
    kind = media_type(request)
    if kind and kind not in JSON_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaType(
            f"this route takes JSON, not {kind!r}. Fix: send `Content-Type: application/json`"
        )
    return parse_json(text)


def _syntax_error(
    message: str, fix: str, line: int | None = None, column: int | None = None
) -> DefinitionError:
    finding = Finding(
        code=SYNTAX,
        severity="error",
        pointer="",
        message=message,
        fix=fix,
        line=line,
        column=column,
    )
    return DefinitionError(findings=[finding], source="request body")


async def definition_body(request: Request) -> tuple[Any, str, str]:
    """A definition sent as JSON or YAML: (the parsed document, the text, the media type
    it was read as).  Syntax errors are a DefinitionError with one finding."""
    text = await read_text(request)
    kind = media_type(request) or "application/json"
    if kind in YAML_TYPES:
        return _parse_yaml(text), text, "yaml"
    if kind not in JSON_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaType(
            f"a definition is JSON or YAML, not {kind!r}. Fix: send `Content-Type: "
            "application/json` or `application/yaml`"
        )
    if not text.strip():
        raise _syntax_error(
            "The request body is empty.",
            "send the workflow definition (JSON or YAML) as the body",
        )
    try:
        return parse_json(text, what="the definition"), text, "json"
    except InputError as exc:
        raise _syntax_error(exc.message, "correct the JSON syntax") from None


def _parse_yaml(text: str) -> Any:
    from legato.dsl.loader import parse_text

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                mark = event.start_mark
                line = None if mark is None else mark.line + 1
                column = None if mark is None else mark.column + 1
                where = "" if line is None else f"line {line}, column {column}: "
                raise _syntax_error(
                    f"{where}YAML aliases (`*name`) are not accepted in a request body.",
                    "write the repeated part out in full",
                    line,
                    column,
                )
    except yaml.YAMLError:
        pass  # parse_text reports it with its line and column
    doc, problem = parse_text(text)
    if problem is not None:
        raise DefinitionError(findings=[problem], source="request body")
    try:
        json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError):
        raise _syntax_error(
            "The YAML holds values that are not JSON data (dates, NaN or binary).",
            "quote dates and special values as strings",
        ) from None
    except RecursionError:
        raise _syntax_error("The document is nested too deeply.", "flatten it") from None
    return doc
