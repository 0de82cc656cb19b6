"""Failures, end to end through ``legato.Engine`` on a real SQLite file: classified retries
with real backoff, catch, timeouts, the partial-failure rule, saga compensation, cancel,
and runs that outlive the Engine that started them."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import legato
from legato import Definition, Engine, ErrorClass, RunResult, StepError
from legato.errors import ConflictError

WORKFLOWS = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"
WAIT = 10.0
SLACK = timedelta(milliseconds=1)  # float timestamps round-trip through the store


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


async def until(engine: Engine, run_id: str, predicate: Any, timeout: float = WAIT) -> RunResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            result = await engine.get(run_id)
        except legato.NotFoundError:  # a child run is started just after its parent asks
            result = None
        if result is not None and predicate(result):
            return result
        if loop.time() > deadline:
            raise AssertionError(f"run {run_id} never got there: {result}")
        await asyncio.sleep(0.02)


def waiting_at(step_id: str) -> Any:
    return lambda r: any(v["id"] == step_id and v["status"] == "waiting" for v in r.steps)


def attempts(history: list[Any], path: str) -> list[dict[str, Any]]:
    """Per attempt of ``path``: when it was scheduled (and not before when), when it
    started, when its outcome was recorded, and the outcome."""
    out: dict[int, dict[str, Any]] = {}
    for e in history:
        if e.payload.get("path") != path:
            continue
        n = e.payload["attempt"]
        if e.type == "StepScheduled":
            nb = e.payload["not_before"]
            out[n] = {
                "scheduled": e.at,
                "not_before": datetime.fromisoformat(nb) if nb else None,
            }
        elif e.type in ("StepCompleted", "StepFailed"):
            out[n] |= {
                "started": datetime.fromisoformat(e.payload["started_at"]),
                "ended": e.at,
                "type": e.type,
                "error": e.payload.get("error"),
            }
    return [out[n] for n in sorted(out)]


# ---- retries and error classes -------------------------------------------------------------


async def test_retryable_failures_are_retried_with_backoff_that_is_really_waited(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "flaky_then_fine",
        {
            "call": {
                "type": "task",
                "action": "flaky",
                "input": {"fail_times": 2, "result": {"ok": True}},
                "retry": {"max_attempts": 3, "initial_interval": 0.1, "backoff_coefficient": 2},
                "result_path": "$.call",
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "completed", result.error
    assert result.output["call"] == {"ok": True}
    assert step(result, "call")["attempts"] == 3
    tries = attempts(await check_history(engine, result.run_id), "call")
    assert [t["type"] for t in tries] == ["StepFailed", "StepFailed", "StepCompleted"]
    assert {t["error"]["error_class"] for t in tries[:2]} == {"RETRYABLE"}
    for before, after, delay in ((tries[0], tries[1], 0.1), (tries[1], tries[2], 0.2)):
        backoff = timedelta(seconds=delay)
        assert after["not_before"] == before["ended"] + backoff
        assert after["started"] >= before["ended"] + backoff - SLACK
        assert after["started"] - before["started"] >= backoff


async def test_retryable_failures_stop_at_max_attempts_and_fail_the_run(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "always_down",
        {
            "call": {
                "type": "task",
                "action": "fail",
                "input": {"error_class": "RETRYABLE", "message": "service down"},
                "retry": {"max_attempts": 3, "initial_interval": 0.02, "max_interval": 0.03},
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "failed"
    assert result.error is not None
    assert result.error["error_class"] == "RETRYABLE"
    assert result.error["message"] == "service down"
    tries = attempts(await check_history(engine, result.run_id), "call")
    assert len(tries) == 3
    # max_interval caps the growing delay: 0.02, then 0.03 (not 0.04)
    assert tries[2]["not_before"] - tries[1]["ended"] == timedelta(seconds=0.03)


@pytest.mark.parametrize("error_class", ["PERMANENT", "VALIDATION", "AUTH_FAILED"])
async def test_non_retryable_classes_fail_at_once(
    engine: Engine, check_history: Any, error_class: str
) -> None:
    definition = wf(
        f"no_retry_{error_class.lower()}",
        {
            "call": {
                "type": "task",
                "action": "fail",
                "input": {"error_class": error_class},
                "retry": {"max_attempts": 5, "initial_interval": 0.01},
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "failed"
    assert result.error is not None
    assert result.error["error_class"] == error_class
    assert step(result, "call")["attempts"] == 1
    assert len(attempts(await check_history(engine, result.run_id), "call")) == 1


async def test_a_policy_can_make_a_class_non_retryable(engine: Engine) -> None:
    definition = wf(
        "no_retry_on_timeout",
        {
            "call": {
                "type": "task",
                "action": "fail",
                "input": {"error_class": "RETRYABLE"},
                "retry": {
                    "max_attempts": 5,
                    "initial_interval": 0.01,
                    "non_retryable": ["RETRYABLE"],
                },
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)
    assert result.status == "failed"
    assert step(result, "call")["attempts"] == 1


async def test_rate_limited_waits_at_least_retry_after(engine: Engine, check_history: Any) -> None:
    @engine.activity("throttled")
    async def throttled(*, ctx: legato.ActivityContext) -> dict[str, int]:
        if ctx.attempt == 1:
            raise StepError("slow down", error_class=ErrorClass.RATE_LIMITED, retry_after=0.3)
        return {"attempt": ctx.attempt}

    definition = wf(
        "rate_limited",
        {
            "call": {
                "type": "task",
                "action": "throttled",
                "retry": {"max_attempts": 3, "initial_interval": 0.01},
                "result_path": "$.call",
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "completed", result.error
    assert result.output["call"] == {"attempt": 2}
    first, second = attempts(await check_history(engine, result.run_id), "call")
    assert first["error"]["error_class"] == "RATE_LIMITED"
    assert first["error"]["retry_after"] == 0.3
    assert second["not_before"] == first["ended"] + timedelta(seconds=0.3)
    assert second["started"] >= first["ended"] + timedelta(seconds=0.3) - SLACK


async def test_an_exception_of_any_type_is_retryable(engine: Engine, check_history: Any) -> None:
    calls: list[int] = []

    @engine.activity("buggy")
    def buggy(*, ctx: legato.ActivityContext) -> dict[str, str]:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise KeyError("customer")
        return {"fixed": "yes"}

    definition = wf(
        "buggy_once",
        {
            "call": {
                "type": "task",
                "action": "buggy",
                "retry": {"max_attempts": 2, "initial_interval": 0.01},
                "result_path": "$.call",
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "completed", result.error
    assert calls == [1, 2]
    first, _second = attempts(await check_history(engine, result.run_id), "call")
    assert first["error"]["error_class"] == "RETRYABLE"
    assert "KeyError" in first["error"]["message"]
    assert first["error"]["details"]["exception_type"] == "builtins.KeyError"


async def test_an_unknown_action_fails_the_step_permanent_naming_it(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "typo",
        {
            "call": {
                "type": "task",
                "action": "sned_email",
                "retry": {"max_attempts": 3, "initial_interval": 0.01},
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "failed"
    assert result.error is not None
    assert result.error["error_class"] == "PERMANENT"
    assert "sned_email" in result.error["message"]
    assert "send_email" in result.error["message"]  # the did-you-mean
    assert step(result, "call")["attempts"] == 1
    await check_history(engine, result.run_id)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"n": [1, float("-inf")]}])
async def test_an_input_that_is_not_json_is_refused_before_anything_is_stored(
    engine: Engine, bad: Any
) -> None:
    definition = wf("plain", {"call": {"type": "task", "action": "noop"}})
    with pytest.raises(legato.InputError, match="must be JSON data"):
        await engine.start(definition, {"x": bad})
    assert await engine.runs() == []


# ---- catch ------------------------------------------------------------------------------------


async def test_on_failure_in_the_states_format_routes_to_the_handler_with_the_error(
    engine: Engine, check_history: Any
) -> None:
    result = await engine.run(
        WORKFLOWS / "charge_on_failure.json",
        {"error_class": "PERMANENT", "message": "card declined"},
        timeout=WAIT,
    )

    assert result.status == "completed", result.error
    assert result.output["error"]["error_class"] == "PERMANENT"
    assert result.output["error"]["message"] == "card declined"
    assert result.output["error"]["step"] == "charge"
    assert result.output["handled"] == {
        "failed_step": "charge",
        "error_class": "PERMANENT",
        "why": "card declined",
    }
    assert step(result, "charge")["status"] == "failed"
    assert step(result, "handle_failure")["status"] == "completed"
    assert step(result, "receipt")["status"] == "skipped"
    await check_history(engine, result.run_id)


@pytest.mark.parametrize(
    ("errors", "caught"),
    [(["VALIDATION"], True), (["VALIDATION", "PERMANENT"], False), (["ALL"], True)],
)
async def test_catch_matches_error_classes(engine: Engine, errors: list[str], caught: bool) -> None:
    definition = wf(
        "catch_classes",
        {
            "call": {
                "type": "task",
                "action": "fail",
                "input": {"error_class": "VALIDATION" if caught else "AUTH_FAILED"},
                "catch": [{"errors": errors, "next": "fallback", "result_path": "$.problem"}],
                "next": "fine",
            },
            "fine": {"type": "succeed"},
            "fallback": {"type": "succeed", "output": {"fell_back": "$.problem.error_class"}},
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)
    if caught:
        assert result.status == "completed", result.error
        assert result.output == {"fell_back": "VALIDATION"}
    else:
        assert result.status == "failed"
        assert result.error is not None
        assert result.error["error_class"] == "AUTH_FAILED"


async def test_catch_applies_after_the_retries_are_spent(engine: Engine) -> None:
    definition = wf(
        "retry_then_catch",
        {
            "call": {
                "type": "task",
                "action": "fail",
                "input": {"error_class": "RETRYABLE"},
                "retry": {"max_attempts": 2, "initial_interval": 0.01},
                "catch": [{"next": "fallback"}],
            },
            "fallback": {"type": "succeed", "output": {"attempts_error": "$.error.error_class"}},
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)
    assert result.status == "completed", result.error
    assert result.output == {"attempts_error": "RETRYABLE"}
    assert step(result, "call")["attempts"] == 2


# ---- timeouts ---------------------------------------------------------------------------------


async def test_a_step_longer_than_its_timeout_fails_timeout_and_is_retried(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "too_slow",
        {
            "nap": {
                "type": "task",
                "action": "sleep",
                "input": {"seconds": 5},
                "timeout": 0.1,
                "retry": {"max_attempts": 2, "initial_interval": 0.05},
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "failed"
    assert result.error is not None
    assert result.error["error_class"] == "TIMEOUT"
    tries = attempts(await check_history(engine, result.run_id), "nap")
    assert len(tries) == 2
    for t in tries:
        assert t["error"]["error_class"] == "TIMEOUT"
        assert t["ended"] - t["started"] >= timedelta(seconds=0.1) - SLACK
        assert t["ended"] - t["started"] < timedelta(seconds=2)  # not the 5 s sleep
    assert tries[1]["started"] >= tries[0]["ended"] + timedelta(seconds=0.05) - SLACK


async def test_a_step_within_its_timeout_completes(engine: Engine) -> None:
    definition = wf(
        "quick_enough",
        {
            "nap": {
                "type": "task",
                "action": "sleep",
                "input": {"duration": "50ms"},
                "timeout": "2s",
            }
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)
    assert result.status == "completed", result.error


async def test_the_run_timeout_fails_the_run_timeout_and_keeps_partial_results(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "slow_process",
        {
            "first": {
                "type": "task",
                "action": "set",
                "input": {"done": 1},
                "result_path": "$.first",
                "next": "hold",
            },
            "hold": {"type": "wait", "duration": 30, "next": "last"},
            "last": {
                "type": "task",
                "action": "set",
                "input": {"done": 3},
                "result_path": "$.last",
            },
        },
        timeout="300ms",
    )
    result = await engine.run(definition, {"order": 1}, timeout=WAIT)

    assert result.status == "failed"
    assert result.error is not None
    assert result.error["error_class"] == "TIMEOUT"
    assert result.output["first"] == {"done": 1}
    assert "last" not in result.output
    assert [step(result, s)["status"] for s in ("first", "hold", "last")] == [
        "completed",
        "cancelled",
        "skipped",
    ]
    history = await check_history(engine, result.run_id)
    finished = history[-1]
    assert finished.type == "RunFinished"
    assert finished.at - history[0].at >= timedelta(seconds=0.3)


# ---- the partial-failure rule (EC-4) ------------------------------------------------------------


async def test_partial_failure_keeps_completed_steps_and_skips_the_rest(
    engine: Engine, check_history: Any
) -> None:
    definition = wf(
        "partial",
        {
            "one": {
                "type": "task",
                "action": "set",
                "input": {"n": 1},
                "result_path": "$.one",
                "next": "two",
            },
            "two": {
                "type": "task",
                "action": "set",
                "input": {"n": 2},
                "result_path": "$.two",
                "next": "three",
            },
            "three": {
                "type": "task",
                "action": "fail",
                "input": {"error_class": "PERMANENT", "message": "ledger closed"},
                "next": "four",
            },
            "four": {
                "type": "task",
                "action": "set",
                "input": {"n": 4},
                "result_path": "$.four",
                "next": "five",
            },
            "five": {"type": "succeed"},
        },
    )
    result = await engine.run(definition, {"x": 1}, timeout=WAIT)

    assert result.status == "failed"
    assert result.error is not None
    assert result.error["message"] == "ledger closed"
    assert {v["id"]: v["status"] for v in result.steps} == {
        "one": "completed",
        "two": "completed",
        "three": "failed",
        "four": "skipped",
        "five": "skipped",
    }
    assert result.output == {"input": {"x": 1}, "one": {"n": 1}, "two": {"n": 2}}
    history = await check_history(engine, result.run_id)
    assert "four" not in {e.payload.get("path") for e in history}


# ---- saga compensation ---------------------------------------------------------------------------


class Ledger:
    """Activities that record what they did, and compensations that record what they undid."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.undone: list[dict[str, Any]] = []
        self.undo_attempts: dict[str, int] = {}

    def register(self, engine: Engine, *, broken: set[str] = frozenset(), flaky: int = 0) -> None:
        @engine.activity("record")
        async def record(name: str, delay: float = 0.0) -> dict[str, str]:
            await asyncio.sleep(delay)
            self.done.append(name)
            return {"ref": f"{name}-ref"}

        @engine.activity("undo")
        async def undo(name: str, result: Any, *, ctx: legato.ActivityContext) -> dict[str, str]:
            self.undo_attempts[name] = ctx.attempt
            if name in broken:
                raise StepError(f"cannot undo {name}", error_class=ErrorClass.RETRYABLE)
            if ctx.attempt <= flaky:
                raise ConnectionResetError("peer went away")
            self.undone.append({"name": name, "result": result, "key": ctx.idempotency_key})
            return {"undone": name}


