"""The store's threads: each runs one transaction at a time, most urgent first.

A ``ThreadPoolExecutor`` takes work in arrival order. Under load that puts a burst of
new runs (one group commit each) ahead of the worker's commits and claims, so timers
that are due, and steps that finished, wait behind runs that have not started. Here a
transaction has a priority: ``URGENT`` (the worker's commits, claims, reads) before
``LATER`` (creating runs), in arrival order within a priority. Creations are never
starved: the worker sends one commit and one claim at a time and computes between them.
"""

from __future__ import annotations

import concurrent.futures
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
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to the caller, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)
