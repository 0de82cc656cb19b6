"""Local stand-ins for the services of seed 000's employee onboarding.

* an OAuth2 token endpoint for Workday (HTTP),
* HR (Workday) over gRPC: ``employee.create`` and its compensation ``employee.delete``,
* the Sterling background checks over REST, answering *asynchronously*: each check is
  accepted at once and its result is POSTed to a callback URL a little later,
* IT provisioning over gRPC, which the workflow calls in batches,
* payments (Stripe) over REST, with a bearer token and an Idempotency-Key header.

They are built with :mod:`legato.mock` and record every call they receive.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from legato.mock import MockRequest, MockService


@dataclass
class Standins:
    token: MockService
    hr: MockService
    sterling: MockService
    it: MockService
    payment: MockService
    env: dict[str, str]


def _employee(counter: itertools.count[int]) -> Any:
    def respond(request: MockRequest) -> dict[str, Any]:
        n = next(counter)
        return {"employeeId": f"E-{n:04d}", "workdayId": f"WD-{n:04d}", "email": request.body.get("email")}

    return respond


@contextlib.asynccontextmanager
async def running(
    *, callback_url: str, check_delay: float = 0.2, secrets: dict[str, str] | None = None
) -> AsyncIterator[Standins]:
    """Start every stand-in; yield them with the environment services.yaml expects."""
    token = MockService("workday-auth")
    token.operation("oauth.token", path="/oauth/token").respond(
        {"access_token": "wd-access-token-7Hq2", "token_type": "Bearer", "expires_in": 3600}
    )
    hr = MockService("hr-workday")
    hr.operation("employee.create").respond(_employee(itertools.count(1))).side_effects(
        [
            {
                "effect_id": "hr-record",
                "effect_type": "record.created",
                "description": "an employee record in Workday",
                "reversible": True,
                "compensation_method": "employee.delete",
            }
        ]
    ).cost({"currency": "USD", "amount": 0.02, "units": 1, "unit": "call"})
    hr.operation("employee.delete").respond({"deleted": True})
    sterling = MockService("background-check-sterling")
    for operation in ("criminal.check", "employment.verify"):
        sterling.operation(operation).respond({"check": operation, "result": "clear"}).async_(
            check_delay, callback_url=callback_url
        )
    it = MockService("it-provisioning")
    it.operation("accounts.provision").respond(
        lambda request: {"account": f"acct-{request.idempotency_key[-12:]}", "provisioned": True}
    )
    payment = MockService("payment-stripe")
    payment.operation("payment.charge").respond(
        lambda request: {"charge_id": f"ch_{request.idempotency_key[-10:]}", "status": "succeeded"}
    )
    payment.operation("payment.refund").respond({"status": "refunded"})
    with token.http() as token_url, sterling.http() as sterling_url, payment.http() as pay_url:
        async with hr.grpc() as hr_address, it.grpc() as it_address:
            env = {
                "HR_ENDPOINT": hr_address,
                "IT_ENDPOINT": it_address,
                "STERLING_URL": sterling_url,
                "WORKDAY_TOKEN_URL": f"{token_url}/oauth/token",
                "CALLBACK_URL": callback_url,
                "STRIPE_URL": pay_url,
                **(secrets or {}),
            }
            yield Standins(
                token=token, hr=hr, sterling=sterling, it=it, payment=payment, env=env
            )
