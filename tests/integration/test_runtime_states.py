"""Every state type end to end, through ``legato.Engine`` on a real SQLite file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import legato
from legato import Definition, Engine, RunResult

WORKFLOWS = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"
WAIT = 10.0  # seconds a test waits for a run at most; runs here take well under one


def wf(
    name: str, states: dict[str, Any], *, start_at: str | None = None, **extra: Any
) -> Definition:
    return Definition.model_validate(
        {"name": name, "start_at": start_at or next(iter(states)), "states": states, **extra}
    )


def step(result: RunResult, step_id: str) -> dict[str, Any]:
    for view in result.steps:
        if view["id"] == step_id:
            return view
    raise AssertionError(f"no step {step_id!r} in {[v['id'] for v in result.steps]}")


async def events(engine: Engine, run_id: str, *types: str) -> list[Any]:
    return [e for e in await engine.history(run_id) if not types or e.type in types]


async def until(engine: Engine, run_id: str, predicate: Any, timeout: float = WAIT) -> RunResult:
    """Poll the run until ``predicate(result)`` holds (a run that waits does not end)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await engine.get(run_id)
        if predicate(result):
            return result
        if loop.time() > deadline:
            raise AssertionError(f"run {run_id} never got there: {result}")
        await asyncio.sleep(0.02)


def waiting_at(step_id: str) -> Any:
    return lambda r: any(v["id"] == step_id and v["status"] == "waiting" for v in r.steps)


# ---- task -------------------------------------------------------------------------------


@legato.activity("quote")
async def quote(sku: str, quantity: int, *, ctx: legato.ActivityContext) -> dict[str, Any]:
    return {"sku": sku, "total": quantity * 5, "run_id": ctx.run_id, "key": ctx.idempotency_key}


async def test_task_runs_a_builtin_and_user_activities_with_input_output_and_result_path(
    db_path: str, fast_options: legato.WorkerOptions, check_history: Any
) -> None:
    async with Engine.open(db_path, activities=[quote], options=fast_options) as engine:

        @engine.activity("greet")
        def greet(name: str) -> dict[str, str]:  # a sync activity runs in a thread
            return {"greeting": f"Hello, {name}!"}

        definition = wf(
            "task_mappings",
            {
                "price": {
                    "type": "task",
                    "action": "quote",
                    "input": {"sku": "$.input.sku", "quantity": "{{ input.quantity + 1 }}"},
                    "output": {"$.order.total": "$.result.total", "$.order.key": "$.result.key"},
                    "next": "hello",
                },
                "hello": {
                    "type": "task",
                    "action": "greet",
                    "input": {"name": "Dear {{ input.name }}"},
                    "result_path": "$.greeting",
                    "next": "echo",
                },
                "echo": {
                    "type": "task",
                    "action": "set",
                    "input": {"total": "$.order.total", "shout": "{{ context.greeting.greeting }}"},
                    "result_path": "$.echo",
                },
            },
        )
        result = await engine.run(
            definition, {"sku": "A-1", "quantity": 2, "name": "Ada"}, timeout=WAIT
        )

        assert result.status == "completed", result.error
        assert result.output["order"] == {"total": 15, "key": f"{result.run_id}:price:0"}
        assert result.output["greeting"] == {"greeting": "Hello, Dear Ada!"}
        assert result.output["echo"] == {"total": 15, "shout": "Hello, Dear Ada!"}
        assert result.output["input"] == {"sku": "A-1", "quantity": 2, "name": "Ada"}
        assert step(result, "price")["input"] == {"sku": "A-1", "quantity": 3}
        assert step(result, "price")["output"]["run_id"] == result.run_id
        assert [step(result, s)["status"] for s in ("price", "hello", "echo")] == ["completed"] * 3

        history = await check_history(engine, result.run_id)
        kinds = [e.type for e in history]
        assert kinds == [
            "RunStarted",
            *["StepScheduled", "StepCompleted"] * 3,
            "RunFinished",
        ]
        # each StepCompleted follows the StepScheduled of the same attempt
        for sched, done in zip(history[1:-1:2], history[2:-1:2], strict=True):
            assert (sched.payload["path"], sched.payload["attempt"]) == (
                done.payload["path"],
                done.payload["attempt"],
            )
            assert sched.at <= done.at


