"""Webhook triggers: HMAC-SHA256 signatures over "<timestamp>.<body>", a replay window,
and replays refused by the run id (durable, shared by every process)."""

from __future__ import annotations

import hashlib
import hmac
import json
from types import SimpleNamespace
from typing import Any

import pytest
from tests.triggers.conftest import ACME_PROD, GLOBEX_PROD, T0, MakeWorkflow, run_ids

from legato import Engine
from legato.errors import ConfigurationError, InputError, NotFoundError
from legato.testing import FakeClock
from legato.triggers import TRIGGER_KEY, WebhookSignatureError, accept_webhook, sign
from legato.triggers.catalog import Candidate
from legato.triggers.webhooks import (
    SecretResolver,
    env_secret_resolver,
    verify_signature,
)

SECRET = "whsec_4f9a0c1e7b"
NOW = int(T0.timestamp())
BODY = json.dumps({"order_id": "o_1", "amount": 42}).encode()
HOOK = {"type": "webhook"}


def secrets_of(table: dict[str, str]) -> SecretResolver:
    """A resolver over a dict of workflow id -> secret (the default reads the variable
    named by `trigger.secret_env`)."""
    return lambda scope, candidate: table.get(candidate.workflow_id)


RESOLVER = secrets_of({"wf_orders": SECRET})


# ---- verify_signature -------------------------------------------------------------------------


def test_a_good_signature_in_both_header_forms() -> None:
    headers = sign(SECRET, BODY, timestamp=NOW)
    assert headers["X-Legato-Signature"].startswith("sha256=")
    plain = verify_signature(SECRET, BODY, headers, now=NOW + 10)
    assert plain.timestamp == NOW
    assert plain.delivery_id is None
    assert plain.dedup_key == f"sig:{plain.signature}"
    # the combined `t=...,v1=...` header, with lower-case names as proxies send them
    digest = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    combined = {"x-legato-signature": f"t={NOW},v1={'0' * 64},v1={digest}"}
    assert verify_signature(SECRET, BODY, combined, now=NOW).signature == digest


@pytest.mark.parametrize(
    ("secret", "body"),
    [("wrong-secret", BODY), (SECRET, BODY.replace(b"42", b"4200"))],
    ids=["wrong secret", "tampered body"],
)
def test_a_bad_signature_is_refused(secret: str, body: bytes) -> None:
    headers = sign(secret, BODY, timestamp=NOW)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(SECRET, body, headers, now=NOW)


@pytest.mark.parametrize("offset", [301, -301, 86_400])
def test_a_timestamp_outside_the_window_is_refused(offset: int) -> None:
    headers = sign(SECRET, BODY, timestamp=NOW)
    with pytest.raises(WebhookSignatureError, match="outside the 300 s window"):
        verify_signature(SECRET, BODY, headers, now=NOW + offset)
    assert verify_signature(SECRET, BODY, headers, now=NOW + 299).timestamp == NOW


def test_a_re_signed_timestamp_does_not_verify() -> None:
    headers = sign(SECRET, BODY, timestamp=NOW)
    headers["X-Legato-Timestamp"] = str(NOW + 1000)  # refresh a stale capture
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(SECRET, BODY, headers, now=NOW + 1000)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "no X-Legato-Signature"),
        ({"X-Legato-Signature": "md5=abc", "X-Legato-Timestamp": "1"}, "holds no signature"),
        ({"X-Legato-Signature": "sha256=" + "a" * 64}, "no valid X-Legato-Timestamp"),
        (
            {"X-Legato-Signature": "sha256=" + "a" * 64, "X-Legato-Timestamp": "soon"},
            "no valid X-Legato-Timestamp",
        ),
    ],
)
def test_malformed_headers_say_how_to_sign(headers: dict[str, str], message: str) -> None:
    with pytest.raises(WebhookSignatureError, match=message):
        verify_signature(SECRET, BODY, headers, now=NOW)


