"""The API as its clients see it: the real application (``create_app``) with its lifespan
(an Engine and its worker on a SQLite file of the test's own), called over ASGI with
``httpx``, with tokens minted by the application's own verifier.

``ROUTES`` describes every route of the OpenAPI description: the scope it needs and how
to build a request against given resources.  The 401/403/404 tests and the isolation walk
run over it, and a test fails when the application has a route it does not describe.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from legato.api import create_app
from legato.api.auth import EXECUTE, READ, WRITE
from legato.settings import Settings

SECRET = "legato-api-tests-" + "s3cr3t" * 8
USER_SCOPES = (READ, WRITE, EXECUTE)
TERMINAL = ("completed", "failed", "cancelled")

# Waits for signal `approved`, then records which version of the definition it ran.
APPROVAL = """\
name: approval
start_at: ask
states:
  ask:
    type: wait
    event: {{name: approved, timeout: 5m}}
    result_path: $.approval
    next: record
  record:
    type: task
    action: set
    input: {{ran_version: "{version}", approved_by: $.approval.by}}
    output: {{$.ran_version: $.result.ran_version}}
    next: done
  done:
    type: succeed
    output: {{ran_version: $.ran_version}}
"""

# Seed 002's ordered format, with built-in actions as the step types.
ORDERED: dict[str, Any] = {
    "name": "Customer Onboarding - Standard",
    "description": "seed 002, with built-in actions",
    "trigger": {"type": "event", "event_name": "customer.created"},
    "steps": [
        {
            "id": "step_1",
            "order": 1,
            "type": "set",
            "config": {"plan_id": "plan_starter", "customer": "{{ input.customer_id }}"},
        },
        {
            "id": "step_2",
            "order": 2,
            "type": "log",
            "config": {"message": "wallet for {{ input.customer_id }}"},
            "depends_on": ["step_1"],
        },
    ],
    "enabled": True,
    "retry_policy": {"max_attempts": 3, "initial_interval_seconds": 1, "backoff_coefficient": 2},
}

# One step that fails at once, after a completed one (for retry).
FAILING: dict[str, Any] = {
    "name": "failing",
    "start_at": "first",
    "states": {
        "first": {
            "type": "task",
            "action": "set",
            "input": {"kept": "yes"},
            "output": {"$.kept": "$.result.kept"},
            "next": "boom",
        },
        "boom": {
            "type": "task",
            "action": "fail",
            "input": {"message": "the card was declined"},
            "retry": {"max_attempts": 1},
        },
    },
}


def approval(version: str = "1") -> str:
    return APPROVAL.format(version=version)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the current schema, copied for each test (migrating is most of
    the cost of opening a fresh store)."""
    from legato.store import migrate
    from legato.store._db import create_engine, resolve_url

    path = tmp_path_factory.mktemp("template") / "legato.db"
    engine = create_engine(resolve_url(str(path)), sqlite_synchronous="FULL", pool_size=1)
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def db_path(tmp_path: Path, migrated_db: Path) -> Path:
    path = tmp_path / "legato.db"
    shutil.copyfile(migrated_db, path)
    return path


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(db=str(db_path), api_jwt_secret=SECRET, poll_interval=0.05)


