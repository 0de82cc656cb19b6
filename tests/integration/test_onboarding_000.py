"""Seed 000's employee onboarding, as written, against stand-ins for its services.

HR over gRPC with OAuth2, the two background checks over REST answering asynchronously
by callback, and IT provisioning over gRPC in batches: 50 runs at once fill the batch
(max_size 50), so it is flushed by size.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from examples.onboarding.callbacks import CallbackReceiver
from examples.onboarding.standins import running

import legato

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "onboarding"
SECRETS = {
    "WORKDAY_CLIENT_ID": "wd-client-id-Q7v1",
    "WORKDAY_CLIENT_SECRET": "wd-client-secret-8KzPq",
    "STERLING_API_KEY": "sterling-live-key-J3n9x",
    "STRIPE_SECRET_KEY": "sk_live_stripe-Vb21q",
}
RUNS = 50


def candidate(i: int) -> dict[str, Any]:
    return {
        "candidate": {"first_name": f"Ada{i}", "last_name": "Lovelace", "email": f"ada{i}@x.io"},
        "offer": {"start_date": "2027-01-04", "salary": 100000 + i, "department": "R&D"},
    }


@pytest.fixture
def registry() -> legato.ActivityRegistry:
    # the stand-ins (and the OAuth2 token endpoint) live on loopback
    return legato.ActivityRegistry(network=legato.NetworkPolicy(allow_private=True))


async def test_employee_onboarding_runs_end_to_end(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    registry: legato.ActivityRegistry,
) -> None:
    caplog.set_level(logging.DEBUG)
    with CallbackReceiver() as receiver:
        async with running(callback_url=receiver.url, secrets=SECRETS) as standins:
            for key, value in standins.env.items():
                monkeypatch.setenv(key, value)
            async with legato.Engine.open(
                tmp_path / "legato.db",
                registry=registry,
                services=EXAMPLE / "services.yaml",
                options=legato.WorkerOptions(poll_interval=0.05),
            ) as engine:
                registry.include_builtins()
                receiver.attach(engine, asyncio.get_running_loop())
                run_ids = [
                    await engine.start(EXAMPLE / "employee_onboarding.json", candidate(i))
                    for i in range(RUNS)
                ]
                results = [await engine.wait(r, timeout=90) for r in run_ids]
                histories = [await engine.history(r) for r in run_ids]
                chains = await engine.verify()

    assert [r.status for r in results] == ["completed"] * RUNS, results[0].error
    first = results[0]
    # input_mapping/output_mapping: the HR record's ids land where the mapping says
    assert first.output["employee"]["id"].startswith("E-")
    assert first.output["employee"]["workday_id"].startswith("WD-")
    steps = {s["id"]: s for s in first.steps}
    # side effects and cost the HR service reported are stored with the step
    hr_meta = steps["create_hr_record"]["metadata"]
    assert hr_meta["side_effects"][0]["effect_type"] == "record.created"
    assert hr_meta["cost"]["currency"] == "USD"
    assert steps["run_background_check"]["status"] == "completed"
    for check in ("criminal_check", "employment_verification"):
        branch = steps[f"run_background_check[{check}].{check}"]
        assert branch["status"] == "completed"
        assert branch["output"]["result"] == "clear"  # delivered by the callback

    # HR: one create per run, through OAuth2 (the token endpoint was asked once)
    creates = standins.hr.calls("employee.create")
    assert len(creates) == RUNS
    assert len({c.idempotency_key for c in creates}) == RUNS
    assert len(standins.token.calls("oauth.token")) == 1
    assert all(c.headers.get("authorization") == "Bearer wd-access-token-7Hq2" for c in creates)
    # the checks were started asynchronously and answered by callback, once each
    for operation in ("criminal.check", "employment.verify"):
        calls = standins.sterling.calls(operation)
        assert len(calls) == RUNS
        assert {c.outcome for c in calls} == {"accepted"}
        assert all(c.headers.get("x-api-key") == SECRETS["STERLING_API_KEY"] for c in calls)
    assert len(receiver.received) == 2 * RUNS
    assert {status for _, status in receiver.received} == {204}
    # IT provisioning went out in batches; 50 runs filled one before its 30 s max_wait
    provisions = standins.it.calls("accounts.provision")
    assert len(provisions) == RUNS
    assert {c.method for c in provisions} == {"ExecuteBatch"}
    assert len({c.idempotency_key for c in provisions}) == RUNS

    # every chain intact; no secret anywhere in the events or the logs
    assert set(chains.values()) == {None}
    dumped = json.dumps([[e.payload for e in h] for h in histories])
    for secret in [*SECRETS.values(), "wd-access-token-7Hq2"]:
        assert secret not in dumped
        assert secret not in caplog.text


async def test_a_duplicate_or_unexpected_callback_is_refused_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: legato.ActivityRegistry
) -> None:
    with CallbackReceiver() as receiver:
        async with running(callback_url=receiver.url, secrets=SECRETS) as standins:
            for key, value in standins.env.items():
                monkeypatch.setenv(key, value)
            async with legato.Engine.open(
                tmp_path / "legato.db",
                registry=registry,
                services=EXAMPLE / "services.yaml",
                options=legato.WorkerOptions(poll_interval=0.05),
            ) as engine:
                registry.include_builtins()
                receiver.attach(engine, asyncio.get_running_loop())
                # the seed's workflow without its final batch step (a lone run would wait out
                # the batch's 30 s max_wait; batching is covered above)
                document = json.loads((EXAMPLE / "employee_onboarding.json").read_text())
                states = document["workflow"]["states"]
                del states["setup_it_accounts"]
                del states["run_background_check"]["on_complete"]
                loaded = legato.load_text(json.dumps(document), source="onboarding-no-batch")
                definition = loaded.raise_for_errors()
                run_id = await engine.start(definition, candidate(1))
                result = await engine.wait(run_id, timeout=90)
                assert result.status == "completed"
                before = await engine.history(run_id)
                token = receiver.received[0][0]
                with pytest.raises(legato.ConflictError, match="unexpected or duplicate"):
                    await engine.callback(token, {"result": "late"})
                with pytest.raises(legato.ConflictError, match="unexpected or duplicate"):
                    await engine.callback(f"{run_id}~{'0' * 32}", {"result": "forged"})
                with pytest.raises(legato.NotFoundError):
                    await engine.callback("no-such-run~abc", {})
                after = await engine.history(run_id)
    assert len(after) == len(before)


async def test_the_payment_stand_in_is_charged_once_per_step_with_its_bearer_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: legato.ActivityRegistry
) -> None:
    with CallbackReceiver() as receiver:
        async with running(callback_url=receiver.url, secrets=SECRETS) as standins:
            for key, value in standins.env.items():
                monkeypatch.setenv(key, value)
            charge = legato.Definition.model_validate(
                {
                    "name": "charge",
                    "start_at": "charge",
                    "states": {
                        "charge": {
                            "type": "task",
                            "service": "payment-stripe",
                            "operation": "payment.charge",
                            "input": {"amount": "$.input.amount", "currency": "usd"},
                            "result_path": "$.charge",
                            "compensation": {"operation": "payment.refund"},
                        }
                    },
                }
            )
            async with legato.Engine.open(
                tmp_path / "legato.db",
                registry=registry,
                services=EXAMPLE / "services.yaml",
                options=legato.WorkerOptions(poll_interval=0.05),
            ) as engine:
                result = await engine.run(charge, {"amount": 4200}, timeout=30)
                history = await engine.history(result.run_id)
    assert result.status == "completed", result.error
    assert result.output["charge"]["status"] == "succeeded"
    [call] = standins.payment.calls("payment.charge")
    assert call.headers["authorization"] == f"Bearer {SECRETS['STRIPE_SECRET_KEY']}"
    assert call.idempotency_key == f"{result.run_id}:charge:0"  # the seed's idempotency_header
    assert call.body == {"amount": 4200, "currency": "usd"}
    assert SECRETS["STRIPE_SECRET_KEY"] not in json.dumps([e.payload for e in history])
