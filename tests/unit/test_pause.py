"""Pausing and resuming a run in the pure engine (RunSuspended, RunResumed).

A paused run asks for no new work: steps already with the runtime finish and are
recorded, timers fire, signals arrive, and whatever they make ready waits for the resume.
A run created paused (``RunStarted.suspended``) enters nothing until it is resumed.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from legato.engine import commands as cmd
from legato.engine import events as ev
from legato.engine.machine import apply, decide, pause_refusal, resume_refusal
from legato.engine.state import RunState, RunStatus, StepStatus
from legato.engine.views import suspension
from legato.testing import DEFAULT_START as T0
from legato.testing import Simulator, golden_dump, golden_load, replay


def task(**fields: Any) -> dict[str, Any]:
    return {"type": "task", "action": "noop", **fields}


def wf(states: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "wf", "start_at": next(iter(states)), "states": states, **fields}


def as_json(state: RunState) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(state.to_dict()))
    return data


def new_commands(sim: Simulator, since: int) -> list[cmd.Command]:
    return sim.commands[since:]


def views_by_id(sim: Simulator) -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in sim.views()}


THREE = wf({"a": task(next="b"), "b": task(next="c"), "c": task(end=True)})


def test_a_paused_run_finishes_the_step_in_flight_and_schedules_nothing_new() -> None:
    sim = Simulator(THREE)
    sim.complete("a")
    assert sim.pending_paths == ["b"]
    sim.pause("maintenance")
    assert sim.state.suspended
    assert sim.state.suspended_reason == "maintenance"
    assert suspension(sim.state) == "paused"
    # b was already with the runtime: it still runs, and its outcome is recorded
    assert sim.pending_paths == ["b"]
    mark = len(sim.commands)
    sim.complete("b", {"b": 1})
    assert sim.step("b").status == StepStatus.COMPLETED
    assert sim.step("c").status == StepStatus.READY  # entered, but not asked for
    assert new_commands(sim, mark) == []
    assert decide(sim.program, sim.state) == []
    assert sim.pending_paths == []
    assert views_by_id(sim)["c"]["status"] == StepStatus.READY

    sim.resume()
    assert not sim.state.suspended
    assert suspension(sim.state) is None
    [scheduled] = new_commands(sim, mark)
    assert isinstance(scheduled, cmd.ScheduleStep)
    assert scheduled.path == "c"
    assert scheduled.attempt == 1
    sim.complete("c")
    assert sim.status == RunStatus.COMPLETED
    assert sim.finished


def test_a_timer_that_fires_while_paused_is_recorded_and_what_follows_waits() -> None:
    sim = Simulator(wf({"nap": {"type": "wait", "duration": "5s", "next": "b"}, "b": task()}))
    assert "nap:0" in sim.timers
    sim.pause()
    mark = len(sim.commands)
    assert sim.advance(6) == ["nap:0"]
    assert sim.step("nap").status == StepStatus.COMPLETED
    assert sim.step("b").status == StepStatus.READY
    assert new_commands(sim, mark) == []
    sim.resume()
    assert sim.pending_paths == ["b"]


def test_a_wait_entered_while_paused_starts_its_timer_on_resume_from_when_it_was_entered() -> None:
    sim = Simulator(wf({"a": task(next="nap"), "nap": {"type": "wait", "duration": "5s"}}))
    sim.pause()
    sim.complete("a")
    entered = sim.clock.now()
    assert sim.step("nap").status == StepStatus.WAITING
    assert sim.timers == {}  # not started while paused
    sim.advance(2)
    sim.resume()
    assert sim.timers == {"nap:0": entered + timedelta(seconds=5)}
    sim.advance(3)
    assert sim.status == RunStatus.COMPLETED


def test_a_signal_while_paused_completes_the_wait_and_the_next_step_waits() -> None:
    definition = wf(
        {
            "ask": {"type": "wait", "event": {"name": "approved"}, "next": "record"},
            "record": task(input={"by": "$.approval.by"}),
        }
    )
    definition["states"]["ask"]["result_path"] = "$.approval"
    sim = Simulator(definition)
    sim.pause()
    sim.signal("approved", {"by": "ada"})
    assert sim.step("ask").status == StepStatus.COMPLETED
    assert sim.step("record").status == StepStatus.READY
    assert sim.pending_paths == []
    sim.resume()
    assert sim.scheduled("record").input == {"by": "ada"}


def test_a_step_that_fails_while_paused_is_retried_only_after_the_resume() -> None:
    sim = Simulator(wf({"a": task(retry={"max_attempts": 3, "initial_interval": "2s"})}))
    sim.pause()
    sim.fail("a", "RETRYABLE")
    assert sim.step("a").status == StepStatus.RETRYING
    sim.advance(10)
    assert sim.pending_paths == []
    sim.resume()
    retry = sim.scheduled("a")
    assert retry.attempt == 2
    # asked for with the instant its backoff ended, which has passed: due at once
    assert retry.not_before == T0 + timedelta(seconds=2)


def test_cancelling_a_paused_run_ends_the_pause_and_runs_the_compensations() -> None:
    sim = Simulator(
        wf(
            {
                "book": task(compensation={"action": "unbook"}, next="confirm"),
                "confirm": {"type": "wait", "event": {"name": "confirmed"}},
            }
        )
    )
    sim.complete("book")
    sim.pause()
    sim.cancel("changed my mind")
    assert sim.status == RunStatus.COMPENSATING
    assert not sim.state.suspended
    assert sim.pending_paths == ["book#compensate"]
    sim.complete("book#compensate")
    assert sim.status == RunStatus.CANCELLED
    assert sim.finished


def test_a_paused_run_whose_last_step_finishes_completes_and_is_no_longer_paused() -> None:
    sim = Simulator(wf({"only": task()}))
    sim.pause()
    sim.complete("only", {"done": True})
    assert sim.status == RunStatus.COMPLETED
    assert sim.finished  # RunFinished is asked for and recorded
    assert not sim.state.suspended


def test_a_paused_run_whose_step_fails_for_good_fails() -> None:
    sim = Simulator(wf({"only": task(retry={"max_attempts": 1})}))
    sim.pause()
    sim.fail("only", "PERMANENT", "declined")
    assert sim.status == RunStatus.FAILED
    assert sim.finished
    assert not sim.state.suspended


def test_the_run_timeout_still_fires_while_paused() -> None:
    sim = Simulator(wf({"ask": {"type": "wait", "event": {"name": "go"}}}, timeout="10s"))
    sim.pause()
    sim.advance(11)
    assert sim.status == RunStatus.FAILED
    assert sim.error is not None
    assert sim.error["error_class"] == "TIMEOUT"
    assert not sim.state.suspended


def test_the_child_of_a_step_cancelled_while_paused_is_still_cancelled() -> None:
    definition = wf(
        {
            "p": {
                "type": "parallel",
                "join": "any",
                "branches": [
                    {"name": "quick", "start_at": "q", "states": {"q": task(end=True)}},
                    {
                        "name": "slow",
                        "start_at": "s",
                        "states": {"s": {"type": "subflow", "workflow": "child", "end": True}},
                    },
                ],
                "next": "after",
            },
            "after": task(),
        }
    )
    sim = Simulator(definition)
    assert sim.step("p[slow].s").child_run_id == "run-1.p[slow].s.0"
    sim.pause()
    mark = len(sim.commands)
    sim.complete("p[quick].q")
    # the join cancelled the slow branch: stopping its child is not new work
    assert new_commands(sim, mark) == [
        cmd.CancelChild(path="p[slow].s", child_run_id="run-1.p[slow].s.0")
    ]
    assert sim.step("after").status == StepStatus.READY
    assert sim.pending_paths == []
    sim.resume()
    assert sim.pending_paths == ["after"]


# ---- refusals ---------------------------------------------------------------------------------


def test_what_cannot_be_paused_or_resumed_says_why() -> None:
    sim = Simulator(THREE)
    assert pause_refusal(sim.state) is None
    assert resume_refusal(sim.state) == "it is not paused (it is running); pause it first"
    sim.pause()
    assert pause_refusal(sim.state) == "it is already paused; resume it to go on"
    assert resume_refusal(sim.state) is None
    sim.resume()
    for path in ("a", "b", "c"):
        sim.complete(path)
    assert pause_refusal(sim.state) == (
        "it has already ended (completed); there is nothing to pause"
    )
    assert resume_refusal(sim.state) == (
        "it has already ended (completed); only a paused run can be resumed"
    )

    saga = Simulator(wf({"a": task(compensation={"action": "undo"}, next="b"), "b": task()}))
    saga.complete("a")
    saga.cancel()
    assert saga.status == RunStatus.COMPENSATING
    refusal = pause_refusal(saga.state)
    assert refusal is not None
    assert refusal.startswith("it is compensating")


def test_a_refused_pause_or_resume_that_is_recorded_anyway_changes_nothing() -> None:
    sim = Simulator(THREE)
    sim.pause("first")
    before = as_json(sim.state)
    sim.pause("second")  # already paused
    after = as_json(sim.state)
    assert after.pop("seq") == before.pop("seq") + 1
    assert after == before

    sim.resume()
    before = as_json(sim.state)
    sim.resume()  # not paused
    after = as_json(sim.state)
    assert after.pop("seq") == before.pop("seq") + 1
    assert after == before


# ---- created paused -----------------------------------------------------------------------------


def test_a_run_created_paused_enters_nothing_until_it_is_resumed() -> None:
    definition = wf(
        {
            "ask": {"type": "wait", "event": {"name": "go"}, "next": "b"},
            "b": task(input={"n": "$.input.n"}),
        },
        timeout="1m",
    )
    sim = Simulator(definition, {"n": 7}, suspended=True)
    assert sim.state.suspended
    assert sim.state.awaiting_start
    assert suspension(sim.state) == "created"
    assert sim.state.steps == {}
    assert sim.state.started_at is None
    assert sim.commands == []
    assert sim.timers == {}  # not even the run's timeout
    assert [v["status"] for v in sim.views()] == ["pending", "pending"]
    assert pause_refusal(sim.state) == (
        "it was created paused and has not started yet; resume it to start it"
    )
    sim.signal("go", {"early": True})  # kept for the run, as before any wait
    sim.advance(120)  # no timeout: it has not started
    assert sim.status == RunStatus.RUNNING

    sim.resume()
    started = sim.clock.now()
    assert not sim.state.suspended
    assert not sim.state.awaiting_start
    assert sim.state.started_at == started.isoformat()
    assert sim.timers == {"run:timeout": started + timedelta(minutes=1)}
    # the signal that came first was delivered when the wait was entered
    assert sim.step("ask").status == StepStatus.COMPLETED
    assert sim.scheduled("b").input == {"n": 7}


def test_cancelling_a_run_created_paused_cancels_it() -> None:
    sim = Simulator(THREE, suspended=True)
    sim.cancel()
    assert sim.status == RunStatus.CANCELLED
    assert sim.finished
    assert not sim.state.suspended
    assert [v["status"] for v in sim.views()] == ["skipped"] * 3


# ---- events, snapshots, replay ----------------------------------------------------------------


def test_the_events_round_trip_through_the_store_format() -> None:
    events: list[ev.Event] = [
        ev.RunStarted(at=T0, run_id="r", workflow="wf", version="1", suspended=True),
        ev.RunSuspended(at=T0, reason="maintenance"),
        ev.RunResumed(at=T0, reason="done"),
    ]
    dumped = golden_dump(events)
    assert dumped[0]["payload"]["suspended"] is True
    assert dumped[1] == {
        "type": "RunSuspended",
        "at": T0.isoformat(),
        "payload": {"reason": "maintenance"},
    }
    assert golden_load(dumped) == events
    # a run started as before carries no `suspended` key: older histories hash the same
    plain = ev.RunStarted(at=T0, run_id="r", workflow="wf", version="1")
    assert "suspended" not in plain.payload()


def test_the_snapshot_keeps_the_pause_and_an_older_one_loads_unpaused() -> None:
    sim = Simulator(THREE)
    sim.pause("why")
    data = as_json(sim.state)
    assert (data["suspended"], data["suspended_reason"], data["awaiting_start"]) == (
        True,
        "why",
        False,
    )
    assert as_json(RunState.from_dict(data)) == data
    for key in ("suspended", "suspended_reason", "awaiting_start"):
        del data[key]
    older = RunState.from_dict(data)
    assert not older.suspended
    assert older.suspended_reason is None
    assert not older.awaiting_start


@pytest.mark.parametrize("created_paused", [False, True])
def test_replaying_a_history_with_pauses_equals_the_live_state(created_paused: bool) -> None:
    sim = Simulator(
        wf(
            {
                "a": task(next="nap"),
                "nap": {"type": "wait", "duration": "3s", "next": "b"},
                "b": task(),
            }
        ),
        suspended=created_paused,
    )
    if created_paused:
        sim.resume()
    sim.pause()
    sim.complete("a")
    sim.resume()
    sim.pause()
    sim.advance(5)
    sim.resume()
    sim.complete("b")
    assert sim.finished
    assert as_json(replay(sim.program, sim.events)) == as_json(sim.state)
    restored: RunState | None = None
    for recorded in sim.events:
        restored = RunState.from_dict(as_json(apply(sim.program, restored, recorded)))
    assert restored is not None
    assert as_json(restored) == as_json(sim.state)
