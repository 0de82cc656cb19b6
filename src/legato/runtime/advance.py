"""Drive the engine for one run: fold events in, record commands until nothing is asked.

This is the only place that turns the engine's commands into rows for the store, so the
local worker, the CLI and (later) the API all advance runs the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from legato.engine import commands as cmd
from legato.engine import events as ev
from legato.engine.machine import Program, apply, decide
from legato.engine.state import RunState
from legato.store.records import NewEvent, NewWork

MAX_ROUNDS = 10_000


@dataclass(slots=True)
class Advanced:
    state: RunState
    events: list[ev.Event] = field(default_factory=list)
    commands: list[cmd.Command] = field(default_factory=list)
    work: list[NewWork] = field(default_factory=list)  # the last new_work() result

    def next_unleased(self) -> float | None:
        """When the earliest work row not leased on insert becomes due (None: none)."""
        times = [w.visible_at for w in self.work if w.lease_owner is None]
        return min(times) if times else None

    def new_events(self) -> list[NewEvent]:
        return [NewEvent(type=e.kind, at=e.at, payload=e.payload()) for e in self.events]

    def new_work(
        self, now: float, *, lease_owner: str | None, lease_seconds: float
    ) -> list[NewWork]:
        """Rows for the due-work table (also kept in ``work``). Work due now is leased to
        ``lease_owner`` at once."""
        out: list[NewWork] = []
        self.work = out
        for c in self.commands:
            if isinstance(c, cmd.ScheduleStep):
                visible = c.not_before.timestamp() if c.not_before else now
                due_now = visible <= now
                out.append(
                    NewWork(
                        kind="step",
                        key=c.path,
                        attempt=c.attempt,
                        payload=schedule_payload(c),
                        visible_at=visible,
                        lease_owner=lease_owner if due_now else None,
                        lease_seconds=lease_seconds if due_now and lease_owner else None,
                    )
                )
            elif isinstance(c, cmd.StartTimer):
                out.append(
                    NewWork(
                        kind="timer",
                        key=c.timer_id,
                        attempt=1,
                        payload={"timer_id": c.timer_id},
                        visible_at=c.fire_at.timestamp(),
                    )
                )
            elif isinstance(c, cmd.StartChild):
                out.append(
                    NewWork(
                        kind="child",
                        key=c.path,
                        attempt=1,
                        payload={
                            "path": c.path,
                            "child_run_id": c.child_run_id,
                            "workflow": c.workflow,
                            "version": c.version,
                            "input": c.input,
                            "wait": c.wait,
                        },
                        visible_at=now,
                    )
                )
            elif isinstance(c, cmd.CancelChild):
                out.append(
                    NewWork(
                        run_id=c.child_run_id,
                        kind="cancel",
                        key=f"parent:{self.state.run_id}",
                        attempt=1,
                        payload={"reason": f"its parent run {self.state.run_id} ended"},
                        visible_at=now,
                    )
                )
            elif isinstance(c, cmd.FinishRun) and self.state.parent_run_id:
                out.append(
                    NewWork(
                        run_id=self.state.parent_run_id,
                        kind="child_done",
                        key=self.state.run_id,
                        attempt=1,
                        payload={
                            "path": self.state.parent_path,
                            "child_run_id": self.state.run_id,
                            "status": c.status,
                            "output": c.output,
                            "error": c.error,
                        },
                        visible_at=now,
                    )
                )
        return out


def schedule_payload(c: cmd.ScheduleStep) -> dict[str, Any]:
    return {
        "path": c.path,
        "attempt": c.attempt,
        "visit_attempt": c.visit_attempt or c.attempt,
        "idempotency_key": c.idempotency_key,
        "input": c.input,
        "action": c.action,
        "service": c.service,
        "operation": c.operation,
        "timeout": c.timeout,
        "compensation": c.compensation,
        "async": c.async_,
        "callback_token": c.callback_token,
        "batch": c.batch,
    }


def advance(
    program: Program, state: RunState | None, incoming: list[ev.Event], now: datetime
) -> Advanced:
    """Apply ``incoming``, then record every command ``decide`` asks for, until it asks none."""
    recorded: list[ev.Event] = []
    for event in incoming:
        state = apply(program, state, event)
        recorded.append(event)
    if state is None:
        raise ValueError("advance needs a RunStarted event or an existing state")
    result = Advanced(state=state, events=recorded)
    for _ in range(MAX_ROUNDS):
        commands = decide(program, result.state)
        if not commands:
            return result
        for c in commands:
            event = c.record(now)
            result.state = apply(program, result.state, event)
            recorded.append(event)
            result.commands.append(c)
    raise RuntimeError(f"run {state.run_id}: the engine kept asking for commands")
