"""The mock service framework, over real HTTP and gRPC servers on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from legato import ErrorClass, InputError, StepError
from legato.mock import MockRequest, MockService

HEADERS = {"Idempotency-Key": "run-1/check", "X-Legato-Attempt": "1"}


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("the condition did not come true in time")


async def async_wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not come true in time")


# ---- HTTP ------------------------------------------------------------------------------------


def test_http_static_and_computed_responses() -> None:
    svc = MockService("hr")
    svc.operation("employee.create").respond({"employeeId": "E-1"}, status=201)
    svc.operation("employee.get", method="GET", path="/employees/{id}").respond(
        lambda request: {"id": request.params["id"], "q": request.query.get("full")}
    )
    svc.operation("echo").respond(lambda r: {"body": r.body, "key": r.idempotency_key})
    with svc.http() as url, httpx.Client(base_url=url) as client:
        created = client.post("/employee/create", json={"name": "Ada"})
        fetched = client.get("/employees/E-7?full=yes")
        echoed = client.post("/echo", json=[1, 2], headers={"Idempotency-Key": "k"})
        missing = client.post("/employee.fly", json={})
        wrong_method = client.delete("/employee/create")
    assert (created.status_code, created.json()) == (201, {"employeeId": "E-1"})
    assert fetched.json() == {"id": "E-7", "q": "yes"}
    assert echoed.json() == {"body": [1, 2], "key": "k"}
    assert missing.status_code == 404
    assert "POST /employee/create" in missing.json()["error"]["routes"]
    assert wrong_method.status_code == 405
    assert [c.outcome for c in svc.calls()] == ["ok", "ok", "ok", "unknown", "unknown"]


def test_http_latency() -> None:
    svc = MockService("slow")
    svc.operation("op").respond({"ok": True}).latency(0.15)
    with svc.http() as url:
        started = time.monotonic()
        response = httpx.post(f"{url}/op", json={})
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert 0.15 <= elapsed < 2


def test_http_fail_twice_then_succeed_with_recorded_attempts() -> None:
    svc = MockService("background-check")
    svc.operation("criminal.check").respond({"status": "clear"}).after_errors(2, status=503)
    statuses = []
    with svc.http() as url, httpx.Client(base_url=url) as client:
        for attempt in (1, 2, 3, 4):
            headers = {**HEADERS, "X-Legato-Attempt": str(attempt)}
            response = client.post("/criminal/check", json={"ssn": "x"}, headers=headers)
            statuses.append(response.status_code)
        assert response.json() == {"status": "clear"}
    assert statuses == [503, 503, 200, 200]
    calls = svc.calls("criminal.check")
    assert [(c.idempotency_key, c.attempt, c.status) for c in calls] == [
        ("run-1/check", 1, 503),
        ("run-1/check", 2, 503),
        ("run-1/check", 3, 200),
        ("run-1/check", 4, 200),
    ]
    assert calls[0].body == {"ssn": "x"}
    assert svc.attempts("run-1/check") == 4
    assert svc.attempts("another") == 0


def test_http_error_sequence_per_idempotency_key() -> None:
    svc = MockService("pay")
    svc.operation("charge").respond({"id": "ch"}).after_errors(1, status=500).per_key()
    with svc.http() as url, httpx.Client(base_url=url) as client:
        codes = [
            client.post("/charge", json={}, headers={"Idempotency-Key": key}).status_code
            for key in ("a", "b", "a", "b")
        ]
    assert codes == [500, 500, 200, 200]


def test_http_rate_limited_with_retry_after() -> None:
    svc = MockService("payments")
    svc.operation("payment.charge").rate_limited(times=1, retry_after=2).respond({"id": "ch_1"})
    with svc.http() as url, httpx.Client(base_url=url) as client:
        limited = client.post("/payment/charge", json={})
        charged = client.post("/payment/charge", json={})
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    assert charged.json() == {"id": "ch_1"}


def test_http_sequence_of_different_errors_and_custom_body() -> None:
    svc = MockService("x")
    (
        svc.operation("op")
        .respond({"ok": True})
        .fail(1, status=503)
        .fail(1, status=422, body={"detail": "bad email"})
        .rate_limited(1, retry_after=0.5)
    )
    with svc.http() as url, httpx.Client(base_url=url) as client:
        answers = [client.post("/op", json={}) for _ in range(4)]
    assert [a.status_code for a in answers] == [503, 422, 429, 200]
    assert answers[1].json() == {"detail": "bad email"}
    assert answers[2].headers["Retry-After"] == "0.5"


def test_http_timeout() -> None:
    svc = MockService("slow")
    svc.operation("op").respond({"ok": True}).timeout(times=1)
    with svc.http() as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/op", json={}, timeout=0.2)
        assert httpx.post(f"{url}/op", json={}, timeout=5).json() == {"ok": True}
        started = time.monotonic()
    assert time.monotonic() - started < 3  # stopping ends the scripted wait
    assert [c.outcome for c in svc.calls()] == ["timeout", "ok"]


def test_http_always_failing_and_reset() -> None:
    svc = MockService("down")
    op = svc.operation("op").respond({"ok": True}).fail(status=503)
    with svc.http() as url, httpx.Client(base_url=url) as client:
        assert {client.post("/op").status_code for _ in range(3)} == {503}
        op.reset()
        assert client.post("/op").status_code == 200
        assert client.get("/_mock/calls").json()[0]["status"] == 503
        client.post("/_mock/reset")
    assert svc.calls() == []


def test_http_async_with_callback_to_a_loopback_receiver() -> None:
    receiver = MockService("engine")
    receiver.operation("callback", path="/callbacks/{token}").respond({"ok": True})
    svc = MockService("background-check")
    svc.operation("criminal.check").respond(
        lambda r: {"status": "clear", "for": r.body["name"]}
    ).async_(delay=0.1)
    with receiver.http() as receiver_url, svc.http() as url:
        response = httpx.post(
            f"{url}/criminal/check",
            json={"name": "Ada"},
            headers={"X-Callback-Url": f"{receiver_url}/callbacks/tok-1", "X-Callback-Token": "t"},
        )
        assert response.status_code == 202
        operation_id = response.json()["operation_id"]
        assert response.json()["status"] == "IN_PROGRESS"
        [callback] = wait_for(lambda: receiver.calls("callback"))
        polled = httpx.get(f"{url}/_mock/operations/{operation_id}").json()
    assert callback.body == {
        "operation_id": operation_id,
        "status": "COMPLETED",
        "result": {"status": "clear", "for": "Ada"},
        "callback_token": "t",
    }
    assert callback.headers["x-callback-token"] == "t"
    assert polled["status"] == "COMPLETED"
    assert polled["result"]["for"] == "Ada"
    [delivery] = svc.callbacks
    assert delivery.status == 200
    assert delivery.error is None
    assert svc.calls()[0].outcome == "accepted"
    assert svc.calls()[0].operation_id == operation_id


def test_http_async_callback_to_a_fixed_url_with_a_custom_body() -> None:
    receiver = MockService("engine")
    receiver.operation("hook", path="/hook").respond(None, status=204)
    svc = MockService("bg")
    with receiver.http() as receiver_url:
        svc.operation("check").respond({"clear": True}).async_(
            0.0,
            callback_url=f"{receiver_url}/hook",
            callback_body={"id": "{{ operation_id }}", "data": "{{ result }}"},
        )
        with svc.http() as url:
            operation_id = httpx.post(f"{url}/check", json={}).json()["operation_id"]
            [hook] = wait_for(lambda: receiver.calls("hook"))
    assert hook.body == {"id": operation_id, "data": {"clear": True}}


def test_http_callback_to_a_receiver_that_is_down_is_recorded() -> None:
    svc = MockService("bg")
    svc.operation("check").respond({"clear": True}).async_(
        0.0, callback_url="http://127.0.0.1:9/nothing-listens-here"
    )
    with svc.http() as url:
        httpx.post(f"{url}/check", json={})
        [delivery] = wait_for(lambda: svc.callbacks)
    assert delivery.status is None
    assert delivery.error


def test_a_responder_that_raises_answers_500() -> None:
    svc = MockService("x")

    def broken(request: MockRequest) -> Any:
        raise KeyError("name")

    svc.operation("op").respond(broken)
    with svc.http() as url:
        response = httpx.post(f"{url}/op", json={})
    assert response.status_code == 500
    assert svc.calls()[0].status == 500
    assert svc.calls()[0].outcome == "error"


def test_configurable_idempotency_and_attempt_headers() -> None:
    svc = MockService("x", idempotency_header="X-Request-Id", attempt_header="X-Try")
    svc.operation("op").respond({})
    with svc.http() as url:
        httpx.post(f"{url}/op", json={}, headers={"X-Request-Id": "r1", "X-Try": "2"})
    assert (svc.calls()[0].idempotency_key, svc.calls()[0].attempt) == ("r1", 2)


# ---- gRPC ----------------------------------------------------------------------------------


@pytest.fixture
def grpc_parts() -> Any:
    from legato.connectors.base import Task
    from legato.connectors.config import ServiceConfig
    from legato.connectors.grpc import GrpcConnector

    return Task, ServiceConfig, GrpcConnector


@pytest.fixture
async def grpc_connect(grpc_parts: Any) -> AsyncIterator[Callable[..., Any]]:
    _, service_config, connector_class = grpc_parts
    made: list[Any] = []

    def connect(address: str, **settings: Any) -> Any:
        config = service_config.model_validate(
            {"name": "mock", "type": "grpc", "endpoint": address, **settings}
        )
        connector = connector_class(config)
        made.append(connector)
        return connector

    yield connect
    for connector in made:
        await connector.aclose()


def grpc_task(grpc_parts: Any, operation: str, input: Any = None, **fields: Any) -> Any:
    task_class = grpc_parts[0]
    defaults: dict[str, Any] = {
        "task_id": f"step-{operation}",
        "run_id": "run-1",
        "workflow": "wf",
        "service": "mock",
        "idempotency_key": f"run-1/{operation}",
    }
    return task_class(operation=operation, input=input, **{**defaults, **fields})


async def test_grpc_responses_side_effects_and_cost(
    grpc_parts: Any, grpc_connect: Callable[..., Any]
) -> None:
    svc = MockService("hr")
    svc.operation("employee.create").respond(
        lambda r: {"employeeId": "E-1", "name": r.body["name"]}
    ).side_effects([{"effect_id": "E-1", "reversible": True}]).cost(
        {"currency": "USD", "amount": 0.1}
    ).latency(0.05)
    async with svc.grpc() as address:
        connector = grpc_connect(address)
        started = time.monotonic()
        result = await connector.execute(grpc_task(grpc_parts, "employee.create", {"name": "Ada"}))
        assert time.monotonic() - started >= 0.05
    assert result.output == {"employeeId": "E-1", "name": "Ada"}
    assert result.side_effects[0]["effect_id"] == "E-1"
    assert result.cost == {"currency": "USD", "amount": 0.1}
    [call] = svc.calls()
    assert call.transport == "grpc"
    assert call.method == "ExecuteTask"
    assert call.body == {"name": "Ada"}


async def test_grpc_fail_twice_then_succeed(
    grpc_parts: Any, grpc_connect: Callable[..., Any]
) -> None:
    svc = MockService("bg")
    svc.operation("criminal.check").respond({"status": "clear"}).after_errors(2, status=503)
    outcomes: list[Any] = []
    async with svc.grpc() as address:
        connector = grpc_connect(address)
        for attempt in (1, 2, 3):
            try:
                outcomes.append(
                    await connector.execute(
                        grpc_task(grpc_parts, "criminal.check", {}, attempt=attempt)
                    )
                )
            except StepError as exc:
                outcomes.append(exc)
    assert [getattr(o, "error_class", None) for o in outcomes[:2]] == [ErrorClass.RETRYABLE] * 2
    assert outcomes[2].output == {"status": "clear"}
    assert [(c.idempotency_key, c.attempt) for c in svc.calls()] == [
        ("run-1/criminal.check", 1),
        ("run-1/criminal.check", 2),
        ("run-1/criminal.check", 3),
    ]
    assert svc.attempts("run-1/criminal.check") == 3


async def test_grpc_rate_limited_status_codes_and_timeout(
    grpc_parts: Any, grpc_connect: Callable[..., Any]
) -> None:
    svc = MockService("pay")
    svc.operation("payment.charge").rate_limited(times=1, retry_after=2).respond({"id": "ch"})
    svc.operation("flaky").fail(1, grpc_code="UNAVAILABLE").fail(1, status=401).respond({})
    svc.operation("stuck").timeout(times=1).respond({"late": False})
    async with svc.grpc() as address:
        connector = grpc_connect(address, timeout={"request": "300ms"})
        with pytest.raises(StepError) as limited:
            await connector.execute(grpc_task(grpc_parts, "payment.charge", {}))
        assert (await connector.execute(grpc_task(grpc_parts, "payment.charge", {}))).output
        with pytest.raises(StepError) as unavailable:
            await connector.execute(grpc_task(grpc_parts, "flaky", {}))
        with pytest.raises(StepError) as unauthorized:
            await connector.execute(grpc_task(grpc_parts, "flaky", {}))
        with pytest.raises(StepError) as timed_out:
            await connector.execute(grpc_task(grpc_parts, "stuck", {}))
        assert (await connector.execute(grpc_task(grpc_parts, "stuck", {}))).output == {
            "late": False
        }
    assert limited.value.error_class is ErrorClass.RATE_LIMITED
    assert limited.value.retry_after == 2.0
    assert unavailable.value.details["grpc_status"] == "UNAVAILABLE"
    assert unavailable.value.error_class is ErrorClass.RETRYABLE
    assert unauthorized.value.error_class is ErrorClass.AUTH_FAILED
    assert timed_out.value.error_class is ErrorClass.TIMEOUT


async def test_grpc_async_check_status_and_callback(
    grpc_parts: Any, grpc_connect: Callable[..., Any]
) -> None:
    receiver = MockService("engine")
    receiver.operation("callback", path="/callbacks").respond({"ok": True})
    svc = MockService("bg")
    svc.operation("criminal.check").respond({"status": "clear"}).async_(delay=0.1)
    with receiver.http() as receiver_url:
        async with svc.grpc() as address:
            connector = grpc_connect(address)
            task = grpc_task(
                grpc_parts,
                "criminal.check",
                {"name": "Ada"},
                metadata={"callback_url": f"{receiver_url}/callbacks"},
            )
            started = await connector.start_async(task, callback_token="cb-1")
            assert started.operation_id
            assert await connector.check_status(task, started.operation_id) is None
            done = await async_wait_for(
                lambda: receiver.calls("callback") and svc.operation_status(started.operation_id)
            )
            assert done["status"] == "COMPLETED"
            result = await connector.check_status(task, started.operation_id)
    assert result is not None
    assert result.output == {"status": "clear"}
    [callback] = receiver.calls("callback")
    assert callback.body["operation_id"] == started.operation_id
    assert callback.body["callback_token"] == "cb-1"
    assert callback.body["result"] == {"status": "clear"}


async def test_http_and_grpc_share_one_record(
    grpc_parts: Any, grpc_connect: Callable[..., Any]
) -> None:
    svc = MockService("hr")
    svc.operation("op").respond({"ok": True}).after_errors(1, status=503)
    with svc.http() as url:
        async with svc.grpc() as address:
            async with httpx.AsyncClient() as client:
                first = await client.post(f"{url}/op", json={})
            result = await grpc_connect(address).execute(grpc_task(grpc_parts, "op", {}))
    assert first.status_code == 503
    assert result.output == {"ok": True}
    assert [c.transport for c in svc.calls()] == ["http", "grpc"]


# ---- YAML ------------------------------------------------------------------------------------

CONFIG = """
name: background-check
idempotency_header: Idempotency-Key
operations:
  criminal.check:
    path: /checks/criminal
    response:
      status: clear
      candidate: "{{ input.name }}"
      key: "{{ idempotency_key }}"
    latency: 20ms
    errors:
      - {times: 2, status: 503}
      - {times: 1, status: 429, retry_after: 2s}
  employee.get:
    method: GET
    path: /employees/{id}
    response: {id: "{{ params.id }}"}
  education.verify:
    response: {verified: true}
    async: {delay: 50ms}