# ---- choice -------------------------------------------------------------------------------


CHOICE = wf(
    "choose_tier",
    {
        "route": {
            "type": "choice",
            "choices": [
                {"when": "input.amount > 100", "next": "big"},
                {
                    "when": {"field": "input.tier", "operator": "equals", "value": "gold"},
                    "next": "gold",
                },
            ],
            "default": "small",
        },
        "big": {"type": "task", "action": "set", "input": {"path": "big"}, "result_path": "$.went"},
        "gold": {
            "type": "task",
            "action": "set",
            "input": {"path": "gold"},
            "result_path": "$.went",
        },
        "small": {
            "type": "task",
            "action": "set",
            "input": {"path": "small"},
            "result_path": "$.went",
        },
    },
)


@pytest.mark.parametrize(
    ("run_input", "chosen"),
    [
        ({"amount": 500, "tier": "gold"}, "big"),  # the first matching rule wins
        ({"amount": 5, "tier": "gold"}, "gold"),
        ({"amount": 5, "tier": "bronze"}, "small"),  # the default
    ],
)
async def test_choice_picks_the_first_matching_rule_or_the_default(
    engine: Engine, check_history: Any, run_input: dict[str, Any], chosen: str
) -> None:
    result = await engine.run(CHOICE, run_input, timeout=WAIT)

    assert result.status == "completed", result.error
    assert result.output["went"] == {"path": chosen}
    assert step(result, "route")["output"] == {"next": chosen}
    others = {"big", "gold", "small"} - {chosen}
    assert {step(result, s)["status"] for s in others} == {"skipped"}
    await check_history(engine, result.run_id)


async def test_a_false_when_skips_a_state_and_its_dependents(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "guarded",
        {
            "gold_bonus": {
                "type": "task",
                "action": "set",
                "input": {"bonus": 10},
                "result_path": "$.bonus",
                "when": {"field": "input.tier", "operator": "equals", "value": "gold"},
                "next": "announce_bonus",
            },
            "announce_bonus": {
                "type": "task",
                "action": "set",
                "input": {"told": True},
                "result_path": "$.told",
                "depends_on": ["gold_bonus"],
                "next": "always",
            },
            "always": {"type": "task", "action": "set", "input": {"x": 1}, "result_path": "$.x"},
        },
    )
    gold = await engine.run(definition, {"tier": "gold"}, timeout=WAIT)
    bronze = await engine.run(definition, {"tier": "bronze"}, timeout=WAIT)

    assert gold.status == bronze.status == "completed"
    assert {v["id"]: v["status"] for v in gold.steps} == dict.fromkeys(
        ("gold_bonus", "announce_bonus", "always"), "completed"
    )
    assert {v["id"]: v["status"] for v in bronze.steps} == {
        "gold_bonus": "skipped",
        "announce_bonus": "skipped",
        "always": "completed",
    }
    assert "bonus" not in bronze.output
    assert "told" not in bronze.output
    assert bronze.output["x"] == {"x": 1}
    history = await check_history(engine, bronze.run_id)
    assert [e.payload["path"] for e in history if e.type == "StepScheduled"] == ["always"]


# ---- parallel -------------------------------------------------------------------------------


def _branch(name: str, states: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "start_at": next(iter(states)), "states": states}


async def test_parallel_all_joins_every_branch_and_merges_their_writes(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "parallel_all",
        {
            "fan": {
                "type": "parallel",
                "join": "all",
                "branches": [
                    _branch(
                        "slow",
                        {
                            "pause": {"type": "wait", "duration": 0.1, "next": "mark"},
                            "mark": {
                                "type": "task",
                                "action": "set",
                                "input": {"v": "slow"},
                                "result_path": "$.slow",
                            },
                        },
                    ),
                    _branch(
                        "fast",
                        {
                            "mark": {
                                "type": "task",
                                "action": "set",
                                "input": {"v": "fast", "n": "$.input.n"},
                                "result_path": "$.fast",
                            }
                        },
                    ),
                ],
                "result_path": "$.joined",
                "next": "after",
            },
            "after": {
                "type": "task",
                "action": "set",
                "input": {"both": ["$.slow.v", "$.fast.v"]},
                "result_path": "$.after",
            },
        },
    )
    result = await engine.run(definition, {"n": 7}, timeout=WAIT)

    assert result.status == "completed", result.error
    assert result.output["slow"] == {"v": "slow"}
    assert result.output["fast"] == {"v": "fast", "n": 7}
    assert result.output["joined"] == {"slow": {"v": "slow"}, "fast": {"v": "fast", "n": 7}}
    assert result.output["after"] == {"both": ["slow", "fast"]}
    assert step(result, "fan[slow].mark")["status"] == "completed"
    assert step(result, "fan[fast].mark")["status"] == "completed"
    await check_history(engine, result.run_id)