def test_a_delivery_id_counts_only_when_signed() -> None:
    signed = sign(SECRET, BODY, timestamp=NOW, delivery_id="d-1")
    verified = verify_signature(SECRET, BODY, signed, now=NOW)
    assert (verified.delivery_id, verified.dedup_key) == ("d-1", "delivery:d-1")
    # an unsigned delivery id is ignored: dedup falls back to the signature
    unsigned = {**sign(SECRET, BODY, timestamp=NOW), "X-Legato-Delivery": "d-2"}
    verified = verify_signature(SECRET, BODY, unsigned, now=NOW)
    assert verified.delivery_id is None
    assert verified.dedup_key.startswith("sig:")


def test_several_secrets_for_rotation() -> None:
    headers = sign("old-secret", BODY, timestamp=NOW)
    assert verify_signature(["new-secret", "old-secret"], BODY, headers, now=NOW)
    with pytest.raises(WebhookSignatureError):
        verify_signature(["new-secret"], BODY, headers, now=NOW)


def test_the_default_resolver_reads_the_named_environment_variable() -> None:
    resolve = env_secret_resolver({"WEBHOOK_SECRET_ORDERS": SECRET})

    def candidate(secret_env: Any) -> Candidate:
        trigger: Any = SimpleNamespace(type="webhook", secret_env=secret_env)
        return Candidate(ACME_PROD, "wf_orders", "wf_orders", "1", True, trigger)

    assert resolve(ACME_PROD, candidate("WEBHOOK_SECRET_ORDERS")) == SECRET
    assert resolve(ACME_PROD, candidate("WEBHOOK_SECRET_UNSET")) is None
    assert resolve(ACME_PROD, candidate(None)) is None
    with pytest.raises(ConfigurationError, match="environment variable"):
        resolve(ACME_PROD, candidate("not a name"))


# ---- accept_webhook ---------------------------------------------------------------------------


@pytest.fixture
async def orders(make_workflow: MakeWorkflow) -> None:
    await make_workflow(ACME_PROD, "wf_orders", HOOK)


@pytest.mark.usefixtures("orders")
async def test_good_bad_stale_and_replayed_deliveries(engine: Engine, clock: FakeClock) -> None:
    async def deliver(body: bytes, headers: dict[str, str]) -> Any:
        return await accept_webhook(engine, ACME_PROD, "wf_orders", body, headers, secrets=RESOLVER)

    good = sign(SECRET, BODY, timestamp=NOW)
    first = await deliver(BODY, good)
    assert first.status == "started"
    assert first.run_id
    [started, *_] = await engine.for_scope(ACME_PROD).history(first.run_id)
    assert started.payload["input"]["order_id"] == "o_1"
    assert started.payload["input"][TRIGGER_KEY]["type"] == "webhook"

    # wrong secret and tampered body: refused, nothing started
    with pytest.raises(WebhookSignatureError):
        await deliver(BODY, sign("wrong-secret", BODY, timestamp=NOW))
    with pytest.raises(WebhookSignatureError):
        await deliver(BODY.replace(b"42", b"4200"), good)

    # the same delivery again, within the window: a replay, nothing started
    replay = await deliver(BODY, good)
    assert (replay.status, replay.run_id) == ("duplicate", first.run_id)
    # ... even with a made-up delivery id (it is not signed, so it does not count)
    replay = await deliver(BODY, {**good, "X-Legato-Delivery": "fresh"})
    assert (replay.status, replay.run_id) == ("duplicate", first.run_id)

    # after the window, the captured request is stale
    clock.advance(301)
    with pytest.raises(WebhookSignatureError, match="outside the 300 s window"):
        await deliver(BODY, good)

    assert await run_ids(engine.store, ACME_PROD) == {first.run_id}


