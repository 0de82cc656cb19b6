"""Workflow definitions: create in every format, read, list, versions, update, enable,
disable, delete (EC-2), and the 422 that lists every finding."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api.conftest import FAILING, ORDERED, Api, approval

from legato.api import create_app
from legato.api.bodies import MAX_BODY_BYTES
from legato.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "tests" / "fixtures" / "seeds"
D = "/api/v1/workflows/definitions"


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = dict(response.json())
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status
    return body


# ---- create -------------------------------------------------------------------------------------


async def test_create_in_the_ordered_format_of_seed_002(api: Api) -> None:
    r = await api.client.post(D, json=ORDERED, headers=api.as_())
    assert r.status_code == 201, r.text
    body = r.json()
    assert re.fullmatch(r"wf_[0-9a-f]{12}", body["id"])
    assert body["name"] == "Customer Onboarding - Standard"
    assert body["description"] == "seed 002, with built-in actions"
    assert body["version"] == body["current_version"] == 1
    assert body["status"] == "published"
    assert body["enabled"] is True
    assert body["trigger"] == {"type": "event", "event_name": "customer.created", "schedule": None}
    assert (body["tenant_id"], body["environment_id"]) == ("acme", "prod")
    assert body["source_format"] == "ordered"
    assert body["definition"] == ORDERED  # as it was sent
    assert body["canonical"]["name"] == body["id"]  # versions are stored under the id
    assert list(body["canonical"]["states"]) == ["step_1", "step_2"]
    assert body["created_at"].endswith("Z")
    got = await api.client.get(f"{D}/{body['id']}", headers=api.as_())
    assert got.status_code == 200
    assert got.json() == body | {"warnings": []}


@pytest.mark.parametrize(
    ("file", "fmt"),
    [
        ("001_user_welcome.json", "steps"),
        ("000_employee_onboarding.json", "states"),
    ],
)
async def test_create_in_the_other_seed_formats(api: Api, file: str, fmt: str) -> None:
    document = json.loads((SEEDS / file).read_text())
    created = await api.create(document)
    assert created["source_format"] == fmt
    assert created["definition"] == document


async def test_create_from_yaml_in_the_canonical_format_and_run_it(api: Api) -> None:
    created = await api.create(approval("1"))
    assert created["source_format"] == "canonical"
    assert created["name"] == "approval"
    assert created["trigger"]["type"] == "manual"
    assert created["definition"]["states"]["ask"]["event"]["name"] == "approved"


async def test_seed_002_as_written_with_the_billing_activities(
    tmp_path: Path, db_path: Path
) -> None:
    """The PRD's own request body: its step types are the host application's activities."""
    settings = Settings(
        db=str(db_path),
        api_dev=True,
        activities=("examples.billing.activities",),
    )
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {app.state.dev_token}"}
    document = json.loads((SEEDS / "002_customer_onboarding_api.json").read_text())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        r = await c.post(D, json=document, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["trigger"]["event_name"] == "customer.created"


async def test_an_invalid_definition_gets_422_listing_every_finding(api: Api) -> None:
    broken = {
        "name": "broken",
        "steps": [
            {"id": "a", "type": "log", "bogus": 1},
            {"id": "b", "type": "log", "timeout_seconds": "5 minutes"},
            {"type": "log"},
        ],
    }
    body = problem(await api.client.post(D, json=broken, headers=api.as_()), 422)
    assert body["type"] == "urn:legato:problem:invalid-definition"
    assert "3 problem(s)" in body["detail"]
    errors = sorted(body["errors"], key=lambda e: e["pointer"])
    assert [(e["code"], e["pointer"]) for e in errors] == [
        ("L003", "/steps/0/bogus"),
        ("L001", "/steps/1/timeout_seconds"),
        ("L004", "/steps/2/id"),
    ]
    for e in errors:
        assert e["severity"] == "error"
        assert e["message"]
        assert e["fix"]
    # nothing was stored
    listed = (await api.client.get(D, headers=api.as_())).json()
    assert listed["items"] == []


async def test_a_circular_dependency_is_refused_when_defined_ec6(api: Api) -> None:
    cyclic = {
        "name": "cyclic",
        "steps": [
            {"id": "a", "type": "log", "depends_on": ["b"]},
            {"id": "b", "type": "log", "depends_on": ["a"]},
            {"id": "c", "type": "teleport"},
        ],
    }
    body = problem(await api.client.post(D, json=cyclic, headers=api.as_()), 422)
    by_code = {e["code"]: e for e in body["errors"]}
    assert set(by_code) == {"L105", "L107"}
    assert "a -> b -> a" in by_code["L105"]["message"]
    assert by_code["L107"]["pointer"] == "/steps/2/type"


async def test_a_bad_cron_schedule_is_refused_when_defined(api: Api) -> None:
    bad = {**ORDERED, "trigger": {"type": "scheduled", "schedule": "61 * * * *"}}
    body = problem(await api.client.post(D, json=bad, headers=api.as_()), 422)
    assert body["type"] == "urn:legato:problem:invalid-definition"
    [error] = body["errors"]
    assert (error["code"], error["severity"], error["pointer"]) == (
        "L121",
        "error",
        "/trigger/schedule",
    )
    assert "minute field '61'" in error["message"]
    assert "0-59" in error["fix"]
    assert (await api.client.get(D, headers=api.as_())).json()["items"] == []

    # an update is checked the same way, a time zone included, and stores nothing
    good = {**ORDERED, "trigger": {"type": "scheduled", "schedule": "0 2 * * *"}}
    created = await api.create(good)
    schedule = {"cron": "0 2 * * *", "timezone": "Europe/Berln"}
    r = await api.client.put(
        f"{D}/{created['id']}",
        json={**ORDERED, "trigger": {"type": "scheduled", "schedule": schedule}},
        headers=api.as_(),
    )
    [error] = problem(r, 422)["errors"]
    assert (error["code"], error["pointer"]) == ("L121", "/trigger/schedule/timezone")
    assert "Europe/Berlin" in error["fix"]
    got = (await api.client.get(f"{D}/{created['id']}", headers=api.as_())).json()
    assert (got["version"], got["trigger"]["schedule"]) == (1, "0 2 * * *")


@pytest.mark.parametrize(
    ("content", "content_type", "code", "words"),
    [
        ('{"name": ', "application/json", "L000", "not valid JSON"),
        ("[1, 2]", "application/json", "L002", "not a mapping"),
        ('{"states": NaN}', "application/json", "L000", "NaN"),
        ('{"a": 1e999}', "application/json", "L000", "too large"),
        ("", "application/json", "L000", "empty"),
        ("name: x\nstates: [\n", "application/yaml", "L000", "YAML"),
        ("a: &x [1]\nb: *x\n", "application/yaml", "L000", "aliases"),
        ("name: x\nwhen: 2024-01-01\n", "application/yaml", "L000", "not JSON data"),
    ],
)
async def test_unreadable_bodies_are_422_with_a_finding(
    api: Api, content: str, content_type: str, code: str, words: str
) -> None:
    r = await api.client.post(
        D, content=content, headers={**api.as_(), "Content-Type": content_type}
    )
    body = problem(r, 422)
    [error] = body["errors"]
    assert error["code"] == code
    assert words in error["message"], error


async def test_other_media_types_and_huge_bodies_are_refused(api: Api) -> None:
    r = await api.client.post(
        D, content="<xml/>", headers={**api.as_(), "Content-Type": "application/xml"}
    )
    assert "application/yaml" in problem(r, 415)["detail"]
    r = await api.client.post(
        D,
        content="x" * (MAX_BODY_BYTES + 1),
        headers={**api.as_(), "Content-Type": "application/json"},
    )
    problem(r, 413)


# ---- read, list, versions -----------------------------------------------------------------------


async def test_list_filters_and_pages(api: Api) -> None:
    made = []
    for i in range(5):
        doc = {**ORDERED, "name": f"flow {i % 2}"}
        if i == 4:
            doc = {**doc, "trigger": {"type": "manual"}}
        made.append((await api.create(doc))["id"])
    await api.client.post(f"{D}/{made[1]}/disable", headers=api.as_())

    async def ids(**params: Any) -> list[str]:
        r = await api.client.get(D, params=params, headers=api.as_())
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()["items"]]

    newest_first = list(reversed(made))
    assert await ids() == newest_first
    assert await ids(enabled="false") == [made[1]]
    assert await ids(enabled="true") == [m for m in newest_first if m != made[1]]
    assert await ids(name="flow 1") == [made[3], made[1]]
    assert await ids(trigger_type="manual") == [made[4]]
    assert await ids(trigger_type="event", name="flow 0") == [made[2], made[0]]
    assert await ids(limit=2, offset=1) == newest_first[1:3]

    # the cursor walks every page exactly once
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.client.get(D, params=params, headers=api.as_())).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"enabled": "maybe"},
        {"trigger_type": "telepathy"},
        {"cursor": "not-a-cursor"},
    ],
)
async def test_list_parameters_are_validated(api: Api, params: dict[str, Any]) -> None:
    body = problem(await api.client.get(D, params=params, headers=api.as_()), 422)
    if "cursor" not in params:
        [error] = body["errors"]
        assert error["pointer"] == f"/query/{next(iter(params))}"
        assert error["code"] == "REQUEST"
        assert error["fix"].startswith("correct the query parameter")
    else:
        assert "next_cursor" in body["detail"]


async def test_update_adds_a_version_and_versions_stay_readable(api: Api) -> None:
    created = await api.create(approval("1"))
    wid = created["id"]
    r = await api.client.put(
        f"{D}/{wid}",
        content=approval("2"),
        headers={**api.as_(), "Content-Type": "application/yaml"},
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["id"] == wid
    assert updated["version"] == updated["current_version"] == 2
    assert updated["created_at"] == created["created_at"]
    assert updated["updated_at"] > created["updated_at"]
    # an identical body is still a new version
    r = await api.client.put(f"{D}/{wid}", json=updated["definition"], headers=api.as_())
    assert r.json()["version"] == 3

    versions = (await api.client.get(f"{D}/{wid}/versions", headers=api.as_())).json()
    assert versions["current_version"] == 3
    assert [(v["version"], v["current"]) for v in versions["versions"]] == [
        (1, False),
        (2, False),
        (3, True),
    ]
    first = (await api.client.get(f"{D}/{wid}/versions/1", headers=api.as_())).json()
    assert first["version"] == 1
    assert first["current_version"] == 3
    assert first["canonical"]["states"]["record"]["input"]["ran_version"] == "1"
    problem(await api.client.get(f"{D}/{wid}/versions/4", headers=api.as_()), 404)
    problem(await api.client.get(f"{D}/{wid}/versions/0", headers=api.as_()), 422)
    problem(await api.client.get(f"{D}/{wid}/versions/one", headers=api.as_()), 422)
    # an invalid update stores nothing
    r = await api.client.put(f"{D}/{wid}", json={"name": "x", "steps": []}, headers=api.as_())
    assert problem(r, 422)["errors"][0]["pointer"] == "/steps"
    assert (await api.client.get(f"{D}/{wid}", headers=api.as_())).json()["version"] == 3


async def test_update_can_change_the_name_trigger_and_enabled(api: Api) -> None:
    created = await api.create(ORDERED)
    await api.client.post(f"{D}/{created['id']}/disable", headers=api.as_())
    # a body without `enabled` keeps the workflow disabled
    without = {k: v for k, v in ORDERED.items() if k != "enabled"}
    r = await api.client.put(
        f"{D}/{created['id']}",
        json={**without, "name": "renamed", "trigger": {"type": "event", "event_name": "x.y"}},
        headers=api.as_(),
    )
    body = r.json()
    assert (body["name"], body["enabled"], body["trigger"]["event_name"]) == (
        "renamed",
        False,
        "x.y",
    )
    # one that says `enabled: true` enables it
    r = await api.client.put(f"{D}/{created['id']}", json=ORDERED, headers=api.as_())
    assert r.json()["enabled"] is True


# ---- enable, disable, trigger, delete -----------------------------------------------------------


async def test_a_disabled_workflow_cannot_be_triggered(api: Api) -> None:
    created = await api.create(ORDERED)
    wid = created["id"]
    r = await api.client.post(f"{D}/{wid}/disable", headers=api.as_())
    assert r.status_code == 200
    assert r.json()["enabled"] is False
    r = await api.client.post(f"{D}/{wid}/trigger", json={"trigger_data": {}}, headers=api.as_())
    body = problem(r, 409)
    assert f"{D}/{wid}/enable" in body["detail"]
    assert "Fix:" in body["detail"]
    # disabling twice is harmless; enabling makes it triggerable again
    assert (await api.client.post(f"{D}/{wid}/disable", headers=api.as_())).status_code == 200
    r = await api.client.post(f"{D}/{wid}/enable", headers=api.as_())
    assert r.json()["enabled"] is True
    execution = await api.trigger(wid, {"customer_id": "cust_123"})
    view = await api.wait_end(execution)
    assert view["status"] == "completed"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"trigger_data": [1, 2]}, "/body/trigger_data"),
        ({"trigger_data": {}, "surprise": 1}, "/body/surprise"),
        ([1], "/body"),
    ],
)
async def test_trigger_bodies_are_validated(api: Api, body: Any, pointer: str) -> None:
    created = await api.create(ORDERED)
    r = await api.client.post(f"{D}/{created['id']}/trigger", json=body, headers=api.as_())
    assert problem(r, 422)["errors"][0]["pointer"] == pointer


async def test_trigger_without_a_body_starts_with_empty_data(api: Api) -> None:
    created = await api.create(ORDERED)
    r = await api.client.post(f"{D}/{created['id']}/trigger", headers=api.as_())
    assert r.status_code == 202, r.text
    view = await api.wait_end(r.json()["execution_id"])
    assert view["trigger_event"] == {}


async def test_delete_is_refused_while_executions_run_unless_forced_ec2(api: Api) -> None:
    created = await api.create(approval("1"))
    wid = created["id"]
    running = [await api.trigger(wid) for _ in range(2)]
    for execution in running:
        await api.wait_waiting(execution)
    body = problem(await api.client.delete(f"{D}/{wid}", headers=api.as_()), 409)
    assert "2 running execution(s)" in body["detail"]
    assert "force=true" in body["detail"]
    assert (await api.client.get(f"{D}/{wid}", headers=api.as_())).status_code == 200

    r = await api.client.delete(f"{D}/{wid}", params={"force": "true"}, headers=api.as_())
    assert r.status_code == 200, r.text
    assert r.json() == {"id": wid, "deleted": True, "cancelled_executions": 2}
    for execution in running:
        view = await api.wait_end(execution)
        assert view["status"] == "cancelled"
        assert view["workflow_name"] == "approval"  # its executions stay readable
    problem(await api.client.get(f"{D}/{wid}", headers=api.as_()), 404)
    problem(await api.client.post(f"{D}/{wid}/trigger", json={}, headers=api.as_()), 404)
    problem(await api.client.delete(f"{D}/{wid}", headers=api.as_()), 404)
    assert (await api.client.get(D, headers=api.as_())).json()["items"] == []


async def test_delete_without_running_executions(api: Api) -> None:
    created = await api.create(FAILING)
    execution = await api.trigger(created["id"])
    assert (await api.wait_end(execution))["status"] == "failed"
    r = await api.client.delete(
        f"{D}/{created['id']}", params={"force": "maybe"}, headers=api.as_()
    )
    assert problem(r, 422)["errors"][0]["pointer"] == "/query/force"
    r = await api.client.delete(f"{D}/{created['id']}", headers=api.as_())
    assert r.json()["cancelled_executions"] == 0
    problem(await api.client.get(f"{D}/{created['id']}/versions", headers=api.as_()), 404)
    problem(await api.client.get(f"{D}/{created['id']}/versions/1", headers=api.as_()), 404)
    problem(await api.client.post(f"{D}/{created['id']}/enable", headers=api.as_()), 404)
