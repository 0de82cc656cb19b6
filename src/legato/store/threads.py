"""The store's threads: each runs one transaction at a time, most urgent first.

A ``ThreadPoolExecutor`` takes work in arrival order. Under load that puts a burst of
new runs (one group commit each) ahead of the worker's commits and claims, so timers
that are due, and steps that finished, wait behind runs that have not started. Here a
transaction has a priority: ``URGENT`` (the worker's commits, claims, reads) before
``LATER`` (creating runs), in arrival order within a priority. Creations are never
starved: the worker sends one commit and one claim at a time and computes between them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

URGENT = 0
LATER = 1
_STOP = 2  # after everything queued


class StoreThreads:
    def __init__(self, size: int, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}_{i}", daemon=True) for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, fn: Callable[[], Any], priority: int = URGENT
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((priority, next(self._order), fn, future))
        return future

    def call(self, fn: Callable[[], Any], priority: int = URGENT) -> asyncio.Future[Any]:
        """``fn``'s result as an asyncio future of the running loop, set from the thread
        with one ``call_soon_threadsafe``: no concurrent future and no chaining of two
        futures (``asyncio.wrap_future``), which cost a step's round trip ~20 µs more.
        If the future is cancelled before ``fn`` starts, ``fn`` does not run."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((priority, next(self._order), fn, (loop, future)))
        return future

    def shutdown(self) -> None:
        """Run what is queued, then stop every thread and wait for them."""
        for _ in self._threads:
            self._queue.put((_STOP, next(self._order), None, None))
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        while True:
            _priority, _order, fn, future = self._queue.get()
            if fn is None:
                return
            if isinstance(future, tuple):
                self._run_for_loop(fn, *future)
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to the caller, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)

    @staticmethod
    def _run_for_loop(
        fn: Callable[[], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        if future.cancelled():  # (a read of the future's state: safe from this thread)
            return
        try:
            result = fn()
        except BaseException as exc:
            deliver, value = _set_exception, exc
        else:
            deliver, value = _set_result, result
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, future, value)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