@dataclass
class Api:
    """The application and a client; ``as_()`` gives the headers of a caller."""

    app: FastAPI
    client: httpx.AsyncClient

    def token(
        self,
        tenant: str = "acme",
        environment: str = "prod",
        scopes: tuple[str, ...] | str = USER_SCOPES,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "sub": f"user-of-{tenant}",
            "tenant_id": tenant,
            "environment_id": environment,
            "scopes": scopes if isinstance(scopes, str) else list(scopes),
            "iat": now,
            "exp": now + 600,
            **claims,
        }
        return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, "HS256")

    def as_(
        self,
        tenant: str = "acme",
        environment: str = "prod",
        scopes: tuple[str, ...] | str = USER_SCOPES,
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, environment, scopes)}"}

    async def create(self, document: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        headers = headers or self.as_()
        if isinstance(document, str):
            r = await self.client.post(
                "/api/v1/workflows/definitions",
                content=document,
                headers={**headers, "Content-Type": "application/yaml"},
            )
        else:
            r = await self.client.post(
                "/api/v1/workflows/definitions", json=document, headers=headers
            )
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def trigger(
        self, workflow_id: str, data: Any = None, headers: dict[str, str] | None = None
    ) -> str:
        r = await self.client.post(
            f"/api/v1/workflows/definitions/{workflow_id}/trigger",
            json={"trigger_data": data or {}},
            headers=headers or self.as_(),
        )
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "pending"
        return str(r.json()["execution_id"])

    async def execution(
        self, execution_id: str, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        r = await self.client.get(
            f"/api/v1/workflows/executions/{execution_id}", headers=headers or self.as_()
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def wait_for(
        self,
        execution_id: str,
        done: Callable[[dict[str, Any]], bool],
        headers: dict[str, str] | None = None,
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = await self.execution(execution_id, headers)
            if done(view):
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"execution {execution_id} never got there: {view}")
            await asyncio.sleep(0.05)

    async def wait_end(
        self, execution_id: str, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return await self.wait_for(execution_id, lambda v: v["status"] in TERMINAL, headers)

    async def wait_waiting(
        self, execution_id: str, step: str = "ask", headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        def waiting(view: dict[str, Any]) -> bool:
            return any(
                s["step_id"] == step and s["legato_status"] == "waiting"
                for s in view["step_executions"]
            )

        return await self.wait_for(execution_id, waiting, headers)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://legato.test"
        ) as client,
    ):
        yield Api(app, client)


# ---- every route, described -----------------------------------------------------------------


@dataclass
class Resources:
    """Ids the route table fills its requests with."""

    workflow_id: str = "wf_000000000000"
    workflow_name: str = "nothing"
    waiting_execution_id: str = "exec_nothing"
    failed_execution_id: str = "exec_nothing"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def forged_token(self) -> str:
        return f"{self.waiting_execution_id}~{'0' * 32}"


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
        kwargs: dict[str, Any] = {"params": self.params, "headers": {**headers, **self.headers}}
        if self.content is not None:
            kwargs["content"] = self.content
        elif self.json is not None:
            kwargs["json"] = self.json
        return await client.request(self.method, self.url, **kwargs)


@dataclass(frozen=True)
class Route:
    scope: str | None  # None: not authenticated by a bearer token
    call: Callable[[Resources], Call]
    kind: str  # "create", "list", "item" (names a resource), "callback", "health",
    # "event" (publishes an event), "webhook" (signed by the sender, no bearer token)
    named_in: str = "path"  # where an "item" route names its resource: "path" or "body"


D = "/api/v1/workflows/definitions"
E = "/api/v1/workflows/executions"
T = "/api/v1/templates"
I = "/api/v1/instances"  # noqa: E741 - the seed's own word, next to D, E and T

# Seed 001's `steps` format as a Chorus template, with built-in actions.
WELCOME: dict[str, Any] = {
    "name": "user_welcome",
    "description": "seed 001, logging instead of sending email",
    "steps": [
        {
            "id": "validate_input",
            "type": "condition",
            "conditions": [{"field": "email", "operator": "contains", "value": "@"}],
            "next_steps": ["send_welcome", "send_error"],
        },
        {
            "id": "send_welcome",
            "type": "action",
            "config": {"action": "log_message", "message": "welcome {{variables.email}}"},
            "next_steps": ["log_success"],
        },
        {
            "id": "send_error",
            "type": "action",
            "config": {"action": "log_message", "message": "invalid email", "level": "error"},
        },
        {
            "id": "log_success",
            "type": "action",
            "config": {"action": "set", "welcomed": "{{variables.email}}"},
        },
    ],
}

ROUTES: dict[tuple[str, str], Route] = {
    ("POST", D): Route(WRITE, lambda r: Call("POST", D, json=ORDERED), "create"),
    ("GET", D): Route(READ, lambda r: Call("GET", D, params={"name": r.workflow_name}), "list"),
    ("GET", D + "/{workflow_id}"): Route(
        READ, lambda r: Call("GET", f"{D}/{r.workflow_id}"), "item"
    ),
    ("PUT", D + "/{workflow_id}"): Route(
        WRITE,
        lambda r: Call(
            "PUT",
            f"{D}/{r.workflow_id}",
            content=approval("2"),
            headers={"Content-Type": "application/yaml"},
        ),
        "item",
    ),
    ("DELETE", D + "/{workflow_id}"): Route(
        WRITE, lambda r: Call("DELETE", f"{D}/{r.workflow_id}", params={"force": "true"}), "item"
    ),
    ("POST", D + "/{workflow_id}/enable"): Route(
        WRITE, lambda r: Call("POST", f"{D}/{r.workflow_id}/enable"), "item"
    ),
    ("POST", D + "/{workflow_id}/disable"): Route(
        WRITE, lambda r: Call("POST", f"{D}/{r.workflow_id}/disable"), "item"
    ),
    ("POST", D + "/{workflow_id}/trigger"): Route(
        EXECUTE,
        lambda r: Call("POST", f"{D}/{r.workflow_id}/trigger", json={"trigger_data": {}}),
        "item",
    ),
    ("GET", D + "/{workflow_id}/versions"): Route(
        READ, lambda r: Call("GET", f"{D}/{r.workflow_id}/versions"), "item"
    ),
    ("GET", D + "/{workflow_id}/versions/{version}"): Route(
        READ, lambda r: Call("GET", f"{D}/{r.workflow_id}/versions/1"), "item"
    ),
    ("GET", E): Route(
        READ, lambda r: Call("GET", E, params={"workflow_id": r.workflow_id}), "list"
    ),
    ("GET", E + "/{execution_id}"): Route(
        READ, lambda r: Call("GET", f"{E}/{r.waiting_execution_id}"), "item"
    ),
    ("POST", E + "/{execution_id}/cancel"): Route(
        EXECUTE, lambda r: Call("POST", f"{E}/{r.waiting_execution_id}/cancel"), "item"
    ),
    ("POST", E + "/{execution_id}/retry"): Route(
        EXECUTE, lambda r: Call("POST", f"{E}/{r.failed_execution_id}/retry"), "item"
    ),
    ("POST", E + "/{execution_id}/pause"): Route(
        EXECUTE, lambda r: Call("POST", f"{E}/{r.waiting_execution_id}/pause"), "item"
    ),
    ("POST", E + "/{execution_id}/resume"): Route(
        EXECUTE, lambda r: Call("POST", f"{E}/{r.waiting_execution_id}/resume"), "item"
    ),
    ("GET", E + "/{execution_id}/history"): Route(
        READ, lambda r: Call("GET", f"{E}/{r.waiting_execution_id}/history"), "item"
    ),
    ("POST", "/api/v1/executions/{execution_id}/signals/{name}"): Route(
        EXECUTE,
        lambda r: Call(
            "POST",
            f"/api/v1/executions/{r.waiting_execution_id}/signals/approved",
            json={"by": "mallory"},
        ),
        "item",
    ),
    ("POST", "/api/v1/callbacks/{token}"): Route(
        None,
        lambda r: Call("POST", f"/api/v1/callbacks/{r.forged_token}", json={"ok": True}),
        "callback",
    ),
    ("POST", "/api/v1/events"): Route(
        EXECUTE,
        lambda r: Call(
            "POST",
            "/api/v1/events",
            json={
                "specversion": "1.0",
                "id": "evt-walk-1",
                "source": "tests/api",
                "type": "approval.requested",
                "data": {"who": "mallory"},
            },
        ),
        "event",
    ),
    ("POST", "/api/v1/webhooks/{tenant_id}/{environment_id}/{workflow_id}"): Route(
        None,
        lambda r: Call("POST", f"/api/v1/webhooks/acme/prod/{r.workflow_id}", json={"x": 1}),
        "webhook",
    ),
    # seed 001 ("Chorus"): templates are definitions, instances are executions
    ("POST", T): Route(WRITE, lambda r: Call("POST", T, json=WELCOME), "create"),
    ("GET", T): Route(READ, lambda r: Call("GET", T, params={"name": r.workflow_name}), "list"),
    ("GET", T + "/{template_id}"): Route(
        READ, lambda r: Call("GET", f"{T}/{r.workflow_id}"), "item"
    ),
    ("PUT", T + "/{template_id}"): Route(
        WRITE,
        lambda r: Call(
            "PUT",
            f"{T}/{r.workflow_id}",
            content=approval("2"),
            headers={"Content-Type": "application/yaml"},
        ),
        "item",
    ),
    ("DELETE", T + "/{template_id}"): Route(
        WRITE, lambda r: Call("DELETE", f"{T}/{r.workflow_id}", params={"force": "true"}), "item"
    ),
    ("GET", I): Route(
        READ, lambda r: Call("GET", I, params={"template_id": r.workflow_id}), "list"
    ),
    ("POST", I): Route(
        EXECUTE,
        lambda r: Call("POST", I, json={"template_id": r.workflow_id, "variables": {}}),
        "item",
        named_in="body",
    ),
    ("GET", I + "/{instance_id}"): Route(
        READ, lambda r: Call("GET", f"{I}/{r.waiting_execution_id}"), "item"
    ),
    ("PUT", I + "/{instance_id}/start"): Route(
        EXECUTE, lambda r: Call("PUT", f"{I}/{r.waiting_execution_id}/start"), "item"
    ),
    ("PUT", I + "/{instance_id}/pause"): Route(
        EXECUTE, lambda r: Call("PUT", f"{I}/{r.waiting_execution_id}/pause"), "item"
    ),
    ("PUT", I + "/{instance_id}/resume"): Route(
        EXECUTE, lambda r: Call("PUT", f"{I}/{r.waiting_execution_id}/resume"), "item"
    ),
    ("PUT", I + "/{instance_id}/cancel"): Route(
        EXECUTE, lambda r: Call("PUT", f"{I}/{r.waiting_execution_id}/cancel"), "item"
    ),
    ("GET", I + "/{instance_id}/steps"): Route(
        READ, lambda r: Call("GET", f"{I}/{r.waiting_execution_id}/steps"), "item"
    ),
    ("GET", "/health"): Route(None, lambda r: Call("GET", "/health"), "health"),
    ("GET", "/ready"): Route(None, lambda r: Call("GET", "/ready"), "health"),
}

AUTHENTICATED = sorted(key for key, route in ROUTES.items() if route.scope is not None)
ITEM_ROUTES = sorted(key for key, route in ROUTES.items() if route.kind == "item")


def route_id(key: tuple[str, str]) -> str:
    return f"{key[0]} {key[1]}"


@pytest.fixture
async def resources(api: Api) -> Resources:
    """As tenant acme, environment prod: a workflow with an execution waiting for a signal,
    and a failed execution of another workflow."""
    created = await api.create(approval("1"))
    waiting = await api.trigger(created["id"], {"who": "acme"})
    await api.wait_waiting(waiting)
    failing = await api.create(FAILING)
    failed = await api.trigger(failing["id"])
    view = await api.wait_end(failed)
    assert view["status"] == "failed"
    return Resources(
        workflow_id=created["id"],
        workflow_name=created["name"],
        waiting_execution_id=waiting,
        failed_execution_id=failed,
        extra={"failing_workflow_id": failing["id"]},
    )