"""


def test_yaml_configuration(tmp_path: Path) -> None:
    file = tmp_path / "bg.yaml"
    file.write_text(CONFIG)
    svc = MockService.from_file(file)
    assert svc.name == "background-check"
    headers = {"Idempotency-Key": "k-9"}
    with svc.http() as url, httpx.Client(base_url=url) as client:
        codes = [
            client.post("/checks/criminal", json={"name": "Ada"}, headers=headers) for _ in range(4)
        ]
        employee = client.get("/employees/E-3")
        started = client.post("/education/verify", json={})
        operation_id = started.json()["operation_id"]
        state = wait_for(
            lambda: (
                (s := client.get(f"/_mock/operations/{operation_id}").json())["status"]
                == "COMPLETED"
                and s
            )
        )
    assert [c.status_code for c in codes] == [503, 503, 429, 200]
    assert codes[2].headers["Retry-After"] == "2"
    assert codes[3].json() == {"status": "clear", "candidate": "Ada", "key": "k-9"}
    assert employee.json() == {"id": "E-3"}
    assert started.status_code == 202
    assert state["result"] == {"verified": True}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: x\noperations: {op: {latency: soon}}", "latency"),
        ("name: x\noperations: {op: {errors: [{status: 200}]}}", "status"),
        ("name: x\noperations: {op: {colour: red}}", "colour"),
        ("operations: {}", "name"),
        ("[1, 2]", "mapping"),
        ("name: [", "YAML"),
    ],
)
def test_yaml_mistakes_are_input_errors(tmp_path: Path, text: str, fragment: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(InputError, match=fragment):
        MockService.from_file(file)


def test_runnable_as_a_module(tmp_path: Path) -> None:
    file = tmp_path / "bg.yaml"
    file.write_text(CONFIG)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "legato.mock", str(file), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "HTTP on http://" in line, line + (process.stderr.read() if process.poll() else "")
        url = line.split(" on ", 1)[1].strip()
        response = httpx.get(f"{url}/employees/E-1", timeout=5)
        assert response.json() == {"id": "E-1"}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    assert process.returncode == 0


def test_the_yaml_example_of_the_docs() -> None:
    import re

    import yaml

    docs = Path(__file__).resolve().parents[2] / "docs/reference/mock-services.md"
    [example] = re.findall(r"```yaml\n(.*?)```", docs.read_text(encoding="utf-8"), re.S)
    svc = MockService.from_dict(yaml.safe_load(example))
    assert set(svc.operations) == {"criminal.check", "employee.get", "education.verify"}
    with svc.http() as url, httpx.Client(base_url=url) as client:
        answers = [
            client.post("/checks/criminal", json={"name": "Ada"}, headers={"Idempotency-Key": "k"})
            for _ in range(2)
        ]
        assert [a.status_code for a in answers] == [503, 503]
        assert client.get("/employees/E-5").json() == {"id": "E-5"}
