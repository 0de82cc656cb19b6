"""Test helpers for workflows and for Legato itself: a fake clock, a pure simulator, replay.

Nothing here touches a database, a network or the real clock.  :class:`Simulator` drives one
run through the same :func:`legato.runtime.advance.advance` the runtimes use, playing the part
of the runtime by hand: you look at the work the engine asked for, then say how each piece
ended (``complete``, ``fail``), move the clock (``advance``) so timers fire and retries become
due, deliver signals, pause, resume, cancel.  Every event is kept in
:attr:`Simulator.events`, so a test can replay the history, store it as a golden file, or
compare it with another run::

    sim = Simulator(definition, {"order": 42})
    sim.complete("charge", {"id": "ch_1"})
    sim.fail("ship", "RETRYABLE")
    sim.advance(2)                      # the retry is due after its backoff
    sim.complete("ship")
    assert sim.status == "completed"

    sim = Simulator(definition, {"order": 42})
    sim.run_to_end(lambda command: {"ok": True})
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from legato.dsl.model import Definition
from legato.engine import commands as cmd
from legato.engine import events as ev
from legato.engine.machine import Program, compile_definition, wanted
from legato.engine.machine import replay as _replay
from legato.engine.state import RunState, RunStatus, StepRecord
from legato.engine.views import step_views
from legato.errors import ErrorClass, StepError
from legato.runtime.advance import advance as _advance

__all__ = [
    "DEFAULT_START",
    "FakeClock",
    "Simulator",
    "SimulatorError",
    "golden_dump",
    "golden_load",
    "program_for",
    "replay",
    "state_summary",
]

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


class SimulatorError(AssertionError):
    """The test asked the simulator for something the run is not waiting for."""


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value!r}")
    return value.astimezone(UTC)


class FakeClock:
    """A clock that only moves when told to. ``now()`` is timezone-aware UTC."""

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self._now = _aware("start", start)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds`` (never backwards) and return the new instant."""
        if seconds < 0:
            raise ValueError(f"a clock does not go backwards ({seconds!r} seconds)")
        self._now = self._now + timedelta(seconds=seconds)
        return self._now

    def set(self, at: datetime) -> datetime:
        """Jump to ``at`` (a timezone-aware instant)."""
        self._now = _aware("at", at)
        return self._now


def program_for(definition: Definition | Mapping[str, Any] | Program) -> Program:
    """Compile a definition given as a :class:`Definition`, a plain dict or a Program."""
    if isinstance(definition, Program):
        return definition
    if not isinstance(definition, Definition):
        definition = Definition.model_validate(definition)
    return compile_definition(definition)


def replay(
    definition: Definition | Mapping[str, Any] | Program, events: Iterable[ev.Event]
) -> RunState:
    """Fold a recorded history from scratch into a fresh state."""
    return _replay(program_for(definition), list(events))


def golden_dump(events: Iterable[ev.Event]) -> list[dict[str, Any]]:
    """Events as plain JSON records (``type``, ``at``, ``payload``), as the store keeps them."""
    return [{"type": e.kind, "at": e.at.isoformat(), "payload": e.payload()} for e in events]


def golden_load(records: Iterable[Mapping[str, Any]]) -> list[ev.Event]:
    """Rebuild events from :func:`golden_dump` records."""
    return [
        ev.event_from_record(r["type"], datetime.fromisoformat(r["at"]), dict(r["payload"]))
        for r in records
    ]


def state_summary(state: RunState) -> dict[str, Any]:
    """What a golden history promises about how a run ends: status, output, error, and the
    status of every step and compensation."""
    return {
        "status": str(state.status),
        "output": state.output,
        "error": state.error,
        "steps": {path: str(rec.status) for path, rec in state.steps.items()},
        "compensations": {
            path: rec.compensation_status
            for path, rec in state.steps.items()
            if rec.compensation_status is not None
        },
    }


@dataclass(slots=True)
class _Timer:
    timer_id: str
    fire_at: datetime
    order: int


