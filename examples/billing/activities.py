"""The five step types of seed 002 as Legato activities, calling the billing service.

Each step's ``config`` arrives as keyword arguments, with the step context as ``ctx``::

    assign_plan(plan_id, currency="USD", customer_id=None)
        -> {subscription_id, customer_id, plan_id, currency, status}
    create_wallet(currency="USD", conversion_rate=1.0, initial_credits=0, customer_id=None)
        -> {wallet_id, customer_id, currency, conversion_rate, balance, status}
    grant_credits(wallet_id, amount, reason=None)
        -> {wallet_id, granted, balance, reason}
    send_email(to, subject=None, body=None, template=None, customer_id=None)
        -> {message_id, status}
    create_entitlement(feature_id, usage_limit=None, customer_id=None)
        -> {entitlement_id, customer_id, feature_id, usage_limit, status}

and two compensations, to undo a step when a later one fails::

    cancel_subscription(subscription_id)  -> {subscription_id, status: "cancelled"}
    close_wallet(wallet_id)               -> {wallet_id, status: "closed"}

Values produced by an earlier step are plain arguments: ``grant_credits`` takes the
``wallet_id`` that ``create_wallet`` returned, and the compensations take the id they
undo; the step's input mapping puts them there from the earlier step's result.

``customer_id`` may be in the step's config; if not, it is taken from the run's input
(the trigger's ``customer.created`` event), as seed 002's own example expects.

The service's address is ``BILLING_URL`` (default ``http://127.0.0.1:8765``; see
``examples/billing/service.py``).  Every call sends the step's idempotency key, so a
retried step creates one subscription, one wallet and one grant.  These activities are
the host application's own code, so they use their own HTTP client rather than the
registry's SSRF-guarded one (the stand-in lives on loopback).  Failures are classified
by status: 422 -> VALIDATION, 404 -> PERMANENT, 429 -> RATE_LIMITED, 5xx -> RETRYABLE.

Register them (this ``send_email`` takes precedence over the built-in one)::

    registry = ActivityRegistry.from_import_paths(["examples.billing.activities"])
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx

from legato.activity import ActivityContext, activity
from legato.errors import ErrorClass, StepError
from legato.net import raise_for_status, step_error_from_httpx

DEFAULT_URL = "http://127.0.0.1:8765"


def billing_url() -> str:
    return os.environ.get("BILLING_URL", DEFAULT_URL).rstrip("/")


async def _call(
    ctx: ActivityContext, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    headers = {
        "Idempotency-Key": ctx.idempotency_key,
        "X-Legato-Run-Id": ctx.run_id,
        "X-Legato-Step": ctx.step,
    }
    async with httpx.AsyncClient(base_url=billing_url(), timeout=10.0, trust_env=False) as client:
        try:
            response = await client.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise step_error_from_httpx(exc) from exc
    raise_for_status(response)
    result: dict[str, Any] = response.json()
    return result


def _customer(customer_id: str | None, ctx: ActivityContext) -> str:
    """The step's ``customer_id``, else the trigger event's (seed 002's config omits it)."""
    if customer_id:
        return customer_id
    data = ctx.run_input if isinstance(ctx.run_input, dict) else {}
    found = data.get("customer_id")
    if not found:
        raise StepError(
            f"step {ctx.step!r} needs a customer_id: put it in the step's config or in the "
            "run's input (the customer.created event)",
            error_class=ErrorClass.VALIDATION,
        )
    return str(found)


@activity("assign_plan", timeout="30s")
async def assign_plan(
    plan_id: str, currency: str = "USD", customer_id: str | None = None, *, ctx: ActivityContext
) -> dict[str, Any]:
    body = {"customer_id": _customer(customer_id, ctx), "plan_id": plan_id, "currency": currency}
    return await _call(ctx, "POST", "/subscriptions", body)


@activity("create_wallet", timeout="30s")
async def create_wallet(
    currency: str = "USD",
    conversion_rate: float = 1.0,
    initial_credits: float = 0,
    customer_id: str | None = None,
    *,
    ctx: ActivityContext,
) -> dict[str, Any]:
    body = {
        "customer_id": _customer(customer_id, ctx),
        "currency": currency,
        "conversion_rate": conversion_rate,
        "initial_credits": initial_credits,
    }
    return await _call(ctx, "POST", "/wallets", body)


@activity("grant_credits", timeout="30s")
async def grant_credits(
    wallet_id: str, amount: float, reason: str | None = None, *, ctx: ActivityContext
) -> dict[str, Any]:
    body = {"amount": amount, "reason": reason}
    return await _call(ctx, "POST", f"/wallets/{quote(wallet_id, safe='')}/credits", body)


@activity("send_email", timeout="30s")
async def send_email(
    to: str,
    subject: str | None = None,
    body: str | None = None,
    template: str | None = None,
    customer_id: str | None = None,
    *,
    ctx: ActivityContext,
) -> dict[str, Any]:
    payload = {
        "to": to,
        "subject": subject,
        "body": body,
        "template": template,
        "customer_id": customer_id,
    }
    return await _call(ctx, "POST", "/emails", payload)


@activity("create_entitlement", timeout="30s")
async def create_entitlement(
    feature_id: str,
    usage_limit: int | None = None,
    customer_id: str | None = None,
    *,
    ctx: ActivityContext,
) -> dict[str, Any]:
    body = {"customer_id": _customer(customer_id, ctx), "feature_id": feature_id, "usage_limit": usage_limit}
    return await _call(ctx, "POST", "/entitlements", body)


@activity("cancel_subscription", timeout="30s")
async def cancel_subscription(subscription_id: str, *, ctx: ActivityContext) -> dict[str, Any]:
    return await _call(ctx, "DELETE", f"/subscriptions/{quote(subscription_id, safe='')}")


@activity("close_wallet", timeout="30s")
async def close_wallet(wallet_id: str, *, ctx: ActivityContext) -> dict[str, Any]:
    return await _call(ctx, "DELETE", f"/wallets/{quote(wallet_id, safe='')}")
