"""Mock services from YAML (or JSON): stand-ins configured without code.

::

    name: background-check
    idempotency_header: Idempotency-Key
    operations:
      criminal.check:
        method: POST
        path: /checks/criminal
        response: {status: clear, candidate: "{{ input.name }}"}
        latency: 50ms                      # or [10ms, 80ms]
        errors:
          - {times: 2, status: 503}
          - {times: 1, status: 429, retry_after: 2s}
          - {times: 1, timeout: true}
        async: {delay: 2s, callback_url: "http://127.0.0.1:8000/callbacks/x"}

Responses are templates over the request (``{{ input.x }}`` is the body's ``x``; see
:meth:`legato.mock.MockRequest.scope`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from legato.dsl.durations import parse_duration
from legato.errors import ErrorClass, InputError
from legato.mock._core import MockService


def _duration(value: Any) -> Any:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_duration(value)
    return value


Seconds = Annotated[float, BeforeValidator(_duration), Field(ge=0)]


def _latency(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_duration(v) for v in value]
    return [_duration(value), _duration(value)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ErrorSpec(_Model):
    times: int | None = Field(1, ge=1)  # null: every call from here on
    status: int = Field(503, ge=400, le=599)
    body: Any = None
    retry_after: Seconds | None = None
    error_class: ErrorClass | None = None
    grpc_code: str | None = None
    timeout: bool = False
    hang: Seconds | None = None


class AsyncSpec(_Model):
    delay: Seconds = 0.0
    callback_url: str | None = None
    callback_body: Any = None


class OperationSpec(_Model):
    method: str = "POST"
    path: str | None = None
    response: Any = None
    status: int = Field(200, ge=100, le=599)
    headers: dict[str, str] = Field(default_factory=dict)
    latency: Annotated[tuple[float, float], BeforeValidator(_latency)] | None = None
    errors: list[ErrorSpec] = Field(default_factory=list)
    per_key: bool = False
    async_: AsyncSpec | None = Field(None, alias="async")
    side_effects: list[dict[str, Any]] = Field(default_factory=list)
    cost: dict[str, Any] | None = None


class ServiceSpec(_Model):
    name: str
    idempotency_header: str = "Idempotency-Key"
    attempt_header: str = "X-Legato-Attempt"
    callback_header: str = "X-Callback-Url"
    callback_token_header: str = "X-Callback-Token"
    seed: int | None = None
    operations: dict[str, OperationSpec]


def build(data: Mapping[str, Any], *, source: str = "mock configuration") -> MockService:
    try:
        spec = ServiceSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise InputError(f"{source}: {problems}", details={"source": source}) from exc
    svc = MockService(
        spec.name,
        idempotency_header=spec.idempotency_header,
        attempt_header=spec.attempt_header,
        callback_header=spec.callback_header,
        callback_token_header=spec.callback_token_header,
        seed=spec.seed,
    )
    for name, item in spec.operations.items():
        op = svc.operation(name, method=item.method, path=item.path)
        op.respond(item.response, status=item.status, headers=item.headers, template=True)
        if item.latency is not None:
            op.latency(*item.latency)
        for error in item.errors:
            if error.timeout:
                hang = error.hang if error.hang is not None else 3600.0
                op.timeout(error.times, hang=hang)
            else:
                op.fail(
                    error.times,
                    status=error.status,
                    body=error.body,
                    retry_after=error.retry_after,
                    error_class=error.error_class,
                    grpc_code=error.grpc_code,
                )
        op.per_key(item.per_key)
        if item.async_ is not None:
            op.async_(
                item.async_.delay,
                callback_url=item.async_.callback_url,
                callback_body=item.async_.callback_body,
            )
        if item.side_effects:
            op.side_effects(item.side_effects)
        if item.cost is not None:
            op.cost(item.cost)
    return svc


def load_file(path: str | os.PathLike[str]) -> MockService:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{file}: cannot read the mock configuration ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise InputError(
            f"{file}: expected a mapping with `name:` and `operations:`",
            details={"path": str(file)},
        )
    return build(data, source=str(file))
