"""Secrets from the environment never leave the hub: not in logs, errors or results.

The in-test adapter is as careless as an adapter can be: it logs its configuration and
credentials, raises errors that quote them, and echoes them in its output.  The hub, the
errors it raises and the log filter must keep every secret out all the same.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from legato.connectors.base import AuthProvider, Result, Task
from legato.connectors.config import ServiceConfig
from legato.connectors.hub import Connectors
from legato.connectors.secrets import MASK
from legato.errors import ErrorClass, StepError
from legato.net import NetworkPolicy

log = logging.getLogger("legato.connectors.tests.careless")

ENV = {
    "CRM_TOKEN": "crm-bearer-token-0f9e8d",
    "CRM_TENANT_KEY": "tenant-key-77aa66",
    "QUEUE_PASSWORD": "queue-password-5c4b3a",
    "DB_HOST": "db.internal.example",  # not a secret: may appear
}
SECRETS = [v for k, v in ENV.items() if k != "DB_HOST"]

SERVICES = """
services:
  - name: crm
    type: rest
    endpoint: https://${DB_HOST}/crm
    auth: {type: bearer, token: "${CRM_TOKEN}"}
    headers: {X-Tenant-Key: "${CRM_TENANT_KEY}"}
    capabilities: [contact.create, contact.fail, contact.crash, contact.echo]
  - name: queue
    type: amqp
    endpoint: amqp://legato:${QUEUE_PASSWORD}@mq.internal:5672/
"""


class CarelessAdapter:
    def __init__(self, config: ServiceConfig, *, auth: AuthProvider, network: NetworkPolicy):
        self.name = config.name
        self.config = config
        self.auth = auth
        # logs its whole configuration, raw values included
        log.info("built adapter for %s: %r %s", config.name, config, config.model_dump())
        log.info("endpoint %s headers %s", config.endpoint, config.headers)

    async def execute(self, task: Task) -> Result:
        headers = await self.auth.headers()
        log.info("calling %s with headers %s", task.operation, headers, extra={"h": headers})
        secret = headers.get("Authorization", self.config.endpoint)
        if task.operation == "contact.fail":
            raise StepError(
                f"service refused {secret}",
                error_class=ErrorClass.AUTH_FAILED,
                details={"sent": headers, "tenant": self.config.headers},
            )
        if task.operation == "contact.crash":
            try:
                raise ValueError(f"cannot parse answer to {secret}")
            except ValueError:
                log.exception("the call blew up")
                raise
        return Result(
            output={"echo": secret, "tenant": self.config.headers},
            metadata={"sent": json.dumps(headers)},
            side_effects=({"created": secret},),
        )

    async def execute_batch(self, tasks: list[Task]) -> list[Result | Exception]:
        out: list[Result | Exception] = []
        for task in tasks:
            try:
                out.append(await self.execute(task))
            except Exception as exc:
                out.append(exc)
        return out

    async def start_async(self, task: Task, callback_token: str) -> Result:
        return Result(operation_id=self.config.endpoint)

    async def check_status(self, task: Task, operation_id: str) -> Result | None:
        return None

    async def health_check(self) -> None:
        raise StepError(f"unhealthy at {self.config.endpoint}", error_class=ErrorClass.RETRYABLE)

    def capabilities(self) -> set[str]:
        return set(self.config.capabilities)

    async def aclose(self) -> None:
        log.info("closing %s", self.config.endpoint)


def task(service: str, operation: str) -> Task:
    return Task(
        task_id="step",
        run_id="run-1",
        workflow="wf",
        service=service,
        operation=operation,
        input={},
        idempotency_key="run-1/step/0",
    )


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked"


async def test_secrets_appear_nowhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(SERVICES, encoding="utf-8")
    hub = Connectors.from_file(
        path, environ=ENV, adapters={"rest": CarelessAdapter, "amqp": CarelessAdapter}
    )
    caplog.handler.addFilter(hub.log_filter())
    seen: list[str] = []
    async with hub:
        with caplog.at_level(logging.DEBUG):
            ok = await hub.execute(task("crm", "contact.echo"))
            seen.append(repr(ok))
            assert ok.output["echo"] == f"Bearer {MASK}"
            assert ok.output["tenant"] == {"X-Tenant-Key": MASK}

            for operation, error_class in (
                ("contact.fail", ErrorClass.AUTH_FAILED),
                ("contact.crash", ErrorClass.RETRYABLE),
            ):
                with pytest.raises(StepError) as caught:
                    await hub.execute(task("crm", operation))
                error = caught.value
                assert error.error_class is error_class
                assert MASK in error.message
                seen += [json.dumps(error.to_dict()), str(error), repr(error)]

            batch = await hub.execute_batch(
                [task("crm", "contact.echo"), task("crm", "contact.fail")]
            )
            seen += [repr(item) for item in batch]
            assert isinstance(batch[1], StepError)
            seen.append(json.dumps(batch[1].to_dict()))

            started = await hub.start_async(task("queue", "publish"), "cb")
            seen.append(repr(started))
            assert started.operation_id == f"amqp://legato:{MASK}@mq.internal:5672/"
            with pytest.raises(StepError) as caught:
                await hub.health_check("queue")
            seen.append(json.dumps(caught.value.to_dict()))

            seen.append(json.dumps(hub.stats()))
            described = hub.describe()  # what an API may show
            seen.append(json.dumps(described))
            assert described["services"][0]["auth"]["token"] == "**********"
            assert described["services"][0]["headers"] == {"X-Tenant-Key": MASK}
            assert described["services"][0]["endpoint"] == "https://db.internal.example/crm"

    assert caplog.records, "the adapter logged"
    assert "built adapter for crm" in caplog.text
    assert "db.internal.example" in caplog.text  # not a secret: left alone
    assert "Traceback" in caplog.text
    assert_clean(caplog.text)
    for record in caplog.records:
        assert_clean(record.getMessage())
        assert_clean(repr(record.__dict__))
    for text in seen:
        assert_clean(text)


async def test_missing_secret_variables_are_named(tmp_path: Path) -> None:
    from legato.errors import InputError

    path = tmp_path / "services.yaml"
    path.write_text(SERVICES, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        Connectors.from_file(path, environ={"DB_HOST": "x"})
    message = caught.value.message
    for name in ("CRM_TOKEN", "CRM_TENANT_KEY", "QUEUE_PASSWORD"):
        assert f"${{{name}}}" in message
    assert_clean(message)
