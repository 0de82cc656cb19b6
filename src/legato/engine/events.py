"""The history vocabulary: one frozen dataclass per event.

A run's history is a list of these. Events are facts: what the outside world told the
run (it started with this input, a step finished with this output, a timer fired, a
signal arrived, someone asked to cancel, pause or resume it) and what the run decided and
the runtime accepted (a step was scheduled, a timer was started, a child run was started,
the run finished). ``apply`` folds them into :class:`~legato.engine.state.RunState`.

Every event carries ``at``: a timezone-aware instant chosen by the runtime. The engine
never reads a clock; it only uses the instants inside events.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar


def _check_aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value!r}")


_FIELDS: dict[type, tuple[str, ...]] = {}  # an event class's payload fields, computed once


def _payload_fields(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.name != "at")
    return names


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """Base class of every history event."""

    at: datetime

    kind: ClassVar[str] = "Event"

    def __post_init__(self) -> None:
        _check_aware("at", self.at)

    def payload(self) -> dict[str, Any]:
        """The event's fields except ``at``, as plain JSON data."""
        return {name: getattr(self, name) for name in _payload_fields(type(self))}


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStarted(Event):
    kind: ClassVar[str] = "RunStarted"
    run_id: str
    workflow: str
    version: str
    input: Any = None
    parent_run_id: str | None = None
    parent_path: str | None = None
    secret: str | None = None  # drawn by the runtime; makes callback tokens unguessable
    suspended: bool = False  # created paused: nothing runs until RunResumed starts it

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        if not self.run_id:
            raise ValueError("RunStarted needs a run_id")

    def payload(self) -> dict[str, Any]:
        data = Event.payload(self)
        if data["secret"] is None:
            del data["secret"]  # histories recorded before callback tokens had none
        if not data["suspended"]:
            del data["suspended"]  # nor before runs could be created paused
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class StepScheduled(Event):
    """The runtime accepted a ScheduleStep command: attempt ``attempt`` of ``path``."""

    kind: ClassVar[str] = "StepScheduled"
    path: str
    attempt: int
    idempotency_key: str
    input: Any = None
    not_before: datetime | None = None

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        _check_aware("not_before", self.not_before)
        if self.attempt < 1:
            raise ValueError("attempt numbers start at 1")

    def payload(self) -> dict[str, Any]:
        data = Event.payload(self)
        data["not_before"] = self.not_before.isoformat() if self.not_before else None
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class StepCompleted(Event):
    kind: ClassVar[str] = "StepCompleted"
    path: str
    attempt: int
    output: Any = None
    started_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        _check_aware("started_at", self.started_at)

    def payload(self) -> dict[str, Any]:
        data = Event.payload(self)
        data["started_at"] = self.started_at.isoformat() if self.started_at else None
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class StepFailed(Event):
    """An attempt failed. ``error`` is a stored error (see ``LegatoError.to_dict``)."""

    kind: ClassVar[str] = "StepFailed"
    path: str
    attempt: int
    error: dict[str, Any]
    started_at: datetime | None = None

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        _check_aware("started_at", self.started_at)
        if "message" not in self.error:
            raise ValueError("a StepFailed error needs a message")

    def payload(self) -> dict[str, Any]:
        data = Event.payload(self)
        data["started_at"] = self.started_at.isoformat() if self.started_at else None
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class StepAccepted(Event):
    """An async operation was started; its result arrives later by callback or polling."""

    kind: ClassVar[str] = "StepAccepted"
    path: str
    attempt: int
    operation_id: str | None = None
    started_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        _check_aware("started_at", self.started_at)

    def payload(self) -> dict[str, Any]:
        data = Event.payload(self)
        data["started_at"] = self.started_at.isoformat() if self.started_at else None
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class CallbackReceived(Event):
    """The result of an accepted async operation (``error`` set when it failed)."""

    kind: ClassVar[str] = "CallbackReceived"
    token: str
    output: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerStarted(Event):
    kind: ClassVar[str] = "TimerStarted"
    timer_id: str
    fire_at: datetime

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        _check_aware("fire_at", self.fire_at)

    def payload(self) -> dict[str, Any]:
        return {"timer_id": self.timer_id, "fire_at": self.fire_at.isoformat()}


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerFired(Event):
    kind: ClassVar[str] = "TimerFired"
    timer_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class SignalReceived(Event):
    kind: ClassVar[str] = "SignalReceived"
    name: str
    payload_: Any = None
    correlation: str | None = None
    signal_id: int | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "data": self.payload_,
            "correlation": self.correlation,
            "signal_id": self.signal_id,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class ChildStarted(Event):
    kind: ClassVar[str] = "ChildStarted"
    path: str
    child_run_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ChildFinished(Event):
    kind: ClassVar[str] = "ChildFinished"
    path: str
    child_run_id: str
    status: str
    output: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ChildCancelRequested(Event):
    """The runtime accepted to cancel a child run whose parent no longer waits for it."""

    kind: ClassVar[str] = "ChildCancelRequested"
    path: str
    child_run_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CancelRequested(Event):
    kind: ClassVar[str] = "CancelRequested"
    reason: str = "cancelled"


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryRequested(Event):
    """Run a failed run again from the step that failed, keeping what completed."""

    kind: ClassVar[str] = "RetryRequested"
    reason: str = "retried"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSuspended(Event):
    """The run was paused: it starts no new work (steps, timers, child runs) until
    RunResumed. Work already with the runtime finishes and its outcome is recorded."""

    kind: ClassVar[str] = "RunSuspended"
    reason: str = "paused"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunResumed(Event):
    """The paused run goes on: the work it held back is asked for now."""

    kind: ClassVar[str] = "RunResumed"
    reason: str = "resumed"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFinished(Event):
    kind: ClassVar[str] = "RunFinished"
    status: str
    output: Any = None
    error: dict[str, Any] | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        StepScheduled,
        StepCompleted,
        StepFailed,
        StepAccepted,
        CallbackReceived,
        TimerStarted,
        TimerFired,
        SignalReceived,
        ChildStarted,
        ChildFinished,
        ChildCancelRequested,
        CancelRequested,
        RetryRequested,
        RunSuspended,
        RunResumed,
        RunFinished,
    )
}

_DATETIME_FIELDS = {"not_before", "started_at", "fire_at"}


def event_from_record(kind: str, at: datetime, payload: dict[str, Any]) -> Event:
    """Rebuild an event from what the store keeps (its type, instant and payload)."""
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    data = dict(payload)
    if cls is SignalReceived:
        data["payload_"] = data.pop("data", None)
    for name in _DATETIME_FIELDS & data.keys():
        if data[name] is not None:
            data[name] = datetime.fromisoformat(data[name])
    return cls(at=at, **data)
