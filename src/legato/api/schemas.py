"""What the API answers (pydantic models, which are also its OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ExecutionStatus = Literal["pending", "running", "completed", "failed", "cancelled"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Finding(_Out):
    code: str
    severity: Literal["error", "warning"]
    pointer: str
    message: str
    fix: str
    line: int | None = None
    column: int | None = None


class TriggerOut(_Out):
    type: str = Field(description="manual, api, event, scheduled or webhook")
    event_name: str | None = None
    schedule: str | None = None


class DefinitionSummary(_Out):
    id: str = Field(description="`wf_` and 12 hex digits", examples=["wf_3f9a1c2b7d4e"])
    name: str
    description: str | None = None
    version: int = Field(description="The current version (every update adds one)")
    status: Literal["published"] = "published"
    enabled: bool
    trigger: TriggerOut
    tenant_id: str
    environment_id: str
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime


class Definition(DefinitionSummary):
    current_version: int = Field(description="The workflow's current version")
    source_format: str = Field(description="canonical, states, steps or ordered")
    definition: Any = Field(description="The definition of this version, as it was sent")
    canonical: dict[str, Any] = Field(
        description="The same in Legato's canonical form (`name` is the workflow's id)"
    )
    warnings: list[Finding] = Field(
        default_factory=list, description="Lint warnings (the definition was accepted)"
    )


class DefinitionPage(_Out):
    items: list[DefinitionSummary]
    limit: int
    offset: int
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page"
    )


class VersionOut(_Out):
    version: int
    created_at: datetime
    source_format: str
    content_hash: str
    current: bool


class VersionList(_Out):
    workflow_id: str
    current_version: int
    versions: list[VersionOut]


class TriggerAccepted(_Out):
    execution_id: str
    status: Literal["pending"] = "pending"
    workflow_id: str
    workflow_version: int


class StepExecution(_Out):
    step_id: str = Field(description="The step's path: `charge`, `checks[a].run`, `each[3].x`")
    state: str
    type: str
    status: str = Field(
        description="pending, running, completed, failed, skipped, cancelled or compensated"
    )
    legato_status: str = Field(description="Legato's own: ready, retrying, waiting, ...")
    attempts: int
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


class ExecutionSummary(_Out):
    id: str
    workflow_id: str
    workflow_name: str | None = None
    workflow_version: int | str
    status: ExecutionStatus
    legato_status: str = Field(
        description="running, compensating, completed, failed, cancelled, compensation_failed"
    )
    started_at: datetime | None = None
    completed_at: datetime | None = None
    parent_execution_id: str | None = None


class Execution(ExecutionSummary):
    tenant_id: str
    environment_id: str
    paused: bool = Field(
        False,
        description="Paused: no new step starts until it is resumed (its status stays "
        "running; steps already running finish)",
    )
    trigger_type: str = Field(description="manual (this API, the CLI), event, scheduled, ...")
    trigger_event: Any = Field(None, description="The data the execution started with")
    step_executions: list[StepExecution]
    context: dict[str, Any] | None = None
    output: Any = None
    error: dict[str, Any] | None = None


class ExecutionPage(_Out):
    items: list[ExecutionSummary]
    limit: int
    offset: int
    next_cursor: str | None = None


class EventOut(_Out):
    seq: int
    type: str
    at: datetime
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class History(_Out):
    execution_id: str
    events: list[EventOut]


class SignalAccepted(_Out):
    execution_id: str
    signal: str
    status: ExecutionStatus
    legato_status: str


class CallbackAccepted(_Out):
    execution_id: str
    status: ExecutionStatus
    legato_status: str


class Health(_Out):
    status: Literal["ok"] = "ok"


class Check(_Out):
    ok: bool
    detail: str


class Readiness(_Out):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]


class TriggerRequest(BaseModel):
    """``POST .../{id}/trigger``: the run's input."""

    model_config = ConfigDict(extra="forbid")

    trigger_data: dict[str, Any] = Field(
        default_factory=dict,
        description="The execution's input (the context's `input`, and its root for the "
        "ordered format)",
        examples=[{"customer_id": "cust_123"}],
    )
