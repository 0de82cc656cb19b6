"""The trigger routers mounted on the real application: workflows created through the
API, events published with a bearer token, webhooks delivered with a signature only."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from legato.api import create_app
from legato.api.routers import events, webhooks
from legato.settings import Settings
from legato.store import Scope
from legato.triggers import Scheduler, parse_schedule, sign

JWT_SECRET = "legato-trigger-tests-" + "s3cr3t" * 8
HOOK_SECRET = "whsec_routes_test"

WELCOME = {
    "name": "welcome",
    "trigger": {"type": "event", "event_name": "customer.created"},
    "steps": [{"id": "greet", "order": 1, "type": "set", "config": {"hi": "{{ input.name }}"}}],
    "enabled": True,
}
GOLD = {
    **WELCOME,
    "name": "gold",
    "trigger": {**WELCOME["trigger"], "conditions": ['data.tier == "gold"']},
}
HOOK = {**WELCOME, "name": "orders hook", "trigger": {"type": "webhook"}}
NIGHTLY = {
    **WELCOME,
    "name": "nightly",
    "trigger": {"type": "scheduled", "schedule": {"cron": "0 2 * * *", "catch_up": "none"}},
}


def bearer(tenant: str = "acme", environment: str = "prod") -> dict[str, str]:
    now = int(time.time())
    claims = {
        "sub": "tests",
        "tenant_id": tenant,
        "environment_id": environment,
        "scopes": ["workflows:read", "workflows:write", "workflows:execute"],
        "iat": now,
        "exp": now + 600,
    }
    return {"Authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, "HS256")}


class Client:
    def __init__(self, app: FastAPI, http: httpx.AsyncClient) -> None:
        self.app = app
        self.http = http

    async def create(self, document: dict[str, Any], **who: str) -> str:
        r = await self.http.post(
            "/api/v1/workflows/definitions", json=document, headers=bearer(**who)
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def publish(self, event: Any, **who: str) -> httpx.Response:
        return await self.http.post(
            "/api/v1/events",
            content=json.dumps(event),
            headers={**bearer(**who), "Content-Type": "application/cloudevents+json"},
        )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    settings = Settings(db=str(tmp_path / "legato.db"), api_jwt_secret=JWT_SECRET)
    app = create_app(settings)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    hooks: dict[str, str] = {}
    app.state.webhook_secrets = lambda scope, candidate: hooks.get(candidate.workflow_id)
    app.state.test_hooks = hooks
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://legato.test"
        ) as http,
    ):
        yield Client(app, http)


def event(event_id: str, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/crm",
        "type": "customer.created",
        "data": {"name": "Ada", **data},
    }


async def test_publishing_events(client: Client) -> None:
    welcome = await client.create(WELCOME)
    gold = await client.create(GOLD)
    other_env = await client.create(WELCOME, environment="staging")

    r = await client.publish(event("e1", tier="silver"))
    assert r.status_code == 202, r.text
    body = r.json()
    assert [s["workflow_id"] for s in body["started"]] == [welcome]
    assert [(s["workflow_id"], s["reason"]) for s in body["skipped"]] == [(gold, "condition_false")]
    execution = body["started"][0]["execution_id"]

    again = (await client.publish(event("e1", tier="silver"))).json()
    assert again["started"] == []
    skipped = {s["workflow_id"]: s for s in again["skipped"]}
    assert skipped[welcome]["reason"] == "duplicate"
    assert skipped[welcome]["execution_id"] == execution
    assert skipped[gold]["reason"] == "condition_false"

    view = await client.http.get(f"/api/v1/workflows/executions/{execution}", headers=bearer())
    assert view.status_code == 200, view.text
    assert view.json()["trigger_type"] == "event"
    # the staging workflow never saw acme/prod's events
    listed = await client.http.get(
        f"/api/v1/workflows/executions?workflow_id={other_env}",
        headers=bearer(environment="staging"),
    )
    assert listed.json()["items"] == []

    batch = await client.http.post(
        "/api/v1/events",
        content=json.dumps([event("b1", tier="gold"), event("b2")]),
        headers={**bearer(), "Content-Type": "application/cloudevents-batch+json"},
    )
    assert batch.status_code == 202, batch.text
    assert [len(r["started"]) for r in batch.json()["results"]] == [2, 1]


async def test_binary_mode_and_bad_events(client: Client) -> None:
    welcome = await client.create(WELCOME)
    r = await client.http.post(
        "/api/v1/events",
        content=json.dumps({"name": "Grace"}),
        headers={
            **bearer(),
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "bin-1",
            "ce-source": "/crm",
            "ce-type": "customer.created",
        },
    )
    assert r.status_code == 202, r.text
    assert [s["workflow_id"] for s in r.json()["started"]] == [welcome]

    missing = await client.publish({k: v for k, v in event("e1").items() if k != "source"})
    assert missing.status_code == 422
    assert "`source`" in missing.json()["detail"]
    unauthenticated = await client.http.post("/api/v1/events", json=event("e1"))
    assert unauthenticated.status_code == 401


async def test_delivering_webhooks(client: Client) -> None:
    hook = await client.create(HOOK)
    client.app.state.test_hooks[hook] = HOOK_SECRET
    url = f"/api/v1/webhooks/acme/prod/{hook}"
    body = json.dumps({"name": "Ada"}).encode()
    headers = {
        **sign(HOOK_SECRET, body, timestamp=int(time.time())),
        "Content-Type": "application/json",
    }

    first = await client.http.post(url, content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "started"

    replay = await client.http.post(url, content=body, headers=headers)
    assert replay.status_code == 409, replay.text
    assert replay.json()["execution_id"] == first.json()["execution_id"]

    tampered = await client.http.post(url, content=body.replace(b"Ada", b"Eve"), headers=headers)
    assert tampered.status_code == 401
    wrong = sign("not-the-secret", body, timestamp=int(time.time()))
    assert (await client.http.post(url, content=body, headers=wrong)).status_code == 401
    stale = sign(HOOK_SECRET, body, timestamp=int(time.time()) - 3600)
    assert (await client.http.post(url, content=body, headers=stale)).status_code == 401

    # another tenant's path does not reach this workflow
    elsewhere = await client.http.post(
        f"/api/v1/webhooks/globex/prod/{hook}", content=body, headers=headers
    )
    assert elsewhere.status_code == 404
    # a webhook whose secret is not configured
    unset = await client.create(HOOK)
    r = await client.http.post(f"/api/v1/webhooks/acme/prod/{unset}", content=body, headers=headers)
    assert r.status_code == 503
    assert "secret" in r.json()["detail"]

    listed = await client.http.get(
        f"/api/v1/workflows/executions?workflow_id={hook}", headers=bearer()
    )
    assert [e["id"] for e in listed.json()["items"]] == [first.json()["execution_id"]]


async def test_the_scheduler_fires_workflows_created_through_the_api(client: Client) -> None:
    nightly = await client.create(NIGHTLY)
    engine = client.app.state.engine
    record = await engine.store.get_workflow(Scope("acme", "prod"), nightly)
    tick = parse_schedule("0 2 * * *").next_after(record.updated_at)
    result = await Scheduler(engine).tick(tick)
    assert [(f.workflow_id, f.tick) for f in result.fired] == [(nightly, tick)]
