"""StoreThreads: transactions run most urgent first, in arrival order within a priority."""

from __future__ import annotations

import threading

import pytest

from legato.store.threads import LATER, URGENT, StoreThreads


def test_urgent_work_runs_before_later_work_queued_earlier() -> None:
    threads = StoreThreads(1, "test-store")
    gate = threading.Event()
    order: list[str] = []
    blocker = threads.submit(gate.wait)  # holds the one thread while the others queue
    futures = [
        threads.submit(lambda: order.append("later-1"), LATER),
        threads.submit(lambda: order.append("urgent-1"), URGENT),
        threads.submit(lambda: order.append("later-2"), LATER),
        threads.submit(lambda: order.append("urgent-2")),
    ]
    gate.set()
    assert blocker.result(timeout=5) is True
    for future in futures:
        future.result(timeout=5)
    assert order == ["urgent-1", "urgent-2", "later-1", "later-2"]
    threads.shutdown()


def test_errors_reach_the_caller_and_shutdown_runs_what_is_queued() -> None:
    threads = StoreThreads(2, "test-store")

    def fail() -> None:
        raise ValueError("no such table")

    failing = threads.submit(fail)
    with pytest.raises(ValueError, match="no such table"):
        failing.result(timeout=5)
    done: list[int] = []
    queued = [threads.submit(lambda i=i: done.append(i), LATER) for i in range(10)]
    threads.shutdown()
    assert all(future.done() for future in queued)
    assert sorted(done) == list(range(10))
