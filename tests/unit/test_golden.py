"""Golden histories: event logs recorded by earlier versions must keep replaying the same.

Each ``tests/golden/*.json`` holds a definition, an input, the full event history of a run
and a summary of how it ended.  The current engine must fold that history to the same end
and, at every point, decide exactly the commands that were recorded then.  The files are
recorded once by ``tests/golden/record.py`` and never rewritten; a change of behaviour gets a
new file, so that logs written by older releases stay readable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from legato.engine import events as ev
from legato.engine.machine import apply, decide
from legato.engine.state import RunState
from legato.testing import golden_dump, golden_load, program_for, replay, state_summary

GOLDEN = Path(__file__).parent.parent / "golden"
FILES = sorted(GOLDEN.glob("*.json"))
EXPECTED = {
    "compensation",
    "foreach",
    "parallel",
    "pause_resume",
    "sequential_with_retries",
    "signal_wait",
}

# Events the runtime records for the engine's commands; the others come from outside.
COMMAND_EVENTS = (ev.StepScheduled, ev.TimerStarted, ev.ChildStarted, ev.RunFinished)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_every_golden_history_is_here() -> None:
    assert {p.stem for p in FILES} >= EXPECTED


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_the_history_reads_back_as_it_was_written(path: Path) -> None:
    records = load(path)["events"]
    assert golden_dump(golden_load(records)) == records


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_the_history_replays_to_the_recorded_end(path: Path) -> None:
    golden = load(path)
    program = program_for(golden["definition"])
    events = golden_load(golden["events"])
    started = events[0]
    assert isinstance(started, ev.RunStarted)
    assert started.input == golden["input"]
    state = replay(program, events)
    assert state_summary(state) == golden["expected"]
    assert state.finished
    assert decide(program, state) == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_the_engine_decides_what_was_recorded_at_every_point(path: Path) -> None:
    golden = load(path)
    program = program_for(golden["definition"])
    events = golden_load(golden["events"])
    state: RunState | None = None
    i = 0
    while i < len(events):
        event = events[i]
        assert not isinstance(event, COMMAND_EVENTS), f"event {i} was never asked for"
        state = apply(program, state, event)
        i += 1
        # what advance() does: record every command until the engine asks for none
        while commands := decide(program, state):
            for command in commands:
                assert i < len(events), f"the engine now also asks for {command}"
                recorded = events[i]
                asked = command.record(recorded.at)
                assert (asked.kind, asked.payload()) == (recorded.kind, recorded.payload()), (
                    f"event {i} of {path.name}"
                )
                state = apply(program, state, recorded)
                i += 1
    assert state is not None
    assert state_summary(state) == golden["expected"]
