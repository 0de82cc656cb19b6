"""Property tests for apply/decide: determinism, order independence, no repeated work, replay.

Random workflows (tasks with retries, catches and compensations, parallel states, foreach,
timed and event waits, choices) are driven by random runtimes: outcomes in random order,
random failures and error classes, clock jumps, signals, pauses and resumes, cancellation.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from legato.engine import commands as cmd
from legato.engine.machine import apply, decide, idempotency_key
from legato.engine.state import RunState, RunStatus, StepStatus
from legato.testing import Simulator, replay

FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def as_json(state: RunState) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(state.to_dict()))
    return data


# ---- random workflows ---------------------------------------------------------------------------


@st.composite
def tasks(draw: st.DrawFn, name: str, nxt: str | None, *, catch: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "task",
        "action": "act",
        "input": {"n": "$.input.n", "name": name},
        "retry": {
            "max_attempts": draw(st.integers(1, 3)),
            "initial_interval": draw(st.integers(0, 3)),
        },
    }
    # steps write their own paths and a shared object, so later writes land inside values
    # that earlier steps wrote
    result_path = draw(st.sampled_from([None, f"$.{name}", "$.shared"]))
    if result_path is not None:
        spec["result_path"] = result_path
    if draw(st.booleans()):
        spec["output"] = {f"$.shared.{name}": "$.result"}
    if draw(st.booleans()):
        spec["compensation"] = {"action": "undo", "input": {"r": "$.result"}}
    if catch and nxt is not None and draw(st.booleans()):
        spec["catch"] = [
            {"errors": [draw(st.sampled_from(["ALL", "PERMANENT", "TIMEOUT"]))], "next": nxt}
        ]
    if nxt is None:
        spec["end"] = True
    else:
        spec["next"] = nxt
    return spec


@st.composite
def graphs(draw: st.DrawFn, prefix: str, size: int) -> dict[str, Any]:
    """A branch or iterator body: a chain of 1..size tasks."""
    count = draw(st.integers(1, size))
    names = [f"{prefix}{i}" for i in range(count)]
    states = {
        n: draw(tasks(n, names[i + 1] if i + 1 < count else None)) for i, n in enumerate(names)
    }
    return {"name": prefix, "start_at": names[0], "states": states}


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 4))
    names = [f"s{i}" for i in range(count)]
    states: dict[str, Any] = {}
    for i, name in enumerate(names):
        nxt = names[i + 1] if i + 1 < count else "done"
        kind = draw(
            st.sampled_from(["task", "task", "parallel", "foreach", "wait", "event", "choice"])
        )
        if kind == "task":
            states[name] = draw(tasks(name, nxt))
        elif kind == "parallel":
            width = draw(st.integers(2, 3))
            states[name] = {
                "type": "parallel",
                "branches": [draw(graphs(f"b{k}", 2)) for k in range(width)],
                "join": draw(st.sampled_from(["all", "any", {"at_least": 2}])),
                "result_path": f"$.{name}",
                "next": nxt,
            }
        elif kind == "foreach":
            states[name] = {
                "type": "foreach",
                "items": "$.input.items",
                "concurrency": draw(st.integers(1, 2)),
                "iterator": draw(graphs("it", 2)),
                "result_path": f"$.{name}",
                "next": nxt,
            }
        elif kind == "wait":
            states[name] = {"type": "wait", "duration": draw(st.integers(0, 5)), "next": nxt}
        elif kind == "event":
            event: dict[str, Any] = {"name": "go"}
            if draw(st.booleans()):
                event["timeout"] = draw(st.integers(1, 10))
                if draw(st.booleans()):
                    event["timeout_next"] = nxt
            states[name] = {"type": "wait", "event": event, "result_path": f"$.{name}", "next": nxt}
        else:
            states[name] = {
                "type": "choice",
                "choices": [{"when": "input.flag", "next": nxt}],
                "default": "bad",
            }
    states["done"] = {"type": "succeed"}
    states["bad"] = {"type": "fail", "error": "Bad"}
    definition: dict[str, Any] = {"name": "prop", "start_at": "s0", "states": states}
    if draw(st.booleans()):
        definition["timeout"] = draw(st.integers(5, 60))
    return definition


run_inputs = st.fixed_dictionaries(
    {
        "n": st.integers(0, 9),
        "items": st.lists(st.integers(0, 9), max_size=3),
        "flag": st.booleans(),
    }
)

ERROR_CLASSES = ["RETRYABLE", "PERMANENT", "TIMEOUT", "RATE_LIMITED", "VALIDATION"]


class Checker:
    """Invariant (c): work is never asked for twice, nor after it completed."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.seen = 0
        self.asked: set[tuple[str, str, int]] = set()
        self.check()

    def done_keys(self) -> set[tuple[str, str]]:
        state = self.sim.state
        keys: set[tuple[str, str]] = set()
        for rec in state.steps.values():
            key = idempotency_key(state, rec)
            if rec.status in (StepStatus.COMPLETED, StepStatus.COMPENSATED):
                keys.add((rec.path, key))
            if rec.compensation_status in ("completed", "failed"):
                keys.add((f"{rec.path}#compensate", f"{key}:compensate"))
        return keys

    def check(self, done_before: set[tuple[str, str]] | None = None) -> None:
        sim = self.sim
        assert decide(sim.program, sim.state) == [], "advance left a command unrecorded"
        for c in sim.commands[self.seen :]:
            if isinstance(c, cmd.ScheduleStep):
                ident = (c.path, c.idempotency_key, c.attempt)
                assert ident not in self.asked, f"asked twice for {ident}"
                self.asked.add(ident)
                assert (c.path, c.idempotency_key) not in (done_before or set()), (
                    f"asked again for {c.path} after it completed"
                )
        self.seen = len(sim.commands)

    def act(self, action: Any) -> None:
        done_before = self.done_keys()
        paused_before = self.sim.state.suspended
        action()
        if paused_before and self.sim.state.suspended:
            # a run that stays paused asks for no new work (stopping a child is not work)
            new = self.sim.commands[self.seen :]
            assert all(isinstance(c, cmd.CancelChild) for c in new), new
        self.check(done_before)


