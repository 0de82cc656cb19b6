"""The deterministic core: ``apply`` folds events into state; ``decide`` says what to do.

::

    state    = fold(apply(program, ·, ·), events)
    commands = decide(program, state)

Both are pure: no I/O, no clock, no randomness, no globals. Instants come from events.
``apply`` needs the (compiled) definition because transitions, output mappings, choices
and joins are *derived* from it rather than recorded; recording them would double the
history for no gain, since a run is pinned to one immutable definition version (see
docs/decisions/0001-engine-apply-takes-the-definition.md).

``apply`` takes ownership of the state it is given and returns the new state (it may be
the same object, changed). Keep a copy (``RunState.from_dict(state.to_dict())``) if you
need the old one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from legato.dsl import expr
from legato.dsl.model import (
    Catch,
    ChoiceState,
    Compensation,
    Definition,
    FailState,
    ForeachState,
    ParallelState,
    RetryPolicy,
    SubflowState,
    SucceedState,
    TaskState,
    WaitState,
)
from legato.engine import commands as cmd
from legato.engine import events as ev
from legato.engine.state import (
    ACTIVE_STEP,
    Frame,
    RunState,
    RunStatus,
    StepRecord,
    StepStatus,
)
from legato.errors import ErrorClass, LegatoError

DEFAULT_RETRY = RetryPolicy()
COMPENSATION_RETRY = RetryPolicy(max_attempts=5)
RUN_TIMEOUT_TIMER = "run:timeout"


# ---- the compiled definition ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Graph:
    id: str
    start_at: str
    states: Mapping[str, Any]


def _graph_id(parent: str, state: str, branch: str) -> str:
    return f"{parent}>{state}[{branch}]"


class Program:
    """A definition indexed for the engine: every graph (top, branches, iterators)."""

    __slots__ = ("definition", "graphs")

    def __init__(self, definition: Definition) -> None:
        self.definition = definition
        self.graphs: dict[str, Graph] = {}
        self._add("", definition.start_at, definition.states)

    def _add(self, gid: str, start_at: str, states: Mapping[str, Any]) -> None:
        self.graphs[gid] = Graph(gid, start_at, states)
        for name, spec in states.items():
            if isinstance(spec, ParallelState):
                for branch in spec.branches:
                    self._add(_graph_id(gid, name, branch.name), branch.start_at, branch.states)
            elif isinstance(spec, ForeachState):
                self._add(_graph_id(gid, name, "*"), spec.iterator.start_at, spec.iterator.states)

    def spec(self, graph: str, state: str) -> Any:
        return self.graphs[graph].states[state]


def compile_definition(definition: Definition) -> Program:
    return Program(definition)


# ---- helpers ----------------------------------------------------------------------------


def _iso(at: datetime) -> str:
    return at.isoformat()


def _parse(at: str) -> datetime:
    return datetime.fromisoformat(at)


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _error(
    message: str, error_class: ErrorClass = ErrorClass.PERMANENT, **details: Any
) -> dict[str, Any]:
    return {
        "type": "StepError",
        "message": message,
        "error_class": error_class.value,
        "details": details,
        "retryable": False,
    }


def _error_from(
    exc: LegatoError, error_class: ErrorClass = ErrorClass.VALIDATION
) -> dict[str, Any]:
    data = exc.to_dict()
    data.setdefault("error_class", error_class.value)
    return data


def _error_class(error: Mapping[str, Any]) -> ErrorClass:
    """The error's class; one this version does not know is PERMANENT (never retried)."""
    try:
        return ErrorClass(error.get("error_class", ErrorClass.PERMANENT))
    except ValueError:
        return ErrorClass.PERMANENT


def _path(frame: Frame, state: str) -> str:
    return f"{frame.id}.{state}" if frame.id else state


