"""Problem details for every kind of failure, health and readiness, and the OpenAPI
description."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.api.conftest import SECRET, Api

import legato
from legato.api import create_app
from legato.errors import UsageError
from legato.settings import Settings


async def test_health_and_ready(api: Api) -> None:
    r = await api.client.get("/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = await api.client.get("/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "migrations": True,
        "worker": True,
    }
    assert "embedded" in body["checks"]["worker"]["detail"]


@pytest.fixture
async def workerless(db_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(db=str(db_path), api_jwt_secret=SECRET, api_worker=False)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        yield c


async def test_ready_needs_a_live_worker_somewhere(
    workerless: httpx.AsyncClient, db_path: Path
) -> None:
    r = await workerless.get("/ready")
    assert r.status_code == 503
    worker = r.json()["checks"]["worker"]
    assert worker["ok"] is False
    assert "legato worker" in worker["detail"]
    # a worker in another engine (as `legato worker` would be) makes it ready
    async with legato.Engine.open(db_path, worker=True):
        r = await workerless.get("/ready")
        assert r.status_code == 200, r.text
        assert "1 worker(s)" in r.json()["checks"]["worker"]["detail"]


async def test_ready_reports_a_schema_behind_this_legato(api: Api, db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE legato_alembic_version SET version_num = '0001'")
    r = await api.client.get("/ready")
    assert r.status_code == 503
    check = r.json()["checks"]["migrations"]
    assert check["ok"] is False
    assert "revision 0001" in check["detail"]


async def test_unknown_routes_and_methods_are_problems(api: Api) -> None:
    r = await api.client.get("/api/v1/nothing-here", headers=api.as_())
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert "/docs" in r.json()["detail"]
    r = await api.client.patch("/api/v1/workflows/definitions", headers=api.as_())
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"


async def test_an_unexpected_error_is_a_500_that_shows_nothing_internal(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode() -> None:
        raise RuntimeError("password=hunter2 in /srv/secret/config.py")

    async def misuse() -> None:
        raise UsageError("the store is closed; internal detail")

    api.app.add_api_route("/explode", explode, include_in_schema=False)
    api.app.add_api_route("/misuse", misuse, include_in_schema=False)
    for path in ("/explode", "/misuse"):
        r = await api.client.get(path)
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["type"] == "urn:legato:problem:internal"
        assert "hunter2" not in r.text
        assert "internal detail" not in r.text
        assert "Traceback" not in r.text
        # the log has it, under the reference the client was given
        assert body["reference"] in caplog.text


async def test_openapi_description_and_docs_are_served(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["info"]["title"] == "Legato"
    assert "Problem" in spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    trigger = spec["paths"]["/api/v1/workflows/definitions/{workflow_id}/trigger"]["post"]
    assert trigger["security"] == [{"HTTPBearer": ["workflows:execute"]}]
    assert "202" in trigger["responses"]
    callback = spec["paths"]["/api/v1/callbacks/{token}"]["post"]
    assert "security" not in callback
    r = await api.client.get("/docs")
    assert r.status_code == 200
    assert "swagger" in r.text.lower()
