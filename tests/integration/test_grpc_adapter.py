"""GrpcConnector against a real Executor on loopback: the ExternalTaskExecutor contract
end to end (payloads, errors, status codes, auth refresh, timeouts, batch, async, stream,
health, capabilities, and what the server receives)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from legato import ErrorClass, StepError
from legato.connectors.base import Connector, Result, Task
from legato.connectors.config import ServiceConfig
from legato.connectors.grpc import GrpcConnector
from legato.connectors.proto import pb
from legato.executor import Abort, Executor, Request


def make_task(operation: str, input: Any = None, **fields: Any) -> Task:
    defaults: dict[str, Any] = {
        "task_id": f"step-{operation}",
        "run_id": "run-1",
        "workflow": "onboarding",
        "service": "hr",
        "idempotency_key": f"run-1/{operation}",
    }
    return Task(operation=operation, input=input, **{**defaults, **fields})


def build_executor() -> Executor:
    executor = Executor(name="hr", version="2.1", max_batch_size=10, metadata={"team": "people"})
    executor.seen: list[Request] = []  # type: ignore[attr-defined]
    executor.release = asyncio.Event()  # type: ignore[attr-defined]

    @executor.operation("echo")
    async def echo(payload: Any, request: Request) -> Any:
        executor.seen.append(request)  # type: ignore[attr-defined]
        return {"payload": payload, "attempt": request.attempt}

    @executor.operation("employee.create")
    def create(payload: dict[str, Any]) -> Any:  # sync: runs on a worker thread
        return executor.result(
            {"employeeId": "E-1", "name": payload["name"]},
            side_effects=[
                {
                    "effect_id": "E-1",
                    "effect_type": "employee.created",
                    "description": "HR record",
                    "reversible": True,
                    "compensation_method": "employee.delete",
                }
            ],
            cost={"currency": "USD", "amount": 0.25, "units": 1, "unit": "record"},
            metadata={"region": "eu"},
        )

    @executor.operation("fail")
    async def fail(payload: dict[str, Any]) -> Any:
        raise StepError(
            payload["message"],
            error_class=payload["error_class"],
            retry_after=payload.get("retry_after"),
        )

    @executor.operation("abort")
    async def abort(payload: dict[str, Any]) -> Any:
        raise Abort(
            grpc.StatusCode[payload["code"]], "scripted", retry_after=payload.get("retry_after")
        )

    @executor.operation("crash")
    async def crash(payload: Any) -> Any:
        raise ValueError("boom")

    @executor.operation("raw")
    async def raw(payload: dict[str, Any]) -> Any:
        return pb.TaskResponse(status=pb.TaskStatus.Value(payload["status"]))

    @executor.operation("slow")
    async def slow(payload: dict[str, Any]) -> Any:
        await asyncio.sleep(payload["seconds"])
        return {"slept": payload["seconds"]}

    @executor.operation("secure")
    async def secure(payload: Any, request: Request) -> Any:
        if request.headers.get("authorization") != "Bearer fresh":
            raise Abort(grpc.StatusCode.UNAUTHENTICATED, "token expired")
        return {"ok": True}

    @executor.operation("background.check", async_=True)
    async def background_check(payload: dict[str, Any]) -> Any:
        await executor.release.wait()  # type: ignore[attr-defined]
        if payload.get("fail"):
            raise StepError("record mismatch", error_class="PERMANENT")
        return {"status": "clear", "candidate": payload["candidate"]}

    return executor


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    executor = build_executor()
    async with executor.running() as address:
        executor.address = address  # type: ignore[attr-defined]
        yield executor


@pytest.fixture
async def connect(executor: Executor) -> AsyncIterator[Callable[..., GrpcConnector]]:
    made: list[GrpcConnector] = []

    def factory(**settings: Any) -> GrpcConnector:
        provider = settings.pop("provider", None)
        config = ServiceConfig.model_validate(
            {"name": "hr", "type": "grpc", "endpoint": executor.address, **settings}  # type: ignore[attr-defined]
        )
        connector = GrpcConnector(config, auth=provider)
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


@pytest.fixture
def connector(connect: Callable[..., GrpcConnector]) -> GrpcConnector:
    return connect()


# ---- success ------------------------------------------------------------------------------


async def test_it_is_a_connector(connector: GrpcConnector) -> None:
    assert isinstance(connector, Connector)
    assert connector.name == "hr"


async def test_json_payload_round_trip(connector: GrpcConnector) -> None:
    payload = {
        "name": "Ada",
        "age": 36,
        "salary": 1234.5,
        "active": True,
        "manager": None,
        "tags": ["a", 1, {"deep": [False]}],
    }
    result = await connector.execute(make_task("echo", payload))
    assert result.output == {"payload": payload, "attempt": 1}
    assert isinstance(result.output["payload"]["age"], int)


@pytest.mark.parametrize("payload", [[1, "two", None], "text", 7, None])
async def test_payloads_that_are_not_objects(connector: GrpcConnector, payload: Any) -> None:
    result = await connector.execute(make_task("echo", payload))
    assert result.output["payload"] == payload


async def test_input_that_is_not_json_is_a_validation_error(connector: GrpcConnector) -> None:
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("echo", {"when": datetime.now(UTC)}))
    assert caught.value.error_class is ErrorClass.VALIDATION


async def test_side_effects_cost_and_metadata(connector: GrpcConnector) -> None:
    result = await connector.execute(make_task("employee.create", {"name": "Ada"}))
    assert result.output == {"employeeId": "E-1", "name": "Ada"}
    assert result.side_effects == (
        {
            "effect_id": "E-1",
            "effect_type": "employee.created",
            "description": "HR record",
            "reversible": True,
            "compensation_method": "employee.delete",
        },
    )
    assert result.cost == {"currency": "USD", "amount": 0.25, "units": 1.0, "unit": "record"}
    assert result.metadata == {"region": "eu"}
    assert result.step_metadata()["side_effects"][0]["effect_id"] == "E-1"


async def test_the_server_receives_the_task_context(
    executor: Executor, connect: Callable[..., GrpcConnector]
) -> None:
    connector = connect(headers={"X-Team": "people"}, idempotency_header="X-Idem")
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    task = make_task(
        "echo",
        {"a": 1},
        attempt=3,
        correlation_id="corr-7",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        deadline=deadline,
        metadata={"source": "test"},
        tenant_id="acme",
        environment_id="prod",
    )
    result = await connector.execute(task)
    assert result.output["attempt"] == 3
    [seen] = executor.seen  # type: ignore[attr-defined]
    assert seen.task_id == "step-echo"
    assert seen.workflow_id == "run-1"
    assert seen.task_type == "echo"
    assert seen.idempotency_key == "run-1/echo"
    assert seen.correlation_id == "corr-7"
    assert seen.trace_parent == task.traceparent
    assert seen.metadata == {"source": "test"}
    assert (seen.tenant_id, seen.environment_id) == ("acme", "prod")
    assert seen.deadline is not None
    assert abs((seen.deadline - deadline).total_seconds()) < 0.001
    assert seen.headers["x-team"] == "people"
    assert seen.headers["x-idem"] == "run-1/echo"
    assert seen.headers["x-correlation-id"] == "corr-7"
    assert seen.headers["traceparent"] == task.traceparent
    assert seen.headers["user-agent"].startswith("legato-grpc/")


async def test_operations_can_be_renamed_for_the_service(
    executor: Executor, connect: Callable[..., GrpcConnector]
) -> None:
    connector = connect(operations={"employee.echo": {"task_type": "echo"}})
    result = await connector.execute(make_task("employee.echo", {"x": 1}))
    assert result.output["payload"] == {"x": 1}
    assert executor.seen[0].task_type == "echo"  # type: ignore[attr-defined]


async def test_one_channel_is_reused(connector: GrpcConnector) -> None:
    await connector.execute(make_task("echo", {}))
    first = list(connector._channels.values())
    await asyncio.gather(*(connector.execute(make_task("echo", {"n": n})) for n in range(20)))
    assert list(connector._channels.values()) == first
    assert len(first) == 1


# ---- failures reported in the response ----------------------------------------------------


@pytest.mark.parametrize("error_class", list(ErrorClass))
async def test_each_error_class_of_a_failed_response(
    connector: GrpcConnector, error_class: ErrorClass
) -> None:
    task = make_task("fail", {"message": "no such manager", "error_class": error_class.value})
    with pytest.raises(StepError) as caught:
        await connector.execute(task)
    assert caught.value.error_class is error_class
    assert "no such manager" in caught.value.message
    assert caught.value.details["status"] == "FAILED"


async def test_retry_after_of_a_failed_response(connector: GrpcConnector) -> None:
    task = make_task(
        "fail", {"message": "slow down", "error_class": "RATE_LIMITED", "retry_after": 1.2}
    )
    with pytest.raises(StepError) as caught:
        await connector.execute(task)
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert caught.value.retry_after == 2.0  # whole seconds on the wire, rounded up


@pytest.mark.parametrize(
    ("status", "expected"),
    [("FAILED", ErrorClass.PERMANENT), ("RETRY", ErrorClass.RETRYABLE)],
)
async def test_error_class_none_is_read_by_status(
    connector: GrpcConnector, status: str, expected: ErrorClass
) -> None:
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("raw", {"status": status}))
    assert caught.value.error_class is expected


@pytest.mark.parametrize("status", ["IN_PROGRESS", "PENDING", "COMPENSATED"])
async def test_a_status_a_sync_call_cannot_end_with(connector: GrpcConnector, status: str) -> None:
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("raw", {"status": status}))
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert caught.value.details["status"] == status


async def test_an_unexpected_exception_in_the_operation_is_retryable(
    connector: GrpcConnector, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("crash", {}))
    assert caught.value.error_class is ErrorClass.RETRYABLE
    assert "ValueError: boom" in caught.value.message


async def test_an_unknown_operation_is_permanent(connector: GrpcConnector) -> None:
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("employee.fly", {}))
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert "employee.create" in caught.value.message  # says what the service offers


# ---- gRPC status codes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("UNAVAILABLE", ErrorClass.RETRYABLE),
        ("ABORTED", ErrorClass.RETRYABLE),
        ("INTERNAL", ErrorClass.RETRYABLE),
        ("UNKNOWN", ErrorClass.RETRYABLE),
        ("RESOURCE_EXHAUSTED", ErrorClass.RATE_LIMITED),
        ("DEADLINE_EXCEEDED", ErrorClass.TIMEOUT),
        ("PERMISSION_DENIED", ErrorClass.AUTH_FAILED),
        ("INVALID_ARGUMENT", ErrorClass.VALIDATION),
        ("NOT_FOUND", ErrorClass.PERMANENT),
        ("UNIMPLEMENTED", ErrorClass.PERMANENT),
        ("FAILED_PRECONDITION", ErrorClass.PERMANENT),
    ],
)
async def test_grpc_status_codes_are_classified(
    connector: GrpcConnector, code: str, expected: ErrorClass
) -> None:
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("abort", {"code": code}))
    assert caught.value.error_class is expected
    assert caught.value.details["grpc_status"] == code
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)


async def test_resource_exhausted_carries_retry_after(connector: GrpcConnector) -> None:
    with pytest.raises(StepError) as caught:
        await connector.execute(
            make_task("abort", {"code": "RESOURCE_EXHAUSTED", "retry_after": 3})
        )
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert caught.value.retry_after == 3.0


# ---- auth ----------------------------------------------------------------------------------


class RotatingAuth:
    """A token that is stale until refreshed (or forever, with ``heals=False``)."""

    def __init__(self, *, heals: bool = True) -> None:
        self.heals = heals
        self.token = "stale"
        self.refreshes = 0

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def refresh(self) -> None:
        self.refreshes += 1
        if self.heals:
            self.token = "fresh"

    def ssl_context(self) -> Any:
        return None


async def test_unauthenticated_refreshes_once_and_retries(
    connect: Callable[..., GrpcConnector],
) -> None:
    auth = RotatingAuth()
    connector = connect(provider=auth)
    assert (await connector.execute(make_task("secure", {}))).output == {"ok": True}
    assert auth.refreshes == 1
    assert (await connector.execute(make_task("secure", {}))).output == {"ok": True}
    assert auth.refreshes == 1  # the fresh token is used from then on


async def test_unauthenticated_after_refresh_is_auth_failed(
    connect: Callable[..., GrpcConnector],
) -> None:
    auth = RotatingAuth(heals=False)
    connector = connect(provider=auth)
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("secure", {}))
    assert caught.value.error_class is ErrorClass.AUTH_FAILED
    assert caught.value.details["refreshed"] is True
    assert auth.refreshes == 1


async def test_oauth2_token_is_renewed_after_unauthenticated(
    connect: Callable[..., GrpcConnector],
) -> None:
    from legato import NetworkPolicy
    from legato.connectors.auth import build_auth
    from legato.connectors.config import OAuth2Auth
    from legato.mock import MockService

    tokens = iter(["stale", "fresh", "unexpected"])
    issuer = MockService("issuer")
    issuer.operation("token", path="/oauth/token").respond(
        lambda request: {"access_token": next(tokens), "expires_in": 3600}
    )
    with issuer.http() as url:
        config = OAuth2Auth(
            type="oauth2", client_id="hr", client_secret="s3cret", token_url=f"{url}/oauth/token"
        )
        provider: Any = build_auth(config, NetworkPolicy(allow_private=True))
        try:
            connector = connect(provider=provider)
            assert (await connector.execute(make_task("secure", {}))).output == {"ok": True}
            assert (await connector.execute(make_task("secure", {}))).output == {"ok": True}
        finally:
            await provider.aclose()
    assert provider.fetches == 2  # the stale token, then one fresh one, kept after
    assert len(issuer.calls("token")) == 2


# ---- timeouts ------------------------------------------------------------------------------


async def test_request_timeout_is_timeout(connect: Callable[..., GrpcConnector]) -> None:
    connector = connect(timeout={"request": "200ms"})
    started = asyncio.get_running_loop().time()
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("slow", {"seconds": 5}))
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert caught.value.details["grpc_status"] == "DEADLINE_EXCEEDED"
    assert asyncio.get_running_loop().time() - started < 2


async def test_the_task_deadline_bounds_the_call(connector: GrpcConnector) -> None:
    task = make_task("slow", {"seconds": 5}, deadline=datetime.now(UTC) + timedelta(seconds=0.2))
    with pytest.raises(StepError) as caught:
        await connector.execute(task)
    assert caught.value.error_class is ErrorClass.TIMEOUT


async def test_a_passed_deadline_is_timeout_without_a_call(
    executor: Executor, connector: GrpcConnector
) -> None:
    task = make_task("echo", {}, deadline=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(StepError) as caught:
        await connector.execute(task)
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert executor.seen == []  # type: ignore[attr-defined]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connect_timeout_is_timeout() -> None:
    config = ServiceConfig.model_validate(
        {
            "name": "down",
            "type": "grpc",
            "endpoint": f"127.0.0.1:{_closed_port()}",
            "timeout": {"connect": "300ms"},
        }
    )
    async with GrpcConnector(config) as connector:
        with pytest.raises(StepError) as caught:
            await connector.execute(make_task("echo", {}))
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert caught.value.details["phase"] == "connect"


async def test_a_service_that_went_away_is_retryable(connect: Callable[..., GrpcConnector]) -> None:
    executor = build_executor()
    address = f"127.0.0.1:{await executor.serve()}"
    connector = connect(endpoint=address, timeout={"connect": "300ms"})
    await connector.execute(make_task("echo", {}))
    await executor.stop()
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("echo", {}))
    assert caught.value.error_class in (ErrorClass.RETRYABLE, ErrorClass.TIMEOUT)
    assert caught.value.retryable


# ---- batch, async, stream ------------------------------------------------------------------


async def test_batch(executor: Executor, connector: GrpcConnector) -> None:
    tasks = [
        make_task("echo", {"n": 1}, task_id="a", idempotency_key="k-a"),
        make_task("fail", {"message": "bad", "error_class": "VALIDATION"}, task_id="b"),
        make_task("echo", {"when": datetime.now(UTC)}, task_id="c"),  # not JSON
        make_task("employee.create", {"name": "Bo"}, task_id="d"),
    ]
    outcomes = await connector.execute_batch(tasks)
    assert len(outcomes) == 4
    first, second, third, fourth = outcomes
    assert isinstance(first, Result)
    assert first.output == {"payload": {"n": 1}, "attempt": 1}
    assert isinstance(second, StepError)
    assert second.error_class is ErrorClass.VALIDATION
    assert isinstance(third, StepError)
    assert third.error_class is ErrorClass.VALIDATION
    assert isinstance(fourth, Result)
    assert fourth.side_effects[0]["effect_id"] == "E-1"
    assert [r.idempotency_key for r in executor.seen] == ["k-a"]  # type: ignore[attr-defined]


async def test_batch_larger_than_the_service_takes(connector: GrpcConnector) -> None:
    tasks = [make_task("echo", {"n": n}, task_id=f"t{n}") for n in range(11)]
    outcomes = await connector.execute_batch(tasks)
    assert all(isinstance(o, StepError) for o in outcomes)
    assert {o.error_class for o in outcomes if isinstance(o, StepError)} == {ErrorClass.VALIDATION}


async def test_empty_batch(connector: GrpcConnector) -> None:
    assert await connector.execute_batch([]) == []


async def test_async_start_and_check_status(executor: Executor, connector: GrpcConnector) -> None:
    task = make_task("background.check", {"candidate": "Ada"})
    started = await connector.start_async(task, callback_token="cb-123")
    assert started.operation_id
    assert started.metadata["task_status"] == "IN_PROGRESS"
    assert await connector.check_status(task, started.operation_id) is None
    executor.release.set()  # type: ignore[attr-defined]
    for _ in range(100):
        done = await connector.check_status(task, started.operation_id)
        if done is not None:
            break
        await asyncio.sleep(0.02)
    assert done is not None
    assert done.output == {"status": "clear", "candidate": "Ada"}
    assert done.operation_id == started.operation_id


async def test_async_failure_and_unknown_operation(
    executor: Executor, connector: GrpcConnector
) -> None:
    executor.release.set()  # type: ignore[attr-defined]
    task = make_task("background.check", {"candidate": "Bo", "fail": True})
    started = await connector.start_async(task, callback_token="cb")
    assert started.operation_id is not None

    async def poll_until_done() -> None:
        for _ in range(100):
            await connector.check_status(task, started.operation_id)
            await asyncio.sleep(0.02)

    with pytest.raises(StepError) as caught:
        await poll_until_done()
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert "record mismatch" in caught.value.message
    with pytest.raises(StepError) as unknown:
        await connector.check_status(task, "op-nobody")
    assert unknown.value.details["grpc_status"] == "NOT_FOUND"


async def test_async_start_sends_the_callback_token(
    executor: Executor, connector: GrpcConnector
) -> None:
    await connector.start_async(make_task("echo", {"x": 1}), callback_token="cb-9")
    [seen] = executor.seen  # type: ignore[attr-defined]
    assert seen.is_async
    assert seen.callback_token == "cb-9"


async def test_async_start_of_a_service_that_finished_at_once(connector: GrpcConnector) -> None:
    started = await connector.start_async(make_task("echo", {"x": 1}), callback_token="cb")
    assert started.metadata["task_status"] == "COMPLETED"
    assert started.output == {"payload": {"x": 1}, "attempt": 1}


async def test_stream(connector: GrpcConnector) -> None:
    tasks = [
        make_task("echo", {"n": 1}, task_id="s1"),
        make_task("fail", {"message": "nope", "error_class": "PERMANENT"}, task_id="s2"),
        make_task("employee.create", {"name": "Cy"}, task_id="s3"),
    ]
    outcomes = [o async for o in connector.stream(tasks)]
    assert isinstance(outcomes[0], Result)
    assert outcomes[0].output["payload"] == {"n": 1}
    assert isinstance(outcomes[1], StepError)
    assert outcomes[1].error_class is ErrorClass.PERMANENT
    assert isinstance(outcomes[2], Result)
    assert outcomes[2].output["name"] == "Cy"


async def test_stream_from_an_async_source(connector: GrpcConnector) -> None:
    async def source() -> AsyncIterator[Task]:
        for n in range(5):
            await asyncio.sleep(0.01)
            yield make_task("echo", {"n": n}, task_id=f"s{n}")

    outcomes = [o async for o in connector.stream(source())]
    assert [o.output["payload"]["n"] for o in outcomes if isinstance(o, Result)] == list(range(5))


# ---- health and capabilities ----------------------------------------------------------------


async def test_health_check(executor: Executor, connector: GrpcConnector) -> None:
    await connector.health_check()
    executor.set_health("DEGRADED", "one replica")
    await connector.health_check()
    executor.set_health("NOT_SERVING", "maintenance")
    with pytest.raises(StepError) as caught:
        await connector.health_check()
    assert caught.value.error_class is ErrorClass.RETRYABLE
    assert "maintenance" in caught.value.message


async def test_capabilities(connect: Callable[..., GrpcConnector]) -> None:
    connector = connect(capabilities=["employee.create", "echo"])
    assert connector.capabilities() == {"employee.create", "echo"}
    remote = await connector.fetch_capabilities()
    assert remote.service_name == "hr"
    assert remote.version == "2.1"
    assert {"echo", "employee.create", "background.check"} <= remote.operations
    assert remote.async_operations == {"background.check"}
    assert remote.supports_batch
    assert remote.supports_streaming
    assert remote.max_batch_size == 10
    assert remote.metadata == {"team": "people"}


# ---- dedup -----------------------------------------------------------------------------------


async def test_executor_dedup_by_idempotency_key(connect: Callable[..., GrpcConnector]) -> None:
    executor = Executor(name="pay", dedup=True)
    charges: list[Any] = []

    @executor.operation("charge")
    async def charge(payload: dict[str, Any]) -> Any:
        charges.append(payload)
        if payload.get("flaky") and len(charges) == 1:
            raise StepError("try again", error_class="RETRYABLE")
        return {"charge": len(charges)}

    async with executor.running() as address:
        connector = connect(endpoint=address)
        first = await connector.execute(make_task("charge", {"amount": 5}, idempotency_key="k1"))
        again = await connector.execute(make_task("charge", {"amount": 5}, idempotency_key="k1"))
        other = await connector.execute(make_task("charge", {"amount": 5}, idempotency_key="k2"))
        concurrent = await asyncio.gather(
            *(
                connector.execute(make_task("charge", {"amount": 1}, idempotency_key="k3"))
                for _ in range(5)
            )
        )
    assert first.output == again.output == {"charge": 1}
    assert again.metadata["replayed"] == "true"
    assert other.output == {"charge": 2}
    assert {r.output["charge"] for r in concurrent} == {3}
    assert len(charges) == 3


async def test_executor_dedup_does_not_keep_retryable_failures(
    connect: Callable[..., GrpcConnector],
) -> None:
    executor = Executor(name="pay", dedup=True)
    calls: list[int] = []

    @executor.operation("charge")
    async def charge(payload: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise StepError("try again", error_class="RETRYABLE")
        return {"ok": True}

    async with executor.running() as address:
        connector = connect(endpoint=address)
        with pytest.raises(StepError):
            await connector.execute(make_task("charge", {}, idempotency_key="k"))
        assert (await connector.execute(make_task("charge", {}, idempotency_key="k"))).output
    assert len(calls) == 2


# ---- TLS -------------------------------------------------------------------------------------


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


async def test_mtls(certificates: Path, connect: Callable[..., GrpcConnector]) -> None:
    executor = build_executor()
    credentials = grpc.ssl_server_credentials(
        [((certificates / "server.key").read_bytes(), (certificates / "server.pem").read_bytes())],
        root_certificates=(certificates / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    async with executor.running(host="localhost", credentials=credentials) as address:
        port = address.rsplit(":", 1)[1]
        connector = connect(
            endpoint=f"grpcs://localhost:{port}",
            auth={
                "type": "mtls",
                "cert": str(certificates / "client.pem"),
                "key": str(certificates / "client.key"),
                "ca": str(certificates / "ca.pem"),
            },
        )
        result = await connector.execute(make_task("echo", {"secure": True}))
        assert result.output["payload"] == {"secure": True}
        plaintext = connect(endpoint=f"grpc://localhost:{port}", timeout={"connect": "300ms"})
        with pytest.raises(StepError) as caught:
            await plaintext.execute(make_task("echo", {}))
        assert caught.value.retryable  # a plaintext client cannot reach a TLS server
