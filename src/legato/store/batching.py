"""Group commit for calls that arrive one at a time: one transaction for many callers.

``await batcher.submit(item)`` queues the item; the first caller starts a drain that
runs the queued items together through ``flush`` (one store transaction, one fsync) and
hands each caller its own result or error. Items that arrive while a flush is running
go into the next one, so under load batches grow by themselves, and a lone caller waits
for nothing but its own transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class GroupCommit(Generic[T, R]):
    def __init__(self, flush: Flush[T, R], *, max_batch: int = 256) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._draining = False

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if not self._draining:
            self._draining = True
            drain = asyncio.ensure_future(self._drain())
            drain.add_done_callback(_consume)
        return await fut

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # let callers of this same tick join the first batch
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                try:
                    results = await self._flush([item for item, _ in batch])
                except BaseException as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
        finally:
            self._draining = False
            for _, fut in self._queue:  # cancelled while items were waiting
                if not fut.done():
                    fut.set_exception(asyncio.CancelledError())
            self._queue.clear()


def _consume(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # errors went to the callers; don't log them again
