"""RestConnector against the mock service framework's HTTP server on loopback: routes,
placeholders and query parameters, headers, every status -> ErrorClass mapping, timeouts,
refresh on 401, batches (both modes), async start + status polling, health, and the
whole path through the connector hub with the real registry loader."""

from __future__ import annotations

import asyncio
import email.utils
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from legato import ErrorClass, StepError
from legato.connectors.auth import build_auth
from legato.connectors.base import Connector, Result, Task
from legato.connectors.config import (
    ApiKeyAuth,
    BearerAuth,
    MtlsAuth,
    OAuth2Auth,
    ServiceConfig,
)
from legato.connectors.rest import RestConnector
from legato.errors import ConfigurationError, UsageError
from legato.mock import MockRequest, MockService
from legato.net import NetworkPolicy


def make_task(operation: str, input: Any = None, **fields: Any) -> Task:
    defaults: dict[str, Any] = {
        "task_id": f"step-{operation}",
        "run_id": "run-1",
        "workflow": "onboarding",
        "service": "pay",
        "idempotency_key": f"run-1/{operation}",
        "correlation_id": "run-1:step",
        "traceparent": "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
    }
    return Task(operation=operation, input=input, **{**defaults, **fields})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def svc() -> MockService:
    return MockService("pay", idempotency_header="Idempotency-Key")


@pytest.fixture
def url(svc: MockService) -> Iterator[str]:
    with svc.http() as base:
        yield base


@pytest.fixture
def idp() -> Iterator[tuple[MockService, str]]:
    """An OAuth2 token endpoint handing out tok-1, tok-2, ..."""
    service = MockService("idp")
    issued: list[int] = []

    def token(_request: MockRequest) -> dict[str, Any]:
        issued.append(1)
        return {"access_token": f"tok-{len(issued)}", "expires_in": 3600}

    service.operation("token", path="/token").respond(token)
    with service.http() as base:
        yield service, base


@pytest.fixture
async def connect(url: str) -> AsyncIterator[Callable[..., RestConnector]]:
    made: list[RestConnector] = []
    providers: list[Any] = []

    def build(
        *, auth: Any = None, callback_url: str | None = None, **overrides: Any
    ) -> RestConnector:
        data: dict[str, Any] = {
            "name": "pay",
            "type": "rest",
            "endpoint": url,
            "timeout": {"connect": 2, "request": 5},
            "operations": {
                "payment.charge": {"method": "POST", "path": "/charges"},
                "employee.get": {"method": "GET", "path": "/employees/{id}", "query": {"v": 2}},
                "employee.update": "PUT /employees/{id}",
                "employee.delete": {"method": "DELETE", "path": "/employees/{id}"},
            },
        }
        data.update(overrides)
        if auth is not None:
            data["auth"] = auth
        config = ServiceConfig.model_validate(data)
        provider = build_auth(config.auth, NetworkPolicy(allow_private=True))
        providers.append(provider)
        connector = RestConnector(
            config,
            auth=provider,
            network=NetworkPolicy(),
            callback_url=callback_url,
        )
        made.append(connector)
        return connector

    yield build
    for connector in made:
        await connector.aclose()
    for provider in providers:
        await provider.aclose()


# ---- success -----------------------------------------------------------------------------------


async def test_satisfies_the_connector_protocol(connect: Callable[..., RestConnector]) -> None:
    assert isinstance(connect(), Connector)