async def test_compensations_run_in_reverse_order_of_completion_across_parallel_branches(
    engine: Engine, check_history: Any
) -> None:
    ledger = Ledger()
    ledger.register(engine)

    result = await engine.run(WORKFLOWS / "saga_parallel.yaml", {}, timeout=WAIT)

    assert result.status == "failed"
    assert result.error is not None
    assert result.error["message"] == "the mail server refused the confirmation"
    # reserve_hotel waits 0.15 s: it completes after reserve_car though it is listed first
    assert ledger.done == ["book_flight", "reserve_car", "reserve_hotel", "charge"]
    names = [u["name"] for u in ledger.undone]
    assert names == ["charge", "reserve_hotel", "reserve_car", "book_flight"]
    # each compensation got the result of the step it undoes, under its own idempotency key
    for undo in ledger.undone:
        assert undo["result"] == {"ref": f"{undo['name']}-ref"}
        assert undo["key"].endswith(":compensate")
    history = await check_history(engine, result.run_id)
    completed = [
        e.payload["path"]
        for e in history
        if e.type == "StepCompleted" and not e.payload["path"].endswith("#compensate")
    ]
    compensated = [
        e.payload["path"].removesuffix("#compensate")
        for e in history
        if e.type == "StepCompleted" and e.payload["path"].endswith("#compensate")
    ]
    assert compensated == list(reversed(completed))
    assert compensated == [
        "charge",
        "reserve[hotel].reserve_hotel",
        "reserve[car].reserve_car",
        "book_flight",
    ]
    for path in compensated:
        view = step(result, path)
        assert view["status"] == "compensated"
        assert view["compensation"]["status"] == "completed"
    assert step(result, "notify")["status"] == "failed"


