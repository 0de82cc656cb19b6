"""The billing example's activities against the stand-in billing service on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from legato.activity import ActivityContext, ActivityRegistry
from legato.errors import ErrorClass, StepError

ROOT = Path(__file__).resolve().parents[2]
# `examples` is imported from the repository's root, as a user runs it.  Until pytest's
# config says `pythonpath = ["."]`, put the root on the path here.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.billing import activities  # noqa: E402 - needs the root on sys.path
from examples.billing.service import BillingService  # noqa: E402


@pytest.fixture
def billing(monkeypatch: pytest.MonkeyPatch) -> Iterator[BillingService]:
    with BillingService() as service:
        monkeypatch.setenv("BILLING_URL", service.url)
        yield service


@pytest.fixture
async def registry() -> AsyncIterator[ActivityRegistry]:
    reg = ActivityRegistry.from_import_paths(["examples.billing.activities"])
    async with reg:
        yield reg


def _ctx(registry: ActivityRegistry, step: str, attempt: int = 1) -> ActivityContext:
    return registry.context(
        run_id="run-1", workflow="customer_onboarding", step=step, attempt=attempt
    )


def test_the_billing_activities_take_precedence_over_builtins() -> None:
    registry = ActivityRegistry.from_import_paths(["examples.billing.activities"])
    assert {
        "assign_plan",
        "create_wallet",
        "grant_credits",
        "send_email",
        "create_entitlement",
        "cancel_subscription",
        "close_wallet",
        "http_request",
    } <= registry.names()
    assert registry.get("send_email") is activities.send_email


async def test_onboarding_steps_end_to_end(
    billing: BillingService, registry: ActivityRegistry
) -> None:
    plan = await registry.invoke(
        "assign_plan",
        {"customer_id": "cust_1", "plan_id": "plan_starter", "currency": "USD"},
        _ctx(registry, "step_1"),
    )
    assert plan["subscription_id"].startswith("sub_")
    assert (plan["plan_id"], plan["status"]) == ("plan_starter", "active")

    wallet = await registry.invoke(
        "create_wallet",
        {
            "customer_id": "cust_1",
            "currency": "USD",
            "conversion_rate": 1.0,
            "initial_credits": 100,
        },
        _ctx(registry, "step_2"),
    )
    assert wallet["wallet_id"].startswith("wal_")
    assert wallet["balance"] == 100

    grant = await registry.invoke(
        "grant_credits",
        {"wallet_id": wallet["wallet_id"], "amount": 50, "reason": "welcome bonus"},
        _ctx(registry, "step_3"),
    )
    assert grant == {
        "wallet_id": wallet["wallet_id"],
        "granted": 50,
        "balance": 150,
        "reason": "welcome bonus",
    }

    email = await registry.invoke(
        "send_email",
        {"to": "ann@example.com", "template": "welcome", "customer_id": "cust_1"},
        _ctx(registry, "step_4"),
    )
    assert email["message_id"].startswith("msg_")

    entitlement = await registry.invoke(
        "create_entitlement",
        {"customer_id": "cust_1", "feature_id": "api_calls", "usage_limit": 1000},
        _ctx(registry, "step_5"),
    )
    assert entitlement["entitlement_id"].startswith("ent_")

    calls = billing.calls()
    assert [(c["method"], c["path"]) for c in calls] == [
        ("POST", "/subscriptions"),
        ("POST", "/wallets"),
        ("POST", f"/wallets/{wallet['wallet_id']}/credits"),
        ("POST", "/emails"),
        ("POST", "/entitlements"),
    ]
    assert [c["idempotency_key"] for c in calls] == [f"run-1/step_{n}" for n in range(1, 6)]


async def test_compensations_undo_subscription_and_wallet(
    billing: BillingService, registry: ActivityRegistry
) -> None:
    plan = await registry.invoke(
        "assign_plan", {"customer_id": "c", "plan_id": "p"}, _ctx(registry, "plan")
    )
    wallet = await registry.invoke("create_wallet", {"customer_id": "c"}, _ctx(registry, "wallet"))
    cancelled = await registry.invoke(
        "cancel_subscription",
        {"subscription_id": plan["subscription_id"]},
        _ctx(registry, "plan.compensate"),
    )
    closed = await registry.invoke(
        "close_wallet", {"wallet_id": wallet["wallet_id"]}, _ctx(registry, "wallet.compensate")
    )
    assert cancelled["status"] == "cancelled"
    assert closed["status"] == "closed"
    with pytest.raises(StepError) as info:  # a closed wallet takes no credits: 409
        await registry.invoke(
            "grant_credits", {"wallet_id": wallet["wallet_id"], "amount": 1}, _ctx(registry, "g")
        )
    assert info.value.error_class is ErrorClass.PERMANENT


async def test_a_retried_step_has_its_effect_once(
    billing: BillingService, registry: ActivityRegistry
) -> None:
    step_input = {"customer_id": "cust_2", "currency": "EUR", "initial_credits": 10}
    first = await registry.invoke("create_wallet", step_input, _ctx(registry, "step_2", 1))
    again = await registry.invoke("create_wallet", step_input, _ctx(registry, "step_2", 2))
    assert again == first
    assert len(billing.state.wallets) == 1
    assert billing.attempts("run-1/step_2") == 2
    assert [c["attempt"] for c in billing.calls()] == [1, 2]

    grant = {"wallet_id": first["wallet_id"], "amount": 5}
    for attempt in (1, 2, 3):
        result = await registry.invoke("grant_credits", grant, _ctx(registry, "step_3", attempt))
        assert result["balance"] == 15  # granted once

    other = await registry.invoke("create_wallet", step_input, _ctx(registry, "step_2b"))
    assert other["wallet_id"] != first["wallet_id"]


async def test_a_failed_attempt_is_retried_with_the_same_key(
    billing: BillingService, registry: ActivityRegistry
) -> None:
    billing.fail_next("POST", "/subscriptions", 503)
    step_input = {"customer_id": "c", "plan_id": "p"}
    with pytest.raises(StepError) as info:
        await registry.invoke("assign_plan", step_input, _ctx(registry, "s", 1))
    assert info.value.error_class is ErrorClass.RETRYABLE
    result = await registry.invoke("assign_plan", step_input, _ctx(registry, "s", 2))
    assert len(billing.state.subscriptions) == 1
    assert result["subscription_id"] in billing.state.subscriptions
    assert [(c["status"], c["attempt"]) for c in billing.calls()] == [(503, 1), (201, 2)]


async def test_rate_limit_is_honoured(billing: BillingService, registry: ActivityRegistry) -> None:
    billing.fail_next("POST", "/entitlements", 429, retry_after=4)
    with pytest.raises(StepError) as info:
        await registry.invoke(
            "create_entitlement", {"customer_id": "c", "feature_id": "f"}, _ctx(registry, "e")
        )
    assert info.value.error_class is ErrorClass.RATE_LIMITED
    assert info.value.retry_after == 4.0


@pytest.mark.parametrize(
    ("name", "step_input", "error_class"),
    [
        ("assign_plan", {"customer_id": "c", "plan_id": "p", "currency": "usd"}, "VALIDATION"),
        ("grant_credits", {"wallet_id": "wal_missing", "amount": 5}, "PERMANENT"),
        ("create_wallet", {"customer_id": "c", "initial_credits": -5}, "VALIDATION"),
        ("assign_plan", {"customer_id": "c"}, "VALIDATION"),  # plan_id missing: no call made
    ],
)
async def test_service_errors_are_classified(
    name: str,
    step_input: dict[str, object],
    error_class: str,
    billing: BillingService,
    registry: ActivityRegistry,
) -> None:
    with pytest.raises(StepError) as info:
        await registry.invoke(name, step_input, _ctx(registry, "x"))
    assert info.value.error_class == error_class


async def test_service_down_is_retryable(
    registry: ActivityRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = BillingService()
    monkeypatch.setenv("BILLING_URL", service.url)
    service.stop()  # the port is closed now
    with pytest.raises(StepError) as info:
        await registry.invoke(
            "assign_plan", {"customer_id": "c", "plan_id": "p"}, _ctx(registry, "s")
        )
    assert info.value.error_class is ErrorClass.RETRYABLE


def test_idempotency_key_reused_for_another_request_is_refused(billing: BillingService) -> None:
    headers = {"Idempotency-Key": "same"}
    with httpx.Client(base_url=billing.url) as client:
        first = client.post("/emails", json={"to": "a@example.com"}, headers=headers)
        replay = client.post("/emails", json={"to": "a@example.com"}, headers=headers)
        other = client.post("/emails", json={"to": "b@example.com"}, headers=headers)
        listed = client.get("/calls").json()["calls"]
    assert first.json() == replay.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422
    assert [c["attempt"] for c in listed] == [1, 2, 3]


def test_the_service_runs_as_a_module() -> None:
    with BillingService() as probe:  # borrow a free port, then give it back
        port = int(probe.url.rsplit(":", 1)[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    with subprocess.Popen(
        [sys.executable, "-m", "examples.billing.service", "--port", str(port), "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert f"http://127.0.0.1:{port}" in line
            response = httpx.post(
                f"http://127.0.0.1:{port}/subscriptions",
                json={"customer_id": "c", "plan_id": "p", "currency": "USD"},
            )
            assert response.status_code == 201
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def test_the_onboarding_example_runs_on_the_embedded_engine(
    billing: BillingService, tmp_path: Path
) -> None:
    """examples/billing/onboarding.yaml, as written, on SQLite; one wallet call fails once
    and is retried with the same idempotency key."""
    from legato.runtime.local import Engine

    billing.fail_next("POST", "/wallets", 503)
    registry = ActivityRegistry.from_import_paths(["examples.billing.activities"])
    async with Engine.open(str(tmp_path / "legato.db"), registry=registry) as engine:
        result = await engine.run(
            ROOT / "examples" / "billing" / "onboarding.yaml",
            {"customer_id": "cust_9", "email": "ann@example.com"},
        )
    assert result.status == "completed"
    calls = billing.calls()
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [
        ("POST", "/subscriptions", 201),
        ("POST", "/wallets", 503),
        ("POST", "/wallets", 201),
        ("POST", "/wallets/wal_0002/credits", 200),
        ("POST", "/emails", 202),
        ("POST", "/entitlements", 201),
    ]
    assert calls[1]["idempotency_key"] == calls[2]["idempotency_key"]
    assert [c["attempt"] for c in calls[1:3]] == [1, 2]
    [wallet] = billing.state.wallets.values()
    assert (wallet["customer_id"], wallet["balance"]) == ("cust_9", 150)