class _Scope(Mapping[str, Any]):
    """The names an expression may use, computed only when referenced."""

    __slots__ = ("_extra", "_frame", "_item_frame", "_item_name", "_run")

    def __init__(
        self,
        run: RunState,
        frame: Frame,
        program: Program,
        extra: Mapping[str, Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        self._run = run
        self._frame = frame
        self._extra = dict(extra or {})
        if context is not None:
            self._extra["context"] = context
        self._item_frame, self._item_name = _item_frame(run, frame, program)

    def _names(self) -> list[str]:
        names = ["context", "variables", "vars", "input", "steps", "run", *self._extra]
        if self._item_frame is not None:
            names += ["item", "index"]
            if self._item_name not in names:
                names.append(self._item_name)
        return names

    def __getitem__(self, key: str) -> Any:
        if key in self._extra:
            return self._extra[key]
        if key in ("context", "variables", "vars"):
            return self._frame.context
        if key == "input":
            return self._run.input
        if key == "steps":
            return _steps_view(self._run)
        if key == "run":
            return {"id": self._run.run_id, "workflow": self._run.workflow}
        if self._item_frame is not None:
            if key in ("item", self._item_name):
                return self._item_frame.item
            if key == "index":
                return self._item_frame.index
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


def _item_frame(run: RunState, frame: Frame, program: Program) -> tuple[Frame | None, str]:
    current: Frame | None = frame
    while current is not None:
        if current.index is not None and current.parent_step is not None:
            owner = run.steps[current.parent_step]
            spec = program.spec(run.frames[owner.frame].graph, owner.state)
            return current, spec.item_name
        current = run.frames[run.steps[current.parent_step].frame] if current.parent_step else None
    return None, "item"


def _steps_view(run: RunState) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for rec in run.steps.values():
        view[rec.state] = {"output": rec.output, "status": rec.status, "error": rec.error}
    return view


# ---- apply --------------------------------------------------------------------------------


def apply(program: Program, state: RunState | None, event: ev.Event) -> RunState:
    """Fold one event into the run's state."""
    if isinstance(event, ev.RunStarted):
        if state is not None:
            raise ValueError("RunStarted must be the first event of a run")
        state = _start(program, event)
    else:
        if state is None:
            raise ValueError(f"{event.kind} before RunStarted")
        state.seq += 1
        handler = _HANDLERS[type(event)]
        handler(program, state, event)
    if state.suspended and state.status != RunStatus.RUNNING:
        # A paused run that ends (its last step finished, a step failed for good, it timed
        # out or was cancelled) is no longer paused: its compensations and its end go on.
        _unsuspend(state)
    return state


def replay(program: Program, events: list[ev.Event]) -> RunState:
    """Fold a whole history."""
    state: RunState | None = None
    for event in events:
        state = apply(program, state, event)
    if state is None:
        raise ValueError("an empty history has no state")
    return state


def _start(program: Program, event: ev.RunStarted) -> RunState:
    definition = program.definition
    state = RunState(
        run_id=event.run_id,
        workflow=event.workflow,
        version=event.version,
        input=event.input,
        parent_run_id=event.parent_run_id,
        parent_path=event.parent_path,
        secret=event.secret,
        seq=1,
        suspended=event.suspended,
        awaiting_start=event.suspended,
    )
    context: dict[str, Any] = {}
    if definition.input_at_root and isinstance(event.input, dict):
        context.update(_copy(event.input))
    context["input"] = _copy(event.input)
    top = Frame(id="", graph="", parent_step=None, name=None, context=context)
    state.frames[""] = top
    if not event.suspended:
        _begin(program, state, event.at)
    return state


def _begin(program: Program, state: RunState, at: datetime) -> None:
    """The run starts walking its graph at ``at`` (at RunStarted, or at the RunResumed
    that starts a run created paused): its timeout counts from here."""
    definition = program.definition
    state.started_at = _iso(at)
    if definition.timeout is not None:
        fire_at = at + timedelta(seconds=definition.timeout)
        state.timers[RUN_TIMEOUT_TIMER] = {
            "kind": "run_timeout",
            "path": None,
            "fire_at": _iso(fire_at),
            "started": False,
        }
        state.pending[f"t:{RUN_TIMEOUT_TIMER}"] = None
    _enter(program, state, state.frames[""], program.graphs[""].start_at, at)


def _on_scheduled(program: Program, state: RunState, event: ev.StepScheduled) -> None:
    if event.path.endswith("#compensate"):
        rec = state.steps.get(event.path[: -len("#compensate")])
        if rec is None or rec.compensation_status not in ("ready", "retrying"):
            return
        rec.compensation_status = "scheduled"
        rec.compensation_attempt = event.attempt
        state.pending.pop(f"k:{rec.path}", None)
        return
    rec = state.steps.get(event.path)
    if rec is None or rec.status not in (StepStatus.READY, StepStatus.RETRYING):
        return
    rec.status = StepStatus.SCHEDULED
    rec.attempt = event.attempt
    rec.scheduled_at = _iso(event.at)
    state.pending.pop(f"s:{rec.path}", None)


def _on_completed(program: Program, state: RunState, event: ev.StepCompleted) -> None:
    if event.path.endswith("#compensate"):
        _compensation_completed(program, state, event)
        return
    rec = state.steps.get(event.path)
    if rec is None or rec.status != StepStatus.SCHEDULED or rec.attempt != event.attempt:
        return  # stale or duplicate outcome: already recorded, or the step was cancelled
    if event.started_at is not None:
        rec.started_at = _iso(event.started_at)
    if event.metadata:
        rec.metadata = dict(event.metadata)
    _complete_step(program, state, rec, event.output, event.at)


def _on_failed(program: Program, state: RunState, event: ev.StepFailed) -> None:
    if event.path.endswith("#compensate"):
        _compensation_failed(program, state, event)
        return
    rec = state.steps.get(event.path)
    if rec is None or rec.status != StepStatus.SCHEDULED or rec.attempt != event.attempt:
        return
    if event.started_at is not None:
        rec.started_at = _iso(event.started_at)
    _attempt_failed(program, state, rec, dict(event.error), event.at)


def _attempt_failed(
    program: Program, state: RunState, rec: StepRecord, error: dict[str, Any], at: datetime
) -> None:
    """One attempt failed: retry per the step's policy, or fail the step for good."""
    frame = state.frames[rec.frame]
    spec = program.spec(frame.graph, rec.state)
    policy = _retry_policy(program, spec)
    error_class = _error_class(error)
    attempts = rec.attempt - rec.attempt_base
    if attempts < policy.max_attempts and error_class not in policy.non_retryable:
        delay = policy.delay(attempts)
        retry_after = error.get("retry_after")
        if error_class is ErrorClass.RATE_LIMITED and isinstance(retry_after, int | float):
            delay = max(delay, float(retry_after))
        rec.status = StepStatus.RETRYING
        rec.error = error
        rec.due_at = _iso(at + timedelta(seconds=delay))
        state.pending[f"s:{rec.path}"] = None
        return
    _step_failed(program, state, rec, error, at)


def _on_accepted(program: Program, state: RunState, event: ev.StepAccepted) -> None:
    rec = state.steps.get(event.path)
    if rec is None or rec.status != StepStatus.SCHEDULED or rec.attempt != event.attempt:
        return
    if event.started_at is not None:
        rec.started_at = _iso(event.started_at)
    if event.metadata:
        rec.metadata = dict(event.metadata)
    rec.status = StepStatus.WAITING
    rec.operation_id = event.operation_id
    spec = program.spec(state.frames[rec.frame].graph, rec.state)
    timeout = getattr(spec, "callback_timeout", None)
    if timeout is not None:
        timer_id = f"{rec.path}:{rec.iteration}:{rec.attempt}:callback"
        fire_at = event.at + timedelta(seconds=timeout)
        rec.timer_id = timer_id
        rec.due_at = _iso(fire_at)
        state.timers[timer_id] = {
            "kind": "callback_timeout",
            "path": rec.path,
            "fire_at": _iso(fire_at),
            "started": False,
        }
        state.pending[f"t:{timer_id}"] = None


def _on_callback(program: Program, state: RunState, event: ev.CallbackReceived) -> None:
    rec = callback_target(state, event.token)
    if rec is None:
        return  # unexpected or duplicate: the runtime refuses these before recording
    if rec.timer_id is not None:
        state.pending.pop(f"t:{rec.timer_id}", None)
        rec.timer_id = None
    if event.error is not None:
        rec.status = StepStatus.SCHEDULED  # the attempt is what failed
        _attempt_failed(program, state, rec, dict(event.error), event.at)
        return
    _complete_step(program, state, rec, event.output, event.at)


def callback_token(state: RunState, rec: StepRecord) -> str:
    """The token an async step's service calls back with: it names the run and the step
    visit, and carries a digest keyed by the run's secret, so it cannot be guessed.
    It is the same on every attempt of the visit, so a service that deduplicates a
    retried start by idempotency key calls back with a token that still fits."""
    key = idempotency_key(state, rec)
    digest = hashlib.sha256(f"{state.secret or ''}|{key}".encode()).hexdigest()[:32]
    return f"{state.run_id}~{digest}"


def callback_target(state: RunState, token: str) -> StepRecord | None:
    """The step waiting for this callback token, if any (else: unexpected or duplicate)."""
    run_id, _, _ = token.partition("~")
    if run_id != state.run_id:
        return None
    for rec in state.steps.values():
        if (
            rec.status == StepStatus.WAITING
            and rec.type == "task"
            and hmac.compare_digest(callback_token(state, rec), token)
        ):
            return rec
    return None


def _on_timer_started(program: Program, state: RunState, event: ev.TimerStarted) -> None:
    timer = state.timers.get(event.timer_id)
    if timer is not None:
        timer["started"] = True
    state.pending.pop(f"t:{event.timer_id}", None)


def _on_timer_fired(program: Program, state: RunState, event: ev.TimerFired) -> None:
    timer = state.timers.get(event.timer_id)
    if timer is None or timer.get("fired"):
        return
    timer["fired"] = True
    if timer["kind"] == "run_timeout":
        if state.status == RunStatus.RUNNING:
            _end_run(
                program,
                state,
                RunStatus.FAILED,
                _error(
                    f"the run did not finish within its timeout ({program.definition.timeout:g}s)",
                    ErrorClass.TIMEOUT,
                ),
                event.at,
            )
        return
    rec = state.steps.get(timer["path"])
    if rec is None or rec.status != StepStatus.WAITING or rec.timer_id != event.timer_id:
        return
    if timer["kind"] == "wait":
        _complete_step(program, state, rec, None, event.at)
        return
    if timer["kind"] == "callback_timeout":
        rec.timer_id = None
        rec.status = StepStatus.SCHEDULED  # the attempt is what timed out
        _attempt_failed(
            program,
            state,
            rec,
            _error(
                f"no callback for step {rec.path!r} arrived within its callback_timeout",
                ErrorClass.TIMEOUT,
                operation_id=rec.operation_id,
            ),
            event.at,
        )
        return
    if timer["kind"] == "subflow_timeout":
        _step_failed(
            program,
            state,
            rec,
            _error(
                f"child run {rec.child_run_id} did not finish within the subflow's timeout",
                ErrorClass.TIMEOUT,
                child_run_id=rec.child_run_id,
            ),
            event.at,
        )
        return
    # an event wait timed out
    frame = state.frames[rec.frame]
    spec = program.spec(frame.graph, rec.state)
    assert isinstance(spec, WaitState)
    assert spec.event is not None
    if (
        spec.event.timeout_next is not None
        and spec.event.timeout_next in program.graphs[frame.graph].states
    ):
        rec.status = StepStatus.FAILED
        rec.caught = True
        rec.error = _error(f"no {spec.event.name!r} signal arrived in time", ErrorClass.TIMEOUT)
        rec.finished_at = _iso(event.at)
        _enter(program, state, frame, spec.event.timeout_next, event.at)
        return
    _step_failed(
        program,
        state,
        rec,
        _error(
            f"no {spec.event.name!r} signal arrived within {spec.event.timeout:g}s",
            ErrorClass.TIMEOUT,
        ),
        event.at,
    )


def _on_signal(program: Program, state: RunState, event: ev.SignalReceived) -> None:
    if state.terminal or state.status == RunStatus.COMPENSATING:
        return
    signal = {"name": event.name, "data": event.payload_, "correlation": event.correlation}
    for rec in state.steps.values():
        if rec.status == StepStatus.WAITING and _signal_matches(program, state, rec, signal):
            _deliver(program, state, rec, signal, event.at)
            return
    state.signals.append(signal)


def _signal_matches(
    program: Program, state: RunState, rec: StepRecord, signal: dict[str, Any]
) -> bool:
    if rec.type != "wait":
        return False
    spec = program.spec(state.frames[rec.frame].graph, rec.state)
    if spec.event is None or spec.event.name != signal["name"]:
        return False
    return rec.correlation is None or rec.correlation == signal["correlation"]


def _deliver(
    program: Program, state: RunState, rec: StepRecord, signal: dict[str, Any], at: datetime
) -> None:
    if rec.timer_id is not None:
        state.pending.pop(f"t:{rec.timer_id}", None)
    _complete_step(program, state, rec, signal["data"], at)


def _on_child_started(program: Program, state: RunState, event: ev.ChildStarted) -> None:
    rec = state.steps.get(event.path)
    state.pending.pop(f"c:{event.path}", None)
    if rec is None or rec.status != StepStatus.READY:
        return
    rec.child_run_id = event.child_run_id
    rec.scheduled_at = _iso(event.at)
    rec.attempt = 1
    spec = program.spec(state.frames[rec.frame].graph, rec.state)
    if spec.wait:
        rec.status = StepStatus.WAITING
        if spec.timeout is not None:
            timer_id = f"{rec.path}:{rec.iteration}"
            fire_at = event.at + timedelta(seconds=spec.timeout)
            rec.timer_id = timer_id
            rec.due_at = _iso(fire_at)
            state.timers[timer_id] = {
                "kind": "subflow_timeout",
                "path": rec.path,
                "fire_at": _iso(fire_at),
                "started": False,
            }
            state.pending[f"t:{timer_id}"] = None
    else:
        _complete_step(program, state, rec, {"run_id": event.child_run_id}, event.at)


def _on_child_finished(program: Program, state: RunState, event: ev.ChildFinished) -> None:
    rec = state.steps.get(event.path)
    if rec is None or rec.status != StepStatus.WAITING or rec.child_run_id != event.child_run_id:
        return
    if event.status == RunStatus.COMPLETED:
        _complete_step(program, state, rec, event.output, event.at)
        return
    error = dict(event.error or _error(f"child run {event.child_run_id} {event.status}"))
    error["message"] = f"child run {event.child_run_id} {event.status}: {error.get('message', '')}"
    _step_failed(program, state, rec, error, event.at)


def _on_cancel(program: Program, state: RunState, event: ev.CancelRequested) -> None:
    if state.status != RunStatus.RUNNING:
        return
    _end_run(
        program,
        state,
        RunStatus.CANCELLED,
        _error(f"the run was cancelled: {event.reason}", ErrorClass.PERMANENT),
        event.at,
    )


def pause_refusal(state: RunState) -> str | None:
    """Why this run cannot be paused (None when it can)."""
    if state.terminal:
        return f"it has already ended ({state.status}); there is nothing to pause"
    if state.status != RunStatus.RUNNING:
        return (
            f"it is {state.status}: its completed steps are being undone after it failed or "
            "was cancelled, and compensations are not paused; wait for it to end"
        )
    if state.awaiting_start:
        return "it was created paused and has not started yet; resume it to start it"
    if state.suspended:
        return "it is already paused; resume it to go on"
    return None


def resume_refusal(state: RunState) -> str | None:
    """Why this run cannot be resumed (None when it can)."""
    if state.suspended:
        return None
    if state.terminal:
        return f"it has already ended ({state.status}); only a paused run can be resumed"
    return f"it is not paused (it is {state.status}); pause it first"


def _on_suspended(program: Program, state: RunState, event: ev.RunSuspended) -> None:
    if pause_refusal(state) is not None:
        return  # the runtime refuses these before recording them
    state.suspended = True
    state.suspended_reason = event.reason


def _on_resumed(program: Program, state: RunState, event: ev.RunResumed) -> None:
    if not state.suspended:
        return
    begins = state.awaiting_start
    _unsuspend(state)
    if begins:
        _begin(program, state, event.at)  # created paused: it starts now


def _unsuspend(state: RunState) -> None:
    state.suspended = False
    state.suspended_reason = None
    state.awaiting_start = False


def _on_child_cancel(program: Program, state: RunState, event: ev.ChildCancelRequested) -> None:
    state.pending.pop(f"x:{event.path}", None)


def retry_refusal(state: RunState) -> str | None:
    """Why this run cannot be retried from its failed step (None when it can)."""
    if state.status != RunStatus.FAILED:
        return f"only a failed run can be retried; this one is {state.status}"
    if any(rec.compensation_status is not None for rec in state.steps.values()):
        return (
            "this run's completed steps were compensated (undone); start a new run instead "
            "of retrying it"
        )
    if _failed_top_step(state) is None:
        return "no failed step was found to retry from"
    return None


def _failed_top_step(state: RunState) -> StepRecord | None:
    for rec in reversed(state.steps.values()):
        if rec.frame == "" and rec.status == StepStatus.FAILED and not rec.caught:
            return rec
    return None


def _on_retry(program: Program, state: RunState, event: ev.RetryRequested) -> None:
    """Re-enter the top-level state that failed; completed steps and their outputs stay.

    A failed parallel or foreach state runs again as a whole (its branches with new
    idempotency keys: a new visit). Without compensations having run only."""
    if retry_refusal(state) is not None:
        return
    rec = _failed_top_step(state)
    assert rec is not None
    top = state.frames[""]
    top.status = "running"
    top.error = None
    state.status = RunStatus.RUNNING
    state.outcome = None
    state.error = None
    state.output = None
    state.finished = False
    state.finished_at = None
    _enter(program, state, top, rec.state, event.at)


def _on_finished(program: Program, state: RunState, event: ev.RunFinished) -> None:
    state.finished = True
    state.finished_at = _iso(event.at)


_HANDLERS: dict[type[ev.Event], Any] = {
    ev.StepScheduled: _on_scheduled,
    ev.StepCompleted: _on_completed,
    ev.StepFailed: _on_failed,
    ev.StepAccepted: _on_accepted,
    ev.CallbackReceived: _on_callback,
    ev.TimerStarted: _on_timer_started,
    ev.TimerFired: _on_timer_fired,
    ev.SignalReceived: _on_signal,
    ev.ChildStarted: _on_child_started,
    ev.ChildFinished: _on_child_finished,
    ev.CancelRequested: _on_cancel,
    ev.RetryRequested: _on_retry,
    ev.RunSuspended: _on_suspended,
    ev.RunResumed: _on_resumed,
    ev.ChildCancelRequested: _on_child_cancel,
    ev.RunFinished: _on_finished,
}


# ---- walking the graph ------------------------------------------------------------------


def _retry_policy(program: Program, spec: Any) -> RetryPolicy:
    own = getattr(spec, "retry", None)
    if own is not None:
        return own  # type: ignore[no-any-return]
    if isinstance(spec, TaskState) and program.definition.retry is not None:
        return program.definition.retry
    if isinstance(spec, TaskState):
        return DEFAULT_RETRY
    return RetryPolicy(max_attempts=1)


def _enter(program: Program, state: RunState, frame: Frame, name: str, at: datetime) -> None:
    """Make ``frame`` visit state ``name``."""
    graph = program.graphs[frame.graph]
    spec = graph.states[name]
    path = _path(frame, name)
    previous = state.steps.get(path)
    rec = StepRecord(
        path=path,
        state=name,
        type=spec.type,
        frame=frame.id,
        status=StepStatus.READY,
        iteration=previous.iteration + 1 if previous is not None else 0,
        attempt=previous.attempt if previous is not None else 0,
        attempt_base=previous.attempt if previous is not None else 0,
        entered_at=_iso(at),
    )
    if previous is not None:
        # A loop came back here. The earlier visit is kept as `path@iteration`, so it still
        # shows and is still compensated; attempts keep rising, so a late outcome of the
        # earlier visit cannot complete this one.
        archived = f"{path}@{previous.iteration}"
        state.steps.pop(path)
        previous.path = archived
        state.steps[archived] = previous
        state.completed_order = [archived if p == path else p for p in state.completed_order]
    state.steps[path] = rec
    frame.current = path
    scope = _Scope(state, frame, program)

    # depends_on: a dependency that did not complete skips this state
    for dep in spec.depends_on:
        dep_rec = state.steps.get(_path(frame, dep))
        if dep_rec is None or dep_rec.status != StepStatus.COMPLETED:
            _skip(program, state, frame, rec, spec, at, reason=f"{dep} did not complete")
            return
    if spec.when is not None:
        try:
            go = expr.test(spec.when, scope)
        except LegatoError as exc:
            _step_failed(program, state, rec, _error_from(exc), at)
            return
        if not go:
            _skip(program, state, frame, rec, spec, at, reason="its `when` condition is false")
            return

    try:
        if isinstance(spec, TaskState):
            rec.input = _resolve_input(spec.input, scope)
            state.pending[f"s:{path}"] = None
        elif isinstance(spec, ChoiceState):
            _choose(program, state, frame, rec, spec, scope, at)
        elif isinstance(spec, ParallelState):
            _fork(program, state, frame, rec, spec, at)
        elif isinstance(spec, ForeachState):
            items = expr.resolve(spec.items, scope)
            if not isinstance(items, list):
                raise _ValueProblem(
                    f"foreach {name!r}: `items` gave {type(items).__name__}, not a list"
                )
            rec.items = items
            rec.results = [None] * len(items)
            rec.status = StepStatus.WAITING
            if not items:
                _complete_step(program, state, rec, [], at)
            else:
                _start_iterations(program, state, rec, spec, at)
        elif isinstance(spec, WaitState):
            _wait(program, state, frame, rec, spec, scope, at)
        elif isinstance(spec, SubflowState):
            rec.input = _resolve_input(spec.input, scope)
            state.pending[f"c:{path}"] = None
        elif isinstance(spec, SucceedState):
            output = expr.resolve(spec.output, scope) if spec.output is not None else None
            rec.status = StepStatus.COMPLETED
            rec.output = output
            rec.finished_at = _iso(at)
            if output is not None:
                frame.result = output
            _frame_done(program, state, frame, at)
        elif isinstance(spec, FailState):
            cause = expr.resolve(spec.cause, scope) if spec.cause is not None else None
            error = _error(
                str(cause) if cause is not None else spec.error,
                ErrorClass.PERMANENT,
                error=spec.error,
                cause=cause,
                state=path,
            )
            rec.status = StepStatus.FAILED
            rec.error = error
            rec.finished_at = _iso(at)
            _frame_failed(program, state, frame, error, at)
    except _ValueProblem as problem:
        _step_failed(program, state, rec, _error(str(problem), ErrorClass.VALIDATION), at)
    except LegatoError as exc:
        _step_failed(program, state, rec, _error_from(exc), at)


class _ValueProblem(Exception):
    pass


def _resolve_input(template: Any, scope: _Scope) -> Any:
    if template is None:
        return {}
    return expr.resolve(template, scope)


def _skip(
    program: Program,
    state: RunState,
    frame: Frame,
    rec: StepRecord,
    spec: Any,
    at: datetime,
    *,
    reason: str,
) -> None:
    rec.status = StepStatus.SKIPPED
    rec.finished_at = _iso(at)
    rec.output = {"skipped": reason}
    _advance(program, state, frame, spec, at)


def _advance(program: Program, state: RunState, frame: Frame, spec: Any, at: datetime) -> None:
    nxt = None if spec.end else spec.next
    if nxt is None:
        _frame_done(program, state, frame, at)
    else:
        _enter(program, state, frame, nxt, at)


def _choose(
    program: Program,
    state: RunState,
    frame: Frame,
    rec: StepRecord,
    spec: ChoiceState,
    scope: _Scope,
    at: datetime,
) -> None:
    chosen = None
    for rule in spec.choices:
        if expr.test(rule.when, scope):
            chosen = rule.next
            break
    if chosen is None:
        chosen = spec.default
    if chosen is None:
        _step_failed(
            program,
            state,
            rec,
            _error(f"choice {rec.state!r}: no rule matched and there is no default"),
            at,
        )
        return
    rec.status = StepStatus.COMPLETED
    rec.output = {"next": chosen}
    rec.finished_at = _iso(at)
    _enter(program, state, frame, chosen, at)


def _fork(
    program: Program,
    state: RunState,
    frame: Frame,
    rec: StepRecord,
    spec: ParallelState,
    at: datetime,
) -> None:
    rec.status = StepStatus.WAITING
    base = json.dumps(frame.context)
    for branch in spec.branches:
        child = Frame(
            id=f"{rec.path}[{branch.name}]",
            graph=_graph_id(frame.graph, rec.state, branch.name),
            parent_step=rec.path,
            name=branch.name,
            context=json.loads(base),
        )
        state.frames[child.id] = child
        rec.children.append(child.id)
    for child_id in list(rec.children):
        child = state.frames[child_id]
        if child.status == "running" and rec.status == StepStatus.WAITING:
            _enter(program, state, child, program.graphs[child.graph].start_at, at)


def _start_iterations(
    program: Program, state: RunState, rec: StepRecord, spec: ForeachState, at: datetime
) -> None:
    assert rec.items is not None
    if rec.starting:
        return  # the loop below is already running further up the stack; it goes on
    frame = state.frames[rec.frame]
    rec.starting = True
    try:
        _start_iterations_loop(program, state, rec, spec, frame, at)
    finally:
        rec.starting = False
    if rec.status == StepStatus.WAITING and rec.succeeded == len(rec.items):
        _complete_step(program, state, rec, rec.results, at)


def _start_iterations_loop(
    program: Program,
    state: RunState,
    rec: StepRecord,
    spec: ForeachState,
    frame: Frame,
    at: datetime,
) -> None:
    assert rec.items is not None
    while (
        rec.status == StepStatus.WAITING
        and rec.next_index < len(rec.items)
        and rec.next_index - rec.succeeded - rec.failed < spec.concurrency
    ):
        index = rec.next_index
        rec.next_index += 1
        child = Frame(
            id=f"{rec.path}[{index}]",
            graph=_graph_id(frame.graph, rec.state, "*"),
            parent_step=rec.path,
            name=str(index),
            context=_copy(frame.context),
            item=rec.items[index],
            index=index,
        )
        state.frames[child.id] = child
        rec.children.append(child.id)
        _enter(program, state, child, program.graphs[child.graph].start_at, at)


def _wait(
    program: Program,
    state: RunState,
    frame: Frame,
    rec: StepRecord,
    spec: WaitState,
    scope: _Scope,
    at: datetime,
) -> None:
    rec.status = StepStatus.WAITING
    timer_id = f"{rec.path}:{rec.iteration}"
    if spec.event is not None:
        if spec.event.correlation is not None:
            value = expr.resolve(spec.event.correlation, scope)
            rec.correlation = None if value is None else str(value)
        for i, signal in enumerate(state.signals):
            if _signal_matches(program, state, rec, signal):
                state.signals.pop(i)
                _complete_step(program, state, rec, signal["data"], at)
                return
        if spec.event.timeout is None:
            return
        fire_at = at + timedelta(seconds=spec.event.timeout)
        kind = "event_timeout"
    elif spec.duration is not None:
        fire_at = at + timedelta(seconds=spec.duration)
        kind = "wait"
    else:
        until = expr.resolve(spec.until, scope)
        try:
            fire_at = datetime.fromisoformat(str(until))
        except ValueError:
            raise _ValueProblem(
                f"wait {rec.state!r}: `until` gave {until!r}, not an ISO-8601 instant"
            ) from None
        if fire_at.tzinfo is None:
            raise _ValueProblem(
                f"wait {rec.state!r}: `until` gave {until!r} without a time zone; "
                "add one, e.g. 'Z' or '+02:00'"
            )
        kind = "wait"
    rec.timer_id = timer_id
    rec.due_at = _iso(fire_at)
    state.timers[timer_id] = {
        "kind": kind,
        "path": rec.path,
        "fire_at": _iso(fire_at),
        "started": False,
    }
    state.pending[f"t:{timer_id}"] = None


def _write(state: RunState, frame: Frame, path: str, value: Any) -> None:
    # Copies: a value shared with a step's output (or the event it came from) would change
    # when a later step writes under it, and differently once the state went through JSON.
    assert frame.context is not None
    expr.write_path(frame.context, path, _copy(value))
    if frame.parent_step is not None:
        frame.writes.append([path, _copy(value)])


def _complete_step(
    program: Program, state: RunState, rec: StepRecord, output: Any, at: datetime
) -> None:
    frame = state.frames[rec.frame]
    spec = program.spec(frame.graph, rec.state)
    rec.status = StepStatus.COMPLETED
    rec.output = output
    rec.error = None
    rec.finished_at = _iso(at)
    if isinstance(spec, TaskState) and spec.compensation is not None:
        state.completed_order.append(rec.path)
    try:
        mapping = getattr(spec, "output", None)
        if isinstance(spec, TaskState | SubflowState) and mapping:
            assert frame.context is not None
            view = dict(frame.context)
            view["result"] = output
            scope = _Scope(state, frame, program, context=view, extra={"result": output})
            for target, source in mapping.items():
                _write(state, frame, target, expr.resolve(source, scope))
        result_path = getattr(spec, "result_path", None)
        if result_path:
            _write(state, frame, result_path, output)
    except LegatoError as exc:
        rec.status = StepStatus.FAILED
        _step_failed(program, state, rec, _error_from(exc), at)
        return
    if isinstance(spec, TaskState) and spec.compensation is not None:
        # Resolve the compensation's input now, in this step's own frame: a branch's or an
        # iteration's context is gone by the time compensations run.
        assert frame.context is not None
        view = dict(frame.context)
        view["result"] = output
        scope = _Scope(state, frame, program, context=view, extra={"result": output})
        try:
            rec.compensation_input = _resolve_input(spec.compensation.input, scope)
        except LegatoError as exc:
            rec.compensation_error = _error_from(exc)
    frame.result = output
    _advance(program, state, frame, spec, at)


def _step_failed(
    program: Program, state: RunState, rec: StepRecord, error: dict[str, Any], at: datetime
) -> None:
    """The step failed for good: take a matching catch, or fail its frame."""
    frame = state.frames[rec.frame]
    spec = program.spec(frame.graph, rec.state)
    rec.status = StepStatus.FAILED
    rec.error = error
    rec.finished_at = _iso(at)
    state.pending.pop(f"s:{rec.path}", None)
    state.pending.pop(f"c:{rec.path}", None)
    catch = _matching_catch(program, frame, getattr(spec, "catch", ()), error)
    if catch is not None:
        rec.caught = True
        if catch.result_path:
            with contextlib.suppress(LegatoError):
                _write(state, frame, catch.result_path, {**error, "step": rec.state})
        _enter(program, state, frame, catch.next, at)
        return
    _frame_failed(program, state, frame, error, at)


def _matching_catch(
    program: Program, frame: Frame, catches: tuple[Catch, ...], error: dict[str, Any]
) -> Catch | None:
    error_class = error.get("error_class", ErrorClass.PERMANENT)
    states = program.graphs[frame.graph].states
    for catch in catches:
        if ("ALL" in catch.errors or error_class in catch.errors) and catch.next in states:
            return catch
    return None


def _frame_done(program: Program, state: RunState, frame: Frame, at: datetime) -> None:
    frame.status = "completed"
    frame.current = None
    if frame.parent_step is None:
        if state.status == RunStatus.RUNNING:
            output = frame.result if _ended_in_succeed_output(program, state, frame) else None
            state.output = output if output is not None else _public_context(frame)
            state.status = RunStatus.COMPLETED
            state.outcome = RunStatus.COMPLETED
            _clear_pending(state)
        return
    owner = state.steps[frame.parent_step]
    if owner.status != StepStatus.WAITING:
        return
    owner.succeeded += 1
    owner_frame = state.frames[owner.frame]
    spec = program.spec(owner_frame.graph, owner.state)
    if isinstance(spec, ForeachState):
        assert owner.results is not None
        assert frame.index is not None
        owner.results[frame.index] = frame.result
        frame.context = None
        if owner.starting:
            return  # _start_iterations goes on (and completes the foreach) without recursing
        if owner.succeeded == len(owner.results):
            _complete_step(program, state, owner, owner.results, at)
        else:
            _start_iterations(program, state, owner, spec, at)
        return
    assert isinstance(spec, ParallelState)
    needed = _needed(spec)
    if owner.succeeded >= needed:
        _join(program, state, owner, owner_frame, at)


def _ended_in_succeed_output(program: Program, state: RunState, frame: Frame) -> bool:
    for rec in reversed(state.steps.values()):
        if rec.frame == frame.id:
            if rec.type != "succeed":
                return False
            spec = program.spec(frame.graph, rec.state)
            return spec.output is not None
    return False


def _public_context(frame: Frame) -> Any:
    return frame.context


def _needed(spec: ParallelState) -> int:
    if spec.join == "all":
        return len(spec.branches)
    if spec.join == "any":
        return 1
    return min(spec.join.at_least, len(spec.branches))


def _join(
    program: Program, state: RunState, owner: StepRecord, owner_frame: Frame, at: datetime
) -> None:
    """Merge the completed branches, in definition order, whatever order they finished in."""
    results: dict[str, Any] = {}
    writes: list[list[Any]] = []
    for child_id in owner.children:
        child = state.frames[child_id]
        if child.status == "completed":
            writes += child.writes
            results[child.name or child_id] = child.result
        elif child.status == "running":
            _cancel_frame(state, child, at)
        child.context = None
    try:
        for path, value in writes:
            _write(state, owner_frame, path, value)
    except LegatoError as exc:  # branches wrote clashing shapes ($.x, then $.x.y on a string)
        _step_failed(program, state, owner, _error_from(exc), at)
        return
    _complete_step(program, state, owner, results, at)


def _frame_failed(
    program: Program, state: RunState, frame: Frame, error: dict[str, Any], at: datetime
) -> None:
    frame.status = "failed"
    frame.error = error
    frame.current = None
    if frame.parent_step is None:
        if state.status == RunStatus.RUNNING:
            _end_run(program, state, RunStatus.FAILED, error, at)
        return
    owner = state.steps[frame.parent_step]
    if owner.status != StepStatus.WAITING:
        return
    owner.failed += 1
    owner_frame = state.frames[owner.frame]
    spec = program.spec(owner_frame.graph, owner.state)
    label = "iteration" if isinstance(spec, ForeachState) else "branch"
    if isinstance(spec, ParallelState):
        possible = len(spec.branches) - owner.failed
        if possible >= _needed(spec):
            return
    for child_id in owner.children:
        child = state.frames[child_id]
        if child.status == "running":
            _cancel_frame(state, child, at)
    wrapped = dict(error)
    wrapped["message"] = f"{label} {frame.name} of {owner.state!r} failed: {error.get('message')}"
    _step_failed(program, state, owner, wrapped, at)


def _cancel_frame(state: RunState, frame: Frame, at: datetime) -> None:
    frame.status = "cancelled"
    if frame.current is not None:
        rec = state.steps[frame.current]
        _cancel_step(state, rec, at)
    frame.current = None


def _cancel_step(state: RunState, rec: StepRecord, at: datetime) -> None:
    if rec.status not in ACTIVE_STEP:
        return
    was_waiting_for_child = rec.type == "subflow" and rec.status == StepStatus.WAITING
    rec.status = StepStatus.CANCELLED
    rec.finished_at = _iso(at)
    state.pending.pop(f"s:{rec.path}", None)
    state.pending.pop(f"c:{rec.path}", None)
    if was_waiting_for_child and rec.child_run_id:
        state.pending[f"x:{rec.path}"] = None  # the child it waits for is cancelled too
    if rec.timer_id is not None:
        state.pending.pop(f"t:{rec.timer_id}", None)
    for child_id in rec.children:
        child = state.frames[child_id]
        if child.status == "running":
            _cancel_frame(state, child, at)


def _clear_pending(state: RunState) -> None:
    for key in list(state.pending):
        if not key.startswith(("k:", "x:")):  # compensations and child cancellations stay
            del state.pending[key]


def _end_run(
    program: Program, state: RunState, outcome: RunStatus, error: dict[str, Any], at: datetime
) -> None:
    """The run fails or is cancelled: stop everything, then compensate in reverse order."""
    top = state.frames[""]
    if top.status == "running":
        _cancel_frame(state, top, at)
    for frame in state.frames.values():
        if frame.status == "running":
            _cancel_frame(state, frame, at)
    _clear_pending(state)
    state.outcome = outcome
    state.error = error
    state.output = top.context
    queue = [
        path
        for path in reversed(state.completed_order)
        if state.steps.get(path) is not None and state.steps[path].status == StepStatus.COMPLETED
    ]
    if not queue:
        state.status = outcome
        return
    state.status = RunStatus.COMPENSATING
    state.compensation_queue = queue
    _next_compensation(program, state, at)


def _next_compensation(program: Program, state: RunState, at: datetime) -> None:
    while state.compensation_queue:
        rec = state.steps[state.compensation_queue[0]]
        if rec.compensation_status is None and rec.compensation_error is not None:
            # its input could not be resolved when the step completed: it cannot run
            _give_up_compensation(state, rec, rec.compensation_error)
            return
        if rec.compensation_status in (None, "ready", "retrying", "scheduled"):
            if rec.compensation_status is None:
                rec.compensation_status = "ready"
                state.pending[f"k:{rec.path}"] = None
            return
        state.compensation_queue.pop(0)
    assert state.outcome is not None
    state.status = state.outcome


def _compensation_spec(program: Program, state: RunState, rec: StepRecord) -> Compensation:
    spec = program.spec(state.frames[rec.frame].graph, rec.state)
    assert isinstance(spec, TaskState)
    assert spec.compensation is not None
    return spec.compensation


def _compensation_completed(program: Program, state: RunState, event: ev.StepCompleted) -> None:
    rec = state.steps.get(event.path[: -len("#compensate")])
    if (
        rec is None
        or rec.compensation_status != "scheduled"
        or rec.compensation_attempt != event.attempt
    ):
        return
    rec.compensation_status = "completed"
    rec.status = StepStatus.COMPENSATED
    rec.compensation_error = None
    if state.compensation_queue and state.compensation_queue[0] == rec.path:
        state.compensation_queue.pop(0)
    _next_compensation(program, state, event.at)


def _compensation_failed(program: Program, state: RunState, event: ev.StepFailed) -> None:
    rec = state.steps.get(event.path[: -len("#compensate")])
    if (
        rec is None
        or rec.compensation_status != "scheduled"
        or rec.compensation_attempt != event.attempt
    ):
        return
    comp = _compensation_spec(program, state, rec)
    policy = comp.retry or COMPENSATION_RETRY
    rec.compensation_error = dict(event.error)
    error_class = _error_class(event.error)
    if rec.compensation_attempt < policy.max_attempts and error_class not in policy.non_retryable:
        rec.compensation_status = "retrying"
        rec.due_at = _iso(event.at + timedelta(seconds=policy.delay(rec.compensation_attempt)))
        state.pending[f"k:{rec.path}"] = None
        return
    _give_up_compensation(state, rec, dict(event.error))


def _give_up_compensation(state: RunState, rec: StepRecord, error: dict[str, Any]) -> None:
    """A compensation failed for good: the run ends compensation_failed, with the details."""
    rec.compensation_status = "failed"
    rec.compensation_error = error
    state.compensation_queue = []
    state.status = RunStatus.COMPENSATION_FAILED
    state.error = {
        "type": "StepError",
        "message": (
            f"compensation of {rec.path!r} failed after {rec.compensation_attempt} attempt(s): "
            f"{error.get('message')}; the run had "
            f"{'been cancelled' if state.outcome == RunStatus.CANCELLED else 'failed'}: "
            f"{(state.error or {}).get('message')}"
        ),
        "error_class": _error_class(error).value,
        "details": {
            "compensation_of": rec.path,
            "compensation_error": error,
            "run_error": state.error,
        },
        "retryable": False,
    }


# ---- decide -------------------------------------------------------------------------------


def decide(program: Program, state: RunState) -> list[cmd.Command]:
    """What the runtime should do now, given the state. Never repeats a recorded command.

    A suspended (paused) run asks for no new work: its pending steps, timers and child
    runs wait for RunResumed (a run that is compensating or has ended is never
    suspended). Cancelling the child run of a step that no longer waits for it stops work
    rather than starting it, so that is still asked for."""
    out: list[cmd.Command] = []
    for key in state.pending:
        kind, ref = key[0], key[2:]
        if state.suspended and kind != "x":
            continue
        if kind == "s":
            out.append(_schedule(program, state, state.steps[ref]))
        elif kind == "t":
            timer = state.timers[ref]
            out.append(cmd.StartTimer(timer_id=ref, fire_at=_parse(timer["fire_at"])))
        elif kind == "c":
            rec = state.steps[ref]
            spec = program.spec(state.frames[rec.frame].graph, rec.state)
            out.append(
                cmd.StartChild(
                    path=ref,
                    child_run_id=f"{state.run_id}.{ref}.{rec.iteration}",
                    workflow=spec.workflow,
                    version=spec.version,
                    input=rec.input,
                    wait=spec.wait,
                )
            )
        elif kind == "k":
            out.append(_schedule_compensation(program, state, state.steps[ref]))
        elif kind == "x":
            rec = state.steps[ref]
            assert rec.child_run_id is not None
            out.append(cmd.CancelChild(path=ref, child_run_id=rec.child_run_id))
    if state.terminal and not state.finished:
        out.append(cmd.FinishRun(status=state.status, output=state.output, error=state.error))
    return out


def idempotency_key(state: RunState, rec: StepRecord) -> str:
    """``run:path:iteration``: the same on every attempt, distinct per loop visit."""
    path = rec.path.split("@", 1)[0]  # an earlier loop visit is kept as `path@iteration`
    return f"{state.run_id}:{path}:{rec.iteration}"


def _schedule(program: Program, state: RunState, rec: StepRecord) -> cmd.ScheduleStep:
    spec = program.spec(state.frames[rec.frame].graph, rec.state)
    assert isinstance(spec, TaskState)
    not_before = _parse(rec.due_at) if rec.status == StepStatus.RETRYING and rec.due_at else None
    return cmd.ScheduleStep(
        run_id=state.run_id,
        path=rec.path,
        attempt=rec.attempt + 1,
        idempotency_key=idempotency_key(state, rec),
        input=rec.input,
        action=spec.action,
        service=spec.service if spec.action is None else None,
        operation=spec.operation if spec.action is None else None,
        timeout=spec.timeout,
        not_before=not_before,
        async_=spec.async_,
        visit_attempt=rec.attempt + 1 - rec.attempt_base,
        callback_token=callback_token(state, rec) if spec.async_ else None,
        batch=(
            {"max_size": spec.batch.max_size, "max_wait": spec.batch.max_wait}
            if spec.batch is not None and spec.batch.enabled
            else None
        ),
    )


def _schedule_compensation(program: Program, state: RunState, rec: StepRecord) -> cmd.ScheduleStep:
    comp = _compensation_spec(program, state, rec)
    spec = program.spec(state.frames[rec.frame].graph, rec.state)
    comp_input = rec.compensation_input if rec.compensation_input is not None else {}
    action = comp.action
    service = comp.service or (spec.service if action is None else None)
    not_before = (
        _parse(rec.due_at) if rec.compensation_status == "retrying" and rec.due_at else None
    )
    return cmd.ScheduleStep(
        run_id=state.run_id,
        path=f"{rec.path}#compensate",
        attempt=rec.compensation_attempt + 1,
        idempotency_key=f"{idempotency_key(state, rec)}:compensate",
        input=comp_input,
        action=action,
        service=service,
        operation=comp.operation if action is None else None,
        timeout=comp.timeout,
        not_before=not_before,
        compensation=True,
    )


def wanted(state: RunState, path: str, attempt: int) -> bool:
    """Is attempt ``attempt`` of ``path`` still wanted? (The runtime drops work that is not.)"""
    if path.endswith("#compensate"):
        rec = state.steps.get(path[: -len("#compensate")])
        return (
            rec is not None
            and rec.compensation_status == "scheduled"
            and rec.compensation_attempt == attempt
        )
    rec = state.steps.get(path)
    return rec is not None and rec.status == StepStatus.SCHEDULED and rec.attempt == attempt