Handler = Callable[[cmd.Command], Any]


class Simulator:
    """Drive one run of a definition purely, playing the runtime by hand.

    Work the engine asks for is kept until the test says how it ended.  A step (or
    compensation) whose ``not_before`` lies ahead is not visible in :attr:`pending_commands`
    until the clock reaches it; steps the engine no longer wants (cancelled, superseded) are
    dropped, as the worker does with :func:`legato.engine.machine.wanted`.
    """

    def __init__(
        self,
        definition: Definition | Mapping[str, Any] | Program,
        input: Any = None,
        *,
        start: datetime = DEFAULT_START,
        run_id: str = "run-1",
        parent_run_id: str | None = None,
        parent_path: str | None = None,
        suspended: bool = False,
    ) -> None:
        self.program = program_for(definition)
        self.clock = FakeClock(start)
        self.events: list[ev.Event] = []
        self.commands: list[cmd.Command] = []
        self._work: dict[str, cmd.ScheduleStep] = {}  # path -> newest ScheduleStep
        self._children: dict[str, cmd.StartChild] = {}  # path -> StartChild awaiting an end
        self._timers: dict[str, _Timer] = {}
        self._order = 0
        defn = self.program.definition
        started = ev.RunStarted(
            at=self.clock.now(),
            run_id=run_id,
            workflow=defn.name,
            version=defn.version,
            input=input,
            parent_run_id=parent_run_id,
            parent_path=parent_path,
            suspended=suspended,
        )
        adv = _advance(self.program, None, [started], self.clock.now())
        self.state: RunState = adv.state
        self._take(adv.events, adv.commands)

    # ---- what the run looks like ------------------------------------------------------------

    @property
    def status(self) -> str:
        return str(self.state.status)

    @property
    def output(self) -> Any:
        return self.state.output

    @property
    def error(self) -> dict[str, Any] | None:
        return self.state.error

    @property
    def finished(self) -> bool:
        """The run ended and its RunFinished event is recorded."""
        return self.state.finished

    def step(self, path: str) -> StepRecord:
        """The :class:`~legato.engine.state.StepRecord` at ``path``."""
        try:
            return self.state.steps[path]
        except KeyError:
            raise SimulatorError(f"no step {path!r}; visited: {sorted(self.state.steps)}") from None

    def step_statuses(self) -> dict[str, str]:
        return {path: str(rec.status) for path, rec in self.state.steps.items()}

    def views(self) -> list[dict[str, Any]]:
        return step_views(self.program, self.state)

    def finish_command(self) -> cmd.FinishRun | None:
        for c in self.commands:
            if isinstance(c, cmd.FinishRun):
                return c
        return None

    # ---- what the run waits for ---------------------------------------------------------------

    @property
    def pending_commands(self) -> list[cmd.Command]:
        """Work the runtime would carry out now: steps and compensations that are due and
        still wanted, then child runs still running (in the order they were asked for)."""
        now = self.clock.now()
        out: list[cmd.Command] = [
            c
            for c in self._work.values()
            if (c.not_before is None or c.not_before <= now)
            and wanted(self.state, c.path, c.attempt)
        ]
        out += [c for c in self._children.values() if self._child_waited(c)]
        return out

    @property
    def pending_paths(self) -> list[str]:
        return [c.path for c in self.pending_commands if isinstance(c, cmd.ScheduleStep)]

    @property
    def waiting_work(self) -> list[cmd.ScheduleStep]:
        """Steps and compensations still wanted, due now or later."""
        return [c for c in self._work.values() if wanted(self.state, c.path, c.attempt)]

    @property
    def timers(self) -> dict[str, datetime]:
        """Started timers that have not fired yet: timer id -> instant."""
        return {t.timer_id: t.fire_at for t in self._timers.values()}

    def next_instant(self) -> datetime | None:
        """The next instant something becomes due (a timer or a delayed step), if any."""
        if self.state.finished:
            return None
        instants = [t.fire_at for t in self._timers.values()]
        instants += [c.not_before for c in self.waiting_work if c.not_before is not None]
        return min(instants) if instants else None

    def scheduled(self, path: str) -> cmd.ScheduleStep:
        """The due ScheduleStep for ``path`` (``"a#compensate"`` for a compensation)."""
        command = self._work.get(path)
        if command is None or not wanted(self.state, path, command.attempt):
            raise SimulatorError(f"step {path!r} is not scheduled; due now: {self.pending_paths}")
        if command.not_before is not None and command.not_before > self.clock.now():
            raise SimulatorError(
                f"attempt {command.attempt} of {path!r} is not due before "
                f"{command.not_before.isoformat()} (now {self.clock.now().isoformat()}); "
                "advance the clock first"
            )
        return command

    def child(self, path: str) -> cmd.StartChild:
        command = self._children.get(path)
        if command is None:
            raise SimulatorError(f"no child run started at {path!r}")
        return command

    # ---- telling the run what happened ----------------------------------------------------------

    def send(self, *events: ev.Event) -> Simulator:
        """Feed raw events (for stale or odd outcomes); commands asked for are recorded."""
        adv = _advance(self.program, self.state, list(events), self.clock.now())
        self.state = adv.state
        self._take(adv.events, adv.commands)
        return self

    def complete(
        self, path: str, output: Any = None, *, started_at: datetime | None = None
    ) -> Simulator:
        """The due attempt of step ``path`` succeeded with ``output``."""
        c = self.scheduled(path)
        del self._work[path]
        return self.send(
            ev.StepCompleted(
                at=self.clock.now(),
                path=path,
                attempt=c.attempt,
                output=output,
                started_at=started_at,
            )
        )

    def fail(
        self,
        path: str,
        error_class: ErrorClass | str = ErrorClass.RETRYABLE,
        message: str = "boom",
        retry_after: float | None = None,
    ) -> Simulator:
        """The due attempt of step ``path`` failed with an error of ``error_class``."""
        error = StepError(message, error_class=error_class, retry_after=retry_after)
        return self.fail_with(path, error)

    def fail_with(self, path: str, error: StepError) -> Simulator:
        c = self.scheduled(path)
        del self._work[path]
        return self.send(
            ev.StepFailed(at=self.clock.now(), path=path, attempt=c.attempt, error=error.to_dict())
        )

    def child_finished(
        self,
        path: str,
        status: str = RunStatus.COMPLETED,
        output: Any = None,
        error: dict[str, Any] | None = None,
    ) -> Simulator:
        """The child run started at ``path`` ended."""
        c = self.child(path)
        del self._children[path]
        return self.send(
            ev.ChildFinished(
                at=self.clock.now(),
                path=path,
                child_run_id=c.child_run_id,
                status=str(status),
                output=output,
                error=error,
            )
        )

    def signal(
        self,
        name: str,
        data: Any = None,
        correlation: str | None = None,
        *,
        signal_id: int | None = None,
    ) -> Simulator:
        return self.send(
            ev.SignalReceived(
                at=self.clock.now(),
                name=name,
                payload_=data,
                correlation=correlation,
                signal_id=signal_id,
            )
        )

    def cancel(self, reason: str = "cancelled by the test") -> Simulator:
        return self.send(ev.CancelRequested(at=self.clock.now(), reason=reason))

    def pause(self, reason: str = "paused by the test") -> Simulator:
        """Pause the run: it asks for no new work until :meth:`resume`."""
        return self.send(ev.RunSuspended(at=self.clock.now(), reason=reason))

    def resume(self) -> Simulator:
        """Resume a paused run (or start one created with ``suspended=True``)."""
        return self.send(ev.RunResumed(at=self.clock.now()))

    def fire_due_timers(self) -> list[str]:
        """Fire every started timer due by now, earliest first; return their ids."""
        fired: list[str] = []
        while not self.state.finished:
            due = [t for t in self._timers.values() if t.fire_at <= self.clock.now()]
            if not due:
                break
            timer = min(due, key=lambda t: (t.fire_at, t.order))
            del self._timers[timer.timer_id]
            self.send(ev.TimerFired(at=self.clock.now(), timer_id=timer.timer_id))
            fired.append(timer.timer_id)
        return fired

    def advance(self, seconds: float) -> list[str]:
        """Move the clock by ``seconds``; timers fire at their own instants on the way."""
        return self.advance_to(self.clock.now() + timedelta(seconds=seconds))

    def advance_to(self, at: datetime) -> list[str]:
        """Move the clock to ``at``; timers due on the way fire at their own instants."""
        target = _aware("at", at)
        if target < self.clock.now():
            raise ValueError(f"the clock is at {self.clock.now().isoformat()}; it cannot go back")
        fired: list[str] = []
        while not self.state.finished:
            due = [t for t in self._timers.values() if t.fire_at <= target]
            if not due:
                break
            first = min(due, key=lambda t: (t.fire_at, t.order))
            if first.fire_at > self.clock.now():
                self.clock.set(first.fire_at)
            fired += self.fire_due_timers()
        self.clock.set(target)
        return fired

    def run_to_end(
        self, handler: Handler, *, step_seconds: float = 1.0, max_rounds: int = 10_000
    ) -> RunState:
        """Carry out every piece of work with ``handler(command)`` until the run can go no
        further (finished, or waiting for a signal).

        ``handler`` gets each due ScheduleStep (steps and compensations) and each StartChild
        that waits; it returns the output, or raises :class:`~legato.errors.StepError` for a
        failure.  The clock moves ``step_seconds`` after each outcome and jumps to the next
        timer or retry when nothing is due.
        """
        for _ in range(max_rounds):
            if self.state.finished:
                return self.state
            work = self.pending_commands
            if work:
                self.handle(work[0], handler)
                if step_seconds:
                    self.advance(step_seconds)
                continue
            nxt = self.next_instant()
            if nxt is None:
                return self.state
            self.advance_to(max(nxt, self.clock.now()))
        raise SimulatorError(f"the run did not end within {max_rounds} rounds")

    def handle(self, command: cmd.Command, handler: Handler) -> None:
        """Carry out one command with ``handler``."""
        try:
            output = handler(command)
        except StepError as exc:
            if isinstance(command, cmd.StartChild):
                self.child_finished(command.path, RunStatus.FAILED, error=exc.to_dict())
            else:
                assert isinstance(command, cmd.ScheduleStep)
                self.fail_with(command.path, exc)
            return
        if isinstance(command, cmd.StartChild):
            self.child_finished(command.path, RunStatus.COMPLETED, output)
        else:
            assert isinstance(command, cmd.ScheduleStep)
            self.complete(command.path, output)

    # ---- bookkeeping --------------------------------------------------------------------------

    def _child_waited(self, c: cmd.StartChild) -> bool:
        rec = self.state.steps.get(c.path)
        return (
            c.wait
            and rec is not None
            and rec.child_run_id == c.child_run_id
            and rec.status == "waiting"
        )

    def _take(self, events: list[ev.Event], commands: list[cmd.Command]) -> None:
        # Keep the events as a store would: serialised when recorded, so that nothing the
        # engine does later to the objects it was handed can change the history.
        self.events.extend(golden_load(json.loads(json.dumps(golden_dump(events)))))
        self.commands.extend(commands)
        for c in commands:
            self._order += 1
            if isinstance(c, cmd.ScheduleStep):
                self._work.pop(c.path, None)  # a new attempt goes to the back of the line
                self._work[c.path] = c
            elif isinstance(c, cmd.StartTimer):
                self._timers[c.timer_id] = _Timer(c.timer_id, c.fire_at, self._order)
            elif isinstance(c, cmd.StartChild):
                self._children[c.path] = c
