"""Record the golden histories in this folder (run by hand: ``python tests/golden/record.py``).

Each scenario drives a representative run with :class:`legato.testing.Simulator` and stores
the definition, the input, the full event history and a summary of the final state.  A file
that exists is never rewritten: a golden history is a promise that an old log keeps replaying
to the same state.  To record a new behaviour, add a new scenario with a new name; never edit
or delete a recorded file (``tests/unit/test_golden.py`` replays every one).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from legato.testing import Simulator, golden_dump, state_summary

HERE = Path(__file__).parent


def task(**fields: Any) -> dict[str, Any]:
    return {"type": "task", "action": "noop", **fields}


def sequential_with_retries() -> tuple[dict[str, Any], Any, Simulator]:
    """Three tasks in a row; the charge fails twice (RETRYABLE, TIMEOUT) and backs off, the
    notification is RATE_LIMITED with retry_after; succeed with an output.
    """

    definition = {
        "name": "golden-sequential",
        "start_at": "validate",
        "states": {
            "validate": task(
                input={"order": "$.input.order"}, result_path="$.valid", next="charge"
            ),
            "charge": task(
                input={"amount": "{{ input.amount * 100 }}"},
                retry={"max_attempts": 4, "initial_interval": "2s", "backoff_coefficient": 3},
                output={"$.charge_id": "$.result.id"},
                next="notify",
            ),
            "notify": task(
                input={"text": "charged {{ context.charge_id }}"},
                retry={"max_attempts": 3},
                next="done",
            ),
            "done": {"type": "succeed", "output": {"charge": "$.charge_id"}},
        },
    }
    run_input = {"order": "A-1", "amount": 12}
    sim = Simulator(definition, run_input, run_id="golden-seq")
    sim.advance(1)
    sim.complete("validate", {"ok": True})
    sim.advance(1)
    sim.fail("charge", "RETRYABLE", "gateway timeout")
    sim.advance(2)
    sim.fail("charge", "TIMEOUT", "slow")
    sim.advance(6)
    sim.complete("charge", {"id": "ch_1"})
    sim.advance(1)
    sim.fail("notify", "RATE_LIMITED", "slow down", retry_after=30)
    sim.advance(30)
    sim.complete("notify", {"sent": True})
    return definition, run_input, sim


def parallel() -> tuple[dict[str, Any], Any, Simulator]:
    """Three branches joined with `all`, finishing out of definition order; one branch has two
    steps.
    """

    definition = {
        "name": "golden-parallel",
        "start_at": "checks",
        "states": {
            "checks": {
                "type": "parallel",
                "branches": [
                    {
                        "name": "credit",
                        "start_at": "score",
                        "states": {
                            "score": task(result_path="$.score", next="grade"),
                            "grade": task(
                                input={"score": "$.score"}, result_path="$.grade", end=True
                            ),
                        },
                    },
                    {
                        "name": "identity",
                        "start_at": "kyc",
                        "states": {
                            "kyc": task(result_path="$.kyc", end=True),
                        },
                    },
                    {
                        "name": "fraud",
                        "start_at": "screen",
                        "states": {
                            "screen": task(result_path="$.fraud", end=True),
                        },
                    },
                ],
                "result_path": "$.checks",
                "next": "decide",
            },
            "decide": task(
                input={"grade": "$.grade", "kyc": "$.kyc", "fraud": "$.fraud"}, end=True
            ),
        },
    }
    run_input = {"applicant": 7}
    sim = Simulator(definition, run_input, run_id="golden-par")
    sim.advance(1)
    sim.complete("checks[fraud].screen", {"risk": "low"})
    sim.advance(1)
    sim.complete("checks[credit].score", 710)
    sim.advance(1)
    sim.complete("checks[identity].kyc", {"verified": True})
    sim.advance(1)
    sim.complete("checks[credit].grade", "A")
    sim.advance(1)
    sim.complete("decide", {"approved": True})
    return definition, run_input, sim


def foreach() -> tuple[dict[str, Any], Any, Simulator]:
    """Four items with concurrency 2, two steps per iteration, outcomes out of item order."""

    definition = {
        "name": "golden-foreach",
        "start_at": "each",
        "states": {
            "each": {
                "type": "foreach",
                "items": "$.input.lines",
                "item_name": "line",
                "concurrency": 2,
                "iterator": {
                    "name": "line",
                    "start_at": "price",
                    "states": {
                        "price": task(
                            input={"sku": "{{ line.sku }}", "qty": "{{ line.qty }}"},
                            result_path="$.price",
                            next="reserve",
                        ),
                        "reserve": task(
                            input={
                                "sku": "{{ line.sku }}",
                                "price": "$.price",
                                "index": "{{ index }}",
                            },
                            end=True,
                        ),
                    },
                },
                "result_path": "$.reserved",
                "end": True,
            },
        },
    }
    run_input = {
        "lines": [
            {"sku": "a", "qty": 1},
            {"sku": "b", "qty": 2},
            {"sku": "c", "qty": 3},
            {"sku": "d", "qty": 4},
        ]
    }
    sim = Simulator(definition, run_input, run_id="golden-each")
    for path, output in [
        ("each[1].price", 20),
        ("each[0].price", 10),
        ("each[1].reserve", "r1"),
        ("each[2].price", 30),
        ("each[2].reserve", "r2"),
        ("each[3].price", 40),
        ("each[0].reserve", "r0"),
        ("each[3].reserve", "r3"),
    ]:
        sim.advance(1)
        sim.complete(path, output)
    return definition, run_input, sim


def compensation() -> tuple[dict[str, Any], Any, Simulator]:
    """A saga: a step and two parallel bookings complete, the charge fails for good,
    compensations run in reverse completion order and one is retried; the run ends failed.
    """

    definition = {
        "name": "golden-saga",
        "start_at": "reserve",
        "states": {
            "reserve": task(
                result_path="$.reservation",
                next="book",
                compensation={"action": "release", "input": {"id": "$.reservation.id"}},
            ),
            "book": {
                "type": "parallel",
                "branches": [
                    {
                        "name": "hotel",
                        "start_at": "room",
                        "states": {
                            "room": task(
                                end=True,
                                compensation={"action": "cancel_room", "input": {"r": "$.result"}},
                            ),
                        },
                    },
                    {
                        "name": "flight",
                        "start_at": "seat",
                        "states": {
                            "seat": task(
                                end=True,
                                compensation={"action": "cancel_seat", "input": {"s": "$.result"}},
                            ),
                        },
                    },
                ],
                "next": "charge",
            },
            "charge": task(
                retry={"max_attempts": 1}, compensation={"action": "refund"}, next="done"
            ),
            "done": {"type": "succeed"},
        },
    }
    run_input = {"trip": 3}
    sim = Simulator(definition, run_input, run_id="golden-saga")
    sim.advance(1)
    sim.complete("reserve", {"id": "res-1"})
    sim.advance(1)
    sim.complete("book[flight].seat", "12A")
    sim.advance(1)
    sim.complete("book[hotel].room", "101")
    sim.advance(1)
    sim.fail("charge", "PERMANENT", "card declined")
    sim.advance(1)
    sim.complete("book[hotel].room#compensate")
    sim.advance(1)
    sim.fail("book[flight].seat#compensate", "RETRYABLE", "airline busy")
    sim.advance(1)
    sim.complete("book[flight].seat#compensate")
    sim.advance(1)
    sim.complete("reserve#compensate")
    return definition, run_input, sim


def signal_wait() -> tuple[dict[str, Any], Any, Simulator]:
    """A duration wait, then an event wait with correlation: a signal for another request is
    kept aside, the matching one completes the wait before its timeout.
    """

    definition = {
        "name": "golden-signal",
        "start_at": "submit",
        "states": {
            "submit": task(result_path="$.submitted", next="cool_off"),
            "cool_off": {"type": "wait", "duration": "10m", "next": "approval"},
            "approval": {
                "type": "wait",
                "event": {
                    "name": "approved",
                    "correlation": "$.input.request",
                    "timeout": "1d",
                    "timeout_next": "expired",
                },
                "result_path": "$.approval",
                "next": "apply",
            },
            "apply": task(input={"by": "$.approval.by"}, end=True),
            "expired": {"type": "fail", "error": "Expired"},
        },
    }
    run_input = {"request": "req-9"}
    sim = Simulator(definition, run_input, run_id="golden-signal")
    sim.advance(1)
    sim.complete("submit", {"ticket": 4})
    sim.advance(60)
    sim.signal("approved", {"by": "mallory"}, correlation="req-8", signal_id=1)  # not ours
    sim.advance(600)  # the cool-off timer fires on the way
    sim.advance(3600)
    sim.signal("approved", {"by": "ada"}, correlation="req-9", signal_id=2)
    sim.advance(1)
    sim.complete("apply", {"applied": True})
    return definition, run_input, sim


def pause_resume() -> tuple[dict[str, Any], Any, Simulator]:
    """Created paused, then started; paused while a step runs (it completes, the next
    state's timer is held); resumed; paused again while the timer runs (it fires, the step
    after it waits); a signal while paused; resumed to the end.
    """

    definition = {
        "name": "golden-pause",
        "start_at": "prepare",
        "timeout": "1d",
        "states": {
            "prepare": task(result_path="$.prepared", next="settle"),
            "settle": {"type": "wait", "duration": "5m", "next": "approval"},
            "approval": {
                "type": "wait",
                "event": {"name": "approved"},
                "result_path": "$.approval",
                "next": "ship",
            },
            "ship": task(input={"by": "$.approval.by"}, end=True),
        },
    }
    run_input = {"order": "A-7"}
    sim = Simulator(definition, run_input, run_id="golden-pause", suspended=True)
    sim.advance(30)
    sim.resume()  # the start: the run timeout counts from here
    sim.advance(1)
    sim.pause()
    sim.advance(1)
    sim.complete("prepare", {"ok": True})  # in flight when paused: recorded
    sim.advance(60)
    sim.resume()  # the held timer starts, from when `settle` was entered
    sim.advance(1)
    sim.pause()
    sim.advance(600)  # it fires while paused
    sim.signal("approved", {"by": "ada"}, signal_id=1)
    sim.advance(1)
    sim.resume()  # `ship` is scheduled now
    sim.advance(1)
    sim.complete("ship", {"shipped": True})
    return definition, run_input, sim


SCENARIOS: dict[str, Callable[[], tuple[dict[str, Any], Any, Simulator]]] = {
    "sequential_with_retries": sequential_with_retries,
    "parallel": parallel,
    "foreach": foreach,
    "compensation": compensation,
    "signal_wait": signal_wait,
    "pause_resume": pause_resume,
}


def main() -> int:
    for name, scenario in SCENARIOS.items():
        target = HERE / f"{name}.json"
        if target.exists():
            print(f"kept     {target.name} (golden files are never rewritten)")
            continue
        definition, run_input, sim = scenario()
        if not sim.finished:
            raise SystemExit(f"scenario {name} did not finish: {sim.status}")
        record = {
            "description": (scenario.__doc__ or name).strip(),
            "recorded_with": "legato.testing.Simulator",
            "definition": definition,
            "input": run_input,
            "events": golden_dump(sim.events),
            "expected": state_summary(sim.state),
        }
        target.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        print(f"recorded {target.name}: {len(sim.events)} events, {sim.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
