"""Event triggers: CloudEvents fan out to the matching, enabled workflows of one tenant and
environment, with conditions, deduplicated by the event's source and id."""

from __future__ import annotations

from typing import Any

import pytest
from tests.triggers.conftest import (
    ACME_PROD,
    ACME_STAGING,
    FAST,
    GLOBEX_PROD,
    MakeWorkflow,
    create_workflow,
    run_ids,
)

from legato import Engine
from legato.errors import InputError
from legato.testing import FakeClock
from legato.triggers import TRIGGER_KEY, accept_event, accept_events
from legato.triggers.events import event_run_id

CREATED = {"type": "event", "event_name": "customer.created"}
GOLD_ONLY = {**CREATED, "conditions": ['data.tier == "gold"']}


def cloud_event(event_id: str, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/billing/customers",
        "type": "customer.created",
        "time": "2024-12-19T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"customer_id": f"c_{event_id}", **data},
    }


@pytest.fixture
async def catalog(make_workflow: MakeWorkflow) -> None:
    """acme/prod: an unconditional workflow, a gold-only one, a disabled one, one on
    another event; globex/prod and acme/staging: one each on customer.created."""
    await make_workflow(ACME_PROD, "wf_welcome", CREATED)
    await make_workflow(ACME_PROD, "wf_gold", GOLD_ONLY)
    await make_workflow(ACME_PROD, "wf_paused", CREATED, enabled=False)
    await make_workflow(ACME_PROD, "wf_orders", {"type": "event", "event_name": "order.created"})
    await make_workflow(GLOBEX_PROD, "wf_globex", CREATED)
    await make_workflow(ACME_STAGING, "wf_staging", CREATED)


@pytest.mark.usefixtures("catalog")
async def test_fan_out_conditions_disabled_and_dedup(engine: Engine) -> None:
    silver = await accept_event(engine, ACME_PROD, cloud_event("e1", tier="silver"))
    assert [s.workflow_id for s in silver.started] == ["wf_welcome"]
    assert {(s.workflow_id, s.reason) for s in silver.skipped} == {
        ("wf_gold", "condition_false"),
        ("wf_paused", "disabled"),
    }
    assert silver.failed == ()

    gold = await accept_event(engine, ACME_PROD, cloud_event("e2", tier="gold"))
    assert sorted(s.workflow_id for s in gold.started) == ["wf_gold", "wf_welcome"]
    assert [(s.workflow_id, s.reason) for s in gold.skipped] == [("wf_paused", "disabled")]

    started = {s.run_id for s in silver.started + gold.started}
    assert await run_ids(engine.store, ACME_PROD) == started

    # The same event delivered again starts nothing more.
    again = await accept_event(engine, ACME_PROD, cloud_event("e2", tier="gold"))
    assert again.started == ()
    duplicates = {s.workflow_id: s.run_id for s in again.skipped if s.reason == "duplicate"}
    assert duplicates == {s.workflow_id: s.run_id for s in gold.started}
    assert await run_ids(engine.store, ACME_PROD) == started

    # Other tenants and environments: nothing started there by acme/prod's events.
    assert await run_ids(engine.store, GLOBEX_PROD) == set()
    assert await run_ids(engine.store, ACME_STAGING) == set()

    # The same event id in another tenant is that tenant's event: its own workflow starts.
    globex = await accept_event(engine, GLOBEX_PROD, cloud_event("e2", tier="gold"))
    assert [s.workflow_id for s in globex.started] == ["wf_globex"]
    assert globex.started[0].run_id not in started
    assert await run_ids(engine.store, ACME_STAGING) == set()

    # A different source with the same id is a different event (CloudEvents identity).
    other = await accept_event(
        engine, ACME_PROD, {**cloud_event("e2", tier="gold"), "source": "/crm"}
    )
    assert sorted(s.workflow_id for s in other.started) == ["wf_gold", "wf_welcome"]


@pytest.mark.usefixtures("catalog")
async def test_the_run_input_is_the_data_plus_the_envelope(engine: Engine) -> None:
    result = await accept_event(engine, ACME_PROD, cloud_event("e9", tier="gold"))
    run_id = event_run_id(ACME_PROD, "wf_welcome", "/billing/customers", "e9")
    assert run_id in {s.run_id for s in result.started}
    record = await engine.store.get_run(ACME_PROD, run_id)
    assert record.workflow == "wf_welcome"
    assert record.workflow_version == "1"
    [started, *_] = await engine.for_scope(ACME_PROD).history(run_id)
    run_input = started.payload["input"]
    assert run_input["customer_id"] == "c_e9"
    assert run_input["tier"] == "gold"
    envelope = run_input[TRIGGER_KEY]
    assert envelope["type"] == "event"
    assert envelope["workflow_id"] == "wf_welcome"
    assert envelope["event"]["id"] == "e9"
    assert envelope["event"]["type"] == "customer.created"
    assert "data" not in envelope["event"]