async def test_steps_of_foreach_iterations_are_compensated_in_reverse_order(
    engine: Engine,
) -> None:
    ledger = Ledger()
    ledger.register(engine)
    definition = wf(
        "saga_foreach",
        {
            "each": {
                "type": "foreach",
                "items": "$.input.seats",
                "concurrency": 1,
                "iterator": {
                    "name": "body",
                    "start_at": "hold",
                    "states": {
                        "hold": {
                            "type": "task",
                            "action": "record",
                            "input": {"name": "seat {{ item }}"},
                            "compensation": {
                                "action": "undo",
                                "input": {"name": "seat {{ item }}", "result": "$.result"},
                            },
                        }
                    },
                },
                "next": "pay",
            },
            "pay": {"type": "task", "action": "fail", "input": {"message": "card expired"}},
        },
    )
    result = await engine.run(definition, {"seats": ["1A", "1B", "1C"]}, timeout=WAIT)

    assert result.status == "failed"
    assert ledger.done == ["seat 1A", "seat 1B", "seat 1C"]
    assert [u["name"] for u in ledger.undone] == ["seat 1C", "seat 1B", "seat 1A"]
    assert [u["result"] for u in ledger.undone] == [
        {"ref": "seat 1C-ref"},
        {"ref": "seat 1B-ref"},
        {"ref": "seat 1A-ref"},
    ]
    assert [step(result, f"each[{i}].hold")["status"] for i in range(3)] == ["compensated"] * 3


