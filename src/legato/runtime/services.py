"""Service steps: a task naming ``service`` + ``operation`` goes through the connectors.

The worker hands a scheduled step here; this module builds the connector
:class:`~legato.connectors.base.Task`, and either

* executes it (the step completes with the service's result),
* starts it as an async operation (``async: true``: the step is *accepted* and waits,
  durably, for a callback or for polling to report the result), or
* gathers it into a batch with other tasks of the same service and operation, sent with
  ``execute_batch`` when ``max_size`` tasks are waiting or ``max_wait`` has passed.

A batch lives only in memory, but every task in it is a leased row in ``due_work``: a
crash before the batch's outcomes are committed loses nothing; the rows are claimed again
when their leases lapse and the tasks are sent again with the same idempotency keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from legato.connectors.base import Result, Task
from legato.errors import ErrorClass, StepError
from legato.store import Scope


@dataclass(slots=True)
class _Batch:
    max_size: int
    max_wait: float
    tasks: list[Task] = field(default_factory=list)
    futures: list[asyncio.Future[Result]] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None


class ServiceSteps:
    """Runs service steps through a connector hub (``legato.connectors.hub.Connectors``)."""

    def __init__(self, hub: Any, *, now: Callable[[], datetime]) -> None:
        self.hub = hub
        self._now = now
        self._batches: dict[tuple[Scope, str, str], _Batch] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    def task(
        self,
        payload: dict[str, Any],
        *,
        scope: Scope,
        run_id: str,
        workflow: str,
        timeout: float | None,
    ) -> Task:
        deadline = self._now() + timedelta(seconds=timeout) if timeout else None
        return Task(
            task_id=payload["path"],
            run_id=run_id,
            workflow=workflow,
            service=payload["service"],
            operation=payload["operation"],
            # a copy: a leased work item's payload is the very object the run's state holds
            input=copy.deepcopy(payload.get("input")),
            idempotency_key=payload["idempotency_key"],
            attempt=payload.get("visit_attempt") or payload["attempt"],
            deadline=deadline,
            tenant_id=scope.tenant_id,
            environment_id=scope.environment_id,
        )

    async def run(self, payload: dict[str, Any], task: Task, scope: Scope) -> tuple[str, Result]:
        """``("completed", result)`` or, for an async start, ``("accepted", ack)``."""
        if payload.get("async") and not payload.get("compensation"):
            token = payload.get("callback_token")
            if not token:
                raise StepError(
                    f"step {task.task_id!r} is async but has no callback token",
                    error_class=ErrorClass.PERMANENT,
                )
            return "accepted", await self.hub.start_async(task, token)
        batch = payload.get("batch")
        if batch and not payload.get("compensation"):
            return "completed", await self._batched(task, scope, batch)
        return "completed", await self.hub.execute(task)

    def poll_interval(self, service: str) -> float | None:
        """Seconds between status polls for this service's async operations, if it polls."""
        config = self.hub.service(service)
        polling = getattr(config, "async_", None)
        if polling is None or not polling.status_operation:
            return None
        return float(polling.poll_interval)

    async def poll(self, task: Task, operation_id: str) -> Result | None:
        result: Result | None = await self.hub.check_status(task, operation_id)
        return result

    # ---- batching -------------------------------------------------------------------------

    async def _batched(self, task: Task, scope: Scope, config: dict[str, Any]) -> Result:
        key = (scope, task.service, task.operation)
        batch = self._batches.get(key)
        if batch is None:
            batch = _Batch(max_size=int(config["max_size"]), max_wait=float(config["max_wait"]))
            self._batches[key] = batch
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        batch.tasks.append(task)
        batch.futures.append(future)
        if len(batch.tasks) >= batch.max_size:
            self._flush(key)
        elif batch.timer is None:
            batch.timer = asyncio.create_task(self._flush_later(key, batch))
        return await future

    async def _flush_later(self, key: tuple[Scope, str, str], batch: _Batch) -> None:
        await asyncio.sleep(batch.max_wait)
        if self._batches.get(key) is batch:
            self._flush(key)

    def _flush(self, key: tuple[Scope, str, str]) -> None:
        batch = self._batches.pop(key)
        if batch.timer is not None and batch.timer is not asyncio.current_task():
            batch.timer.cancel()
        flush = asyncio.create_task(self._send(batch))
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    async def _send(self, batch: _Batch) -> None:
        try:
            results = await self.hub.execute_batch(batch.tasks)
        except Exception as exc:  # the whole batch failed: every task gets the error
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(batch.futures, results, strict=False):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        for future in batch.futures[len(results) :]:
            if not future.done():
                future.set_exception(
                    StepError(
                        "the service answered fewer results than the batch had tasks",
                        error_class=ErrorClass.RETRYABLE,
                    )
                )

    async def aclose(self) -> None:
        for batch in self._batches.values():
            if batch.timer is not None:
                batch.timer.cancel()
            for future in batch.futures:
                if not future.done():
                    future.cancel()
        self._batches.clear()
        for flush in list(self._flushes):
            flush.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flush