async def test_dedup_holds_across_processes_and_restarts(
    db_path: str, clock: FakeClock, make_workflow: MakeWorkflow, engine: Engine
) -> None:
    await make_workflow(ACME_PROD, "wf_welcome", CREATED)
    first = await accept_event(engine, ACME_PROD, cloud_event("e1"))
    assert len(first.started) == 1
    # Another Engine on the same file (another process, or this one after a restart).
    async with Engine.open(db_path, clock=clock, worker=False) as other:
        again = await accept_event(other, ACME_PROD, cloud_event("e1"))
    assert again.started == ()
    assert [(s.reason, s.run_id) for s in again.skipped] == [("duplicate", first.started[0].run_id)]
    assert len(await run_ids(engine.store, ACME_PROD)) == 1


async def test_conditions_structured_and_unevaluable(
    engine: Engine, make_workflow: MakeWorkflow
) -> None:
    await make_workflow(
        ACME_PROD,
        "wf_vip",
        {
            **CREATED,
            "conditions": [
                {"field": "tier", "operator": "equals", "value": "gold"},
                {"field": "event.source", "operator": "equals", "value": "/billing/customers"},
            ],
        },
    )
    await make_workflow(ACME_PROD, "wf_region", {**CREATED, "conditions": ['data.region == "eu"']})
    result = await accept_event(engine, ACME_PROD, cloud_event("e1", tier="gold"))
    assert [s.workflow_id for s in result.started] == ["wf_vip"]
    [skipped] = result.skipped
    assert (skipped.workflow_id, skipped.reason) == ("wf_region", "condition_error")
    assert "region" in (skipped.detail or "")


async def test_an_event_nobody_listens_to_starts_nothing(engine: Engine) -> None:
    result = await accept_event(engine, ACME_PROD, cloud_event("e1"))
    assert result.started == ()
    assert result.skipped == ()
    assert result.to_json()["event_type"] == "customer.created"


@pytest.mark.parametrize("missing", ["id", "type", "source", "specversion"])
async def test_a_missing_required_attribute_is_named(engine: Engine, missing: str) -> None:
    event = cloud_event("e1")
    del event[missing]
    with pytest.raises(InputError, match=f"no `{missing}`") as caught:
        await accept_event(engine, ACME_PROD, event)
    assert caught.value.details["field"] == missing
    assert "specversion, id, source and type" in caught.value.message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"id": ""}, "id"),
        ({"type": 42}, "type"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2024-12-19T10:00:00"}, "time"),  # no zone
        ({"data_base64": "AAAA"}, "data_base64"),
    ],
)
async def test_invalid_attributes_are_refused(
    engine: Engine, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(InputError) as caught:
        await accept_event(engine, ACME_PROD, {**cloud_event("e1"), **change})
    assert caught.value.details["field"] == field


async def test_not_an_object(engine: Engine) -> None:
    with pytest.raises(InputError, match="CloudEvents JSON object"):
        await accept_event(engine, ACME_PROD, ["not", "an", "event"])


@pytest.mark.usefixtures("catalog")
async def test_a_batch_is_validated_whole_then_accepted(engine: Engine) -> None:
    bad = [cloud_event("b1"), {**cloud_event("b2"), "id": None}]
    with pytest.raises(InputError, match=r"event \[1\]"):
        await accept_events(engine, ACME_PROD, bad)
    assert await run_ids(engine.store, ACME_PROD) == set()
    results = await accept_events(engine, ACME_PROD, [cloud_event("b1"), cloud_event("b1")])
    assert [len(r.started) for r in results] == [1, 0]


async def test_a_started_run_runs_with_the_event_data(db_path: str) -> None:
    async with Engine.open(db_path, options=FAST) as engine:
        await create_workflow(engine, ACME_PROD, "wf_welcome", CREATED)
        result = await accept_event(engine, ACME_PROD, cloud_event("e1", tier="gold"))
        [run] = result.started
        done = await engine.for_scope(ACME_PROD).wait(run.run_id, timeout=10)
    assert done.succeeded, done.error
    assert done.output["customer_id"] == "c_e1"
    assert done.output[TRIGGER_KEY]["event"]["source"] == "/billing/customers"
