"""The mock service over gRPC: an :class:`~legato.executor.Executor` whose operations
follow the mock's script. Needs the ``grpc`` extra."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc

from legato.connectors.proto import SERVICE_NAME
from legato.errors import ErrorClass, StepError
from legato.executor import Abort, Executor, Reply, Request, result
from legato.mock._core import MockOperation, MockRequest, MockService

_PATH = f"/{SERVICE_NAME}/ExecuteTask"


def build_executor(service: MockService) -> Executor:
    """An Executor with one operation per mock operation (as configured now)."""
    executor = Executor(name=service.name, version="mock")
    for op in service.operations.values():
        executor.add(op.name, _handler(service, op))
    return executor


def _handler(
    service: MockService, op: MockOperation
) -> Callable[[Any, Request], Coroutine[Any, Any, Any]]:
    async def handle(payload: Any, request: Request) -> Any:
        mock_request = MockRequest(
            operation=op.name,
            transport="grpc",
            method=request.rpc,
            path=_PATH,
            body=payload,
            headers={k: v for k, v in request.headers.items() if not k.startswith(":")},
            idempotency_key=request.idempotency_key or None,
            attempt=request.attempt or None,
            task_id=request.task_id or None,
            metadata=dict(request.metadata),
        )
        plan = service._arrive(op, mock_request)
        if plan.delay:
            await asyncio.sleep(plan.delay)
        if plan.kind == "timeout":
            assert plan.step is not None
            await asyncio.sleep(plan.step.hang)
            raise StepError(plan.message(), error_class=ErrorClass.TIMEOUT)
        if plan.kind == "error":
            step = plan.step
            if step is not None and step.grpc_code is not None:
                raise Abort(
                    grpc.StatusCode[step.grpc_code], plan.message(), retry_after=plan.retry_after
                )
            raise StepError(
                plan.message(), error_class=plan.error_class, retry_after=plan.retry_after
            )
        if plan.kind == "accept":
            assert plan.operation_id is not None
            operation_id = plan.operation_id
            url = request.headers.get("legato-callback-url") or request.metadata.get("callback_url")
            token = request.callback_token or request.metadata.get("callback_token")
            delay = float((op._async or {}).get("delay", 0.0))
            return Executor.defer(
                _finish(service, op, operation_id, mock_request, delay, url, token),
                operation_id=operation_id,
            )
        try:
            body = op._response_body(mock_request)
        except Exception:
            service._answered(plan.seq, 500, "error")
            raise
        return _reply(op, body)

    return handle


def _reply(op: MockOperation, body: Any) -> Reply:
    return result(body, side_effects=op._side_effects, cost=op._cost)


async def _finish(
    service: MockService,
    op: MockOperation,
    operation_id: str,
    request: MockRequest,
    delay: float,
    url: str | None,
    token: str | None,
) -> Reply:
    await asyncio.sleep(delay)
    snapshot = await asyncio.to_thread(
        service._finish_async, op, operation_id, request, callback_url=url, callback_token=token
    )
    if snapshot["status"] != "COMPLETED":
        error = snapshot.get("error") or {}
        raise StepError(
            error.get("message", "the async operation failed"),
            error_class=error.get("error_class", "RETRYABLE"),
        )
    return _reply(op, snapshot.get("result"))


@contextlib.asynccontextmanager
async def serve_grpc(service: MockService, *, host: str, port: int) -> AsyncIterator[str]:
    executor = build_executor(service)
    async with executor.running(port, host) as address:
        yield address