async def test_parallel_any_goes_on_with_the_first_branch_and_cancels_the_others(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "parallel_any",
        {
            "race": {
                "type": "parallel",
                "join": "any",
                "branches": [
                    _branch("tortoise", {"crawl": {"type": "wait", "duration": 30}}),
                    _branch(
                        "hare",
                        {"run": {"type": "task", "action": "set", "input": {"won": True}}},
                    ),
                ],
                "result_path": "$.race",
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "completed", result.error
    assert result.output["race"] == {"hare": {"won": True}}
    assert step(result, "race[hare].run")["status"] == "completed"
    assert step(result, "race[tortoise].crawl")["status"] == "cancelled"
    assert result.started_at is not None
    assert result.finished_at is not None
    took = datetime.fromisoformat(result.finished_at) - datetime.fromisoformat(result.started_at)
    assert took < timedelta(seconds=5)  # it did not wait for the tortoise
    await check_history(engine, result.run_id)


def _quorum(failing: set[int]) -> Definition:
    branches = []
    for i in range(3):
        task: dict[str, Any] = {"type": "task", "retry": {"max_attempts": 1}}
        if i in failing:
            task |= {"action": "fail", "input": {"message": f"voter {i} is away"}}
        else:
            task |= {"action": "set", "input": {"voter": i}}
        branches.append(_branch(f"voter{i}", {"vote": task}))
    return wf(
        f"quorum_{len(failing)}",
        {
            "quorum": {
                "type": "parallel",
                "join": {"at_least": 2},
                "branches": branches,
                "result_path": "$.votes",
            }
        },
    )


async def test_parallel_at_least_n_tolerates_failed_branches_while_n_can_still_succeed(
    engine: Engine, check_history: Any
) -> None:
    result = await engine.run(_quorum({1}), {}, timeout=WAIT)

    assert result.status == "completed", result.error
    assert result.output["votes"] == {"voter0": {"voter": 0}, "voter2": {"voter": 2}}
    # voter1 fails; if voter0's and voter2's successes are committed before its failure,
    # the met quorum cancels it first: both are right (the branches finish together)
    voter1 = step(result, "quorum[voter1].vote")["status"]
    assert voter1 in ("failed", "cancelled")
    await check_history(engine, result.run_id, all_outcomes=voter1 == "failed")


async def test_parallel_at_least_n_fails_once_n_cannot_be_reached(
    engine: Engine, check_history: Any
) -> None:
    result = await engine.run(_quorum({0, 2}), {}, timeout=WAIT)

    assert result.status == "failed"
    assert result.error is not None
    assert "quorum" in result.error["message"]
    assert "away" in result.error["message"]
    assert step(result, "quorum")["status"] == "failed"
    await check_history(engine, result.run_id, all_outcomes=False)


async def test_a_failed_branch_can_be_caught_on_the_parallel_state(engine: Engine) -> None:
    definition = wf(
        "parallel_catch",
        {
            "fan": {
                "type": "parallel",
                "branches": [
                    _branch("ok", {"a": {"type": "task", "action": "noop"}}),
                    _branch(
                        "bad",
                        {"b": {"type": "task", "action": "fail", "input": {"message": "nope"}}},
                    ),
                ],
                "catch": [{"errors": ["PERMANENT"], "next": "fallback"}],
                "next": "after",
            },
            "after": {"type": "succeed"},
            "fallback": {"type": "succeed", "output": {"why": "$.error.message"}},
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)
    assert result.status == "completed", result.error
    assert "nope" in result.output["why"]
    assert "bad" in result.output["why"]
    assert step(result, "fan")["status"] == "failed"
    assert step(result, "after")["status"] == "skipped"


# ---- foreach ----------------------------------------------------------------------------------


async def test_foreach_runs_every_item_within_its_concurrency_limit(
    engine: Engine, check_history: Any
) -> None:
    running = 0
    peak = 0
    seen: list[int] = []

    @engine.activity("track")
    async def track(n: int, index: int) -> dict[str, int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        seen.append(n)
        try:
            await asyncio.sleep(0.05)
        finally:
            running -= 1
        return {"square": n * n, "index": index}

    definition = wf(
        "foreach_limit",
        {
            "each": {
                "type": "foreach",
                "items": "$.input.numbers",
                "item_name": "number",
                "concurrency": 2,
                "iterator": {
                    "name": "body",
                    "start_at": "work",
                    "states": {
                        "work": {
                            "type": "task",
                            "action": "track",
                            "input": {"n": "{{ number }}", "index": "{{ index }}"},
                        }
                    },
                },
                "result_path": "$.squares",
            }
        },
    )
    numbers = [3, 1, 4, 1, 5, 9, 2]
    result = await engine.run(definition, {"numbers": numbers}, timeout=WAIT)

    assert result.status == "completed", result.error
    assert peak == 2, f"at most 2 iterations at once, and they do overlap; saw {peak}"
    assert sorted(seen) == sorted(numbers)
    # results keep the items' order, whatever order the iterations finished in
    assert result.output["squares"] == [
        {"square": n * n, "index": i} for i, n in enumerate(numbers)
    ]
    assert [step(result, f"each[{i}].work")["status"] for i in range(7)] == ["completed"] * 7
    await check_history(engine, result.run_id)


async def test_foreach_over_an_empty_list_completes_with_no_results(engine: Engine) -> None:
    definition = wf(
        "foreach_empty",
        {
            "each": {
                "type": "foreach",
                "items": "$.input.items",
                "iterator": _branch("body", {"x": {"type": "task", "action": "noop"}}),
                "result_path": "$.out",
            }
        },
    )
    result = await engine.run(definition, {"items": []}, timeout=WAIT)
    assert result.status == "completed", result.error
    assert result.output["out"] == []


# ---- wait: duration and until -------------------------------------------------------------------


async def test_wait_duration_holds_the_run_for_the_duration(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "wait_duration",
        {
            "pause": {"type": "wait", "duration": "200ms", "next": "after"},
            "after": {"type": "task", "action": "set", "input": {"ok": True}, "result_path": "$.a"},
        },
    )
    run_id = await engine.start(definition, {})
    early = await engine.get(run_id)
    assert early.status == "running"
    assert step(early, "pause")["status"] == "waiting"

    result = await engine.wait(run_id, timeout=WAIT)
    assert result.status == "completed", result.error
    assert result.output["a"] == {"ok": True}

    history = await check_history(engine, run_id)
    [started] = [e for e in history if e.type == "TimerStarted"]
    [fired] = [e for e in history if e.type == "TimerFired"]
    [finished] = [e for e in history if e.type == "RunFinished"]
    fire_at = datetime.fromisoformat(started.payload["fire_at"])
    assert fire_at - started.at == timedelta(seconds=0.2)
    assert fired.at >= fire_at
    assert finished.at - history[0].at >= timedelta(seconds=0.2)


async def test_wait_until_an_instant_from_the_input(engine: Engine, check_history: Any) -> None:
    definition = wf(
        "wait_until",
        {
            "hold": {"type": "wait", "until": "$.input.resume_at", "next": "go"},
            "go": {"type": "succeed"},
        },
    )
    resume_at = datetime.now(UTC) + timedelta(seconds=0.3)
    result = await engine.run(definition, {"resume_at": resume_at.isoformat()}, timeout=WAIT)

    assert result.status == "completed", result.error
    history = await check_history(engine, result.run_id)
    [fired] = [e for e in history if e.type == "TimerFired"]
    assert fired.at >= resume_at


async def test_wait_until_without_a_time_zone_fails_the_step_as_validation(engine: Engine) -> None:
    definition = wf("wait_naive", {"hold": {"type": "wait", "until": "2030-01-01T00:00:00"}})
    result = await engine.run(definition, {}, timeout=WAIT)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error["error_class"] == "VALIDATION"
    assert "time zone" in result.error["message"]


# ---- wait: events (signals) -------------------------------------------------------------------


APPROVAL = wf(
    "await_approval",
    {
        "ask": {
            "type": "task",
            "action": "set",
            "input": {"asked": True},
            "result_path": "$.ask",
            "next": "approval",
        },
        "approval": {
            "type": "wait",
            "event": {"name": "approved"},
            "result_path": "$.approval",
            "next": "done",
        },
        "done": {
            "type": "task",
            "action": "set",
            "input": {"by": "$.approval.by"},
            "result_path": "$.done",
        },
    },
)


async def test_a_signal_delivered_later_completes_the_wait_with_its_data(
    engine: Engine, check_history: Any
) -> None:
    run_id = await engine.start(APPROVAL, {})
    await until(engine, run_id, waiting_at("approval"))
    await asyncio.sleep(0.2)  # it keeps waiting: nothing times out, nothing moves on
    still = await engine.get(run_id)
    assert still.status == "running"
    assert step(still, "approval")["status"] == "waiting"
    assert step(still, "done")["status"] == "pending"

    await engine.signal(run_id, "approved", {"by": "ann", "at": "noon"})
    result = await engine.wait(run_id, timeout=WAIT)

    assert result.status == "completed", result.error
    assert result.output["approval"] == {"by": "ann", "at": "noon"}
    assert result.output["done"] == {"by": "ann"}
    history = await check_history(engine, run_id)
    [signal] = [e for e in history if e.type == "SignalReceived"]
    assert signal.payload["name"] == "approved"
    assert signal.payload["data"] == {"by": "ann", "at": "noon"}


async def test_a_signal_sent_before_the_wait_is_reached_is_kept_and_consumed(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "early_signal",
        {
            "first": {"type": "wait", "duration": 0.2, "next": "approval"},
            "approval": {
                "type": "wait",
                "event": {"name": "approved"},
                "result_path": "$.approval",
            },
        },
    )
    run_id = await engine.start(definition, {})
    await engine.signal(run_id, "approved", {"by": "early bird"})
    mid = await engine.get(run_id)
    assert mid.status == "running"
    assert step(mid, "first")["status"] == "waiting"

    result = await engine.wait(run_id, timeout=WAIT)
    assert result.status == "completed", result.error
    assert result.output["approval"] == {"by": "early bird"}
    history = await check_history(engine, run_id)
    kinds = [e.type for e in history]
    assert kinds.index("SignalReceived") < kinds.index("TimerFired")


async def test_a_signal_wait_takes_only_a_signal_with_its_correlation(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "correlated",
        {
            "paid": {
                "type": "wait",
                "event": {"name": "payment", "correlation": "$.input.order_id"},
                "result_path": "$.payment",
            }
        },
    )
    run_id = await engine.start(definition, {"order_id": "o-42"})
    await until(engine, run_id, waiting_at("paid"))

    await engine.signal(run_id, "payment", {"amount": 1}, correlation="o-41")
    await engine.signal(run_id, "refund", {"amount": 2}, correlation="o-42")
    await asyncio.sleep(0.1)
    assert (await engine.get(run_id)).status == "running"

    await engine.signal(run_id, "payment", {"amount": 3}, correlation="o-42")
    result = await engine.wait(run_id, timeout=WAIT)
    assert result.status == "completed", result.error
    assert result.output["payment"] == {"amount": 3}
    await check_history(engine, run_id)


async def test_a_signal_wait_times_out_to_its_timeout_next(engine: Engine) -> None:
    definition = wf(
        "impatient",
        {
            "approval": {
                "type": "wait",
                "event": {"name": "approved", "timeout": 0.2, "timeout_next": "reject"},
                "next": "accept",
            },
            "accept": {"type": "succeed"},
            "reject": {"type": "fail", "error": "NotApproved"},
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error["details"]["error"] == "NotApproved"
    assert step(result, "approval")["error"]["error_class"] == "TIMEOUT"


async def test_foreach_iterations_each_wait_for_their_own_correlated_signal(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "collect_acks",
        {
            "each": {
                "type": "foreach",
                "items": "$.input.ids",
                "iterator": _branch(
                    "body",
                    {
                        "ack": {
                            "type": "wait",
                            "event": {"name": "ack", "correlation": "{{ item }}"},
                        }
                    },
                ),
                "result_path": "$.acks",
            }
        },
    )
    run_id = await engine.start(definition, {"ids": ["a", "b", "c"]})
    await until(engine, run_id, waiting_at("each[2].ack"))
    for who in ("c", "a"):
        await engine.signal(run_id, "ack", {"from": who}, correlation=who)
    mid = await engine.get(run_id)
    assert [step(mid, f"each[{i}].ack")["status"] for i in range(3)] == [
        "completed",
        "waiting",
        "completed",
    ]
    await engine.signal(run_id, "ack", {"from": "b"}, correlation="b")
    result = await engine.wait(run_id, timeout=WAIT)
    assert result.status == "completed", result.error
    assert result.output["acks"] == [{"from": "a"}, {"from": "b"}, {"from": "c"}]
    await check_history(engine, run_id)


async def test_signalling_an_unknown_run_names_it(engine: Engine) -> None:
    with pytest.raises(legato.NotFoundError, match="nobody"):
        await engine.signal("nobody", "approved")


# ---- subflow ------------------------------------------------------------------------------------


async def test_subflow_starts_a_child_run_and_the_parent_gets_its_output(
    engine: Engine, check_history: Any
) -> None:
    await engine.deploy(WORKFLOWS / "double.yaml")
    definition = wf(
        "parent",
        {
            "sub": {
                "type": "subflow",
                "workflow": "double",
                "input": {"n": "$.input.n"},
                "result_path": "$.child",
                "next": "after",
            },
            "after": {
                "type": "task",
                "action": "set",
                "input": {"got": "$.child.doubled"},
                "result_path": "$.after",
            },
        },
    )
    result = await engine.run(definition, {"n": 21}, timeout=WAIT)

    assert result.status == "completed", result.error
    assert result.output["child"] == {"doubled": 42}
    assert result.output["after"] == {"got": 42}
    child_id = step(result, "sub")["child_run_id"]
    child = await engine.get(child_id)
    assert child.status == "completed"
    assert child.workflow == "double"
    assert child.parent_run_id == result.run_id
    assert child.output == {"doubled": 42}
    assert child.finished_at is not None
    assert result.finished_at is not None
    assert child.finished_at <= result.finished_at
    history = await check_history(engine, result.run_id)
    assert [e.type for e in history if e.type.startswith("Child")] == [
        "ChildStarted",
        "ChildFinished",
    ]
    await check_history(engine, child_id)


async def test_subflow_output_mapping_places_parts_of_the_child_output(engine: Engine) -> None:
    await engine.deploy(WORKFLOWS / "double.yaml")
    definition = wf(
        "mapping_parent",
        {
            "sub": {
                "type": "subflow",
                "workflow": "double",
                "version": "1",
                "input": {"n": 5},
                "output": {"$.answer": "$.result.doubled"},
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)
    assert result.status == "completed", result.error
    assert result.output == {"input": {}, "answer": 10}


async def test_subflow_without_wait_goes_on_while_the_child_runs(
    engine: Engine, check_history: Any
) -> None:
    await engine.deploy(WORKFLOWS / "double.yaml")
    definition = wf(
        "spawner",
        {
            "spawn": {
                "type": "subflow",
                "workflow": "double",
                "input": {"n": 2},
                "wait": False,
                "result_path": "$.spawned",
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "completed", result.error
    child_id = result.output["spawned"]["run_id"]
    assert step(result, "spawn")["status"] == "completed"
    # The child is started from a durable work row the parent's last commit wrote: it may
    # exist only just after the parent ended.
    child = await _eventually_get(engine, child_id)
    assert child.parent_run_id == result.run_id
    assert not child.done  # it waits 0.1 s: the parent did not wait for it

    child = await engine.wait(child_id, timeout=WAIT)
    assert child.status == "completed"
    assert child.output == {"doubled": 4}
    await check_history(engine, child_id)
    await check_history(engine, result.run_id)


async def _eventually_get(engine: Engine, run_id: str) -> RunResult:
    for _ in range(200):
        try:
            return await engine.get(run_id)
        except legato.NotFoundError:
            await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} was never started")


async def test_a_failing_child_fails_the_parent_step(engine: Engine, check_history: Any) -> None:
    await engine.deploy(WORKFLOWS / "always_fails.yaml")
    definition = wf(
        "hopeful_parent",
        {
            "sub": {
                "type": "subflow",
                "workflow": "always_fails",
                "input": {"n": 5},
                "next": "after",
            },
            "after": {"type": "succeed"},
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "failed"
    assert result.error is not None
    assert "the child refused 5" in result.error["message"]
    assert step(result, "sub")["status"] == "failed"
    assert step(result, "after")["status"] == "skipped"
    child = await engine.get(step(result, "sub")["child_run_id"])
    assert child.status == "failed"
    await check_history(engine, result.run_id)


async def test_a_failing_child_can_be_caught_by_the_parent(engine: Engine) -> None:
    await engine.deploy(WORKFLOWS / "always_fails.yaml")
    definition = wf(
        "careful_parent",
        {
            "sub": {
                "type": "subflow",
                "workflow": "always_fails",
                "input": {"n": 6},
                "catch": [{"errors": ["ALL"], "next": "recover", "result_path": "$.child_error"}],
                "next": "after",
            },
            "after": {"type": "succeed"},
            "recover": {"type": "succeed", "output": {"recovered": True}},
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)
    assert result.status == "completed", result.error
    assert result.output == {"recovered": True}


async def test_a_subflow_of_an_unknown_workflow_fails_the_step(engine: Engine) -> None:
    definition = wf("orphan", {"sub": {"type": "subflow", "workflow": "no_such_workflow"}})
    result = await engine.run(definition, {}, timeout=WAIT)
    assert result.status == "failed"
    assert result.error is not None
    assert "no_such_workflow" in result.error["message"]


# ---- succeed / fail ----------------------------------------------------------------------------


async def test_succeed_ends_the_run_with_its_output(engine: Engine, check_history: Any) -> None:
    definition = wf(
        "succeed_early",
        {
            "mark": {
                "type": "task",
                "action": "set",
                "input": {"v": 1},
                "result_path": "$.mark",
                "next": "stop",
            },
            "stop": {"type": "succeed", "output": {"value": "$.mark.v", "who": "{{ input.who }}"}},
        },
    )
    result = await engine.run(definition, {"who": "ann"}, timeout=WAIT)
    assert result.status == "completed", result.error
    assert result.output == {"value": 1, "who": "ann"}
    await check_history(engine, result.run_id)


async def test_fail_ends_the_run_failed_with_its_error_and_cause(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "fail_fast",
        {
            "mark": {
                "type": "task",
                "action": "set",
                "input": {"v": 1},
                "result_path": "$.mark",
                "next": "stop",
            },
            "stop": {
                "type": "fail",
                "error": "OrderRejected",
                "cause": "order {{ input.order }} is invalid",
            },
            "never": {"type": "succeed"},
        },
    )
    result = await engine.run(definition, {"order": 7}, timeout=WAIT)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error["message"] == "order 7 is invalid"
    assert result.error["error_class"] == "PERMANENT"
    assert result.error["details"]["error"] == "OrderRejected"
    assert result.output["mark"] == {"v": 1}  # partial results are kept
    assert step(result, "stop")["status"] == "failed"
    assert step(result, "never")["status"] == "skipped"
    await check_history(engine, result.run_id)


async def test_start_by_name_runs_the_newest_version_even_one_another_engine_deployed(
    engine: Engine, db_path: str
) -> None:
    def version(v: str, greeting: str) -> Definition:
        return wf(
            "greeter",
            {"say": {"type": "task", "action": "set", "input": {"said": greeting}, "end": True}},
            version=v,
        )

    await engine.deploy(version("1", "hello"))
    first = await engine.wait(await engine.start("greeter"), timeout=WAIT)
    assert (first.version, step(first, "say")["output"]) == ("1", {"said": "hello"})
    # Another process deploys version 2: this engine still knows version 1 as the newest.
    async with Engine.open(db_path, worker=False) as other:
        await other.deploy(version("2", "bonjour"))
    second = await engine.wait(await engine.start("greeter"), timeout=WAIT)
    assert (second.version, step(second, "say")["output"]) == ("2", {"said": "bonjour"})
