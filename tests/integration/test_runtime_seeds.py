"""The seeds' own example definitions, run as written through ``legato.Engine`` on a real
SQLite file: seed 001 against a real SMTP server (aiosmtpd) on loopback, seed 002 against
the billing stand-in (``examples.billing.service``) with the billing activities."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope
from examples.billing import activities as billing_activities
from examples.billing.service import BillingService

from legato import (
    ActivityRegistry,
    EmailSettings,
    Engine,
    RetryPolicy,
    WorkerOptions,
    load_file,
)
from legato.connectors.registry import load_service_capabilities

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
WAIT = 10.0


def step_statuses(result: Any) -> dict[str, str]:
    return {v["id"]: v["status"] for v in result.steps}


# ---- seed 001: user welcome, over real SMTP --------------------------------------------------


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[Message]:
        return [message_from_bytes(e.original_content or b"") for e in self.envelopes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def _email_registry(port: int) -> ActivityRegistry:
    settings = EmailSettings(host="127.0.0.1", port=port, sender="Welcome <hello@example.com>")
    return ActivityRegistry(email=settings).include_builtins()


async def test_seed_001_sends_the_welcome_email_to_the_new_user(
    db_path: str,
    fast_options: WorkerOptions,
    mailbox: tuple[Mailbox, int],
    check_history: Any,
) -> None:
    box, port = mailbox
    async with Engine.open(db_path, registry=_email_registry(port), options=fast_options) as engine:
        result = await engine.run(
            SEEDS / "001_user_welcome.json", {"email": "ann@example.com"}, timeout=WAIT
        )

        assert result.status == "completed", result.error
        assert result.workflow == "001_user_welcome"
        assert step_statuses(result) == {
            "validate_input": "completed",
            "send_welcome": "completed",
            "log_success": "completed",
            "send_error": "skipped",
        }
        [envelope] = box.envelopes
        assert envelope.rcpt_tos == ["ann@example.com"]
        [message] = box.messages()
        assert message["To"] == "ann@example.com"
        assert message["Subject"] == "Welcome!"
        assert message["X-Legato-Run-Id"] == result.run_id
        assert "Welcome to our platform!" in message.get_payload(decode=True).decode()
        sent = next(v for v in result.steps if v["id"] == "send_welcome")
        assert sent["output"]["sent"] is True
        assert sent["output"]["to"] == ["ann@example.com"]
        assert sent["input"]["to"] == "ann@example.com"  # {{variables.email}} resolved

        history = await check_history(engine, result.run_id)
        paths = [e.payload["path"] for e in history if e.type == "StepCompleted"]
        assert paths == ["send_welcome", "log_success"]
        assert await engine.verify() == {result.run_id: None}


async def test_seed_001_routes_an_invalid_email_to_the_error_log(
    db_path: str,
    fast_options: WorkerOptions,
    mailbox: tuple[Mailbox, int],
    caplog: pytest.LogCaptureFixture,
    check_history: Any,
) -> None:
    box, port = mailbox
    caplog.set_level(logging.INFO, logger="legato.actions.log")
    async with Engine.open(db_path, registry=_email_registry(port), options=fast_options) as engine:
        result = await engine.run(
            SEEDS / "001_user_welcome.json", {"email": "not-an-email"}, timeout=WAIT
        )

        assert result.status == "completed", result.error
        assert step_statuses(result) == {
            "validate_input": "completed",
            "send_error": "completed",
            "send_welcome": "skipped",
            "log_success": "skipped",
        }
        assert box.envelopes == []
        logged = next(v for v in result.steps if v["id"] == "send_error")["output"]
        assert logged == {"logged": True, "message": "Invalid email provided: not-an-email"}
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.getMessage() for r in errors] == ["Invalid email provided: not-an-email"]
        assert errors[0].run_id == result.run_id  # type: ignore[attr-defined]
        await check_history(engine, result.run_id)


# ---- seed 002: customer onboarding, against the billing stand-in -------------------------------


@pytest.fixture
def billing(monkeypatch: pytest.MonkeyPatch) -> Iterator[BillingService]:
    with BillingService() as service:
        monkeypatch.setenv("BILLING_URL", service.url)
        yield service


def _once_per_key(billing: BillingService) -> list[dict[str, Any]]:
    calls = billing.calls()
    keys = Counter(c["idempotency_key"] for c in calls)
    assert all(n == 1 for n in keys.values()), f"a key reached the service twice: {keys}"
    assert all(c["attempt"] == 1 for c in calls)
    return calls


async def test_seed_002_onboards_the_customer_through_the_billing_service(
    db_path: str, fast_options: WorkerOptions, billing: BillingService, check_history: Any
) -> None:
    async with Engine.open(
        db_path, activities=[billing_activities], options=fast_options
    ) as engine:
        result = await engine.run(
            SEEDS / "002_customer_onboarding.json", {"customer_id": "cust_1"}, timeout=WAIT
        )

        assert result.status == "completed", result.error
        assert result.workflow == "Customer Onboarding - Standard"
        assert step_statuses(result) == {"step_1": "completed", "step_2": "completed"}

        calls = _once_per_key(billing)
        assert [(c["method"], c["path"], c["status"]) for c in calls] == [
            ("POST", "/subscriptions", 201),
            ("POST", "/wallets", 201),
        ]
        assert [c["idempotency_key"] for c in calls] == [
            f"{result.run_id}:step_1:0",
            f"{result.run_id}:step_2:0",
        ]
        subscription, wallet = calls[0]["body"], calls[1]["body"]
        assert subscription == {
            "customer_id": "cust_1",
            "plan_id": "plan_starter",
            "currency": "USD",
        }
        assert wallet["customer_id"] == "cust_1"
        assert wallet["initial_credits"] == 100
        [sub] = billing.state.subscriptions.values()
        [wal] = billing.state.wallets.values()
        assert (sub["customer_id"], sub["status"]) == ("cust_1", "active")
        assert (wal["customer_id"], wal["balance"], wal["status"]) == ("cust_1", 100, "active")
        outputs = {v["id"]: v["output"] for v in result.steps}
        assert outputs["step_1"]["subscription_id"] == sub["subscription_id"]
        assert outputs["step_2"]["wallet_id"] == wal["wallet_id"]

        history = await check_history(engine, result.run_id)
        assert [e.type for e in history] == [
            "RunStarted",
            "StepScheduled",
            "StepCompleted",
            "StepScheduled",
            "StepCompleted",
            "RunFinished",
        ]


async def test_seed_002_api_definition_assigns_the_plan(
    db_path: str, fast_options: WorkerOptions, billing: BillingService, check_history: Any
) -> None:
    async with Engine.open(
        db_path, activities=[billing_activities], options=fast_options
    ) as engine:
        result = await engine.run(
            SEEDS / "002_customer_onboarding_api.json", {"customer_id": "cust_2"}, timeout=WAIT
        )

        assert result.status == "completed", result.error
        assert step_statuses(result) == {"step_1": "completed"}
        [call] = _once_per_key(billing)
        assert (call["method"], call["path"], call["status"]) == ("POST", "/subscriptions", 201)
        assert call["idempotency_key"] == f"{result.run_id}:step_1:0"
        assert call["body"]["customer_id"] == "cust_2"
        await check_history(engine, result.run_id)
        assert await engine.verify() == {result.run_id: None}


async def test_seed_002_retries_faults_of_the_billing_service_with_one_effect(
    db_path: str, fast_options: WorkerOptions, billing: BillingService, check_history: Any
) -> None:
    # Seed 002 as written, with a faster default retry policy than the 1 s it gets.
    definition = load_file(SEEDS / "002_customer_onboarding.json").raise_for_errors()
    definition = definition.model_copy(
        update={"retry": RetryPolicy(max_attempts=3, initial_interval=0.05)}
    )
    billing.fail_next("POST", "/subscriptions", 429, retry_after=0.2)
    billing.fail_next("POST", "/wallets", 503)
    async with Engine.open(
        db_path, activities=[billing_activities], options=fast_options
    ) as engine:
        result = await engine.run(definition, {"customer_id": "cust_3"}, timeout=WAIT)

        assert result.status == "completed", result.error
        calls = billing.calls()
        assert [(c["path"], c["status"], c["attempt"]) for c in calls] == [
            ("/subscriptions", 429, 1),
            ("/subscriptions", 201, 2),
            ("/wallets", 503, 1),
            ("/wallets", 201, 2),
        ]
        # each retry carried its step's key: one subscription and one wallet exist
        assert calls[0]["idempotency_key"] == calls[1]["idempotency_key"]
        assert calls[2]["idempotency_key"] == calls[3]["idempotency_key"]
        assert len(billing.state.subscriptions) == 1
        assert len(billing.state.wallets) == 1

        history = await check_history(engine, result.run_id)
        failed = {e.payload["path"]: e for e in history if e.type == "StepFailed"}
        assert failed["step_1"].payload["error"]["error_class"] == "RATE_LIMITED"
        assert failed["step_2"].payload["error"]["error_class"] == "RETRYABLE"
        [retry] = [
            e for e in history if e.type == "StepCompleted" and e.payload["path"] == "step_1"
        ]
        started = datetime.fromisoformat(retry.payload["started_at"])
        assert started - failed["step_1"].at >= timedelta(seconds=0.2) - timedelta(milliseconds=1)


async def test_seed_002_without_a_customer_fails_validation_before_calling_billing(
    db_path: str, fast_options: WorkerOptions, billing: BillingService
) -> None:
    async with Engine.open(
        db_path, activities=[billing_activities], options=fast_options
    ) as engine:
        result = await engine.run(SEEDS / "002_customer_onboarding.json", {}, timeout=WAIT)

        assert result.status == "failed"
        assert result.error is not None
        assert result.error["error_class"] == "VALIDATION"
        assert "customer_id" in result.error["message"]
        assert step_statuses(result) == {"step_1": "failed", "step_2": "skipped"}
        assert billing.calls() == []


# ---- seed 000: employee onboarding (connectors) -----------------------------------------------


def test_seed_000_loads_and_validates() -> None:
    loaded = load_file(SEEDS / "000_employee_onboarding.json")

    definition = loaded.raise_for_errors()
    assert loaded.ok
    assert definition.name == "employee_onboarding"
    assert definition.source_format == "states"
    assert list(definition.states) == [
        "create_hr_record",
        "run_background_check",
        "setup_it_accounts",
    ]
    # its on_failure names a state it never defines: a warning, not an error
    assert [f.code for f in loaded.warnings] == ["L102"]


def test_seed_000_checked_against_the_seed_services_yaml_names_what_it_lacks() -> None:
    # The seed's example and its services.yaml disagree: the compensation's operation is
    # not among hr-workday's capabilities, and it-provisioning is not a service there.
    services = load_service_capabilities(SEEDS / "000_services.yaml")
    loaded = load_file(SEEDS / "000_employee_onboarding.json", services=services)

    assert sorted((f.code, f.pointer) for f in loaded.errors) == [
        ("L108", "/workflow/states/setup_it_accounts/service"),
        ("L109", "/workflow/states/create_hr_record/compensation/operation"),
    ]


async def test_seed_000_deploys(engine: Engine) -> None:
    name, version = await engine.deploy(SEEDS / "000_employee_onboarding.json")
    assert (name, version) == ("employee_onboarding", "1.0.0")
    # deploying the same document again is the same version, not a new one
    assert await engine.deploy(SEEDS / "000_employee_onboarding.json") == (name, version)
