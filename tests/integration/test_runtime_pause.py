"""Pausing and resuming runs through ``legato.Engine``, on SQLite and on PostgreSQL.

Nothing here sleeps to let time pass: each test waits on the engine (``wait``) or polls
the recorded history with a deadline, and a step that must be running is held by an
activity that waits for the test to release it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from legato import Definition, Engine, RunResult, WorkerOptions
from legato.errors import ConflictError

WAIT = 10.0


def wf(name: str, states: dict[str, Any]) -> Definition:
    return Definition.model_validate(
        {"name": name, "start_at": next(iter(states)), "states": states}
    )


APPROVAL = wf(
    "approval",
    {
        "ask": {
            "type": "wait",
            "event": {"name": "approved", "timeout": "5m"},
            "result_path": "$.approval",
            "next": "record",
        },
        "record": {
            "type": "task",
            "action": "set",
            "input": {"by": "$.approval.by"},
            "output": {"$.approved_by": "$.result.by"},
            "next": "done",
        },
        "done": {"type": "succeed", "output": {"approved_by": "$.approved_by"}},
    },
)


async def history_types(engine: Engine, run_id: str) -> list[tuple[str, Any]]:
    return [(e.type, e.payload.get("path")) for e in await engine.history(run_id)]


async def until(engine: Engine, run_id: str, predicate: Any) -> RunResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        result = await engine.get(run_id)
        if predicate(result):
            return result
        if loop.time() > deadline:
            raise AssertionError(f"run {run_id} never got there: {result}")
        await asyncio.sleep(0.02)


async def until_recorded(engine: Engine, run_id: str, entry: tuple[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while entry not in await history_types(engine, run_id):
        if loop.time() > deadline:
            raise AssertionError(f"run {run_id} never recorded {entry}")
        await asyncio.sleep(0.02)


async def step_rows(engine: Engine, run_id: str) -> list[str]:
    """The run's due work of kind step (a timer row outlives the wait it was for)."""
    return [w.key for w in await engine.store.list_work(engine.scope, run_id) if w.kind == "step"]


def status_of(result: RunResult, step_id: str) -> str:
    return str(next(v["status"] for v in result.steps if v["id"] == step_id))


async def test_a_paused_run_takes_a_signal_but_starts_the_next_step_only_on_resume(
    engine: Engine, check_history: Any
) -> None:
    run_id = await engine.start(APPROVAL)
    await until(engine, run_id, lambda r: status_of(r, "ask") == "waiting")
    paused = await engine.pause(run_id, reason="audit")
    assert (paused.status, paused.paused) == ("running", True)

    signalled = await engine.signal(run_id, "approved", {"by": "ada"})
    assert signalled.paused
    assert status_of(signalled, "ask") == "completed"
    assert status_of(signalled, "record") == "ready"
    # committed with the signal: no step row for `record`, nothing scheduled
    assert await step_rows(engine, run_id) == []
    assert ("StepScheduled", "record") not in await history_types(engine, run_id)
    with pytest.raises(ConflictError, match="already paused; resume it"):
        await engine.pause(run_id)

    resumed = await engine.resume(run_id)
    assert not resumed.paused
    done = await engine.wait(run_id, timeout=WAIT)
    assert done.status == "completed"
    assert done.output == {"approved_by": "ada"}
    history = await check_history(engine, run_id)
    kinds = [e.type for e in history]
    assert kinds.index("RunSuspended") < kinds.index("SignalReceived") < kinds.index("RunResumed")
    assert next(e for e in history if e.type == "RunSuspended").payload == {"reason": "audit"}
    with pytest.raises(ConflictError, match="already ended \\(completed\\)"):
        await engine.resume(run_id)
    with pytest.raises(ConflictError, match="nothing to pause"):
        await engine.pause(run_id)


async def test_a_step_running_when_the_run_is_paused_finishes_and_is_recorded(
    db_path: str, fast_options: WorkerOptions, check_history: Any
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async with Engine.open(db_path, options=fast_options) as engine:

        @engine.activity("gate")
        async def gate() -> dict[str, Any]:
            entered.set()
            await release.wait()
            return {"through": True}

        definition = wf(
            "gated",
            {
                "slow": {
                    "type": "task",
                    "action": "gate",
                    "result_path": "$.slow",
                    "next": "after",
                },
                "after": {"type": "task", "action": "set", "input": {"x": 1}, "end": True},
            },
        )
        run_id = await engine.start(definition)
        await asyncio.wait_for(entered.wait(), WAIT)
        await engine.pause(run_id)
        release.set()
        await until_recorded(engine, run_id, ("StepCompleted", "slow"))
        held = await engine.get(run_id)
        assert held.paused
        assert status_of(held, "slow") == "completed"
        assert status_of(held, "after") == "ready"
        assert ("StepScheduled", "after") not in await history_types(engine, run_id)

        await engine.resume(run_id)
        done = await engine.wait(run_id, timeout=WAIT)
        assert done.status == "completed"
        assert done.output["slow"] == {"through": True}
        await check_history(engine, run_id)


async def test_a_run_resumed_from_a_process_without_a_worker_is_picked_up(
    db_path: str, fast_options: WorkerOptions, check_history: Any
) -> None:
    """As `legato resume` does: the resume commits the work, the worker claims it."""
    async with Engine.open(db_path, options=fast_options) as engine:
        run_id = await engine.start(APPROVAL)
        await until(engine, run_id, lambda r: status_of(r, "ask") == "waiting")
        async with Engine.open(db_path, worker=False) as operator:
            assert (await operator.pause(run_id)).paused
            await operator.signal(run_id, "approved", {"by": "bo"})
            assert await step_rows(operator, run_id) == []
            await operator.resume(run_id)
        done = await engine.wait(run_id, timeout=WAIT)
        assert done.status == "completed"
        assert done.output == {"approved_by": "bo"}
        await check_history(engine, run_id)


async def test_a_run_created_paused_runs_nothing_until_it_is_resumed(
    engine: Engine, check_history: Any
) -> None:
    run_id = await engine.start(APPROVAL, {"n": 1}, suspended=True)
    created = await engine.get(run_id)
    assert (created.status, created.paused, created.started_at) == ("running", True, None)
    assert {v["status"] for v in created.steps} == {"pending"}
    assert await engine.store.list_work(engine.scope, run_id) == []
    with pytest.raises(ConflictError, match="has not started yet; resume it to start it"):
        await engine.pause(run_id)
    await engine.signal(run_id, "approved", {"by": "cy"})  # kept for the wait

    started = await engine.resume(run_id)
    assert started.started_at is not None
    done = await engine.wait(run_id, timeout=WAIT)
    assert done.status == "completed"
    assert done.output == {"approved_by": "cy"}
    await check_history(engine, run_id)


async def test_cancelling_a_paused_run_runs_its_compensations(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "booking",
        {
            "book": {
                "type": "task",
                "action": "set",
                "input": {"booking": "B-1"},
                "compensation": {"action": "log", "input": {"message": "undo the booking"}},
                "next": "confirm",
            },
            "confirm": {"type": "wait", "event": {"name": "confirmed", "timeout": "5m"}},
        },
    )
    run_id = await engine.start(definition)
    await until(engine, run_id, lambda r: status_of(r, "confirm") == "waiting")
    await engine.pause(run_id)
    await engine.cancel(run_id, reason="no longer needed")
    done = await engine.wait(run_id, timeout=WAIT)
    assert (done.status, done.paused) == ("cancelled", False)
    book = next(v for v in done.steps if v["id"] == "book")
    assert book["status"] == "compensated"
    await check_history(engine, run_id)