def drive(sim: Simulator, data: st.DataObject, budget: int = 40) -> Checker:
    checker = Checker(sim)
    for _ in range(budget):
        if sim.finished:
            break
        work = sim.pending_commands
        moves = ["advance", "advance", "signal"]
        if work:
            moves += ["complete"] * 5 + ["fail"] * 2
        move = data.draw(st.sampled_from(moves))
        if sim.state.status == RunStatus.RUNNING and data.draw(st.integers(0, 24)) == 0:
            move = "cancel"
        elif sim.state.status == RunStatus.RUNNING and data.draw(st.integers(0, 7)) == 0:
            move = "resume" if sim.state.suspended else "pause"
        if move in ("complete", "fail"):
            command = data.draw(st.sampled_from(work))
            if isinstance(command, cmd.StartChild):  # pragma: no cover - no subflows here
                continue
            assert isinstance(command, cmd.ScheduleStep)
            if move == "complete":
                checker.act(lambda c=command: sim.complete(c.path, {"from": c.path}))
            else:
                klass = data.draw(st.sampled_from(ERROR_CLASSES))
                after = data.draw(st.none() | st.integers(0, 5))
                checker.act(lambda c=command, k=klass, a=after: sim.fail(c.path, k, "x", a))
        elif move == "advance":
            seconds = data.draw(st.integers(0, 8))
            checker.act(lambda s=seconds: sim.advance(s))
        elif move == "signal":
            checker.act(lambda: sim.signal("go", {"at": sim.clock.now().isoformat()}))
        elif move == "pause":
            checker.act(lambda: sim.pause())
        elif move == "resume":
            checker.act(lambda: sim.resume())
        else:
            checker.act(lambda: sim.cancel())
    event(f"run ended {sim.status}" if sim.finished else f"run still {sim.status}")
    return checker


# ---- (a) folding is deterministic; (c) no repeated work; (d) replay equals live -----------------


@FAST
@given(definition=workflows(), run_input=run_inputs, data=st.data())
def test_folding_the_same_events_twice_gives_equal_states(
    definition: dict[str, Any], run_input: dict[str, Any], data: st.DataObject
) -> None:
    sim = Simulator(definition, run_input)
    drive(sim, data)
    first = as_json(replay(sim.program, sim.events))
    second = as_json(replay(sim.program, sim.events))
    assert first == second


@FAST
@given(definition=workflows(), run_input=run_inputs, data=st.data())
def test_decide_never_asks_again_for_work_that_completed(
    definition: dict[str, Any], run_input: dict[str, Any], data: st.DataObject
) -> None:
    sim = Simulator(definition, run_input)
    drive(sim, data)
    # and once finished, nothing at all is asked
    if sim.finished:
        assert decide(sim.program, sim.state) == []


@FAST
@given(definition=workflows(), run_input=run_inputs, data=st.data())
def test_replaying_the_history_from_scratch_equals_the_live_state(
    definition: dict[str, Any], run_input: dict[str, Any], data: st.DataObject
) -> None:
    sim = Simulator(definition, run_input)
    drive(sim, data)
    assert as_json(replay(sim.program, sim.events)) == as_json(sim.state)
    # a state restored from its JSON snapshot after every event ends the same: nothing in the
    # state may share data with anything else (an event, another record)
    restored: RunState | None = None
    for recorded in sim.events:
        restored = RunState.from_dict(as_json(apply(sim.program, restored, recorded)))
    assert restored is not None
    assert as_json(restored) == as_json(sim.state)


# ---- (b) order independence of parallel (join all) and foreach ----------------------------------

# Every value written is an object, so overlapping paths never clash: `$.nested` replaces what
# `$.nested.a` wrote, or the other way round, depending only on the order of the writes.
TARGETS = ["$.shared", "$.nested", "$.nested.a", "$.nested.b", "$.mine"]


