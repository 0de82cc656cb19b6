"""Read-only views of a run's state for people: per-step summaries and whether the run is
paused (CLI, API)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from legato.engine.machine import Program
from legato.engine.state import RunState, RunStatus, StepStatus


def suspension(state: RunState) -> str | None:
    """Why the run starts no new work: ``"created"`` (created paused and never started),
    ``"paused"`` (paused after it started), or None when it is not suspended."""
    if not state.suspended:
        return None
    return "created" if state.awaiting_start else "paused"


def step_views(
    program: Program, state: RunState, now: datetime | None = None
) -> list[dict[str, Any]]:
    """One entry per step visited, then the top-level states never reached.

    States never reached are ``pending`` while the run goes on and ``skipped`` once it has
    ended (the partial-failure rule: completed steps stay completed, the failed step is
    failed, the rest are skipped).
    """
    out: list[dict[str, Any]] = []
    for rec in state.steps.values():
        status = rec.status
        retry_at = None
        if status == StepStatus.SCHEDULED:
            status = "running"
            # an attempt after the first, scheduled for after its backoff delay
            if (
                rec.attempt - rec.attempt_base > 1
                and rec.due_at
                and rec.scheduled_at
                and rec.due_at > rec.scheduled_at
                and (now is None or rec.due_at > now.isoformat())
            ):
                status = "retrying"
                retry_at = rec.due_at
        view: dict[str, Any] = {
            "id": rec.path,
            "state": rec.state,
            "type": rec.type,
            "status": status,
            "attempts": rec.attempt - rec.attempt_base,
            "iteration": rec.iteration,
            "input": rec.input,
            "output": rec.output,
            "error": rec.error,
            "entered_at": rec.entered_at,
            "scheduled_at": rec.scheduled_at,
            "started_at": rec.started_at,
            "finished_at": rec.finished_at,
        }
        if rec.status == StepStatus.RETRYING:
            view["next_attempt_at"] = rec.due_at
        elif retry_at is not None:
            view["next_attempt_at"] = retry_at
        if rec.compensation_status is not None:
            view["compensation"] = {
                "status": rec.compensation_status,
                "attempts": rec.compensation_attempt,
                "error": rec.compensation_error,
            }
        if rec.child_run_id:
            view["child_run_id"] = rec.child_run_id
        if rec.metadata:
            view["metadata"] = rec.metadata  # side effects and cost the service reported
        out.append(view)
    seen = {rec.state for rec in state.steps.values() if rec.frame == ""}
    ended = state.status not in (RunStatus.RUNNING,)
    for name, spec in program.graphs[""].states.items():
        if name in seen:
            continue
        out.append(
            {
                "id": name,
                "state": name,
                "type": spec.type,
                "status": "skipped" if ended else "pending",
                "attempts": 0,
                "iteration": 0,
                "input": None,
                "output": None,
                "error": None,
            }
        )
    return out
