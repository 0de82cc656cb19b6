"""GroupCommit: callers of the same moment share one flush; each gets its own result."""

from __future__ import annotations

import asyncio

import pytest

from legato.errors import ConflictError, StoreError
from legato.store.batching import GroupCommit


async def test_concurrent_submits_share_a_flush_and_get_their_own_results() -> None:
    flushes: list[list[int]] = []

    async def flush(items: list[int]) -> list[int | BaseException]:
        flushes.append(items)
        await asyncio.sleep(0.01)
        return [ConflictError(f"{i} is taken") if i == 3 else i * 10 for i in items]

    batcher: GroupCommit[int, int] = GroupCommit(flush)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    assert results[:3] == [0, 10, 20]
    assert results[4:] == [40, 50]
    assert isinstance(results[3], ConflictError)
    assert flushes == [[0, 1, 2, 3, 4, 5]]


async def test_items_arriving_during_a_flush_go_into_the_next_one() -> None:
    flushes: list[list[int]] = []
    started = asyncio.Event()

    async def flush(items: list[int]) -> list[int | BaseException]:
        flushes.append(items)
        started.set()
        await asyncio.sleep(0.01)
        return list(items)

    batcher: GroupCommit[int, int] = GroupCommit(flush, max_batch=2)
    first = asyncio.ensure_future(batcher.submit(1))
    await started.wait()
    later = await asyncio.gather(*(batcher.submit(i) for i in (2, 3, 4)))
    assert await first == 1
    assert later == [2, 3, 4]
    assert flushes == [[1], [2, 3], [4]]


async def test_a_failed_flush_fails_its_callers_and_the_next_batch_still_runs() -> None:
    calls = 0

    async def flush(items: list[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreError("database is busy")
        return list(items)

    batcher: GroupCommit[int, int] = GroupCommit(flush)
    with pytest.raises(StoreError, match="busy"):
        await batcher.submit(1)
    assert await batcher.submit(2) == 2