@st.composite
def writing_tasks(draw: st.DrawFn, name: str, nxt: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "task", "action": "act", "input": {"seen": "$.shared"}}
    target = draw(st.sampled_from([*TARGETS, None]))
    if target is not None:
        spec["result_path"] = target
    mapped = draw(st.lists(st.sampled_from(TARGETS), max_size=2, unique=True))
    if mapped:
        spec["output"] = {t: "$.result" for t in mapped}
    if nxt is None:
        spec["end"] = True
    else:
        spec["next"] = nxt
    return spec


@st.composite
def parallel_cases(draw: st.DrawFn) -> tuple[dict[str, Any], list[int]]:
    width = draw(st.integers(2, 6))
    branches = []
    lengths = []
    for k in range(width):
        count = draw(st.integers(1, 2))
        names = [f"t{i}" for i in range(count)]
        states = {
            n: draw(writing_tasks(n, names[i + 1] if i + 1 < count else None))
            for i, n in enumerate(names)
        }
        branches.append({"name": f"b{k}", "start_at": "t0", "states": states})
        lengths.append(count)
    definition = {
        "name": "par",
        "start_at": "pre",
        "states": {
            "pre": {"type": "task", "action": "act", "result_path": "$.shared", "next": "p"},
            "p": {
                "type": "parallel",
                "branches": branches,
                "result_path": "$.joined",
                "next": "post",
            },
            "post": {"type": "task", "action": "act", "input": {"all": "$"}, "end": True},
        },
    }
    order = draw(st.permutations([k for k, n in enumerate(lengths) for _ in range(n)]))
    return definition, list(order)


def output_for(path: str) -> dict[str, Any]:
    return {"from": path, "v": len(path)}


def run_parallel(definition: dict[str, Any], order: list[int]) -> Simulator:
    sim = Simulator(definition, {"n": 1})
    sim.complete("pre", {"pre": True})
    for k in order:
        [path] = [p for p in sim.pending_paths if p.startswith(f"p[b{k}].")]
        sim.complete(path, output_for(path))
    sim.complete("post", "end")
    return sim


@FAST
@given(case=parallel_cases())
def test_every_order_of_branch_outcomes_gives_the_same_result(
    case: tuple[dict[str, Any], list[int]],
) -> None:
    definition, order = case
    baseline = run_parallel(definition, sorted(order))
    shuffled = run_parallel(definition, order)
    assert shuffled.status == baseline.status == RunStatus.COMPLETED
    assert shuffled.output == baseline.output
    assert shuffled.state.frames[""].context == baseline.state.frames[""].context
    post = [c for c in shuffled.commands if isinstance(c, cmd.ScheduleStep) and c.path == "post"]
    base_post = [
        c for c in baseline.commands if isinstance(c, cmd.ScheduleStep) and c.path == "post"
    ]
    assert post[0].input == base_post[0].input


@st.composite
def foreach_cases(draw: st.DrawFn) -> tuple[dict[str, Any], list[int]]:
    count = draw(st.integers(1, 2))
    names = [f"t{i}" for i in range(count)]
    body = {
        n: draw(writing_tasks(n, names[i + 1] if i + 1 < count else None))
        for i, n in enumerate(names)
    }
    items = draw(st.lists(st.integers(0, 99), max_size=6))
    concurrency = draw(st.integers(1, 3))
    definition = {
        "name": "each",
        "start_at": "f",
        "states": {
            "f": {
                "type": "foreach",
                "items": items,
                "concurrency": concurrency,
                "iterator": {"name": "body", "start_at": "t0", "states": body},
                "result_path": "$.results",
                "end": True,
            }
        },
    }
    picks = draw(
        st.lists(st.integers(0, 2), min_size=len(items) * count, max_size=len(items) * count)
    )
    return definition, picks


def run_foreach(definition: dict[str, Any], picks: list[int]) -> tuple[Simulator, int]:
    sim = Simulator(definition, {})
    limit = definition["states"]["f"]["concurrency"]
    most = 0
    for pick in picks:
        work = sim.pending_paths
        most = max(most, len(work))
        assert len(work) <= limit
        path = work[pick % len(work)]
        sim.complete(path, output_for(path))
    assert sim.pending_commands == []
    return sim, most


@FAST
@given(case=foreach_cases())
def test_every_order_of_iteration_outcomes_gives_the_same_result(
    case: tuple[dict[str, Any], list[int]],
) -> None:
    definition, picks = case
    baseline, _ = run_foreach(definition, [0] * len(picks))
    shuffled, most = run_foreach(definition, picks)
    items = definition["states"]["f"]["items"]
    assert most <= definition["states"]["f"]["concurrency"]
    assert shuffled.status == baseline.status == RunStatus.COMPLETED
    assert shuffled.output == baseline.output
    last = list(definition["states"]["f"]["iterator"]["states"])[-1]
    assert shuffled.output["results"] == [output_for(f"f[{i}].{last}") for i in range(len(items))]
