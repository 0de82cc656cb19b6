"""The pure engine, end to end: every state type, retries, catches, timeouts, the saga.

Each test drives a run through :class:`legato.testing.Simulator`, which plays the runtime by
hand on top of ``legato.runtime.advance.advance``; nothing here reads a clock or touches I/O.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from legato.engine import commands as cmd
from legato.engine import events as ev
from legato.engine.machine import COMPENSATION_RETRY, apply, wanted
from legato.engine.state import RunState, RunStatus, StepStatus
from legato.errors import ErrorClass, StepError
from legato.testing import DEFAULT_START as T0
from legato.testing import FakeClock, Simulator, SimulatorError, replay


def task(**fields: Any) -> dict[str, Any]:
    return {"type": "task", "action": "noop", **fields}


def wf(states: dict[str, Any], start_at: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"name": "wf", "start_at": start_at or next(iter(states)), "states": states, **fields}


def branch(name: str, states: dict[str, Any], start_at: str | None = None) -> dict[str, Any]:
    return {"name": name, "start_at": start_at or next(iter(states)), "states": states}


def snapshot(state: RunState) -> dict[str, Any]:
    """The state as JSON data, without the event counter."""
    data: dict[str, Any] = json.loads(json.dumps(state.to_dict()))
    data.pop("seq")
    return data


def schedules(sim: Simulator) -> list[cmd.ScheduleStep]:
    return [c for c in sim.commands if isinstance(c, cmd.ScheduleStep)]


def views_by_id(sim: Simulator) -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in sim.views()}


# ---- the test helpers themselves ----------------------------------------------------------------


def test_fake_clock_is_utc_and_moves_only_when_told() -> None:
    clock = FakeClock()
    assert clock.now() == T0
    assert clock.now().utcoffset() == timedelta(0)
    assert clock.advance(90) == T0 + timedelta(seconds=90)
    later = T0 + timedelta(days=2)
    assert clock.set(later) == later
    with pytest.raises(ValueError, match="naive"):
        clock.set(later.replace(tzinfo=None))
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_simulator_refuses_work_that_is_not_due() -> None:
    sim = Simulator(wf({"a": task(end=True)}))
    with pytest.raises(SimulatorError, match="not scheduled"):
        sim.complete("b")
    sim.fail("a", "RETRYABLE")
    with pytest.raises(SimulatorError, match="not due before"):
        sim.complete("a")


# ---- task ---------------------------------------------------------------------------------------


def test_task_input_resolves_paths_templates_and_literals() -> None:
    sim = Simulator(
        wf(
            {
                "a": task(
                    input={
                        "n": "$.input.n",
                        "typed": "{{ input.n }}",
                        "text": "Hello {{ input.name }}, you have {{ input.n }}",
                        "nested": {"list": ["$.input.name", 3], "whole": "$.input"},
                        "literal": 5,
                    },
                    end=True,
                )
            }
        ),
        {"n": 4, "name": "Ada"},
    )
    [command] = sim.pending_commands
    assert isinstance(command, cmd.ScheduleStep)
    assert command.path == "a"
    assert command.attempt == 1
    assert command.action == "noop"
    assert command.input == {
        "n": 4,
        "typed": 4,
        "text": "Hello Ada, you have 4",
        "nested": {"list": ["Ada", 3], "whole": {"n": 4, "name": "Ada"}},
        "literal": 5,
    }
    assert sim.step("a").input == command.input


def test_task_without_input_gets_an_empty_object_and_service_steps_name_the_operation() -> None:
    sim = Simulator(
        wf({"a": {"type": "task", "service": "billing", "operation": "charge", "end": True}})
    )
    [command] = sim.pending_commands
    assert isinstance(command, cmd.ScheduleStep)
    assert command.input == {}
    assert (command.action, command.service, command.operation) == (None, "billing", "charge")


def test_task_output_mapping_and_result_path_write_the_context() -> None:
    sim = Simulator(
        wf(
            {
                "a": task(
                    output={"$.charge_id": "$.result.id", "$.summary.total": "{{ result.total }}"},
                    result_path="$.raw.a",
                    next="b",
                ),
                "b": task(input={"id": "$.charge_id", "total": "$.summary.total"}, end=True),
            }
        ),
        {"order": 1},
    )
    sim.complete("a", {"id": "ch_1", "total": 12.5})
    assert sim.scheduled("b").input == {"id": "ch_1", "total": 12.5}
    sim.complete("b", "ok")
    assert sim.status == RunStatus.COMPLETED
    assert sim.output == {
        "input": {"order": 1},
        "charge_id": "ch_1",
        "summary": {"total": 12.5},
        "raw": {"a": {"id": "ch_1", "total": 12.5}},
    }
    assert sim.step("a").output == {"id": "ch_1", "total": 12.5}
    finish = sim.finish_command()
    assert finish is not None
    assert finish.status == RunStatus.COMPLETED
    assert finish.output == sim.output
    assert isinstance(sim.events[-1], ev.RunFinished)
    assert sim.finished


def test_input_at_root_also_places_the_input_at_the_root_of_the_context() -> None:
    sim = Simulator(
        wf({"a": task(input={"x": "$.amount"}, end=True)}, input_at_root=True), {"amount": 3}
    )
    assert sim.scheduled("a").input == {"x": 3}
    assert sim.state.frames[""].context == {"amount": 3, "input": {"amount": 3}}


def test_a_later_write_under_a_result_path_does_not_change_the_recorded_output() -> None:
    sim = Simulator(
        wf(
            {
                "a": task(result_path="$.a", next="b"),
                "b": task(output={"$.a.extra": "$.result"}, end=True),
            }
        )
    )
    sim.complete("a", {"n": 1})
    sim.complete("b", 2)
    assert sim.output["a"] == {"n": 1, "extra": 2}
    assert sim.step("a").output == {"n": 1}
    completed = [e for e in sim.events if isinstance(e, ev.StepCompleted)]
    assert completed[0].output == {"n": 1}


def test_a_state_kept_in_memory_equals_one_restored_from_json_after_every_event() -> None:
    definition = wf(
        {
            "a": task(result_path="$.a", next="b"),
            "b": task(output={"$.a.extra": "$.result"}, next="c"),
            "c": task(input={"a": "{{ steps.a.output }}"}, end=True),
        }
    )
    live = Simulator(definition)
    restored = Simulator(definition)
    for path, output in (("a", {"n": 1}), ("b", 2)):
        live.complete(path, output)
        restored.complete(path, output)
        restored.state = RunState.from_dict(json.loads(json.dumps(restored.state.to_dict())))
        assert snapshot(live.state) == snapshot(restored.state)
    assert live.scheduled("c").input == restored.scheduled("c").input == {"a": {"n": 1}}


# ---- choice -------------------------------------------------------------------------------------


CHOICE = wf(
    {
        "pick": {
            "type": "choice",
            "choices": [
                {"when": "input.amount > 100", "next": "big"},
                {
                    "when": {"field": "$.input.tier", "operator": "equals", "value": "gold"},
                    "next": "gold",
                },
                {"when": "input.amount > 10", "next": "medium"},
            ],
            "default": "small",
        },
        "big": {"type": "succeed", "output": "big"},
        "gold": {"type": "succeed", "output": "gold"},
        "medium": {"type": "succeed", "output": "medium"},
        "small": {"type": "succeed", "output": "small"},
    }
)


@pytest.mark.parametrize(
    ("run_input", "expected"),
    [
        ({"amount": 500, "tier": "gold"}, "big"),  # the first matching rule wins
        ({"amount": 50, "tier": "gold"}, "gold"),
        ({"amount": 50, "tier": "iron"}, "medium"),
        ({"amount": 5, "tier": "iron"}, "small"),  # no rule: the default
    ],
)
def test_choice_takes_the_first_matching_rule_or_the_default(
    run_input: dict[str, Any], expected: str
) -> None:
    sim = Simulator(CHOICE, run_input)
    assert sim.status == RunStatus.COMPLETED
    assert sim.output == expected
    assert sim.step("pick").status == StepStatus.COMPLETED
    assert sim.step("pick").output == {"next": expected}
    assert [p for p, s in sim.step_statuses().items() if s == "completed"] == ["pick", expected]


def test_choice_without_a_match_or_default_fails_the_run() -> None:
    sim = Simulator(
        wf(
            {
                "pick": {
                    "type": "choice",
                    "choices": [{"when": "input.amount > 100", "next": "x"}],
                },
                "x": {"type": "succeed"},
            }
        ),
        {"amount": 1},
    )
    assert sim.status == RunStatus.FAILED
    assert sim.step("pick").status == StepStatus.FAILED
    assert sim.error is not None
    assert "no rule matched" in sim.error["message"]
    assert sim.error["error_class"] == "PERMANENT"
    assert views_by_id(sim)["x"]["status"] == "skipped"


def test_choice_can_loop_back() -> None:
    sim = Simulator(
        wf(
            {
                "inc": task(result_path="$.n", next="again"),
                "again": {
                    "type": "choice",
                    "choices": [{"when": "context.n < 3", "next": "inc"}],
                    "default": "done",
                },
                "done": {"type": "succeed"},
            }
        )
    )
    for n in (1, 2, 3):
        sim.complete("inc", n)
    assert sim.status == RunStatus.COMPLETED
    assert sim.output["n"] == 3
    assert sim.step("inc").iteration == 2


# ---- parallel -----------------------------------------------------------------------------------


def two_branches(**fields: Any) -> dict[str, Any]:
    return wf(
        {
            "p": {
                "type": "parallel",
                "branches": [
                    branch("b1", {"s1": task(input={"v": 1}, result_path="$.b1", end=True)}),
                    branch(
                        "b2",
                        {
                            "s2": task(input={"v": 2}, result_path="$.b2", next="t2"),
                            "t2": task(input={"prev": "$.b2"}, result_path="$.t2", end=True),
                        },
                    ),
                    branch("b3", {"s3": task(input={"v": 3}, result_path="$.b3", end=True)}),
                ],
                "result_path": "$.joined",
                **fields,
            },
        }
    )


@pytest.mark.parametrize(
    "order",
    [
        ["p[b1].s1", "p[b2].s2", "p[b2].t2", "p[b3].s3"],
        ["p[b3].s3", "p[b2].s2", "p[b2].t2", "p[b1].s1"],
        ["p[b2].s2", "p[b3].s3", "p[b2].t2", "p[b1].s1"],
    ],
)
def test_parallel_join_all_merges_every_branch_in_any_completion_order(order: list[str]) -> None:
    sim = Simulator(two_branches(end=True), {"k": 0})
    assert sim.pending_paths == ["p[b1].s1", "p[b2].s2", "p[b3].s3"]
    assert sim.step("p").status == StepStatus.WAITING
    for path in order:
        assert sim.status == RunStatus.RUNNING
        sim.complete(path, {"from": path})
    assert sim.status == RunStatus.COMPLETED
    assert sim.output == {
        "input": {"k": 0},
        "b1": {"from": "p[b1].s1"},
        "b2": {"from": "p[b2].s2"},
        "t2": {"from": "p[b2].t2"},
        "b3": {"from": "p[b3].s3"},
        "joined": {
            "b1": {"from": "p[b1].s1"},
            "b2": {"from": "p[b2].t2"},
            "b3": {"from": "p[b3].s3"},
        },
    }
    # the branch saw its own write, not its siblings'
    t2 = next(c for c in schedules(sim) if c.path == "p[b2].t2")
    assert t2.input == {"prev": {"from": "p[b2].s2"}}


def test_parallel_join_any_cancels_the_other_branches() -> None:
    sim = Simulator(two_branches(join="any", end=True))
    sim.complete("p[b3].s3", "third")
    assert sim.status == RunStatus.COMPLETED
    assert sim.output["joined"] == {"b3": "third"}
    assert "b1" not in sim.output
    assert sim.step("p[b1].s1").status == StepStatus.CANCELLED
    assert sim.step("p[b2].s2").status == StepStatus.CANCELLED
    assert not wanted(sim.state, "p[b1].s1", 1)
    assert sim.pending_commands == []
    # a late outcome of a cancelled branch changes nothing
    before = snapshot(sim.state)
    sim.send(ev.StepCompleted(at=sim.clock.now(), path="p[b1].s1", attempt=1, output="late"))
    assert snapshot(sim.state) == before


def test_parallel_join_at_least_n() -> None:
    sim = Simulator(two_branches(join={"at_least": 2}, end=True))
    sim.complete("p[b1].s1", 1)
    assert sim.status == RunStatus.RUNNING
    sim.fail("p[b3].s3", "PERMANENT")  # one may fail: two can still complete
    assert sim.status == RunStatus.RUNNING
    sim.complete("p[b2].s2", 2)
    sim.complete("p[b2].t2", 3)
    assert sim.status == RunStatus.COMPLETED
    assert sim.output["joined"] == {"b1": 1, "b2": 3}
    assert "b3" not in sim.output


def test_parallel_join_at_least_n_fails_once_n_cannot_be_reached() -> None:
    sim = Simulator(two_branches(join={"at_least": 2}, end=True))
    sim.fail("p[b1].s1", "PERMANENT")
    assert sim.status == RunStatus.RUNNING
    sim.fail("p[b3].s3", "VALIDATION", "bad input")
    assert sim.status == RunStatus.FAILED
    assert sim.step("p[b2].s2").status == StepStatus.CANCELLED
    assert sim.error is not None
    assert "branch b3 of 'p' failed: bad input" in sim.error["message"]


def test_parallel_join_any_fails_only_when_every_branch_failed() -> None:
    sim = Simulator(two_branches(join="any", end=True))
    sim.fail("p[b1].s1", "PERMANENT")
    sim.fail("p[b2].s2", "PERMANENT")
    assert sim.status == RunStatus.RUNNING
    sim.fail("p[b3].s3", "PERMANENT")
    assert sim.status == RunStatus.FAILED


def test_parallel_failing_branch_with_join_all_cancels_its_siblings() -> None:
    sim = Simulator(two_branches(end=True))
    sim.complete("p[b1].s1", 1)
    sim.fail("p[b2].s2", "PERMANENT", "card declined")
    assert sim.status == RunStatus.FAILED
    assert sim.step("p").status == StepStatus.FAILED
    assert sim.step("p[b1].s1").status == StepStatus.COMPLETED
    assert sim.step("p[b2].s2").status == StepStatus.FAILED
    assert sim.step("p[b3].s3").status == StepStatus.CANCELLED
    assert sim.state.frames["p[b3]"].status == "cancelled"
    assert "p[b2].t2" not in sim.state.steps
    assert sim.pending_commands == []
    assert sim.error is not None
    assert sim.error["message"] == "branch b2 of 'p' failed: card declined"


def test_branch_writes_that_clash_at_the_join_fail_the_parallel_step() -> None:
    sim = Simulator(
        wf(
            {
                "p": {
                    "type": "parallel",
                    "branches": [
                        branch("b1", {"s": task(result_path="$.x", end=True)}),
                        branch("b2", {"s": task(result_path="$.x.y", end=True)}),
                    ],
                    "end": True,
                }
            }
        )
    )
    sim.complete("p[b1].s", "a string")
    sim.complete("p[b2].s", 1)  # `$.x.y` cannot be written once `$.x` is a string
    assert sim.status == RunStatus.FAILED
    assert sim.step("p").status == StepStatus.FAILED
    assert sim.error is not None
    assert sim.error["error_class"] == "VALIDATION"
    assert "$.x.y" in sim.error["message"]


def test_parallel_failure_can_be_caught() -> None:
    definition = two_branches(next="after", catch=[{"errors": ["PERMANENT"], "next": "recover"}])
    definition["states"]["after"] = task(end=True)
    definition["states"]["recover"] = {"type": "succeed", "output": "recovered"}
    sim = Simulator(definition)
    sim.fail("p[b1].s1", "PERMANENT", "nope")
    assert sim.status == RunStatus.COMPLETED
    assert sim.output == "recovered"
    assert sim.state.frames[""].context is not None
    assert sim.state.frames[""].context["error"]["step"] == "p"


def test_nested_parallel_merges_inner_writes_up_through_the_outer_join() -> None:
    inner = {
        "type": "parallel",
        "branches": [
            branch("x", {"sx": task(result_path="$.x", end=True)}),
            branch("y", {"sy": task(result_path="$.y", end=True)}),
        ],
        "end": True,
    }
    sim = Simulator(
        wf(
            {
                "outer": {
                    "type": "parallel",
                    "branches": [
                        branch("left", {"inner": inner}),
                        branch("right", {"r": task(result_path="$.r", end=True)}),
                    ],
                    "next": "last",
                },
                "last": task(input={"x": "$.x", "y": "$.y", "r": "$.r"}, end=True),
            }
        )
    )
    assert sim.pending_paths == [
        "outer[left].inner[x].sx",
        "outer[left].inner[y].sy",
        "outer[right].r",
    ]
    sim.complete("outer[left].inner[y].sy", "Y")
    sim.complete("outer[right].r", "R")
    sim.complete("outer[left].inner[x].sx", "X")
    assert sim.scheduled("last").input == {"x": "X", "y": "Y", "r": "R"}
    sim.complete("last")
    assert sim.status == RunStatus.COMPLETED


# ---- foreach ------------------------------------------------------------------------------------


def foreach_wf(concurrency: int = 2, **fields: Any) -> dict[str, Any]:
    return wf(
        {
            "each": {
                "type": "foreach",
                "items": "$.input.items",
                "concurrency": concurrency,
                "iterator": branch(
                    "body",
                    {
                        "work": task(
                            input={"item": "{{ item }}", "index": "{{ index }}"},
                            result_path="$.w",
                            next="finish",
                        ),
                        "finish": task(input={"w": "$.w"}, end=True),
                    },
                ),
                "result_path": "$.results",
                **fields,
            }
        }
    )


def test_foreach_respects_its_concurrency_limit_and_keeps_item_order() -> None:
    items = ["a", "b", "c", "d", "e", "f", "g"]
    sim = Simulator(foreach_wf(concurrency=3, end=True), {"items": items})
    most = 0
    while sim.status == RunStatus.RUNNING:
        running = sim.pending_commands
        iterations = {c.path.split(".")[0] for c in running}  # type: ignore[attr-defined]
        assert len(iterations) == len(running) <= 3
        most = max(most, len(running))
        last = running[-1]  # finish the newest first: completion order is not item order
        assert isinstance(last, cmd.ScheduleStep)
        sim.complete(last.path, {"done": last.path, "input": last.input})
    assert most == 3
    assert sim.status == RunStatus.COMPLETED
    # each iteration's result is its last step's output, in item order
    assert sim.output["results"] == [
        {
            "done": f"each[{i}].finish",
            "input": {"w": {"done": f"each[{i}].work", "input": {"item": item, "index": i}}},
        }
        for i, item in enumerate(items)
    ]


def test_foreach_with_concurrency_one_runs_items_one_after_another() -> None:
    sim = Simulator(foreach_wf(concurrency=1, end=True), {"items": [10, 20, 30]})
    seen = []
    while sim.status == RunStatus.RUNNING:
        [command] = sim.pending_commands
        assert isinstance(command, cmd.ScheduleStep)
        seen.append(command.path)
        sim.complete(command.path, command.input)
    assert seen == [
        "each[0].work",
        "each[0].finish",
        "each[1].work",
        "each[1].finish",
        "each[2].work",
        "each[2].finish",
    ]
    assert [r["w"]["item"] for r in sim.output["results"]] == [10, 20, 30]


def test_foreach_over_an_empty_list_completes_at_once() -> None:
    sim = Simulator(foreach_wf(end=True), {"items": []})
    assert sim.status == RunStatus.COMPLETED
    assert sim.output["results"] == []
    assert sim.step("each").status == StepStatus.COMPLETED


def test_foreach_items_that_are_not_a_list_fail_the_step() -> None:
    sim = Simulator(foreach_wf(end=True), {"items": {"not": "a list"}})
    assert sim.status == RunStatus.FAILED
    assert sim.error is not None
    assert sim.error["error_class"] == "VALIDATION"
    assert "not a list" in sim.error["message"]


def test_foreach_item_name_and_context_isolation() -> None:
    sim = Simulator(
        wf(
            {
                "each": {
                    "type": "foreach",
                    "items": [1, 2],
                    "item_name": "order",
                    "iterator": branch(
                        "b",
                        {
                            "s": task(
                                input={"o": "{{ order * 10 }}"}, result_path="$.mine", end=True
                            )
                        },
                    ),
                    "next": "after",
                },
                "after": task(input={"mine": "$.mine"}, end=True),
            }
        )
    )
    assert [c.input for c in sim.pending_commands] == [{"o": 10}, {"o": 20}]  # type: ignore[attr-defined]
    sim.complete("each[1].s", "two")
    sim.complete("each[0].s", "one")
    # iteration writes stay in the iteration; the results list is what comes out
    assert sim.scheduled("after").input == {"mine": None}
    assert sim.step("each").output == ["one", "two"]


def test_a_failing_iteration_fails_the_foreach_and_cancels_running_iterations() -> None:
    sim = Simulator(foreach_wf(concurrency=2, end=True), {"items": [1, 2, 3]})
    sim.fail("each[1].work", "PERMANENT", "bad item")
    assert sim.status == RunStatus.FAILED
    assert sim.step("each[0].work").status == StepStatus.CANCELLED
    assert "each[2].work" not in sim.state.steps
    assert sim.error is not None
    assert sim.error["message"] == "iteration 1 of 'each' failed: bad item"


def test_foreach_over_many_items_that_complete_at_once() -> None:
    sim = Simulator(
        wf(
            {
                "each": {
                    "type": "foreach",
                    "items": "$.input.items",
                    "concurrency": 1,
                    "iterator": branch("b", {"s": task(when="input.go", end=True)}),
                    "end": True,
                }
            }
        ),
        {"items": list(range(2000)), "go": False},
    )
    assert sim.status == RunStatus.COMPLETED
    assert len(sim.step("each").output) == 2000


# ---- wait ---------------------------------------------------------------------------------------


def test_wait_for_a_duration_starts_a_timer_from_the_instant_it_was_entered() -> None:
    sim = Simulator(
        wf(
            {
                "a": task(next="w"),
                "w": {"type": "wait", "duration": "1m30s", "next": "b"},
                "b": task(end=True),
            }
        )
    )
    sim.advance(5)
    sim.complete("a")
    [timer] = [c for c in sim.commands if isinstance(c, cmd.StartTimer)]
    assert timer.fire_at == T0 + timedelta(seconds=95)
    assert sim.timers == {timer.timer_id: timer.fire_at}
    assert sim.step("w").status == StepStatus.WAITING
    sim.advance(89)
    assert sim.step("w").status == StepStatus.WAITING
    assert sim.pending_commands == []
    assert sim.advance(1) == [timer.timer_id]
    assert sim.step("w").status == StepStatus.COMPLETED
    assert sim.step("w").finished_at == (T0 + timedelta(seconds=95)).isoformat()
    assert sim.pending_paths == ["b"]


@pytest.mark.parametrize(
    "until", ["2026-01-01T00:10:00+00:00", "2026-01-01T01:10:00+01:00", "$.input.at"]
)
def test_wait_until_an_iso_instant(until: str) -> None:
    sim = Simulator(
        wf({"w": {"type": "wait", "until": until, "end": True}}),
        {"at": "2026-01-01T00:10:00Z"},
    )
    assert sim.timers == {"w:0": T0 + timedelta(minutes=10)}
    sim.advance(599)
    assert sim.status == RunStatus.RUNNING
    sim.advance(1)
    assert sim.status == RunStatus.COMPLETED


@pytest.mark.parametrize("until", ["2026-01-01T00:10:00", "tomorrow"])
def test_wait_until_without_a_zone_or_not_an_instant_fails(until: str) -> None:
    sim = Simulator(wf({"w": {"type": "wait", "until": until, "end": True}}))
    assert sim.status == RunStatus.FAILED
    assert sim.error is not None
    assert sim.error["error_class"] == "VALIDATION"


def event_wf(**event: Any) -> dict[str, Any]:
    return wf(
        {
            "a": task(next="w"),
            "w": {
                "type": "wait",
                "event": {"name": "approved", **event},
                "result_path": "$.approval",
                "next": "b",
            },
            "b": task(input={"who": "$.approval.by"}, end=True),
            "late": {"type": "succeed", "output": "too late"},
        }
    )


def test_event_wait_is_completed_by_a_signal() -> None:
    sim = Simulator(event_wf())
    sim.complete("a")
    assert sim.step("w").status == StepStatus.WAITING
    assert sim.timers == {}
    sim.signal("other", {"by": "eve"})
    assert sim.step("w").status == StepStatus.WAITING
    sim.signal("approved", {"by": "ada"})
    assert sim.step("w").status == StepStatus.COMPLETED
    assert sim.scheduled("b").input == {"who": "ada"}
    assert sim.state.signals == [{"name": "other", "data": {"by": "eve"}, "correlation": None}]


def test_a_signal_that_arrives_before_the_wait_is_buffered_and_delivered_on_entry() -> None:
    sim = Simulator(event_wf(timeout="1h"))
    sim.signal("approved", {"by": "early"})
    assert len(sim.state.signals) == 1
    sim.complete("a")
    assert sim.step("w").status == StepStatus.COMPLETED
    assert sim.state.signals == []
    assert sim.timers == {}  # no timeout timer was needed
    assert sim.scheduled("b").input == {"who": "early"}


def test_correlation_mismatch_is_not_delivered() -> None:
    sim = Simulator(event_wf(correlation="$.input.order"), {"order": 42})
    sim.complete("a")
    assert sim.step("w").correlation == "42"
    sim.signal("approved", {"by": "wrong"}, correlation="41")
    sim.signal("approved", {"by": "none"})
    assert sim.step("w").status == StepStatus.WAITING
    sim.signal("approved", {"by": "right"}, correlation="42")
    assert sim.step("w").status == StepStatus.COMPLETED
    assert sim.scheduled("b").input == {"who": "right"}
    assert [s["correlation"] for s in sim.state.signals] == ["41", None]


def test_buffered_signal_with_a_correlation_waits_for_the_matching_wait() -> None:
    sim = Simulator(event_wf(correlation="{{ input.order }}"), {"order": 7})
    sim.signal("approved", {"by": "x"}, correlation="8")
    sim.signal("approved", {"by": "y"}, correlation="7")
    sim.complete("a")
    assert sim.scheduled("b").input == {"who": "y"}
    assert [s["correlation"] for s in sim.state.signals] == ["8"]


def test_event_timeout_fails_the_step_with_timeout() -> None:
    sim = Simulator(event_wf(timeout="10m"))
    sim.complete("a")
    assert sim.timers == {"w:0": T0 + timedelta(minutes=10)}
    sim.advance(600)
    assert sim.status == RunStatus.FAILED
    assert sim.step("w").status == StepStatus.FAILED
    assert sim.error is not None
    assert sim.error["error_class"] == "TIMEOUT"
    # a signal after the timeout changes nothing
    before = snapshot(sim.state)
    sim.signal("approved", {"by": "late"})
    assert snapshot(sim.state) == before


def test_event_timeout_goes_to_timeout_next() -> None:
    sim = Simulator(event_wf(timeout="10m", timeout_next="late"))
    sim.complete("a")
    sim.advance(600)
    assert sim.status == RunStatus.COMPLETED
    assert sim.output == "too late"
    assert sim.step("w").status == StepStatus.FAILED
    assert sim.step("w").caught
    assert sim.step("w").error is not None
    assert sim.step("w").error["error_class"] == "TIMEOUT"


def test_a_signal_before_the_timeout_wins_and_the_timer_is_then_ignored() -> None:
    sim = Simulator(event_wf(timeout="10m", timeout_next="late"))
    sim.complete("a")
    sim.advance(300)
    sim.signal("approved", {"by": "ada"})
    sim.advance(600)  # the timer fires, too late to matter
    sim.complete("b")
    assert sim.status == RunStatus.COMPLETED
    assert sim.step("w").status == StepStatus.COMPLETED


# ---- subflow ------------------------------------------------------------------------------------


def subflow_wf(**fields: Any) -> dict[str, Any]:
    return wf(
        {
            "sub": {
                "type": "subflow",
                "workflow": "child",
                "version": "3",
                "input": {"order": "$.input.order"},
                "next": "after",
                **fields,
            },
            "after": task(input={"child": "$.child"}, end=True),
            "handle": {"type": "succeed", "output": "handled"},
        }
    )


def test_subflow_starts_a_child_with_a_deterministic_id_and_waits_for_it() -> None:
    sim = Simulator(subflow_wf(output={"$.child": "$.result.total"}), {"order": 9})
    [start] = sim.pending_commands
    assert start == cmd.StartChild(
        path="sub",
        child_run_id="run-1.sub.0",
        workflow="child",
        version="3",
        input={"order": 9},
        wait=True,
    )
    again = Simulator(subflow_wf(output={"$.child": "$.result.total"}), {"order": 9})
    assert again.pending_commands == [start]
    assert sim.step("sub").status == StepStatus.WAITING
    assert sim.step("sub").child_run_id == "run-1.sub.0"
    sim.child_finished("sub", "completed", {"total": 30})
    assert sim.scheduled("after").input == {"child": 30}
    assert views_by_id(sim)["sub"]["child_run_id"] == "run-1.sub.0"


def test_subflow_failure_fails_the_step_or_is_caught() -> None:
    sim = Simulator(subflow_wf())
    sim.child_finished(
        "sub", "failed", error={"message": "child broke", "error_class": "PERMANENT"}
    )
    assert sim.status == RunStatus.FAILED
    assert sim.error is not None
    assert sim.error["message"] == "child run run-1.sub.0 failed: child broke"

    sim = Simulator(subflow_wf(catch=[{"next": "handle"}]))
    sim.child_finished("sub", "cancelled")
    assert sim.status == RunStatus.COMPLETED
    assert sim.output == "handled"


def test_subflow_with_wait_false_goes_on_at_once() -> None:
    sim = Simulator(subflow_wf(wait=False, result_path="$.child"))
    assert sim.step("sub").status == StepStatus.COMPLETED
    assert sim.scheduled("after").input == {"child": {"run_id": "run-1.sub.0"}}
    [start] = [c for c in sim.commands if isinstance(c, cmd.StartChild)]
    assert start.wait is False
    # a late report from the spawned child changes nothing
    before = snapshot(sim.state)
    sim.send(
        ev.ChildFinished(
            at=sim.clock.now(),
            path="sub",
            child_run_id="run-1.sub.0",
            status="failed",
            error={"message": "x"},
        )
    )
    assert snapshot(sim.state) == before


def test_subflow_timeout_fails_the_step_with_timeout() -> None:
    sim = Simulator(subflow_wf(timeout="10s"))
    sim.advance(11)
    assert sim.step("sub").status == StepStatus.FAILED
    assert sim.status == RunStatus.FAILED
    assert sim.error is not None
    assert sim.error["error_class"] == "TIMEOUT"


# ---- succeed / fail -----------------------------------------------------------------------------


def test_succeed_output_is_the_run_output() -> None:
    sim = Simulator(
        wf(
            {
                "a": task(result_path="$.a", next="ok"),
                "ok": {"type": "succeed", "output": {"id": "$.a.id", "msg": "done {{ input.n }}"}},
            }
        ),
        {"n": 2},
    )
    sim.complete("a", {"id": 5})
    assert sim.status == RunStatus.COMPLETED
    assert sim.output == {"id": 5, "msg": "done 2"}


def test_succeed_without_output_gives_the_context() -> None:
    sim = Simulator(wf({"ok": {"type": "succeed"}}), {"n": 2})
    assert sim.output == {"input": {"n": 2}}


def test_fail_state_carries_its_error_and_cause() -> None:
    sim = Simulator(
        wf({"bad": {"type": "fail", "error": "OutOfStock", "cause": "no {{ input.sku }} left"}}),
        {"sku": "X1"},
    )
    assert sim.status == RunStatus.FAILED
    assert sim.error is not None
    assert sim.error["message"] == "no X1 left"
    assert sim.error["details"]["error"] == "OutOfStock"
    assert sim.error["details"]["cause"] == "no X1 left"
    assert sim.step("bad").status == StepStatus.FAILED
    finish = sim.finish_command()
    assert finish is not None
    assert (finish.status, finish.error) == (RunStatus.FAILED, sim.error)

    sim = Simulator(wf({"bad": {"type": "fail", "error": "Nope"}}))
    assert sim.error is not None
    assert sim.error["message"] == "Nope"


# ---- retries ------------------------------------------------------------------------------------


def retry_wf(**retry: Any) -> dict[str, Any]:
    return wf({"a": task(retry=retry, end=True)})


def test_backoff_delays_come_from_the_failure_instants() -> None:
    sim = Simulator(
        retry_wf(max_attempts=6, initial_interval="2s", backoff_coefficient=3, max_interval="10s")
    )
    expected_delays = [2, 6, 10, 10]  # 2, 2*3, min(18, 10), min(54, 10)
    for attempt, delay in enumerate(expected_delays, start=1):
        sim.advance(7)  # the failure is reported some time after the attempt started
        failed_at = sim.clock.now()
        sim.fail("a", "RETRYABLE")
        rec = sim.step("a")
        assert rec.due_at == (failed_at + timedelta(seconds=delay)).isoformat()
        assert rec.error["message"] == "boom"
        retry = schedules(sim)[-1]
        assert retry.attempt == attempt + 1
        assert retry.not_before == failed_at + timedelta(seconds=delay)
        assert sim.pending_commands == []
        sim.advance(delay - 0.5)
        assert sim.pending_commands == []
        sim.advance(0.5)
        assert sim.pending_paths == ["a"]
    sim.complete("a", "finally")
    assert sim.status == RunStatus.COMPLETED
    assert sim.step("a").attempt == 5


def test_a_step_waiting_for_its_retry_shows_when_it_will_run_again() -> None:
    sim = Simulator(retry_wf(initial_interval="30s"))
    sim.fail("a")
    view = views_by_id(sim)["a"]
    assert view["status"] == "retrying"
    assert view["next_attempt_at"] == (T0 + timedelta(seconds=30)).isoformat()


def test_the_definition_retry_policy_is_the_default_for_tasks() -> None:
    sim = Simulator(wf({"a": task(end=True)}, retry={"max_attempts": 2, "initial_interval": 7}))
    sim.fail("a")
    assert schedules(sim)[-1].not_before == T0 + timedelta(seconds=7)
    sim.advance(7)
    sim.fail("a")
    assert sim.status == RunStatus.FAILED


def test_the_default_policy_tries_three_times() -> None:
    sim = Simulator(wf({"a": task(end=True)}))
    sim.fail("a")
    sim.advance(1)
    sim.fail("a")
    sim.advance(2)
    sim.fail("a", message="third")
    assert sim.status == RunStatus.FAILED
    assert sim.step("a").attempt == 3
    assert sim.error is not None
    assert sim.error["message"] == "third"


@pytest.mark.parametrize("error_class", ["PERMANENT", "VALIDATION", "AUTH_FAILED"])
def test_non_retryable_classes_fail_at_once(error_class: str) -> None:
    sim = Simulator(retry_wf(max_attempts=5))
    sim.fail("a", error_class, "no")
    assert sim.status == RunStatus.FAILED
    assert sim.step("a").attempt == 1
    assert sim.error is not None
    assert sim.error["error_class"] == error_class
    assert len(schedules(sim)) == 1


def test_non_retryable_can_be_configured() -> None:
    sim = Simulator(retry_wf(max_attempts=5, non_retryable=["TIMEOUT"]))
    sim.fail("a", "PERMANENT")
    assert schedules(sim)[-1].attempt == 2
    sim.advance(1)
    sim.fail("a", "TIMEOUT")
    assert sim.status == RunStatus.FAILED
    assert sim.step("a").attempt == 2


def test_rate_limited_honours_retry_after() -> None:
    sim = Simulator(retry_wf(max_attempts=4, initial_interval="1s"))
    sim.fail("a", "RATE_LIMITED", retry_after=30)
    assert schedules(sim)[-1].not_before == T0 + timedelta(seconds=30)
    sim.advance(29)
    assert sim.pending_commands == []
    sim.advance(1)
    # a retry_after shorter than the backoff does not shorten it
    sim.fail("a", "RATE_LIMITED", retry_after=0.5)
    assert schedules(sim)[-1].not_before == T0 + timedelta(seconds=32)
    sim.advance(2)
    # retry_after only counts for RATE_LIMITED
    sim.fail("a", "RETRYABLE", retry_after=100)
    assert schedules(sim)[-1].not_before == T0 + timedelta(seconds=36)


def test_max_attempts_exhausted_fails_with_the_last_error() -> None:
    sim = Simulator(retry_wf(max_attempts=2, initial_interval=1))
    sim.fail("a", "TIMEOUT", "slow 1")
    sim.advance(1)
    sim.fail("a", "TIMEOUT", "slow 2")
    assert sim.status == RunStatus.FAILED
    assert sim.step("a").status == StepStatus.FAILED
    assert sim.step("a").attempt == 2
    assert sim.error is not None
    assert (sim.error["message"], sim.error["error_class"]) == ("slow 2", "TIMEOUT")
    assert [c.attempt for c in schedules(sim)] == [1, 2]


def catch_wf(*catches: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return wf(
        {
            "a": task(retry={"max_attempts": 1}, catch=list(catches), next="b", **fields),
            "b": task(end=True),
            "handle": task(input={"err": "$.error.message", "step": "$.error.step"}, end=True),
            "handle_timeout": {"type": "succeed", "output": "timeout handled"},
        }
    )


def test_catch_all_writes_the_error_and_enters_the_next_state() -> None:
    sim = Simulator(catch_wf({"errors": ["ALL"], "next": "handle"}))
    sim.fail("a", "RETRYABLE", "down")
    assert sim.step("a").status == StepStatus.FAILED
    assert sim.step("a").caught
    assert sim.scheduled("handle").input == {"err": "down", "step": "a"}
    error = sim.state.frames[""].context["error"]  # type: ignore[index]
    assert error["error_class"] == "RETRYABLE"
    sim.complete("handle")
    assert sim.status == RunStatus.COMPLETED
    assert "b" not in sim.state.steps


def test_catch_by_class_and_custom_result_path() -> None:
    definition = catch_wf(
        {"errors": ["TIMEOUT"], "next": "handle_timeout", "result_path": "$.failure"},
        {"errors": ["PERMANENT", "VALIDATION"], "next": "handle"},
    )
    sim = Simulator(definition)
    sim.fail("a", "TIMEOUT", "slow")
    assert sim.output == "timeout handled"
    assert sim.state.frames[""].context["failure"]["message"] == "slow"  # type: ignore[index]

    sim = Simulator(definition)
    sim.fail("a", "VALIDATION", "bad")
    assert sim.scheduled("handle").input == {"err": "bad", "step": "a"}

    sim = Simulator(definition)
    sim.fail("a", "AUTH_FAILED", "who?")  # no catch names this class
    assert sim.status == RunStatus.FAILED


def test_catch_without_result_path_keeps_the_context() -> None:
    sim = Simulator(catch_wf({"next": "handle", "result_path": None}))
    sim.fail("a", "PERMANENT")
    assert "error" not in sim.state.frames[""].context  # type: ignore[operator]


def test_a_catch_naming_an_unknown_state_behaves_as_no_catch() -> None:
    sim = Simulator(catch_wf({"next": "nowhere"}))
    sim.fail("a", "PERMANENT", "x")
    assert sim.status == RunStatus.FAILED
    assert not sim.step("a").caught

    sim = Simulator(catch_wf({"next": "nowhere"}, {"next": "handle"}))
    sim.fail("a", "PERMANENT", "x")
    assert sim.pending_paths == ["handle"]


def test_catch_after_retries_are_exhausted() -> None:
    definition = catch_wf({"next": "handle"})
    definition["states"]["a"]["retry"] = {"max_attempts": 2}
    sim = Simulator(definition)
    sim.fail("a")
    assert sim.pending_commands == []  # the retry waits for its backoff
    sim.advance(1)
    sim.fail("a", message="again")
    assert sim.pending_paths == ["handle"]


# ---- run timeout --------------------------------------------------------------------------------


def test_run_timeout_fails_the_run_with_timeout() -> None:
    sim = Simulator(wf({"a": task(next="b"), "b": task(end=True)}, timeout="5m"))
    assert sim.timers == {"run:timeout": T0 + timedelta(minutes=5)}
    sim.complete("a")
    sim.advance(299)
    assert sim.status == RunStatus.RUNNING
    sim.advance(1)
    assert sim.status == RunStatus.FAILED
    assert sim.error is not None
    assert sim.error["error_class"] == "TIMEOUT"
    assert sim.step("b").status == StepStatus.CANCELLED
    assert not wanted(sim.state, "b", 1)
    before = snapshot(sim.state)
    sim.send(ev.StepCompleted(at=sim.clock.now(), path="b", attempt=1))
    assert snapshot(sim.state) == before


def test_run_timeout_after_the_run_ended_changes_nothing() -> None:
    sim = Simulator(wf({"a": task(end=True)}, timeout="5m"))
    sim.complete("a")
    before = snapshot(sim.state)
    sim.send(ev.TimerFired(at=T0 + timedelta(minutes=5), timer_id="run:timeout"))
    after = snapshot(sim.state)
    after["timers"] = before["timers"]
    assert after == before
    assert sim.status == RunStatus.COMPLETED


# ---- partial failure (EC-4) ---------------------------------------------------------------------


def test_after_a_failure_views_show_completed_failed_and_skipped_steps() -> None:
    sim = Simulator(
        wf(
            {
                "a": task(result_path="$.a", next="b"),
                "b": task(result_path="$.b", next="c"),
                "c": task(retry={"max_attempts": 1}, next="d"),
                "d": task(next="e"),
                "e": {"type": "succeed"},
            }
        ),
        {"k": 1},
    )
    assert views_by_id(sim)["d"]["status"] == "pending"
    sim.complete("a", {"id": 1})
    sim.complete("b", {"id": 2})
    sim.fail("c", "RETRYABLE", "down")
    assert sim.status == RunStatus.FAILED
    statuses = {v["id"]: v["status"] for v in sim.views()}
    assert statuses == {
        "a": "completed",
        "b": "completed",
        "c": "failed",
        "d": "skipped",
        "e": "skipped",
    }
    assert views_by_id(sim)["c"]["error"]["message"] == "down"
    assert sim.output == {"input": {"k": 1}, "a": {"id": 1}, "b": {"id": 2}}
    finish = sim.finish_command()
    assert finish is not None
    assert finish.output == sim.output


def test_while_running_the_current_step_shows_running() -> None:
    sim = Simulator(wf({"a": task(next="b"), "b": task(end=True)}))
    assert {v["id"]: v["status"] for v in sim.views()} == {"a": "running", "b": "pending"}


# ---- saga compensation --------------------------------------------------------------------------


def comp(action: str, **fields: Any) -> dict[str, Any]:
    return {"action": action, **fields}


def saga_wf(**last: Any) -> dict[str, Any]:
    return wf(
        {
            "reserve": task(
                result_path="$.reservation",
                next="plain",
                compensation=comp(
                    "release", input={"id": "$.reservation.id", "own": "$.result.id"}
                ),
            ),
            "plain": task(next="p"),  # no compensation: nothing to undo
            "p": {
                "type": "parallel",
                "branches": [
                    branch("left", {"l": task(compensation=comp("undo_l"), end=True)}),
                    branch("right", {"r": task(compensation=comp("undo_r"), end=True)}),
                ],
                "next": "charge",
            },
            "charge": task(retry={"max_attempts": 1}, compensation=comp("refund"), **last),
        }
    )


def compensation_order(sim: Simulator) -> list[str]:
    order = []
    while sim.status == RunStatus.COMPENSATING:
        running = sim.pending_commands
        assert len(running) == 1, "compensations run one at a time"
        [command] = running
        assert isinstance(command, cmd.ScheduleStep)
        assert command.compensation
        order.append(command.path)
        sim.complete(command.path, "undone")
    return order


def test_compensations_run_in_reverse_order_of_completion() -> None:
    sim = Simulator(saga_wf(end=True))
    sim.complete("reserve", {"id": "R1"})
    sim.complete("plain")
    sim.complete("p[right].r")  # completes before its sibling
    sim.complete("p[left].l")
    sim.fail("charge", "PERMANENT", "card declined")
    assert sim.status == RunStatus.COMPENSATING
    first = sim.pending_commands[0]
    assert isinstance(first, cmd.ScheduleStep)
    assert first.action == "undo_l"
    assert first.idempotency_key == "run-1:p[left].l:0:compensate"
    order = compensation_order(sim)
    assert order == ["p[left].l#compensate", "p[right].r#compensate", "reserve#compensate"]
    release = next(c for c in schedules(sim) if c.path == "reserve#compensate")
    assert release.input == {"id": "R1", "own": "R1"}
    assert sim.status == RunStatus.FAILED
    assert sim.error is not None
    assert sim.error["message"] == "card declined"
    assert sim.step("reserve").status == StepStatus.COMPENSATED
    assert sim.step("plain").status == StepStatus.COMPLETED
    assert sim.step("charge").status == StepStatus.FAILED  # a failed step is not undone
    views = views_by_id(sim)
    assert views["reserve"]["compensation"] == {"status": "completed", "attempts": 1, "error": None}
    assert "compensation" not in views["plain"]
    assert sim.finished


def test_each_compensation_is_retried_with_the_compensation_policy() -> None:
    sim = Simulator(saga_wf(end=True))
    sim.complete("reserve", {"id": "R1"})
    sim.complete("plain")
    sim.complete("p[left].l")
    sim.complete("p[right].r")
    sim.fail("charge", "PERMANENT")
    assert sim.pending_paths == ["p[right].r#compensate"]
    for attempt in range(1, COMPENSATION_RETRY.max_attempts):
        sim.fail("p[right].r#compensate", "RETRYABLE", f"try {attempt}")
        assert sim.step("p[right].r").compensation_error["message"] == f"try {attempt}"
        delay = COMPENSATION_RETRY.delay(attempt)
        assert schedules(sim)[-1].not_before == sim.clock.now() + timedelta(seconds=delay)
        assert schedules(sim)[-1].attempt == attempt + 1
        assert schedules(sim)[-1].idempotency_key == "run-1:p[right].r:0:compensate"
        sim.advance(delay)
    sim.complete("p[right].r#compensate")
    assert sim.step("p[right].r").compensation_attempt == COMPENSATION_RETRY.max_attempts
    assert compensation_order(sim) == ["p[left].l#compensate", "reserve#compensate"]
    assert sim.status == RunStatus.FAILED


def test_a_compensation_that_finally_fails_leaves_the_run_compensation_failed() -> None:
    sim = Simulator(saga_wf(end=True))
    sim.complete("reserve", {"id": "R1"})
    sim.complete("plain")
    sim.complete("p[left].l")
    sim.complete("p[right].r")
    sim.fail("charge", "PERMANENT", "card declined")
    sim.complete("p[right].r#compensate")
    for _ in range(COMPENSATION_RETRY.max_attempts):
        sim.advance(60)
        sim.fail("p[left].l#compensate", "RETRYABLE", "undo down")
    assert sim.status == RunStatus.COMPENSATION_FAILED
    assert sim.error is not None
    details = sim.error["details"]
    assert details["compensation_of"] == "p[left].l"
    assert details["compensation_error"]["message"] == "undo down"
    assert details["run_error"]["message"] == "card declined"
    assert "p[left].l" in sim.error["message"]
    assert sim.step("p[left].l").compensation_status == "failed"
    assert sim.step("reserve").compensation_status is None  # the saga stops there
    assert sim.pending_commands == []
    finish = sim.finish_command()
    assert finish is not None
    assert finish.status == RunStatus.COMPENSATION_FAILED


def test_a_permanent_compensation_failure_is_not_retried() -> None:
    sim = Simulator(
        wf({"a": task(compensation=comp("undo"), next="boom"), "boom": {"type": "fail"}})
    )
    sim.complete("a")
    sim.fail("a#compensate", "PERMANENT")
    assert sim.status == RunStatus.COMPENSATION_FAILED
    assert sim.step("a").compensation_attempt == 1


def test_a_compensation_may_have_its_own_retry_policy() -> None:
    sim = Simulator(
        wf(
            {
                "a": task(
                    compensation=comp("undo", retry={"max_attempts": 2, "initial_interval": 9}),
                    next="boom",
                ),
                "boom": {"type": "fail"},
            }
        )
    )
    sim.complete("a")
    sim.fail("a#compensate")
    assert schedules(sim)[-1].not_before == T0 + timedelta(seconds=9)
    sim.advance(9)
    sim.fail("a#compensate")
    assert sim.status == RunStatus.COMPENSATION_FAILED


def test_cancel_runs_compensations_and_ends_cancelled() -> None:
    sim = Simulator(saga_wf(end=True))
    sim.complete("reserve", {"id": "R1"})
    sim.complete("plain")
    sim.complete("p[left].l")
    sim.cancel("customer changed their mind")
    assert sim.status == RunStatus.COMPENSATING
    assert sim.step("p[right].r").status == StepStatus.CANCELLED
    assert not wanted(sim.state, "p[right].r", 1)
    assert compensation_order(sim) == ["p[left].l#compensate", "reserve#compensate"]
    assert sim.status == RunStatus.CANCELLED
    assert sim.error is not None
    assert "customer changed their mind" in sim.error["message"]


def test_cancel_without_compensations_ends_cancelled_at_once() -> None:
    sim = Simulator(wf({"a": task(end=True)}))
    sim.cancel()
    assert sim.status == RunStatus.CANCELLED
    assert sim.step("a").status == StepStatus.CANCELLED
    assert sim.pending_commands == []
    assert sim.finished


def test_cancel_after_the_end_or_twice_changes_nothing() -> None:
    sim = Simulator(wf({"a": task(end=True)}))
    sim.complete("a")
    before = snapshot(sim.state)
    sim.cancel()
    assert snapshot(sim.state) == before

    sim = Simulator(saga_wf(end=True))
    sim.complete("reserve", {"id": "R1"})
    sim.cancel("first")
    before = snapshot(sim.state)
    sim.cancel("second")
    assert snapshot(sim.state) == before


def test_a_compensation_failure_while_cancelling_says_so() -> None:
    sim = Simulator(wf({"a": task(compensation=comp("undo"), next="b"), "b": task(end=True)}))
    sim.complete("a")
    sim.cancel()
    sim.fail("a#compensate", "PERMANENT", "cannot undo")
    assert sim.status == RunStatus.COMPENSATION_FAILED
    assert sim.error is not None
    assert "been cancelled" in sim.error["message"]


def test_compensation_input_of_a_branch_step_sees_its_own_branch() -> None:
    def charging(name: str) -> dict[str, Any]:
        return branch(
            name,
            {
                "charge": task(
                    result_path="$.charge",
                    end=True,
                    compensation=comp("refund", input={"id": "$.charge.id"}),
                )
            },
        )

    sim = Simulator(
        wf(
            {
                "p": {
                    "type": "parallel",
                    "branches": [charging("b1"), charging("b2")],
                    "next": "boom",
                },
                "boom": {"type": "fail"},
            }
        )
    )
    sim.complete("p[b1].charge", {"id": "c1"})
    sim.complete("p[b2].charge", {"id": "c2"})
    sim.complete("p[b2].charge#compensate")
    assert sim.scheduled("p[b1].charge#compensate").input == {"id": "c1"}


def test_compensation_input_of_an_iteration_step_sees_its_iteration() -> None:
    sim = Simulator(
        wf(
            {
                "each": {
                    "type": "foreach",
                    "items": ["x", "y"],
                    "iterator": branch(
                        "b",
                        {
                            "charge": task(
                                result_path="$.charge",
                                end=True,
                                compensation=comp(
                                    "refund", input={"id": "$.charge.id", "item": "{{ item }}"}
                                ),
                            )
                        },
                    ),
                    "next": "boom",
                },
                "boom": {"type": "fail"},
            }
        )
    )
    sim.complete("each[0].charge", {"id": "c0"})
    sim.complete("each[1].charge", {"id": "c1"})
    assert sim.scheduled("each[1].charge#compensate").input == {"id": "c1", "item": "y"}


# ---- stale and duplicate outcomes ---------------------------------------------------------------


def test_an_outcome_for_the_wrong_attempt_changes_nothing() -> None:
    sim = Simulator(retry_wf(max_attempts=3))
    sim.fail("a")
    sim.advance(1)
    assert sim.scheduled("a").attempt == 2
    before = snapshot(sim.state)
    sim.send(ev.StepCompleted(at=sim.clock.now(), path="a", attempt=1, output="stale"))
    sim.send(ev.StepFailed(at=sim.clock.now(), path="a", attempt=1, error={"message": "old"}))
    sim.send(ev.StepCompleted(at=sim.clock.now(), path="a", attempt=3, output="future"))
    assert snapshot(sim.state) == before


def test_an_outcome_after_cancel_changes_nothing() -> None:
    sim = Simulator(wf({"a": task(end=True)}))
    sim.cancel()
    before = snapshot(sim.state)
    sim.send(ev.StepCompleted(at=sim.clock.now(), path="a", attempt=1, output="late"))
    sim.send(ev.StepFailed(at=sim.clock.now(), path="a", attempt=1, error={"message": "x"}))
    assert snapshot(sim.state) == before


def test_an_outcome_delivered_twice_counts_once() -> None:
    sim = Simulator(wf({"a": task(result_path="$.a", next="b"), "b": task(end=True)}))
    sim.complete("a", "first")
    before = snapshot(sim.state)
    sim.send(ev.StepCompleted(at=sim.clock.now(), path="a", attempt=1, output="second"))
    sim.send(ev.StepFailed(at=sim.clock.now(), path="a", attempt=1, error={"message": "x"}))
    sim.send(ev.StepScheduled(at=sim.clock.now(), path="a", attempt=1, idempotency_key="k"))
    assert snapshot(sim.state) == before
    assert sim.output is None
    assert sim.state.frames[""].context["a"] == "first"  # type: ignore[index]


def test_duplicate_timer_child_and_compensation_outcomes_count_once() -> None:
    sim = Simulator(
        wf(
            {
                "w": {"type": "wait", "duration": 5, "next": "sub"},
                "sub": {"type": "subflow", "workflow": "c", "next": "a"},
                "a": task(compensation=comp("undo"), next="boom"),
                "boom": {"type": "fail"},
            }
        )
    )
    sim.advance(5)
    before = snapshot(sim.state)
    sim.send(ev.TimerFired(at=sim.clock.now(), timer_id="w:0"))
    assert snapshot(sim.state) == before
    sim.child_finished("sub", "completed", 1)
    before = snapshot(sim.state)
    sim.send(
        ev.ChildFinished(
            at=sim.clock.now(), path="sub", child_run_id="run-1.sub.0", status="completed", output=2
        )
    )
    sim.send(
        ev.ChildFinished(
            at=sim.clock.now(),
            path="sub",
            child_run_id="someone-else",
            status="completed",
            output=3,
        )
    )
    assert snapshot(sim.state) == before
    sim.complete("a")
    assert sim.status == RunStatus.COMPENSATING
    sim.complete("a#compensate")
    before = snapshot(sim.state)
    sim.send(ev.StepCompleted(at=sim.clock.now(), path="a#compensate", attempt=1))
    sim.send(
        ev.StepFailed(at=sim.clock.now(), path="a#compensate", attempt=1, error={"message": "x"})
    )
    assert snapshot(sim.state) == before
    assert sim.status == RunStatus.FAILED


def test_a_duplicate_outcome_from_an_earlier_loop_visit_changes_nothing() -> None:
    sim = Simulator(
        wf(
            {
                "a": task(result_path="$.a", next="again"),
                "again": {
                    "type": "choice",
                    "choices": [{"when": "context.a < 2", "next": "a"}],
                    "default": "done",
                },
                "done": {"type": "succeed"},
            }
        )
    )
    sim.complete("a", 1)
    assert sim.step("a").iteration == 1
    before = snapshot(sim.state)
    sim.send(ev.StepCompleted(at=sim.clock.now(), path="a", attempt=1, output=1))
    assert snapshot(sim.state) == before


def test_wanted() -> None:
    sim = Simulator(
        wf(
            {
                "a": task(compensation=comp("undo"), next="b"),
                "b": task(retry={"max_attempts": 1}, end=True),
            }
        )
    )
    assert wanted(sim.state, "a", 1)
    assert not wanted(sim.state, "a", 2)
    assert not wanted(sim.state, "nope", 1)
    assert not wanted(sim.state, "a#compensate", 1)
    sim.complete("a")
    assert not wanted(sim.state, "a", 1)
    assert wanted(sim.state, "b", 1)
    sim.fail("b", "PERMANENT")
    assert not wanted(sim.state, "b", 1)
    assert wanted(sim.state, "a#compensate", 1)
    assert not wanted(sim.state, "a#compensate", 2)
    sim.complete("a#compensate")
    assert not wanted(sim.state, "a#compensate", 1)


# ---- guards: depends_on and when ----------------------------------------------------------------


def test_depends_on_skips_a_state_whose_dependency_did_not_complete() -> None:
    definition = wf(
        {
            "a": task(retry={"max_attempts": 1}, catch=[{"next": "b"}], next="b"),
            "b": task(depends_on=["a"], next="c"),
            "c": task(depends_on=["never"], next="d"),
            "d": task(end=True),
        }
    )
    sim = Simulator(definition)
    sim.fail("a", "PERMANENT")
    assert sim.step("b").status == StepStatus.SKIPPED
    assert sim.step("b").output == {"skipped": "a did not complete"}
    assert sim.step("c").status == StepStatus.SKIPPED
    assert sim.pending_paths == ["d"]

    sim = Simulator(definition)
    sim.complete("a")
    assert sim.pending_paths == ["b"]


def test_when_guard_false_skips_the_state() -> None:
    definition = wf(
        {
            "a": task(when="input.vip", next="b"),
            "b": task(when={"field": "input.n", "operator": "greater_than", "value": 1}, end=True),
        }
    )
    sim = Simulator(definition, {"vip": False, "n": 2})
    assert sim.step("a").status == StepStatus.SKIPPED
    assert sim.pending_paths == ["b"]
    sim = Simulator(definition, {"vip": True, "n": 0})
    assert sim.pending_paths == ["a"]
    sim.complete("a")
    assert sim.step("b").status == StepStatus.SKIPPED
    assert sim.status == RunStatus.COMPLETED


def test_a_when_guard_that_cannot_be_evaluated_fails_the_step() -> None:
    sim = Simulator(wf({"a": task(when="input.n > 'x'", end=True)}), {"n": 1})
    assert sim.status == RunStatus.FAILED
    assert sim.step("a").status == StepStatus.FAILED
    assert sim.error is not None
    assert sim.error["error_class"] == "VALIDATION"
    assert "no operator" in sim.error["message"]


# ---- idempotency keys ---------------------------------------------------------------------------


def test_idempotency_keys_are_stable_across_attempts_and_distinct_across_iterations() -> None:
    sim = Simulator(
        wf(
            {
                "a": task(result_path="$.n", next="again"),
                "again": {
                    "type": "choice",
                    "choices": [{"when": "context.n < 2", "next": "a"}],
                    "default": "each",
                },
                "each": {
                    "type": "foreach",
                    "items": [1, 2],
                    "iterator": branch("b", {"s": task(end=True)}),
                    "end": True,
                },
            }
        ),
        run_id="r-9",
    )
    sim.fail("a")
    sim.advance(1)
    sim.complete("a", 1)
    sim.fail("a")
    sim.advance(1)
    sim.complete("a", 2)
    keys = [(c.path, c.visit_attempt, c.idempotency_key) for c in schedules(sim)]
    # the attempt within a visit restarts at 1 (what activities see); the key is stable
    # across attempts and distinct per loop visit
    assert keys[:4] == [
        ("a", 1, "r-9:a:0"),
        ("a", 2, "r-9:a:0"),
        ("a", 1, "r-9:a:1"),
        ("a", 2, "r-9:a:1"),
    ]
    # the recorded attempt numbers keep rising, so a late outcome of visit 0 is stale
    assert [c.attempt for c in schedules(sim)][:4] == [1, 2, 3, 4]
    assert {k for _, _, k in keys[4:]} == {"r-9:each[0].s:0", "r-9:each[1].s:0"}
    scheduled = [e for e in sim.events if isinstance(e, ev.StepScheduled)]
    assert [e.idempotency_key for e in scheduled] == [k for _, _, k in keys]


# ---- state as JSON ------------------------------------------------------------------------------


def test_state_round_trips_through_json_at_every_point_of_a_run() -> None:
    sim = Simulator(saga_wf(end=True), {"x": 1})
    checkpoints: list[RunState] = []

    def check() -> None:
        data = json.loads(json.dumps(sim.state.to_dict()))
        restored = RunState.from_dict(data)
        assert json.loads(json.dumps(restored.to_dict())) == data
        # the stored form (to_json: frames and steps keyed by id and path) reads back alike
        stored = RunState.from_dict(json.loads(sim.state.to_json()))
        assert stored == sim.state
        assert list(stored.steps) == list(sim.state.steps)
        assert restored.status == sim.state.status
        assert {p: r.status for p, r in restored.steps.items()} == {
            p: r.status for p, r in sim.state.steps.items()
        }
        checkpoints.append(restored)

    check()
    sim.complete("reserve", {"id": "R"})
    check()
    sim.complete("plain")
    sim.complete("p[left].l")
    check()
    sim.fail("p[right].r")
    check()
    sim.advance(1)
    sim.complete("p[right].r")
    sim.fail("charge", "PERMANENT")
    check()
    sim.complete(sim.pending_paths[0])
    check()
    assert len(checkpoints) == 6


def test_a_snapshot_plus_the_rest_of_the_history_gives_the_live_state() -> None:
    sim = Simulator(saga_wf(end=True))
    sim.complete("reserve", {"id": "R"})
    sim.complete("plain")
    sim.complete("p[left].l")
    sim.fail("p[right].r")
    sim.advance(1)
    sim.complete("p[right].r")
    sim.fail("charge", "PERMANENT")
    sim.run_to_end(lambda c: "ok")
    assert sim.status == RunStatus.FAILED
    for cut in range(1, len(sim.events)):
        state = replay(sim.program, sim.events[:cut])
        state = RunState.from_dict(json.loads(state.to_json()))
        for event in sim.events[cut:]:
            state = apply(sim.program, state, event)
        assert snapshot(state) == snapshot(sim.state), f"cut at event {cut}"


# ---- run_to_end ---------------------------------------------------------------------------------


def test_run_to_end_drives_every_kind_of_work() -> None:
    attempts: dict[str, int] = {}

    def handler(command: cmd.Command) -> Any:
        if isinstance(command, cmd.StartChild):
            return {"child": command.child_run_id}
        assert isinstance(command, cmd.ScheduleStep)
        attempts[command.path] = command.attempt
        if command.path == "flaky" and command.attempt < 3:
            raise StepError("flaky", error_class=ErrorClass.RETRYABLE)
        return {"path": command.path}

    sim = Simulator(
        wf(
            {
                "flaky": task(next="w"),
                "w": {"type": "wait", "duration": "1h", "next": "sub"},
                "sub": {"type": "subflow", "workflow": "c", "result_path": "$.sub", "next": "each"},
                "each": {
                    "type": "foreach",
                    "items": [1, 2, 3],
                    "concurrency": 2,
                    "iterator": branch("b", {"s": task(end=True)}),
                    "result_path": "$.each",
                    "end": True,
                },
            }
        ),
    )
    sim.run_to_end(handler)
    assert sim.status == RunStatus.COMPLETED
    assert attempts["flaky"] == 3
    assert sim.output["sub"] == {"child": "run-1.sub.0"}
    assert sim.output["each"] == [{"path": f"each[{i}].s"} for i in range(3)]
    assert sim.clock.now() > T0 + timedelta(hours=1)
    assert snapshot(replay(sim.program, sim.events)) == snapshot(sim.state)


def test_run_to_end_stops_when_the_run_waits_for_a_signal() -> None:
    sim = Simulator(event_wf())
    sim.run_to_end(lambda c: None)
    assert sim.status == RunStatus.RUNNING
    assert sim.step("w").status == StepStatus.WAITING
    sim.signal("approved", {"by": "ada"})
    sim.run_to_end(lambda c: None)
    assert sim.status == RunStatus.COMPLETED


def test_an_unknown_error_class_is_treated_as_permanent() -> None:
    sim = Simulator(retry_wf(max_attempts=3))
    sim.send(
        ev.StepFailed(
            at=sim.clock.now(),
            path="a",
            attempt=1,
            error={"message": "odd", "error_class": "TEAPOT"},
        )
    )
    assert sim.status == RunStatus.FAILED


def test_to_json_falls_back_for_integers_beyond_64_bits_and_refuses_what_is_not_json() -> None:
    sim = Simulator(saga_wf(end=True), {"big": 2**70})
    assert json.loads(sim.state.to_json())["input"] == {"big": 2**70}
    assert RunState.from_dict(json.loads(sim.state.to_json())) == sim.state
    sim.state.input = {"x": object()}
    with pytest.raises(TypeError):
        sim.state.to_json()
