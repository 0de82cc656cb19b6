"""Seed 001's "Chorus" API: templates (definitions) and instances (executions) that are
created, then started, paused, resumed and cancelled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.api.conftest import ORDERED, WELCOME, Api, approval

T = "/api/v1/templates"
I = "/api/v1/instances"  # noqa: E741 - the seed's own word
E = "/api/v1/workflows/executions"


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


async def create_template(api: Api, document: Any) -> dict[str, Any]:
    if isinstance(document, str):
        r = await api.client.post(
            T, content=document, headers={**api.as_(), "Content-Type": "application/yaml"}
        )
    else:
        r = await api.client.post(T, json=document, headers=api.as_())
    assert r.status_code == 201, r.text
    return dict(r.json())


async def create_instance(api: Api, template_id: str, variables: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"template_id": template_id}
    if variables is not None:
        body["variables"] = variables
    r = await api.client.post(I, json=body, headers=api.as_())
    assert r.status_code == 201, r.text
    return dict(r.json())


async def act(api: Api, instance_id: str, action: str) -> httpx.Response:
    return await api.client.put(f"{I}/{instance_id}/{action}", headers=api.as_())


async def instance(api: Api, instance_id: str) -> dict[str, Any]:
    r = await api.client.get(f"{I}/{instance_id}", headers=api.as_())
    assert r.status_code == 200, r.text
    return dict(r.json())


async def steps(api: Api, instance_id: str) -> dict[str, dict[str, Any]]:
    r = await api.client.get(f"{I}/{instance_id}/steps", headers=api.as_())
    assert r.status_code == 200, r.text
    assert r.json()["instance_id"] == instance_id
    return {s["id"]: s for s in r.json()["steps"]}


async def wait_for(
    api: Api, instance_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 15.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = await instance(api, instance_id)
        if done(view):
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"instance {instance_id} never got there: {view}")
        await asyncio.sleep(0.05)


async def wait_asking(api: Api, instance_id: str) -> None:
    deadline = time.monotonic() + 15
    while (await steps(api, instance_id))["ask"]["legato_status"] != "waiting":
        assert time.monotonic() < deadline, "the instance never waited for its signal"
        await asyncio.sleep(0.05)


# ---- templates ---------------------------------------------------------------------------------


async def test_template_crud_in_the_steps_format_of_seed_001(api: Api) -> None:
    created = await create_template(api, WELCOME)
    tid = created["id"]
    assert tid.startswith("wf_")
    assert (created["name"], created["version"], created["source_format"]) == (
        "user_welcome",
        1,
        "steps",
    )
    assert created["description"] == "seed 001, logging instead of sending email"
    assert (created["tenant_id"], created["environment_id"]) == ("acme", "prod")
    assert created["definition"] == WELCOME  # as it was sent
    assert set(created["canonical"]["states"]) == {
        "validate_input",
        "send_welcome",
        "send_error",
        "log_success",
    }
    assert created["created_by"] == "user-of-acme"

    r = await api.client.get(f"{T}/{tid}", headers=api.as_())
    assert r.status_code == 200
    assert r.json() == {**created, "warnings": []}
    listed = (await api.client.get(T, headers=api.as_())).json()
    assert [item["id"] for item in listed["items"]] == [tid]
    assert listed["next_cursor"] is None
    # a template is a definition: the same one, under the other name
    r = await api.client.get(f"/api/v1/workflows/definitions/{tid}", headers=api.as_())
    assert r.json()["canonical"] == created["canonical"]

    r = await api.client.put(
        f"{T}/{tid}",
        content=approval("2"),
        headers={**api.as_(), "Content-Type": "application/yaml"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["name"], r.json()["source_format"]) == (
        2,
        "approval",
        "canonical",
    )
    r = await api.client.delete(f"{T}/{tid}", headers=api.as_())
    assert r.status_code == 200, r.text
    assert r.json() == {"id": tid, "deleted": True, "cancelled_instances": 0}
    problem(await api.client.get(f"{T}/{tid}", headers=api.as_()), 404)
    problem(await api.client.put(f"{T}/{tid}", json=WELCOME, headers=api.as_()), 404)


async def test_an_invalid_template_gets_422_with_findings(api: Api) -> None:
    step = {"id": "a", "type": "action", "config": {"action": "log_message"}}
    bad = {"name": "bad", "steps": [{**step, "next_steps": ["nowhere"]}]}
    body = problem(await api.client.post(T, json=bad, headers=api.as_()), 422)
    assert body["type"] == "urn:legato:problem:invalid-definition"
    [error] = body["errors"]
    assert error["pointer"] == "/steps/0/next_steps/0"  # into what was sent
    assert "nowhere" in error["message"]
    assert (await api.client.get(T, headers=api.as_())).json()["items"] == []
    r = await api.client.post(
        T, content="name: x", headers={**api.as_(), "Content-Type": "text/plain"}
    )
    problem(r, 415)


async def test_list_templates_pages_and_filters_by_name(api: Api) -> None:
    ids = [(await create_template(api, {**WELCOME, "name": f"t{i}"}))["id"] for i in range(3)]
    page = (await api.client.get(T, params={"limit": 2}, headers=api.as_())).json()
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    rest = (
        await api.client.get(T, params={"cursor": page["next_cursor"]}, headers=api.as_())
    ).json()
    assert [item["id"] for item in rest["items"]] == [ids[0]]
    named = (await api.client.get(T, params={"name": "t1"}, headers=api.as_())).json()
    assert [item["id"] for item in named["items"]] == [ids[1]]
    problem(await api.client.get(T, params={"limit": 0}, headers=api.as_()), 422)
    problem(await api.client.get(T, params={"colour": "red"}, headers=api.as_()), 422)


# ---- instances -------------------------------------------------------------------------------


async def test_an_instance_is_created_then_started_and_runs_to_the_end(api: Api) -> None:
    template = await create_template(api, WELCOME)
    created = await create_instance(api, template["id"], {"email": "ada@example.com"})
    iid = created["id"]
    assert created["status"] == "created"
    assert (created["template_id"], created["template_name"], created["template_version"]) == (
        template["id"],
        "user_welcome",
        1,
    )
    assert created["started_at"] is None
    assert created["input"] == {"email": "ada@example.com"}
    assert created["variables"]["email"] == "ada@example.com"
    assert (created["tenant_id"], created["environment_id"]) == ("acme", "prod")
    before = await steps(api, iid)
    assert {s["status"] for s in before.values()} == {"pending"}
    # nothing runs before the start
    history = (await api.client.get(f"{E}/{iid}/history", headers=api.as_())).json()["events"]
    assert [e["type"] for e in history] == ["RunStarted"]
    assert history[0]["payload"]["suspended"] is True

    r = await act(api, iid, "start")
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("running", "completed")
    assert r.json()["started_at"] is not None
    done = await wait_for(api, iid, lambda v: v["status"] == "completed")
    assert done["variables"]["email"] == "ada@example.com"
    assert done["completed_at"] is not None
    after = await steps(api, iid)
    assert after["validate_input"]["type"] == "condition"
    assert after["send_welcome"]["type"] == "action"
    assert [after[s]["status"] for s in ("validate_input", "send_welcome", "log_success")] == [
        "completed"
    ] * 3
    assert after["log_success"]["output"] == {"welcomed": "ada@example.com"}
    assert after["send_error"]["status"] == "skipped"
    # started once
    body = problem(await act(api, iid, "start"), 409)
    assert "already been started (it is completed)" in body["detail"]


async def test_pause_and_resume_an_instance(api: Api) -> None:
    template = await create_template(api, approval("1"))
    iid = (await create_instance(api, template["id"]))["id"]
    for action in ("pause", "resume"):
        body = problem(await act(api, iid, action), 409)
        assert "has not been started yet" in body["detail"]
        assert f"PUT /api/v1/instances/{iid}/start" in body["detail"]
    assert (await act(api, iid, "start")).status_code == 200
    await wait_asking(api, iid)

    r = await act(api, iid, "pause")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["legato_status"]) == ("paused", "running")
    assert r.json()["paused_reason"] == "paused through the API by user-of-acme"
    assert "already paused" in problem(await act(api, iid, "pause"), 409)["detail"]
    assert "already been started" in problem(await act(api, iid, "start"), 409)["detail"]
    # a signal while paused is taken; the step after it waits for the resume
    r = await api.client.post(
        f"/api/v1/executions/{iid}/signals/approved", json={"by": "ada"}, headers=api.as_()
    )
    assert r.status_code == 200, r.text
    held = await steps(api, iid)
    assert held["ask"]["status"] == "completed"
    assert (held["record"]["status"], held["record"]["legato_status"]) == ("pending", "ready")
    assert (await instance(api, iid))["status"] == "paused"

    r = await act(api, iid, "resume")
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("running", "completed")
    assert r.json()["paused_reason"] is None
    done = await wait_for(api, iid, lambda v: v["status"] == "completed")
    assert done["output"] == {"ran_version": "1"}
    assert "already ended" in problem(await act(api, iid, "resume"), 409)["detail"]
    assert "already ended" in problem(await act(api, iid, "pause"), 409)["detail"]
    assert "already ended" in problem(await act(api, iid, "cancel"), 409)["detail"]


async def test_cancel_a_created_or_a_paused_instance(api: Api) -> None:
    template = await create_template(api, approval("1"))
    created = (await create_instance(api, template["id"]))["id"]
    r = await act(api, created, "cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert {s["status"] for s in (await steps(api, created)).values()} == {"skipped"}
    assert (await act(api, created, "cancel")).status_code == 200  # again: no change

    paused = (await create_instance(api, template["id"]))["id"]
    await act(api, paused, "start")
    await wait_asking(api, paused)
    await act(api, paused, "pause")
    r = await act(api, paused, "cancel")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["paused_reason"]) == ("cancelled", None)
    assert (await steps(api, paused))["ask"]["status"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({}, "/body/template_id"),
        ({"template_id": "wf_x", "variables": [1]}, "/body/variables"),
        ({"template_id": "wf_x", "surprise": 1}, "/body/surprise"),
        ([1], "/body"),
    ],
)
async def test_instance_bodies_are_validated(api: Api, body: Any, pointer: str) -> None:
    r = await api.client.post(I, json=body, headers=api.as_())
    assert problem(r, 422)["errors"][0]["pointer"] == pointer


async def test_an_instance_of_a_missing_or_disabled_template_is_refused(api: Api) -> None:
    body = problem(
        await api.client.post(I, json={"template_id": "wf_nobody"}, headers=api.as_()), 404
    )
    assert "does not exist" in body["detail"]
    template = await create_template(api, ORDERED)
    await api.client.post(
        f"/api/v1/workflows/definitions/{template['id']}/disable", headers=api.as_()
    )
    r = await api.client.post(I, json={"template_id": template["id"]}, headers=api.as_())
    assert "is disabled" in problem(r, 409)["detail"]
    assert (await api.client.get(I, headers=api.as_())).json()["items"] == []


async def test_list_instances_shows_created_running_paused_and_ended_ones(api: Api) -> None:
    waiting = await create_template(api, approval("1"))
    quick = await create_template(api, ORDERED)
    created = (await create_instance(api, waiting["id"]))["id"]
    running = (await create_instance(api, waiting["id"]))["id"]
    paused = (await create_instance(api, waiting["id"]))["id"]
    ended = (await create_instance(api, quick["id"], {"customer_id": "c1"}))["id"]
    for iid in (running, paused, ended):
        assert (await act(api, iid, "start")).status_code == 200
    for iid in (running, paused):
        await wait_asking(api, iid)
    await act(api, paused, "pause")
    await wait_for(api, ended, lambda v: v["status"] == "completed")

    listed = (await api.client.get(I, headers=api.as_())).json()
    statuses = {item["id"]: item["status"] for item in listed["items"]}
    assert statuses == {
        created: "created",
        running: "running",
        paused: "paused",
        ended: "completed",
    }
    only = (await api.client.get(I, params={"template_id": quick["id"]}, headers=api.as_())).json()
    assert [item["id"] for item in only["items"]] == [ended]
    page = (await api.client.get(I, params={"limit": 3}, headers=api.as_())).json()
    assert len(page["items"]) == 3
    rest = (
        await api.client.get(I, params={"cursor": page["next_cursor"]}, headers=api.as_())
    ).json()
    assert {i["id"] for i in page["items"] + rest["items"]} == set(statuses)
    problem(await api.client.get(I, params={"limit": 101}, headers=api.as_()), 422)


async def test_deleting_a_template_with_unfinished_instances_needs_force(api: Api) -> None:
    template = await create_template(api, approval("1"))
    tid = template["id"]
    created = (await create_instance(api, tid))["id"]
    body = problem(await api.client.delete(f"{T}/{tid}", headers=api.as_()), 409)
    assert "force=true" in body["detail"]
    r = await api.client.delete(f"{T}/{tid}", params={"force": "true"}, headers=api.as_())
    assert r.status_code == 200, r.text
    assert r.json()["cancelled_instances"] == 1
    assert (await instance(api, created))["status"] == "cancelled"