@pytest.mark.usefixtures("orders")
async def test_a_signed_delivery_id_dedups_the_senders_retries(
    engine: Engine, clock: FakeClock, db_path: str
) -> None:
    first = await accept_webhook(
        engine,
        ACME_PROD,
        "wf_orders",
        BODY,
        sign(SECRET, BODY, timestamp=NOW, delivery_id="d-1"),
        secrets=RESOLVER,
    )
    assert first.status == "started"
    # the sender retries a minute later: new timestamp, new signature, same delivery;
    # another process on the same database receives it
    clock.advance(60)
    retry = sign(SECRET, BODY, timestamp=NOW + 60, delivery_id="d-1")
    async with Engine.open(db_path, clock=clock, worker=False) as other:
        again = await accept_webhook(other, ACME_PROD, "wf_orders", BODY, retry, secrets=RESOLVER)
    assert (again.status, again.run_id) == ("duplicate", first.run_id)
    new = await accept_webhook(
        engine,
        ACME_PROD,
        "wf_orders",
        BODY,
        sign(SECRET, BODY, timestamp=NOW + 60, delivery_id="d-2"),
        secrets=RESOLVER,
    )
    assert new.status == "started"
    assert len(await run_ids(engine.store, ACME_PROD)) == 2


async def test_only_webhook_workflows_of_the_scope_are_reachable(
    engine: Engine, make_workflow: MakeWorkflow
) -> None:
    await make_workflow(ACME_PROD, "wf_orders", HOOK)
    await make_workflow(ACME_PROD, "wf_events", {"type": "event", "event_name": "x"})
    headers = sign(SECRET, BODY, timestamp=NOW)
    resolver = secrets_of({"wf_orders": SECRET, "wf_events": SECRET})
    with pytest.raises(NotFoundError, match="no webhook trigger"):
        await accept_webhook(engine, ACME_PROD, "wf_events", BODY, headers, secrets=resolver)
    with pytest.raises(NotFoundError):
        await accept_webhook(engine, ACME_PROD, "wf_nope", BODY, headers, secrets=resolver)
    with pytest.raises(NotFoundError):  # another tenant's workflow of the same id
        await accept_webhook(engine, GLOBEX_PROD, "wf_orders", BODY, headers, secrets=resolver)


@pytest.mark.usefixtures("orders")
async def test_a_missing_secret_is_the_operators_problem(engine: Engine) -> None:
    headers = sign(SECRET, BODY, timestamp=NOW)
    with pytest.raises(ConfigurationError, match="not configured"):
        await accept_webhook(engine, ACME_PROD, "wf_orders", BODY, headers, secrets=secrets_of({}))
    # the default resolver: this trigger names no variable
    with pytest.raises(ConfigurationError, match="not configured"):
        await accept_webhook(engine, ACME_PROD, "wf_orders", BODY, headers)


async def test_disabled_conditions_and_a_body_that_is_not_json(
    engine: Engine, make_workflow: MakeWorkflow
) -> None:
    await make_workflow(ACME_PROD, "wf_off", HOOK, enabled=False)
    await make_workflow(ACME_PROD, "wf_big", {**HOOK, "conditions": ["data.amount > 100"]})
    resolver = secrets_of({"wf_off": SECRET, "wf_big": SECRET})

    off = await accept_webhook(
        engine, ACME_PROD, "wf_off", BODY, sign(SECRET, BODY, timestamp=NOW), secrets=resolver
    )
    assert (off.status, off.reason) == ("skipped", "disabled")
    small = await accept_webhook(
        engine, ACME_PROD, "wf_big", BODY, sign(SECRET, BODY, timestamp=NOW), secrets=resolver
    )
    assert (small.status, small.reason) == ("skipped", "condition_false")
    with pytest.raises(InputError, match="must be JSON"):
        await accept_webhook(
            engine,
            ACME_PROD,
            "wf_big",
            b"amount=500",
            sign(SECRET, b"amount=500", timestamp=NOW),
            secrets=resolver,
        )
    assert await run_ids(engine.store, ACME_PROD) == set()