async def test_post_sends_json_and_returns_json(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    svc.operation("payment.charge", path="/charges").respond(
        lambda r: {
            "id": "ch_1",
            "amount": r.body["amount"],
            "_legato": {
                "side_effects": [{"effect_id": "ch_1", "effect_type": "payment.charged"}],
                "cost": {"currency": "USD", "amount": 0.3},
            },
        },
        status=201,
    )
    result = await connect().execute(make_task("payment.charge", {"amount": 1200}))
    assert isinstance(result, Result)
    assert result.output == {"id": "ch_1", "amount": 1200}
    assert result.side_effects == ({"effect_id": "ch_1", "effect_type": "payment.charged"},)
    assert result.cost == {"currency": "USD", "amount": 0.3}
    assert result.metadata["http_status"] == "201"
    (call,) = svc.calls("payment.charge")
    assert (call.method, call.path, call.body) == ("POST", "/charges", {"amount": 1200})


async def test_an_unmapped_operation_is_post_to_its_dotted_path(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    svc.operation("criminal.check", path="/criminal/check").respond({"status": "clear"})
    result = await connect().execute(make_task("criminal.check", {"name": "Ada"}))
    assert result.output == {"status": "clear"}
    assert svc.calls("criminal.check")[0].body == {"name": "Ada"}


async def test_path_placeholders_and_query_parameters(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    svc.operation("employee.get", method="GET", path="/employees/{id}").respond(
        lambda r: {"params": r.params, "query": r.query, "body": r.body}
    )
    result = await connect().execute(
        make_task(
            "employee.get",
            {"id": "a/b c", "expand": "manager", "active": True, "limit": 5, "skip": None},
        )
    )
    assert result.output == {
        "params": {"id": "a/b c"},  # one segment, URL-encoded on the way
        "query": {"v": "2", "expand": "manager", "active": "true", "limit": "5"},
        "body": None,
    }
    assert svc.calls("employee.get")[0].path == "/employees/a%2Fb%20c"


async def test_placeholders_leave_the_body_and_delete_uses_the_query(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    svc.operation("employee.update", method="PUT", path="/employees/{id}").respond(
        lambda r: {"id": r.params["id"], "body": r.body}
    )
    svc.operation("employee.delete", method="DELETE", path="/employees/{id}").respond(
        lambda r: {"id": r.params["id"], "query": r.query}
    )
    connector = connect()
    updated = await connector.execute(make_task("employee.update", {"id": 7, "name": "Bo"}))
    assert updated.output == {"id": "7", "body": {"name": "Bo"}}
    deleted = await connector.execute(make_task("employee.delete", {"id": "E-1", "hard": False}))
    assert deleted.output == {"id": "E-1", "query": {"hard": "false"}}


async def test_a_missing_placeholder_is_validation_and_sends_nothing(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    connector = connect()
    with pytest.raises(StepError) as missing:
        await connector.execute(make_task("employee.get", {"name": "Ada"}))
    assert missing.value.error_class is ErrorClass.VALIDATION
    assert missing.value.details["missing"] == ["id"]
    with pytest.raises(StepError) as not_object:
        await connector.execute(make_task("employee.get", ["E-1"]))
    assert not_object.value.error_class is ErrorClass.VALIDATION
    assert svc.calls() == []


async def test_headers_reach_the_server(connect: Callable[..., RestConnector], url: str) -> None:
    svc = MockService("pay", idempotency_header="X-Idem")
    svc.operation("payment.charge", path="/charges").respond({"ok": True})
    with svc.http() as own:
        connector = connect(
            endpoint=own,
            auth=ApiKeyAuth(type="api_key", header="X-API-Key", value="key-123"),
            retry={"idempotency_header": "X-Idem"},
            headers={"X-Tenant": "acme", "Accept": "application/vnd.pay+json"},
        )
        await connector.execute(make_task("payment.charge", {"amount": 1}, attempt=3))
    (call,) = svc.calls()
    assert call.idempotency_key == "run-1/payment.charge"
    assert "idempotency-key" not in call.headers
    assert call.attempt == 3
    assert call.headers["x-api-key"] == "key-123"
    assert call.headers["x-correlation-id"] == "run-1:step"
    assert call.headers["traceparent"] == "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"
    assert call.headers["x-legato-run-id"] == "run-1"
    assert call.headers["x-tenant"] == "acme"
    assert call.headers["accept"] == "application/vnd.pay+json"  # the service's own wins


async def test_bearer_auth_and_the_default_idempotency_header(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    svc.operation("payment.charge", path="/charges").respond({"ok": True})
    await connect(auth=BearerAuth(type="bearer", token="sk_test")).execute(
        make_task("payment.charge", {"amount": 1})
    )
    (call,) = svc.calls()
    assert call.headers["authorization"] == "Bearer sk_test"
    assert call.idempotency_key == "run-1/payment.charge"  # read from Idempotency-Key
    assert call.attempt == 1


# ---- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, ErrorClass.VALIDATION),
        (401, ErrorClass.AUTH_FAILED),
        (403, ErrorClass.AUTH_FAILED),
        (404, ErrorClass.PERMANENT),
        (408, ErrorClass.TIMEOUT),
        (409, ErrorClass.PERMANENT),
        (422, ErrorClass.VALIDATION),
        (429, ErrorClass.RATE_LIMITED),
        (500, ErrorClass.RETRYABLE),
        (502, ErrorClass.RETRYABLE),
        (503, ErrorClass.RETRYABLE),
    ],
)
async def test_statuses_map_to_error_classes(
    connect: Callable[..., RestConnector], svc: MockService, status: int, error_class: ErrorClass
) -> None:
    svc.operation("payment.charge", path="/charges").respond({"ok": True}).fail(status=status)
    with pytest.raises(StepError) as caught:
        await connect().execute(make_task("payment.charge", {"amount": 1}))
    assert caught.value.error_class is error_class
    assert caught.value.details["status"] == status
    assert caught.value.details["service"] == "pay"
    assert caught.value.details["operation"] == "payment.charge"
    assert "scripted by the mock service" in caught.value.message  # the body's message


async def test_429_honours_retry_after_seconds(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    svc.operation("payment.charge", path="/charges").respond({"ok": True}).rate_limited(
        1, retry_after=3
    )
    connector = connect()
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("payment.charge", {"amount": 1}))
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert caught.value.retry_after == 3
    assert (await connector.execute(make_task("payment.charge", {}))).output == {"ok": True}


async def test_429_honours_retry_after_http_dates(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    when = email.utils.formatdate(time.time() + 90, usegmt=True)
    svc.operation("payment.charge", path="/charges").respond(
        {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": when}
    )
    with pytest.raises(StepError) as caught:
        await connect().execute(make_task("payment.charge", {"amount": 1}))
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert caught.value.retry_after is not None
    assert 70 < caught.value.retry_after <= 91
    assert "slow down" in caught.value.message


async def test_a_slow_server_is_a_timeout(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    svc.operation("payment.charge", path="/charges").respond({"ok": True}).timeout(hang=10)
    connector = connect(timeout={"connect": 1, "request": 0.3})
    started = time.monotonic()
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("payment.charge", {"amount": 1}))
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert time.monotonic() - started < 3


async def test_a_passed_deadline_is_a_timeout_without_a_call(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    from datetime import UTC, datetime, timedelta

    task = make_task("payment.charge", {}, deadline=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(StepError) as caught:
        await connect().execute(task)
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert svc.calls() == []


async def test_connection_refused_is_retryable(connect: Callable[..., RestConnector]) -> None:
    connector = connect(endpoint=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("payment.charge", {"amount": 1}))
    assert caught.value.error_class is ErrorClass.RETRYABLE


async def test_a_401_refreshes_the_oauth2_token_once(
    connect: Callable[..., RestConnector],
    svc: MockService,
    idp: tuple[MockService, str],
) -> None:
    issuer, issuer_url = idp
    auth = OAuth2Auth(
        type="oauth2", client_id="app", client_secret="secret", token_url=f"{issuer_url}/token"
    )
    svc.operation("payment.charge", path="/charges").respond({"ok": True}).fail(1, status=401)
    connector = connect(auth=auth)
    result = await connector.execute(make_task("payment.charge", {"amount": 1}))
    assert result.output == {"ok": True}
    tokens = [c.headers["authorization"] for c in svc.calls("payment.charge")]
    assert tokens == ["Bearer tok-1", "Bearer tok-2"]
    assert len(issuer.calls("token")) == 2
    # refused again after the refresh: AUTH_FAILED, and no third try
    svc.reset()  # the error sequence starts again
    svc.operation("payment.charge").fail(2, status=401)
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("payment.charge", {"amount": 1}))
    assert caught.value.error_class is ErrorClass.AUTH_FAILED
    assert caught.value.details["refreshed"] is True
    assert len(svc.calls("payment.charge")) == 2
    assert len(issuer.calls("token")) == 3


async def test_a_403_does_not_refresh(
    connect: Callable[..., RestConnector],
    svc: MockService,
    idp: tuple[MockService, str],
) -> None:
    issuer, issuer_url = idp
    auth = OAuth2Auth(
        type="oauth2", client_id="a", client_secret="s", token_url=f"{issuer_url}/token"
    )
    svc.operation("payment.charge", path="/charges").respond({"ok": True}).fail(1, status=403)
    with pytest.raises(StepError):
        await connect(auth=auth).execute(make_task("payment.charge", {}))
    assert len(svc.calls()) == 1
    assert len(issuer.calls("token")) == 1


# ---- batches -----------------------------------------------------------------------------------


def batch_answer(request: MockRequest) -> list[Any]:
    out: list[Any] = []
    for item in request.body:
        if item.get("bad"):
            out.append({"error": {"class": "VALIDATION", "message": f"bad amount {item['n']}"}})
        else:
            out.append({"id": f"ch_{item['n']}", "_legato": {"cost": {"amount": 0.1}}})
    return out


async def test_batch_with_a_batch_operation_is_one_call(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    svc.operation("charges.batch", path="/charges/batch").respond(batch_answer)
    connector = connect(
        batch={"operation": "charges.batch"},
        operations={"charges.batch": {"path": "/charges/batch"}},
    )
    tasks = [
        make_task("payment.charge", {"n": 1}, task_id="a", idempotency_key="k-a"),
        make_task("payment.charge", {"n": 2, "bad": True}, task_id="b", idempotency_key="k-b"),
        make_task("payment.charge", {"n": 3}, task_id="c", idempotency_key="k-c"),
    ]
    results = await connector.execute_batch(tasks)
    assert isinstance(results[0], Result)
    assert results[0].output == {"id": "ch_1"}
    assert results[0].cost == {"amount": 0.1}
    assert isinstance(results[1], StepError)
    assert results[1].error_class is ErrorClass.VALIDATION
    assert "bad amount 2" in results[1].message
    assert isinstance(results[2], Result)
    assert results[2].output == {"id": "ch_3"}
    (call,) = svc.calls()
    assert call.body == [{"n": 1}, {"n": 2, "bad": True}, {"n": 3}]
    assert call.idempotency_key is not None
    assert call.idempotency_key.startswith("batch-")
    assert call.headers["x-legato-batch-size"] == "3"


async def test_batch_answers_that_fall_short_or_fail(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    op = svc.operation("charges.batch", path="/charges/batch")
    op.respond({"results": [{"id": "only-one"}]})
    connector = connect(batch={"operation": "charges.batch"}, operations={})
    tasks = [make_task("payment.charge", {"n": n}, task_id=f"t{n}") for n in range(2)]
    short = await connector.execute_batch(tasks)
    assert isinstance(short[0], Result)
    assert short[0].output == {"id": "only-one"}
    assert isinstance(short[1], StepError)
    assert short[1].error_class is ErrorClass.RETRYABLE
    svc.reset()  # the error sequence starts again
    op.fail(1, status=503)
    failed = await connector.execute_batch(tasks)
    assert all(isinstance(r, StepError) and r.error_class is ErrorClass.RETRYABLE for r in failed)
    op.respond({"not": "a list"})
    odd = await connector.execute_batch(tasks)
    assert all(isinstance(r, StepError) and r.error_class is ErrorClass.PERMANENT for r in odd)
    assert await connector.execute_batch([]) == []


async def test_batch_without_a_batch_operation_runs_tasks_concurrently(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    def answer(request: MockRequest) -> dict[str, Any]:
        if request.body["n"] == 2:
            raise ValueError("boom")  # the mock answers 500
        return {"n": request.body["n"]}

    svc.operation("payment.charge", path="/charges").respond(answer).latency(0.2)
    tasks = [make_task("payment.charge", {"n": n}, task_id=f"t{n}") for n in range(4)]
    started = time.monotonic()
    results = await connect().execute_batch(tasks)
    elapsed = time.monotonic() - started
    assert [r.output if isinstance(r, Result) else r.error_class for r in results] == [
        {"n": 0},
        {"n": 1},
        ErrorClass.RETRYABLE,
        {"n": 3},
    ]
    assert elapsed < 0.7  # four 0.2 s calls at once


async def test_batch_concurrency_is_bounded(url: str, svc: MockService) -> None:
    svc.operation("payment.charge", path="/payment/charge").respond({"ok": True}).latency(0.2)
    config = ServiceConfig(name="pay", type="rest", endpoint=url)  # the default route
    async with RestConnector(config, max_concurrency=2) as connector:
        started = time.monotonic()
        tasks = [make_task("payment.charge", {}, task_id=f"t{n}") for n in range(4)]
        results = await connector.execute_batch(tasks)
    assert all(isinstance(r, Result) for r in results)
    assert time.monotonic() - started >= 0.38  # two rounds of two


# ---- async operations --------------------------------------------------------------------------


async def test_async_start_callback_and_status_polling(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    receiver = MockService("legato-callbacks")
    receiver.operation("callback", path="/callbacks/{token}").respond({"ok": True})
    svc.operation("criminal.check", path="/checks").respond(
        {"status": "clear", "name": "{{ input.name }}"}, template=True
    ).async_(0.3)
    with receiver.http() as callbacks:
        connector = connect(
            callback_url=f"{callbacks}/callbacks/{{token}}",
            operations={
                "criminal.check": {"path": "/checks"},
                "operation.status": {"path": "/_mock/operations/{operation_id}"},
            },
            async_={"status_operation": "operation.status", "poll_interval": 1},
        )
        task = make_task("criminal.check", {"name": "Ada"})
        ack = await connector.start_async(task, "cb-token-1")
        assert ack.operation_id is not None
        assert ack.operation_id.startswith("op-")
        assert ack.metadata["task_status"] == "IN_PROGRESS"
        (call,) = svc.calls("criminal.check")
        assert call.headers["x-callback-token"] == "cb-token-1"
        assert call.headers["x-callback-url"].endswith("/callbacks/cb-token-1")
        assert call.idempotency_key == "run-1/criminal.check"
        assert await connector.check_status(task, ack.operation_id) is None
        done: Result | None = None
        for _ in range(50):
            done = await connector.check_status(task, ack.operation_id)
            if done is not None:
                break
            await asyncio.sleep(0.05)
        assert done is not None
        assert done.output == {"status": "clear", "name": "Ada"}
        assert done.operation_id == ack.operation_id
        for _ in range(50):
            if receiver.calls("callback"):
                break
            await asyncio.sleep(0.05)
    (delivered,) = receiver.calls("callback")
    assert delivered.body["callback_token"] == "cb-token-1"
    assert delivered.body["result"] == {"status": "clear", "name": "Ada"}


async def test_a_failed_async_operation_is_its_error(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    def broken(_request: MockRequest) -> Any:
        raise RuntimeError("vendor crashed")

    svc.operation("criminal.check", path="/checks").respond(broken).async_(0)
    connector = connect(
        operations={
            "criminal.check": {"path": "/checks"},
            "op.status": "/_mock/operations/{operation_id}",
        },
        async_={"status_operation": "op.status"},
    )
    task = make_task("criminal.check", {"name": "Ada"})
    ack = await connector.start_async(task, "tok")
    assert ack.operation_id is not None
    error: StepError | None = None
    for _ in range(50):
        try:
            if await connector.check_status(task, ack.operation_id) is not None:
                break
        except StepError as exc:
            error = exc
            break
        await asyncio.sleep(0.05)
    assert error is not None
    assert error.error_class is ErrorClass.RETRYABLE  # the class the status document names
    assert "vendor crashed" in error.message
    with pytest.raises(StepError) as unknown:
        await connector.check_status(task, "op-does-not-exist")
    assert unknown.value.error_class is ErrorClass.PERMANENT  # 404


async def test_async_start_reads_the_location_header(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    svc.operation("report.build", path="/report/build").respond(
        None, status=202, headers={"Location": "/reports/jobs/j-42"}
    )
    ack = await connect().start_async(make_task("report.build", {"month": 5}), "tok")
    assert ack.operation_id == "j-42"
    assert ack.metadata["location"] == "/reports/jobs/j-42"
    svc.operation("report.none", path="/report/none").respond({"queued": True}, status=202)
    with pytest.raises(StepError) as caught:
        await connect().start_async(make_task("report.none", {}), "tok")
    assert caught.value.error_class is ErrorClass.PERMANENT


async def test_check_status_needs_a_status_operation(
    connect: Callable[..., RestConnector],
) -> None:
    with pytest.raises(StepError) as caught:
        await connect().check_status(make_task("criminal.check", {}), "op-1")
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert "status_operation" in caught.value.message


async def test_check_status_default_route(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    svc.operation("jobs.status", method="GET", path="/jobs/status/{operation_id}").respond(
        {"status": "succeeded", "result": {"ok": 1}}
    )
    connector = connect(async_={"status_operation": "jobs.status"})
    done = await connector.check_status(make_task("jobs.run", {}), "j 1")
    assert done is not None
    assert done.output == {"ok": 1}
    assert svc.calls()[0].path == "/jobs/status/j%201"


# ---- health, versions, configuration ----------------------------------------------------------


async def test_health_check(connect: Callable[..., RestConnector], svc: MockService) -> None:
    health = svc.operation("health", method="GET", path="/health").respond({"status": "ok"})
    await connect().health_check()
    assert svc.calls("health")[0].method == "GET"
    await connect(operations={"health": {"path": "/_mock/health"}}).health_check()
    health.respond({"status": "down"})
    with pytest.raises(StepError) as down:
        await connect().health_check()
    assert down.value.error_class is ErrorClass.RETRYABLE
    svc.reset()  # the error sequence starts again
    health.respond({"status": "ok"}).fail(1, status=503)
    with pytest.raises(StepError) as failing:
        await connect().health_check()
    assert failing.value.error_class is ErrorClass.RETRYABLE
    with pytest.raises(StepError) as unreachable:
        await connect(endpoint=f"http://127.0.0.1:{free_port()}").health_check()
    assert unreachable.value.error_class is ErrorClass.RETRYABLE


async def test_versions_route_to_their_own_endpoint_and_operations(
    connect: Callable[..., RestConnector], svc: MockService, url: str
) -> None:
    svc.operation("v2.charge", path="/v2/payments").respond({"version": 2})
    connector = connect(
        versions={"v2": {"endpoint": f"{url}/v2", "operations": {"payment.charge": "/payments"}}}
    )
    result = await connector.execute(make_task("payment.charge", {}, version="v2"))
    assert result.output == {"version": 2}


async def test_endpoint_with_a_path_and_a_query_string(svc: MockService, url: str) -> None:
    svc.operation("payment.charge", path="/api/v1/charges").respond(lambda r: {"q": r.query})
    config = ServiceConfig(
        name="pay",
        type="rest",
        endpoint=f"{url}/api/v1/?api-version=7",
        operations={"payment.charge": {"path": "charges"}},
    )
    async with RestConnector(config) as connector:
        result = await connector.execute(make_task("payment.charge", {"n": 1}))
    assert result.output == {"q": {"api-version": "7"}}


def test_capabilities_and_configuration_errors() -> None:
    config = ServiceConfig(
        name="pay", type="rest", endpoint="https://pay.example/v1", capabilities=("payment.charge",)
    )
    assert RestConnector(config).capabilities() == {"payment.charge"}
    with pytest.raises(ConfigurationError, match="http"):
        RestConnector(ServiceConfig(name="pay", type="rest", endpoint="pay.example:443"))
    with pytest.raises(ConfigurationError, match=r"operations\.x"):
        RestConnector(
            ServiceConfig(
                name="pay",
                type="rest",
                endpoint="https://pay.example",
                operations={"x": {"method": "FETCH", "path": "/x"}},
            )
        )
    with pytest.raises(ConfigurationError, match="placeholders"):
        RestConnector(
            ServiceConfig(
                name="pay",
                type="rest",
                endpoint="https://pay.example",
                operations={"b": {"path": "/batch/{id}"}},
                batch={"operation": "b"},
            )
        )


async def test_a_closed_connector_refuses_calls(
    connect: Callable[..., RestConnector], svc: MockService
) -> None:
    svc.operation("payment.charge", path="/charges").respond({"ok": True})
    connector = connect()
    await connector.execute(make_task("payment.charge", {}))
    await connector.aclose()
    await connector.aclose()
    with pytest.raises(UsageError):
        await connector.execute(make_task("payment.charge", {}))


# ---- through the hub ---------------------------------------------------------------------------


async def test_through_the_hub_with_the_real_registry(
    svc: MockService, url: str, tmp_path: Path
) -> None:
    import legato.connectors.hub as hub_module
    from legato.connectors.registry import load_registry

    svc.operation("payment.charge", path="/charges").respond(
        lambda r: {"id": "ch_1", "amount": r.body["amount"]}
    )
    svc.operation("payment.refund", path="/refunds/{charge}").respond(
        lambda r: {"refunded": r.params["charge"]}
    ).fail(1, status=422)
    svc.operation("criminal.check", path="/checks").respond({"status": "clear"}).async_(0)
    svc.operation("health", method="GET", path="/health").respond({"status": "ok"})
    services = tmp_path / "services.yaml"
    services.write_text(
        f"""
services:
  - name: pay
    type: rest
    endpoint: {url}
    auth: {{type: api_key, header: X-API-Key, value: "${{PAY_KEY}}"}}
    retry: {{max_attempts: 3, idempotency_header: Idempotency-Key}}
    timeout: {{connect: 2s, request: 5s}}
    async: {{status_operation: operation.status, poll_interval: 1s}}
    operations:
      payment.charge: {{method: POST, path: /charges}}
      payment.refund: {{method: POST, path: "/refunds/{{charge}}"}}
      criminal.check: {{path: /checks}}
      operation.status: {{method: GET, path: "/_mock/operations/{{operation_id}}"}}
      health: {{path: /health}}
"""
    )
    registry = load_registry(services, {"PAY_KEY": "pay-key-1"})
    async with hub_module.Connectors(registry) as hub:
        plain = dict(correlation_id="", traceparent="")
        charged = await hub.execute(make_task("payment.charge", {"amount": 5}, **plain))
        with pytest.raises(StepError) as refused:
            await hub.execute(make_task("payment.refund", {"charge": "ch_1"}, **plain))
        batch = await hub.execute_batch(
            [
                make_task("payment.refund", {"charge": "ch_1"}, task_id="r1", **plain),
                make_task("payment.refund", {"charge": "ch_2"}, task_id="r2", **plain),
            ]
        )
        task = make_task("criminal.check", {"name": "Ada"}, **plain)
        ack = await hub.start_async(task, "cb-1")
        assert ack.operation_id is not None
        done = None
        for _ in range(50):
            done = await hub.check_status(task, ack.operation_id)
            if done is not None:
                break
            await asyncio.sleep(0.05)
        await hub.health_check("pay")
    assert charged.output == {"id": "ch_1", "amount": 5}
    assert refused.value.error_class is ErrorClass.VALIDATION
    assert [r.output for r in batch if isinstance(r, Result)] == [
        {"refunded": "ch_1"},
        {"refunded": "ch_2"},
    ]
    assert done is not None
    assert done.output == {"status": "clear"}
    first = svc.calls("payment.charge")[0]
    assert first.headers["x-api-key"] == "pay-key-1"
    assert first.headers["x-correlation-id"] == "run-1:step-payment.charge"  # from the hub
    assert first.headers["traceparent"].startswith("00-")
    assert first.idempotency_key == "run-1/payment.charge"


# ---- mTLS --------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the test certificates")
    path = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem", cwd=path,
    )  # fmt: skip
    (path / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=path,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem",
            cwd=path,
        )  # fmt: skip
    return path


@pytest.fixture
def tls_server(certificates: Path) -> Iterator[str]:
    """An HTTPS server that requires a client certificate and says whose it is."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            peer = self.connection.getpeercert()  # type: ignore[attr-defined]
            subject = dict(item[0] for item in peer["subject"]) if peer else {}
            data = json.dumps({"client": subject.get("commonName")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certificates / "ca.pem")
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


async def test_mtls_presents_the_client_certificate(
    connect: Callable[..., RestConnector], certificates: Path, tls_server: str
) -> None:
    auth = MtlsAuth(
        type="mtls",
        cert=str(certificates / "client.pem"),
        key=str(certificates / "client.key"),
        ca=str(certificates / "ca.pem"),
    )
    connector = connect(endpoint=tls_server, auth=auth, operations={"whoami": "GET /whoami"})
    result = await connector.execute(make_task("whoami", {}))
    assert result.output == {"client": "client"}
    anonymous = connect(endpoint=tls_server, operations={"whoami": "GET /whoami"})
    with pytest.raises(StepError) as caught:  # no certificate, and the CA is not trusted
        await anonymous.execute(make_task("whoami", {}))
    assert caught.value.error_class is ErrorClass.RETRYABLE
    with pytest.raises(ConfigurationError, match="https"):
        connect(endpoint=tls_server.replace("https", "http"), auth=auth)
