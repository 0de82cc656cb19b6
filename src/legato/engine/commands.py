"""What the engine asks the runtime to do.

``decide`` returns commands; the runtime carries each one out and records it with the
event returned by :meth:`Command.record`, in the same transaction as the event that led
to it. Once recorded, ``decide`` no longer asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from legato.engine import events as ev


@dataclass(frozen=True, kw_only=True, slots=True)
class Command:
    def record(self, at: datetime) -> ev.Event:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True, slots=True)
class ScheduleStep(Command):
    """Run attempt ``attempt`` of the step at ``path`` (not before ``not_before``)."""

    run_id: str
    path: str
    attempt: int
    idempotency_key: str
    input: Any
    action: str | None = None
    service: str | None = None
    operation: str | None = None
    timeout: float | None = None
    not_before: datetime | None = None
    compensation: bool = False
    async_: bool = False
    visit_attempt: int | None = None  # the attempt within this loop visit (what users see)
    callback_token: str | None = None  # async steps: what the service calls back with
    batch: dict[str, Any] | None = None  # {max_size, max_wait}: may be sent in a batch

    def __post_init__(self) -> None:
        if (self.action is None) == (self.service is None):
            raise ValueError("a step runs either an action or a service operation")

    def record(self, at: datetime) -> ev.Event:
        return ev.StepScheduled(
            at=at,
            path=self.path,
            attempt=self.attempt,
            idempotency_key=self.idempotency_key,
            input=self.input,
            not_before=self.not_before,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class StartTimer(Command):
    timer_id: str
    fire_at: datetime

    def record(self, at: datetime) -> ev.Event:
        return ev.TimerStarted(at=at, timer_id=self.timer_id, fire_at=self.fire_at)


@dataclass(frozen=True, kw_only=True, slots=True)
class StartChild(Command):
    """Start run ``child_run_id`` of ``workflow``; report back to ``path`` if ``wait``."""

    path: str
    child_run_id: str
    workflow: str
    version: str | None
    input: Any
    wait: bool = True

    def record(self, at: datetime) -> ev.Event:
        return ev.ChildStarted(at=at, path=self.path, child_run_id=self.child_run_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class CancelChild(Command):
    """Cancel child run ``child_run_id``: its parent was cancelled or failed meanwhile."""

    path: str
    child_run_id: str

    def record(self, at: datetime) -> ev.Event:
        return ev.ChildCancelRequested(at=at, path=self.path, child_run_id=self.child_run_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class FinishRun(Command):
    status: str
    output: Any = None
    error: dict[str, Any] | None = None

    def record(self, at: datetime) -> ev.Event:
        return ev.RunFinished(at=at, status=self.status, output=self.output, error=self.error)
