"""Fixtures of the trigger tests: a real SQLite file, a hand-moved clock, an Engine, and a
helper that creates a workflow the way the API does (a version in ``definitions`` named
by the workflow's id, and a row of ``workflows`` pointing at it)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from legato import Engine, WorkerOptions
from legato.dsl.model import Definition
from legato.store import Scope, SqlStore
from legato.testing import FakeClock

T0 = datetime(2024, 12, 19, 10, 0, tzinfo=UTC)
ACME_PROD = Scope("acme", "prod")
ACME_STAGING = Scope("acme", "staging")
GLOBEX_PROD = Scope("globex", "prod")

FAST = WorkerOptions(poll_interval=0.05, heartbeat_interval=0.5)
POSTGRES_SERVER = os.environ.get(
    "LEGATO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def definition(workflow_id: str, trigger: dict[str, Any] | None, version: int = 1) -> Definition:
    """A one-step workflow (it records its input as its output) with this trigger."""
    doc: dict[str, Any] = {
        "name": workflow_id,
        "version": str(version),
        "start_at": "echo",
        "states": {
            "echo": {
                "type": "task",
                "action": "set",
                "input": {"seen": "{{ input }}"},
                "output": {"$.seen": "$.result.seen"},
                "next": "done",
            },
            "done": {"type": "succeed", "output": "$.seen"},
        },
    }
    if trigger is not None:
        doc["trigger"] = trigger
    return Definition.model_validate(doc)


MakeWorkflow = Callable[..., Awaitable[str]]


async def create_workflow(
    engine: Engine,
    scope: Scope,
    workflow_id: str,
    trigger: dict[str, Any] | None,
    *,
    enabled: bool = True,
    now: datetime | None = None,
) -> str:
    """Create workflow ``workflow_id`` in ``scope`` at version 1, as the API does."""
    defn = definition(workflow_id, trigger)
    await engine.for_scope(scope).deploy(defn)
    schedule = (trigger or {}).get("schedule")
    await engine.store.create_workflow(
        scope,
        workflow_id=workflow_id,
        name=workflow_id.removeprefix("wf_").replace("_", " "),
        description=None,
        enabled=enabled,
        current_version=1,
        trigger_type=(trigger or {}).get("type", "manual"),
        event_name=(trigger or {}).get("event_name"),
        schedule=None if schedule is None else json.dumps(schedule),
        created_by="tests",
        now=now or engine.clock.now(),
    )
    return workflow_id


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "legato.db")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def engine(db_path: str, clock: FakeClock) -> AsyncIterator[Engine]:
    """An Engine without a worker: runs are created, not executed (the trigger tests are
    about which runs start)."""
    async with Engine.open(db_path, clock=clock, worker=False) as eng:
        yield eng


@pytest.fixture
def make_workflow(engine: Engine) -> MakeWorkflow:
    async def make(
        scope: Scope, workflow_id: str, trigger: dict[str, Any] | None, **kw: Any
    ) -> str:
        return await create_workflow(engine, scope, workflow_id, trigger, **kw)

    return make


async def run_ids(store: SqlStore, scope: Scope) -> set[str]:
    return {r.id for r in await store.list_runs(scope, limit=10_000)}


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test; dropped afterwards."""
    if os.environ.get("LEGATO_TEST_POSTGRES") == "skip":
        pytest.skip("LEGATO_TEST_POSTGRES=skip")
    import psycopg

    server = sa.make_url(POSTGRES_SERVER)
    conninfo = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"legato_triggers_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:  # a missing server is a failure, not a skip
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_SERVER}: {exc}. Start it or set "
            "LEGATO_TEST_POSTGRES=skip to leave it out knowingly."
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
