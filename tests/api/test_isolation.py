"""Tenant x environment isolation, walked over the OpenAPI description.

Tenant acme's environment prod owns a workflow, an execution waiting for a signal and a
failed execution.  Another tenant (globex, prod) and acme's own environment dev then call
every route of /openapi.json with acme's ids: they get 404 (or an empty list), and
nothing of acme's changes.  The walk knows how to exercise each route (conftest.ROUTES);
a route it does not know fails the walk, so it stays complete as the API grows.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.api.conftest import ROUTES, Api, Resources

from legato.api.app import routes_of

OTHERS = {
    "other-tenant": ("globex", "prod"),
    "other-environment": ("acme", "dev"),
}


def test_the_walk_knows_every_route_of_the_openapi_description(api: Api) -> None:
    described = set(routes_of(api.app))
    known = set(ROUTES)
    assert described - known == set(), (
        "routes the isolation walk (tests/api/conftest.py ROUTES) does not know how to "
        f"exercise: {sorted(described - known)}; describe them there"
    )
    assert known - described == set(), f"ROUTES lists routes the API lost: {known - described}"


async def _snapshot(api: Api, res: Resources) -> dict[str, Any]:
    """What acme/prod can see of its own things."""
    owner = api.as_()
    client = api.client
    definition = (
        await client.get(f"/api/v1/workflows/definitions/{res.workflow_id}", headers=owner)
    ).json()
    listed = (await client.get("/api/v1/workflows/definitions", headers=owner)).json()
    waiting = await api.execution(res.waiting_execution_id)
    failed = await api.execution(res.failed_execution_id)
    histories = {
        run: len(
            (await client.get(f"/api/v1/workflows/executions/{run}/history", headers=owner)).json()[
                "events"
            ]
        )
        for run in (res.waiting_execution_id, res.failed_execution_id)
    }
    executions = (await client.get("/api/v1/workflows/executions", headers=owner)).json()
    return {
        "definition": (definition["version"], definition["enabled"], definition["canonical"]),
        "definitions": sorted(item["id"] for item in listed["items"]),
        "waiting": (waiting["legato_status"], waiting["step_executions"]),
        "failed": (failed["legato_status"], failed["step_executions"]),
        "histories": histories,
        "executions": sorted(item["id"] for item in executions["items"]),
    }


@pytest.mark.parametrize("other", sorted(OTHERS), ids=sorted(OTHERS))
async def test_another_scope_cannot_reach_anything_of_acme_prod(
    api: Api, resources: Resources, other: str
) -> None:
    before = await _snapshot(api, resources)
    tenant, environment = OTHERS[other]
    # admin: every scope, so nothing is refused for want of one
    intruder = api.as_(tenant, environment, scopes=("admin",))
    acme_ids = {
        resources.workflow_id,
        resources.waiting_execution_id,
        resources.failed_execution_id,
        resources.extra["failing_workflow_id"],
    }
    walked = []
    for key in routes_of(api.app):
        route = ROUTES[key]
        call = route.call(resources)
        response = await call.send(api.client, intruder)
        walked.append(key)
        text = response.text
        if route.kind == "item":
            assert response.status_code == 404, (key, response.status_code, text)
            assert response.headers["content-type"] == "application/problem+json"
        elif route.kind == "list":
            assert response.status_code == 200, (key, text)
            assert response.json()["items"] == [], (key, text)
        elif route.kind == "create":
            assert response.status_code == 201, (key, text)
            assert response.json()["tenant_id"] == tenant
            assert response.json()["environment_id"] == environment
        elif route.kind == "event":
            # an event of another scope starts nothing of acme's
            assert response.status_code == 202, (key, text)
            assert response.json()["started"] == [], (key, text)
        elif route.kind == "webhook":
            # unsigned (and acme's workflow takes no webhooks): refused, nothing starts
            assert response.status_code in (401, 404), (key, text)
        elif route.kind == "callback":
            # no bearer token here: the token itself is the credential; a forged one for
            # acme's run is refused and changes nothing
            assert response.status_code == 409, (key, text)
        else:
            assert route.kind == "health"
            continue
        # whatever the answer, it names nothing of acme's (beyond echoing the request path)
        if route.kind != "item":
            body = {k: v for k, v in response.json().items() if k != "instance"}
            assert not any(i in json.dumps(body) for i in acme_ids), (key, text)
    assert len(walked) == len(ROUTES)

    # the other scope's lists show only its own things, even unfiltered
    for url in ("/api/v1/workflows/definitions", "/api/v1/workflows/executions"):
        listed = (await api.client.get(url, headers=intruder)).json()["items"]
        assert not {item["id"] for item in listed} & acme_ids

    after = await _snapshot(api, resources)
    assert after == before
    # and acme's waiting execution still works for acme
    r = await api.client.post(
        f"/api/v1/executions/{resources.waiting_execution_id}/signals/approved",
        json={"by": "acme"},
        headers=api.as_(),
    )
    assert r.status_code == 200, r.text
    done = await api.wait_end(resources.waiting_execution_id)
    assert done["status"] == "completed"
    assert done["output"] == {"ran_version": "1"}


async def test_an_item_route_404_does_not_tell_other_scopes_apart_from_missing(
    api: Api, resources: Resources
) -> None:
    """A 404 for acme's id seen from globex reads like one for an id nobody has."""
    intruder = api.as_("globex", "prod")
    theirs = await api.client.get(
        f"/api/v1/workflows/executions/{resources.waiting_execution_id}", headers=intruder
    )
    missing = await api.client.get("/api/v1/workflows/executions/exec_nobody", headers=intruder)
    assert theirs.status_code == missing.status_code == 404
    assert "acme" not in theirs.text
    assert theirs.json()["detail"].replace(resources.waiting_execution_id, "X") == missing.json()[
        "detail"
    ].replace("exec_nobody", "X")
