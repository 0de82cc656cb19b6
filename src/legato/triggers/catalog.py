"""Which workflows a trigger may start: the API's workflow catalog, read for triggers.

The catalog is the ``workflows`` table (``store/workflows.py``): a workflow has a stable
id (``wf_...``), is enabled or not, may be deleted, and points at its current version,
a row of ``definitions`` named by the workflow's id.  The table copies the trigger's type,
event name and schedule so that fan-out and the scheduler find their workflows with one
indexed query; the trigger itself (conditions, schedule details, secret reference) is
read from the current version's document, compiled once per version (versions are
immutable) in the caller's :class:`~legato.runtime.worker.Programs` cache.

Definitions stored without a workflow row (``engine.deploy``, ``legato deploy``) have no
triggers: they start by name (CLI, ``Engine.start``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from legato.dsl.model import Trigger
from legato.errors import NotFoundError
from legato.runtime.worker import Programs
from legato.store import Scope, SqlStore
from legato.store.workflows import WorkflowRecord

log = logging.getLogger("legato.triggers")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A workflow a trigger may start: ``workflow_id`` goes into run ids, ``workflow``
    and ``version`` name the definition to start, ``since`` is when its current
    configuration (version, enabled) took effect: the scheduler fires no tick before it."""

    scope: Scope
    workflow_id: str
    workflow: str
    version: str
    enabled: bool
    trigger: Trigger
    since: datetime | None = None


async def candidate_of(programs: Programs, record: WorkflowRecord) -> Candidate:
    """The candidate of a workflow row: its current version's trigger."""
    version = str(record.current_version)
    program = await programs.get(record.scope, record.id, version)
    trigger = program.definition.trigger or Trigger()
    return Candidate(
        scope=record.scope,
        workflow_id=record.id,
        workflow=record.id,
        version=version,
        enabled=record.enabled and not record.deleted,
        trigger=trigger,
        since=record.updated_at,
    )


async def event_candidates(
    store: SqlStore, programs: Programs, scope: Scope, event_name: str
) -> list[Candidate]:
    """The workflows of this tenant and environment triggered by ``event_name``, enabled
    or not (the caller reports disabled ones as skipped), by id."""
    records = await store.list_enabled_by_event(scope, event_name, enabled_only=False)
    out = []
    for record in records:
        candidate = await candidate_of(programs, record)
        # the row's copy and the version's document agree unless the row is being updated
        if candidate.trigger.type == "event" and candidate.trigger.event_name == event_name:
            out.append(candidate)
    return out


async def workflow_candidate(
    store: SqlStore, programs: Programs, scope: Scope, workflow_id: str
) -> Candidate:
    """The workflow ``workflow_id`` of this scope; NotFoundError when it does not exist
    (or is deleted)."""
    record = await store.get_workflow(scope, workflow_id)
    return await candidate_of(programs, record)


async def scheduled_candidates(store: SqlStore, programs: Programs) -> list[Candidate]:
    """Infrastructure, across tenants: every enabled workflow with a scheduled trigger."""
    out = []
    for record in await store.list_scheduled():
        try:
            candidate = await candidate_of(programs, record)
        except NotFoundError as exc:  # its current version is not stored: nothing to start
            log.warning("scheduled workflow %r (%s) is skipped: %s", record.id, record.scope, exc)
            continue
        if candidate.enabled and candidate.trigger.type == "scheduled":
            out.append(candidate)
    return out