async def test_a_failing_compensation_is_retried_then_succeeds(engine: Engine) -> None:
    ledger = Ledger()
    ledger.register(engine, flaky=1)
    definition = wf(
        "saga_flaky_undo",
        {
            "book": {
                "type": "task",
                "action": "record",
                "input": {"name": "book"},
                "compensation": {
                    "action": "undo",
                    "input": {"name": "book", "result": "$.result"},
                    "retry": {"max_attempts": 3, "initial_interval": 0.05},
                },
                "next": "boom",
            },
            "boom": {"type": "fail", "error": "Boom"},
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "failed"
    assert [u["name"] for u in ledger.undone] == ["book"]
    view = step(result, "book")
    assert view["status"] == "compensated"
    assert view["compensation"]["attempts"] == 2
    assert view["compensation"]["status"] == "completed"


async def test_a_compensation_that_keeps_failing_leaves_compensation_failed(
    engine: Engine, check_history: Any
) -> None:
    ledger = Ledger()
    ledger.register(engine, broken={"ship"})
    comp_retry = {"max_attempts": 3, "initial_interval": 0.02}
    definition = wf(
        "saga_broken_undo",
        {
            "pay": {
                "type": "task",
                "action": "record",
                "input": {"name": "pay"},
                "compensation": {"action": "undo", "input": {"name": "pay", "result": "$.result"}},
                "next": "ship",
            },
            "ship": {
                "type": "task",
                "action": "record",
                "input": {"name": "ship"},
                "compensation": {
                    "action": "undo",
                    "input": {"name": "ship", "result": "$.result"},
                    "retry": comp_retry,
                },
                "next": "confirm",
            },
            "confirm": {"type": "task", "action": "fail", "input": {"message": "no confirmation"}},
        },
    )
    result = await engine.run(definition, {}, timeout=WAIT)

    assert result.status == "compensation_failed"
    assert result.error is not None
    assert "ship" in result.error["message"]
    assert "cannot undo ship" in result.error["message"]
    assert "no confirmation" in result.error["message"]
    details = result.error["details"]
    assert details["compensation_of"] == "ship"
    assert details["compensation_error"]["message"] == "cannot undo ship"
    assert details["run_error"]["message"] == "no confirmation"
    assert ledger.undo_attempts["ship"] == 3
    view = step(result, "ship")
    assert view["compensation"]["status"] == "failed"
    assert view["compensation"]["attempts"] == 3
    assert view["compensation"]["error"]["message"] == "cannot undo ship"
    history = await check_history(engine, result.run_id)
    assert history[-1].type == "RunFinished"
    assert history[-1].payload["status"] == "compensation_failed"
    undo_tries = attempts(history, "ship#compensate")
    assert len(undo_tries) == 3
    assert undo_tries[1]["started"] >= undo_tries[0]["ended"] + timedelta(seconds=0.02) - SLACK


async def test_cancelling_a_waiting_run_compensates_and_ends_cancelled(
    engine: Engine, check_history: Any
) -> None:
    ledger = Ledger()
    ledger.register(engine)
    definition = wf(
        "cancel_me",
        {
            "reserve": {
                "type": "task",
                "action": "record",
                "input": {"name": "reserve"},
                "compensation": {
                    "action": "undo",
                    "input": {"name": "reserve", "result": "$.result"},
                },
                "next": "approval",
            },
            "approval": {"type": "wait", "event": {"name": "approved"}, "next": "done"},
            "done": {"type": "succeed"},
        },
    )
    run_id = await engine.start(definition, {})
    await until(engine, run_id, waiting_at("approval"))

    await engine.cancel(run_id, reason="customer changed their mind")
    result = await engine.wait(run_id, timeout=WAIT)

    assert result.status == "cancelled"
    assert result.error is not None
    assert "customer changed their mind" in result.error["message"]
    assert ledger.undone == [
        {
            "name": "reserve",
            "result": {"ref": "reserve-ref"},
            "key": f"{run_id}:reserve:0:compensate",
        }
    ]
    assert step(result, "reserve")["status"] == "compensated"
    assert step(result, "approval")["status"] == "cancelled"
    assert step(result, "done")["status"] == "skipped"
    history = await check_history(engine, run_id)
    kinds = [e.type for e in history]
    assert kinds.index("CancelRequested") < kinds.index("RunFinished")

    # a signal after the end is refused, changes nothing, and the run keeps its finish time
    with pytest.raises(ConflictError, match="already ended"):
        await engine.signal(run_id, "approved", {"late": True})
    again = await engine.get(run_id)
    assert again.status == "cancelled"
    record = await engine.store.get_run(engine.scope, run_id)
    assert record.finished_at is not None
    assert record.finished_at.isoformat() == result.finished_at


async def test_cancelling_a_parent_cancels_the_child_it_waits_for(engine: Engine) -> None:
    await engine.deploy(wf("waits_forever", {"hold": {"type": "wait", "event": {"name": "never"}}}))
    parent = wf("parent_of_forever", {"sub": {"type": "subflow", "workflow": "waits_forever"}})
    run_id = await engine.start(parent, {})
    result = await until(engine, run_id, waiting_at("sub"))
    child_id = step(result, "sub")["child_run_id"]
    await until(engine, child_id, waiting_at("hold"))

    await engine.cancel(run_id)
    assert (await engine.wait(run_id, timeout=WAIT)).status == "cancelled"
    child = await until(engine, child_id, lambda r: r.done, timeout=0.5)  # AssertionError today
    assert child.status == "cancelled"


async def test_cancelling_a_finished_run_changes_nothing(engine: Engine) -> None:
    result = await engine.run(wf("quick", {"x": {"type": "succeed"}}), {}, timeout=WAIT)
    before = await engine.history(result.run_id)
    after = await engine.cancel(result.run_id)
    assert after.status == "completed"
    assert after.output == result.output
    assert await engine.history(result.run_id) == before


async def test_a_finished_run_keeps_its_finish_time_when_a_stale_timer_fires(
    engine: Engine,
) -> None:
    # The run-timeout timer is still due after the run completed; when it fires, the run
    # row must keep its finished_at (it used to be cleared by that late commit).
    definition = wf("done_before_timeout", {"x": {"type": "task", "action": "noop"}}, timeout=0.2)
    result = await engine.run(definition, {}, timeout=WAIT)
    assert result.status == "completed"
    await asyncio.sleep(0.35)
    record = await engine.store.get_run(engine.scope, result.run_id)
    assert record.finished_at is not None
    assert record.finished_at.isoformat() == result.finished_at
    assert (await engine.get(result.run_id)).status == "completed"


async def test_a_finished_run_history_ends_with_run_finished(engine: Engine) -> None:
    definition = wf("done_before_timeout", {"x": {"type": "task", "action": "noop"}}, timeout=0.2)
    result = await engine.run(definition, {}, timeout=WAIT)
    await asyncio.sleep(0.35)
    history = await engine.history(result.run_id)
    assert history[-1].type == "RunFinished", [e.type for e in history]
    assert await engine.store.list_work(engine.scope, result.run_id) == []


# ---- durability: the Engine closes, the run goes on ----------------------------------------------


async def test_a_wait_timer_fires_after_the_engine_is_closed_and_reopened(
    db_path: str, fast_options: legato.WorkerOptions, check_history: Any
) -> None:
    definition = wf(
        "outlives_engine",
        {
            "hold": {"type": "wait", "duration": 0.4, "next": "after"},
            "after": {
                "type": "task",
                "action": "set",
                "input": {"ok": True},
                "result_path": "$.after",
            },
        },
    )
    async with Engine.open(db_path, options=fast_options) as first:
        run_id = await first.start(definition, {})
        await until(first, run_id, waiting_at("hold"))
    closed_at = datetime.now().astimezone()

    async with Engine.open(db_path, options=fast_options) as second:
        result = await second.wait(run_id, timeout=WAIT)
        assert result.status == "completed", result.error
        assert result.output["after"] == {"ok": True}
        history = await check_history(second, run_id)
        [started] = [e for e in history if e.type == "TimerStarted"]
        [fired] = [e for e in history if e.type == "TimerFired"]
        assert fired.at >= datetime.fromisoformat(started.payload["fire_at"])
        assert fired.at > closed_at  # fired by the second Engine
        assert await second.verify() == {run_id: None}


async def test_a_timer_due_while_the_engine_was_closed_fires_on_reopening(
    db_path: str, fast_options: legato.WorkerOptions
) -> None:
    definition = wf("missed_timer", {"hold": {"type": "wait", "duration": 0.1}})
    async with Engine.open(db_path, options=fast_options) as first:
        run_id = await first.start(definition, {})
        await until(first, run_id, waiting_at("hold"))
    await asyncio.sleep(0.2)  # the timer falls due while nobody runs it

    async with Engine.open(db_path, options=fast_options) as second:
        result = await second.wait(run_id, timeout=WAIT)
        assert result.status == "completed", result.error


async def test_a_signal_wait_receives_a_signal_after_reopening(
    db_path: str, fast_options: legato.WorkerOptions, check_history: Any
) -> None:
    definition = wf(
        "patient",
        {
            "reserve": {
                "type": "task",
                "action": "set",
                "input": {"r": 1},
                "result_path": "$.reserve",
                "next": "approval",
            },
            "approval": {
                "type": "wait",
                "event": {"name": "approved"},
                "result_path": "$.approval",
            },
        },
    )
    async with Engine.open(db_path, options=fast_options) as first:
        run_id = await first.start(definition, {})
        await until(first, run_id, waiting_at("approval"))

    async with Engine.open(db_path, options=fast_options) as second:
        assert (await second.get(run_id)).status == "running"
        await second.signal(run_id, "approved", {"by": "ops"})
        result = await second.wait(run_id, timeout=WAIT)
        assert result.status == "completed", result.error
        assert result.output == {"input": {}, "reserve": {"r": 1}, "approval": {"by": "ops"}}
        await check_history(second, run_id)


async def test_a_step_running_when_the_engine_closes_runs_again_after_reopening(
    db_path: str, fast_options: legato.WorkerOptions, check_history: Any
) -> None:
    calls: list[tuple[int, str]] = []
    started = asyncio.Event()

    @legato.activity("slow_charge")
    async def slow_charge(*, ctx: legato.ActivityContext) -> dict[str, int]:
        calls.append((ctx.attempt, ctx.idempotency_key))
        started.set()
        await asyncio.sleep(0.3)
        return {"charged": len(calls)}

    definition = wf(
        "interrupted",
        {"charge": {"type": "task", "action": "slow_charge", "result_path": "$.charge"}},
    )
    async with Engine.open(db_path, activities=[slow_charge], options=fast_options) as first:
        run_id = await first.start(definition, {})
        await asyncio.wait_for(started.wait(), WAIT)
    # closed mid-step: no outcome was recorded, and the lease was given back

    async with Engine.open(db_path, activities=[slow_charge], options=fast_options) as second:
        result = await second.wait(run_id, timeout=WAIT)
        assert result.status == "completed", result.error
        assert result.output["charge"] == {"charged": 2}
        # at least once, with the same attempt number and idempotency key
        assert calls == [(1, f"{run_id}:charge:0")] * 2
        history = await check_history(second, run_id)
        assert [e.type for e in history].count("StepCompleted") == 1


async def test_a_retry_backoff_survives_closing_the_engine(
    db_path: str, fast_options: legato.WorkerOptions, check_history: Any
) -> None:
    definition = wf(
        "retry_across_restart",
        {
            "call": {
                "type": "task",
                "action": "flaky",
                "input": {"fail_times": 1},
                "retry": {"max_attempts": 2, "initial_interval": 0.3},
                "result_path": "$.call",
            }
        },
    )
    async with Engine.open(db_path, options=fast_options) as first:
        run_id = await first.start(definition, {})
        await until(first, run_id, lambda r: step(r, "call")["status"] == "retrying")

    async with Engine.open(db_path, options=fast_options) as second:
        result = await second.wait(run_id, timeout=WAIT)
        assert result.status == "completed", result.error
        assert result.output["call"] == {"attempt": 2}
        first_try, second_try = attempts(await check_history(second, run_id), "call")
        assert second_try["started"] >= first_try["ended"] + timedelta(seconds=0.3) - SLACK
