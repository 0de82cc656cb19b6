"""legato.runtime.deadlines: step timeouts sharing the loop's timers."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from legato.runtime.deadlines import Deadlines


async def test_a_body_past_its_deadline_gets_timeout_error_within_the_resolution() -> None:
    deadlines = Deadlines(resolution=0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError), deadlines.limit(0.05) as limit:
        await asyncio.sleep(5)
    took = loop.time() - started
    assert limit.expired
    assert 0.05 <= took < 0.05 + 0.02 + 0.5  # the slot's end, plus scheduling slack
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_body_done_in_time_is_left_alone_when_its_slot_fires_later() -> None:
    deadlines = Deadlines(resolution=0.02)
    with deadlines.limit(0.05) as limit:
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # the slot's timer fires now and finds no one
    assert not limit.expired
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_no_limit_with_none() -> None:
    deadlines = Deadlines(resolution=0.01)
    with deadlines.limit(None) as limit:
        await asyncio.sleep(0.03)
    assert not limit.expired


async def test_limits_entered_together_share_one_timer() -> None:
    deadlines = Deadlines(resolution=0.5)
    loop = asyncio.get_running_loop()
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    with contextlib.ExitStack() as stack:
        for _ in range(200):
            stack.enter_context(deadlines.limit(300))
        armed = len(loop._scheduled) - before  # type: ignore[attr-defined]
    # one slot (two if the loop's clock crossed a slot's boundary meanwhile)
    assert 1 <= armed <= 2


async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    deadlines = Deadlines(resolution=0.01)
    entered = asyncio.Event()

    async def body() -> None:
        with deadlines.limit(300):
            entered.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_expired_and_cancelled_from_elsewhere_stays_a_cancel() -> None:
    deadlines = Deadlines(resolution=0.01)

    async def body() -> None:
        with deadlines.limit(0.02):
            try:
                await asyncio.sleep(5)
            finally:
                # the deadline has cancelled us; someone else cancels too
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(0)

    task = asyncio.create_task(body())
    with pytest.raises(asyncio.CancelledError):
        await task


def test_resolution_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Deadlines(resolution=0)
