"""Run state as plain data.

A run is a tree of *frames* (threads of control): the top frame, one per parallel
branch, one per foreach iteration. Each frame walks its own graph of states, one state
at a time, and owns a JSON *context*. Every visit of a state is a :class:`StepRecord`
keyed by its *path*: ``charge`` at the top, ``checks[criminal].run`` inside the branch
``criminal`` of the parallel state ``checks``, ``each[3].notify`` inside iteration 3 of
the foreach ``each``.

``pending`` is an ordered set (a dict with ``None`` values, never a ``set``: iteration
order must be the same in every process) of things that need a command:
``s:<path>`` a step to schedule, ``t:<timer>`` a timer to start, ``c:<path>`` a child
run to start, ``k:<path>`` a compensation to schedule.

A *suspended* (paused) run keeps its pending entries: ``decide`` asks for them once it
is resumed. A run created paused (``awaiting_start``) has not entered its first state yet;
the resume that starts it does.

The whole state round-trips through :meth:`RunState.to_dict` / :meth:`RunState.from_dict`
as JSON. The snapshot the store keeps is :meth:`RunState.to_json`: the same data with
``frames`` and ``steps`` as rows of values under one ``layout`` of field names
(``from_dict`` reads both forms).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import operator
from dataclasses import dataclass, field
from typing import Any

import orjson


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATION_FAILED = "compensation_failed"


TERMINAL_RUN = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.COMPENSATION_FAILED,
    }
)


class StepStatus(enum.StrEnum):
    READY = "ready"  # entered; a command to run it is wanted
    SCHEDULED = "scheduled"  # an attempt is with the runtime
    RETRYING = "retrying"  # an attempt failed; the next one is wanted after a delay
    WAITING = "waiting"  # a timer, a signal, a child run or branches
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    COMPENSATED = "compensated"


ACTIVE_STEP = frozenset(
    {StepStatus.READY, StepStatus.SCHEDULED, StepStatus.RETRYING, StepStatus.WAITING}
)
FINISHED_STEP = frozenset(
    {
        StepStatus.COMPLETED,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
        StepStatus.CANCELLED,
        StepStatus.COMPENSATED,
    }
)


@dataclass(slots=True)
class StepRecord:
    path: str
    state: str
    type: str
    frame: str
    status: str
    iteration: int = 0
    attempt: int = 0  # rises across loop visits, so a late outcome of a past visit is stale
    attempt_base: int = 0  # attempts made by earlier visits of this path
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    entered_at: str | None = None
    scheduled_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    due_at: str | None = None
    timer_id: str | None = None
    child_run_id: str | None = None
    correlation: str | None = None
    operation_id: str | None = None  # an accepted async operation's handle
    metadata: dict[str, Any] | None = None  # what a service reported: side effects, cost
    caught: bool = False
    # parallel / foreach bookkeeping
    children: list[str] = field(default_factory=list)
    items: list[Any] | None = None
    results: list[Any] | None = None
    next_index: int = 0
    succeeded: int = 0
    failed: int = 0
    starting: bool = False  # foreach: inside the loop that starts iterations
    # compensation of this step (when the run fails or is cancelled later)
    compensation_status: str | None = None
    compensation_input: Any = None  # resolved when the step completed, in its own frame
    compensation_attempt: int = 0
    compensation_error: dict[str, Any] | None = None


@dataclass(slots=True)
class Frame:
    id: str  # "" for the top frame; the path prefix of its steps otherwise
    graph: str  # which graph of the program it walks
    parent_step: str | None  # the parallel/foreach step that owns it
    name: str | None  # branch name, or the iteration index as text
    status: str = "running"  # running | completed | failed | cancelled
    current: str | None = None
    context: dict[str, Any] | None = None
    writes: list[list[Any]] = field(default_factory=list)
    result: Any = None
    item: Any = None
    index: int | None = None
    error: dict[str, Any] | None = None


@dataclass(slots=True)
class RunState:
    run_id: str
    workflow: str
    version: str
    status: str = RunStatus.RUNNING
    input: Any = None
    started_at: str | None = None
    finished_at: str | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    outcome: str | None = None  # what the run ends as once compensation is done
    finished: bool = False  # RunFinished recorded
    parent_run_id: str | None = None
    parent_path: str | None = None
    secret: str | None = None  # from RunStarted; keys the callback tokens
    seq: int = 0  # events applied
    # paused: decide asks for no new work until RunResumed (only while status is running)
    suspended: bool = False
    suspended_reason: str | None = None
    awaiting_start: bool = False  # created paused (RunStarted.suspended); not started yet
    frames: dict[str, Frame] = field(default_factory=dict)
    steps: dict[str, StepRecord] = field(default_factory=dict)
    pending: dict[str, None] = field(default_factory=dict)
    timers: dict[str, dict[str, Any]] = field(default_factory=dict)
    signals: list[dict[str, Any]] = field(default_factory=list)
    completed_order: list[str] = field(default_factory=list)
    compensation_queue: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_RUN

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view. Shallow: serialise it before changing the state again."""
        data = dict(zip(_RUN_FIELDS, _RUN_VALUES(self), strict=True))
        # lists, not objects: insertion order is meaningful and JSON encoders may sort keys
        data["frames"] = [
            dict(zip(_FRAME_FIELDS, _FRAME_VALUES(v), strict=True)) for v in self.frames.values()
        ]
        data["steps"] = [
            dict(zip(_STEP_FIELDS, _STEP_VALUES(v), strict=True)) for v in self.steps.values()
        ]
        data["pending"] = list(self.pending)
        data["status"] = str(self.status)
        return data

    def to_json(self) -> str:
        """The snapshot as JSON text, encoded now (so later changes do not leak in).

        Frames and steps are written as rows of values under one list of field names
        (``layout``), not as objects that repeat every name: this runs at every commit,
        and the rows cost a third of the objects to build and encode and half the bytes
        to store (decision 0010). orjson encodes; a value it refuses (an integer beyond
        64 bits) falls back to the standard library, which refuses only what is not
        JSON."""
        data = dict(zip(_RUN_FIELDS, _RUN_VALUES(self), strict=True))
        data["frames"] = [_FRAME_VALUES(v) for v in self.frames.values()]
        data["steps"] = [_STEP_VALUES(v) for v in self.steps.values()]
        data["pending"] = list(self.pending)
        data["layout"] = _LAYOUT
        try:
            return orjson.dumps(data).decode()
        except orjson.JSONEncodeError:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """From :meth:`to_dict`'s data or :meth:`to_json`'s, parsed."""
        values = dict(data)
        frames, steps = data["frames"], data["steps"]
        layout = values.pop("layout", None)
        if layout is not None:  # to_json: rows of values, named once
            frame_fields, step_fields = layout["frames"], layout["steps"]
            frames = [dict(zip(frame_fields, row, strict=True)) for row in frames]
            steps = [dict(zip(step_fields, row, strict=True)) for row in steps]
        values["frames"] = {v["id"]: Frame(**v) for v in frames}
        values["steps"] = {v["path"]: StepRecord(**v) for v in steps}
        values["pending"] = dict.fromkeys(data["pending"])
        return cls(**values)


_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunState))
_FRAME_FIELDS = tuple(f.name for f in dataclasses.fields(Frame))
_STEP_FIELDS = tuple(f.name for f in dataclasses.fields(StepRecord))
# to_dict runs at every commit: one C-level getter per class instead of a getattr per field
_RUN_VALUES = operator.attrgetter(*_RUN_FIELDS)
_FRAME_VALUES = operator.attrgetter(*_FRAME_FIELDS)
_STEP_VALUES = operator.attrgetter(*_STEP_FIELDS)
_LAYOUT = {"frames": _FRAME_FIELDS, "steps": _STEP_FIELDS}
