"""Executions: their 002 shape, listing, cancel, pause, resume, retry, history, signals,
callbacks, and version pinning (a running execution keeps the version it started on)."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.api.conftest import ORDERED, SECRET, Api, approval

from legato.api import create_app
from legato.errors import StepError
from legato.mock import MockService
from legato.settings import Settings

D = "/api/v1/workflows/definitions"
E = "/api/v1/workflows/executions"

# EC-4: completed, failed, then skipped.
PARTIAL: dict[str, Any] = {
    "name": "partial",
    "steps": [
        {"id": "assign", "order": 1, "type": "set", "config": {"plan": "starter"}},
        {
            "id": "charge",
            "order": 2,
            "type": "fail",
            "config": {"message": "the card was declined"},
            "retry_policy": {"max_attempts": 1},
        },
        {"id": "email", "order": 3, "type": "log", "config": {"message": "welcome"}},
    ],
}

# A completed step, then one that fails while the ledger is closed (no retries).
LEDGER: dict[str, Any] = {
    "name": "ledger",
    "start_at": "first",
    "states": {
        "first": {
            "type": "task",
            "action": "set",
            "input": {"kept": "yes"},
            "output": {"$.kept": "$.result.kept"},
            "next": "post",
        },
        "post": {
            "type": "task",
            "action": "post_to_ledger",
            "retry": {"max_attempts": 1},
            "output": {"$.posted": "$.result.posted"},
        },
    },
}


def steps_by_id(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step_id"]: s for s in view["step_executions"]}


async def test_a_completed_execution_in_the_002_shape(api: Api) -> None:
    created = await api.create(ORDERED)
    execution = await api.trigger(created["id"], {"customer_id": "cust_123"})
    view = await api.wait_end(execution)
    assert view["id"] == execution
    assert view["workflow_id"] == created["id"]
    assert view["workflow_name"] == "Customer Onboarding - Standard"
    assert view["workflow_version"] == 1
    assert (view["status"], view["legato_status"]) == ("completed", "completed")
    assert view["trigger_type"] == "manual"
    assert view["trigger_event"] == {"customer_id": "cust_123"}
    assert (view["tenant_id"], view["environment_id"]) == ("acme", "prod")
    assert view["started_at"] <= view["completed_at"]
    assert view["error"] is None
    assert view["context"]["customer_id"] == "cust_123"  # the ordered format's root input
    steps = steps_by_id(view)
    assert list(steps) == ["step_1", "step_2"]
    assert steps["step_1"]["status"] == "completed"
    assert steps["step_1"]["attempts"] == 1
    assert steps["step_1"]["output"] == {"plan_id": "plan_starter", "customer": "cust_123"}
    assert steps["step_2"]["output"]["message"] == "wallet for cust_123"
    for step in steps.values():
        assert step["started_at"] <= step["completed_at"]


async def test_a_partial_failure_keeps_completed_steps_and_skips_the_rest_ec4(api: Api) -> None:
    created = await api.create(PARTIAL)
    view = await api.wait_end(await api.trigger(created["id"]))
    assert view["status"] == "failed"
    assert "declined" in view["error"]["message"]
    steps = steps_by_id(view)
    assert [steps[s]["status"] for s in ("assign", "charge", "email")] == [
        "completed",
        "failed",
        "skipped",
    ]
    assert steps["assign"]["output"] == {"plan": "starter"}
    assert steps["charge"]["error"]["error_class"] == "PERMANENT"


async def test_list_executions_with_filters_and_pages(api: Api) -> None:
    ok = await api.create(ORDERED)
    bad = await api.create(PARTIAL)
    waits = await api.create(approval("1"))
    before = datetime.now(UTC) - timedelta(seconds=1)
    done = [await api.trigger(ok["id"]) for _ in range(3)]
    failed = await api.trigger(bad["id"])
    waiting = await api.trigger(waits["id"])
    for execution in [*done, failed]:
        await api.wait_end(execution)
    await api.wait_waiting(waiting)
    after = datetime.now(UTC) + timedelta(seconds=1)

    async def ids(**params: Any) -> list[str]:
        r = await api.client.get(E, params=params, headers=api.as_())
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()["items"]]

    everything = [waiting, failed, *reversed(done)]
    assert await ids() == everything
    assert await ids(workflow_id=ok["id"]) == list(reversed(done))
    assert await ids(status="failed") == [failed]
    assert await ids(status="running") == [waiting]
    assert await ids(status="completed", workflow_id=ok["id"]) == list(reversed(done))
    assert await ids(status="pending") == []
    assert await ids(started_after=before.isoformat()) == everything
    assert await ids(started_before=before.isoformat()) == []
    assert await ids(started_after=after.isoformat()) == []
    assert await ids(limit=2, offset=1) == everything[1:3]
    item = (await api.client.get(E, params={"status": "failed"}, headers=api.as_())).json()[
        "items"
    ][0]
    assert item["workflow_name"] == "partial"
    assert (item["status"], item["legato_status"]) == ("failed", "failed")

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await api.client.get(E, params=params, headers=api.as_())).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ({"status": "exploded"}, "/query/status"),
        ({"started_after": "2024-12-19T10:00:00"}, "/query/started_after"),
        ({"started_before": "yesterday"}, "/query/started_before"),
        ({"limit": "many"}, "/query/limit"),
        ({"workflowid": "wf_123"}, "/query/workflowid"),  # a misspelt filter lists nothing
    ],
)
async def test_list_parameters_are_validated(
    api: Api, params: dict[str, Any], pointer: str
) -> None:
    r = await api.client.get(E, params=params, headers=api.as_())
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error["pointer"] == pointer


async def test_cancel_a_waiting_execution(api: Api) -> None:
    created = await api.create(approval("1"))
    execution = await api.trigger(created["id"])
    await api.wait_waiting(execution)
    r = await api.client.post(f"{E}/{execution}/cancel", headers=api.as_())
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert steps_by_id(r.json())["ask"]["status"] == "cancelled"
    # again: nothing changes
    r = await api.client.post(f"{E}/{execution}/cancel", headers=api.as_())
    assert r.status_code == 200
    # a completed execution cannot be cancelled
    finished = await api.wait_end(await api.trigger((await api.create(ORDERED))["id"]))
    r = await api.client.post(f"{E}/{finished['id']}/cancel", headers=api.as_())
    assert r.status_code == 409
    assert "already ended (completed)" in r.json()["detail"]


async def test_pause_holds_the_next_step_until_resume(api: Api) -> None:
    created = await api.create(approval("1"))
    execution = await api.trigger(created["id"])
    await api.wait_waiting(execution)
    r = await api.client.post(f"{E}/{execution}/pause", headers=api.as_())
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["legato_status"], r.json()["paused"]) == (
        "running",
        "running",
        True,
    )
    r = await api.client.post(f"{E}/{execution}/pause", headers=api.as_())
    assert r.status_code == 409
    assert "already paused; resume it" in r.json()["detail"]
    # the signal is taken, but the step it makes ready is not scheduled while paused
    signal = f"/api/v1/executions/{execution}/signals/approved"
    r = await api.client.post(signal, json={"by": "ada"}, headers=api.as_())
    assert r.status_code == 200, r.text
    view = await api.execution(execution)
    steps = steps_by_id(view)
    assert steps["ask"]["status"] == "completed"
    assert (steps["record"]["status"], steps["record"]["legato_status"]) == ("pending", "ready")
    history = (await api.client.get(f"{E}/{execution}/history", headers=api.as_())).json()
    kinds = [(e["type"], e["payload"].get("path")) for e in history["events"]]
    assert ("RunSuspended", None) in kinds
    assert ("StepScheduled", "record") not in kinds
    suspended = next(e for e in history["events"] if e["type"] == "RunSuspended")
    assert suspended["payload"]["reason"] == "paused through the API by user-of-acme"

    r = await api.client.post(f"{E}/{execution}/resume", headers=api.as_())
    assert r.status_code == 200, r.text
    assert r.json()["paused"] is False
    view = await api.wait_end(execution)
    assert view["status"] == "completed"
    assert view["output"] == {"ran_version": "1"}
    for action in ("pause", "resume"):
        r = await api.client.post(f"{E}/{execution}/{action}", headers=api.as_())
        assert r.status_code == 409, r.text
        assert "already ended (completed)" in r.json()["detail"]


async def test_resume_of_an_execution_that_is_not_paused_is_409(api: Api) -> None:
    created = await api.create(approval("1"))
    execution = await api.trigger(created["id"])
    await api.wait_waiting(execution)
    r = await api.client.post(f"{E}/{execution}/resume", headers=api.as_())
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert "is not paused (it is running); pause it first" in r.json()["detail"]
    # a paused execution can be cancelled
    await api.client.post(f"{E}/{execution}/pause", headers=api.as_())
    r = await api.client.post(f"{E}/{execution}/cancel", headers=api.as_())
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["paused"]) == ("cancelled", False)


async def test_retry_a_failed_execution_from_its_failed_step(api: Api) -> None:
    ledger_open = {"yes": False}
    engine = api.app.state.engine

    @engine.activity("post_to_ledger")
    def post_to_ledger() -> dict[str, Any]:
        if not ledger_open["yes"]:
            raise StepError("the ledger is closed", error_class="PERMANENT")
        return {"posted": True}

    created = await api.create(LEDGER)
    execution = await api.trigger(created["id"])
    failed = await api.wait_end(execution)
    assert failed["status"] == "failed"
    ledger_open["yes"] = True
    r = await api.client.post(f"{E}/{execution}/retry", headers=api.as_())
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "running"
    view = await api.wait_end(execution)
    assert view["status"] == "completed"
    steps = steps_by_id(view)
    assert steps["first"]["attempts"] == 1  # kept, not run again
    assert steps["post@0"]["status"] == "failed"  # the failed visit stays in the record
    assert steps["post"]["status"] == "completed"
    assert view["context"] == {"input": {}, "kept": "yes", "posted": True}
    # a completed execution cannot be retried
    r = await api.client.post(f"{E}/{execution}/retry", headers=api.as_())
    assert r.status_code == 409
    assert "cannot be retried" in r.json()["detail"]


async def test_history_is_the_event_log(api: Api) -> None:
    created = await api.create(ORDERED)
    execution = await api.trigger(created["id"])
    await api.wait_end(execution)
    r = await api.client.get(f"{E}/{execution}/history", headers=api.as_())
    assert r.status_code == 200
    events = r.json()["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "RunStarted"
    assert events[0]["payload"]["secret"] == "***"
    assert events[-1]["type"] == "RunFinished"
    for previous, event in itertools.pairwise(events):
        assert event["prev_hash"] == previous["hash"]


async def test_signals_wake_a_waiting_execution(api: Api) -> None:
    created = await api.create(approval("1"))
    execution = await api.trigger(created["id"])
    await api.wait_waiting(execution)
    url = f"/api/v1/executions/{execution}/signals/approved"
    r = await api.client.post(url, content="{not json", headers=api.as_())
    assert r.status_code == 422
    r = await api.client.post(
        url, content="by: ada", headers={**api.as_(), "Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    r = await api.client.post(url, json={"by": "ada"}, headers=api.as_())
    assert r.status_code == 200, r.text
    assert r.json()["execution_id"] == execution
    assert r.json()["signal"] == "approved"
    view = await api.wait_end(execution)
    assert view["status"] == "completed"
    assert view["context"]["approval"] == {"by": "ada"}
    r = await api.client.post(url, json={"by": "late"}, headers=api.as_())
    assert r.status_code == 409
    assert "already ended" in r.json()["detail"]


async def test_a_running_execution_keeps_its_version_and_new_triggers_take_the_new_one(
    api: Api,
) -> None:
    created = await api.create(approval("1"))
    wid = created["id"]
    old = await api.trigger(wid)
    await api.wait_waiting(old)
    r = await api.client.put(
        f"{D}/{wid}", content=approval("2"), headers={**api.as_(), "Content-Type": "text/yaml"}
    )
    assert r.json()["version"] == 2
    new = await api.trigger(wid)
    await api.wait_waiting(new)
    for execution in (old, new):
        r = await api.client.post(
            f"/api/v1/executions/{execution}/signals/approved",
            json={"by": "ada"},
            headers=api.as_(),
        )
        assert r.status_code == 200
    old_view, new_view = await api.wait_end(old), await api.wait_end(new)
    assert (old_view["workflow_version"], old_view["output"]) == (1, {"ran_version": "1"})
    assert (new_view["workflow_version"], new_view["output"]) == (2, {"ran_version": "2"})
    assert steps_by_id(old_view)["record"]["output"]["ran_version"] == "1"


# ---- callbacks --------------------------------------------------------------------------------


@pytest.fixture
def checks_service() -> Any:
    svc = MockService("checks")
    svc.operation("criminal.check").respond({"result": "clear"}).async_(delay=600)
    with svc.http() as url:
        yield svc, url


async def test_callbacks_deliver_async_results_once(
    tmp_path: Path, db_path: Path, checks_service: Any
) -> None:
    svc, url = checks_service
    services = tmp_path / "services.yaml"
    services.write_text(
        yaml.safe_dump(
            {
                "services": [
                    {
                        "name": "checks",
                        "type": "rest",
                        "endpoint": url,
                        "capabilities": ["criminal.check"],
                    }
                ]
            }
        )
    )
    settings = Settings(
        db=str(db_path),
        api_jwt_secret=SECRET,
        poll_interval=0.05,
        services=str(services),
        allow_private_networks=True,
    )
    definition = {
        "name": "background",
        "start_at": "check",
        "states": {
            "check": {
                "type": "task",
                "service": "checks",
                "operation": "criminal.check",
                "async": True,
                "callback_timeout": "5m",
                "output": {"$.check": "$.result"},
            }
        },
    }
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        api = Api(app, c)
        created = await api.create(definition)
        tokens = []
        for _ in range(2):
            execution = await api.trigger(created["id"])
            await api.wait_waiting(execution, step="check")
            deadline = time.monotonic() + 10
            while len(svc.calls("criminal.check")) < len(tokens) + 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            tokens.append((execution, svc.calls("criminal.check")[-1].headers["x-callback-token"]))
        (done_id, done_token), (failing_id, failing_token) = tokens

        # no bearer token: the callback token is the credential
        r = await c.post(f"/api/v1/callbacks/{done_token}", json={"verdict": "clear"})
        assert r.status_code == 200, r.text
        assert r.json()["execution_id"] == done_id
        view = await api.wait_end(done_id)
        assert view["status"] == "completed"
        assert view["context"]["check"] == {"verdict": "clear"}
        history = (await c.get(f"{E}/{done_id}/history", headers=api.as_())).json()["events"]

        # a duplicate, a forged token, an unknown run: 409, nothing changes
        for token in (done_token, f"{done_id}~{'f' * 32}", f"exec_nobody~{'0' * 32}", "junk"):
            r = await c.post(f"/api/v1/callbacks/{token}", json={"verdict": "again"})
            assert r.status_code == 409, (token, r.text)
            assert "unexpected callback" in r.json()["detail"]
        again = (await c.get(f"{E}/{done_id}/history", headers=api.as_())).json()["events"]
        assert again == history

        # a failure report: validated, then it fails the step
        r = await c.post(
            f"/api/v1/callbacks/{failing_token}", json={"error": {"error_class": "NOPE"}}
        )
        assert r.status_code == 422
        r = await c.post(
            f"/api/v1/callbacks/{failing_token}",
            json={"error": {"message": "record unavailable", "error_class": "PERMANENT"}},
        )
        assert r.status_code == 200, r.text
        failed = await api.wait_end(failing_id)
        assert failed["status"] == "failed"
        assert "record unavailable" in failed["error"]["message"]
