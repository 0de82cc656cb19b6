"""NatsConnector against a real NATS server on loopback, with MqExecutor (or a raw nats-py
subscriber) on the other end: round trips, correlation under concurrency, every error
class, no responders, timeouts, what the service receives, batch, async start + status,
health, and that closing leaves no connection behind.

Needs nats-server on 127.0.0.1:4222, or ``LEGATO_TEST_NATS_URL``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import pytest

from legato import ErrorClass, StepError
from legato.connectors.auth import build_auth
from legato.connectors.base import Connector, Result, Task
from legato.connectors.config import ApiKeyAuth, Registry, ServiceConfig
from legato.connectors.hub import Connectors
from legato.connectors.nats import NatsConnector
from legato.errors import ConfigurationError, UsageError
from legato.mq_executor import MqExecutor, Request

NATS_URL = os.environ.get("LEGATO_TEST_NATS_URL", "nats://127.0.0.1:4222")
_PARTS = urlsplit(NATS_URL)
NATS_HOST = _PARTS.hostname or "127.0.0.1"
NATS_PORT = _PARTS.port or 4222


# ---- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_url() -> str:
    """The server's URL; FAILS (never skips) when NATS is not reachable."""
    try:
        socket.create_connection((NATS_HOST, NATS_PORT), timeout=3).close()
    except OSError as exc:
        pytest.fail(
            f"NATS is not reachable at {NATS_HOST}:{NATS_PORT} ({exc}). Start it: "
            "`nats-server -a 127.0.0.1 -p 4222 -js &` (or `sudo service nats-server start`), "
            "or `docker run -d --name legato-nats -p 4222:4222 nats:2 -js`; or point "
            "LEGATO_TEST_NATS_URL at a server (nats://host:port).",
            pytrace=False,
        )
    return NATS_URL


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:12]


def make_config(nats_url: str, uid: str, **fields: Any) -> ServiceConfig:
    data: dict[str, Any] = {
        "name": f"it-{uid}",
        "type": "nats",
        "endpoint": nats_url,
        "timeout": {"connect": 5, "request": 5},
    }
    data.update(fields)
    return ServiceConfig.model_validate(data)


def make_task(operation: str, input: Any = None, **fields: Any) -> Task:
    defaults: dict[str, Any] = {
        "task_id": f"step-{operation}",
        "run_id": "run-1",
        "workflow": "it_onboarding",
        "service": "it",
        "idempotency_key": f"run-1/{operation}/{uuid.uuid4().hex[:8]}",
        "correlation_id": "run-1:step",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    return Task(operation=operation, input=input, **{**defaults, **fields})


class Service:
    """An MqExecutor with the operations the tests call, and what it saw."""

    def __init__(self, *, dedup: bool = False) -> None:
        self.seen: list[Request] = []
        self.calls: dict[str, int] = {}
        self.release = asyncio.Event()
        self.executor = MqExecutor(
            {
                "echo": self.echo,
                "provision": self.provision,
                "fail": self.fail,
                "crash": self.crash,
                "hang": self.hang,
                "slow_echo": self.slow_echo,
                "long": self.long,
            },
            name="it",
            dedup=dedup,
        )

    async def echo(self, payload: Any, request: Request) -> Any:
        self.seen.append(request)
        self.calls["echo"] = self.calls.get("echo", 0) + 1
        return {"payload": payload, "attempt": request.attempt}

    def provision(self, payload: dict[str, Any]) -> Any:  # sync: runs on a worker thread
        return MqExecutor.result(
            {"account": f"acct-{payload['user']}"},
            side_effects=[
                {
                    "effect_id": f"acct-{payload['user']}",
                    "effect_type": "account.created",
                    "description": "directory account",
                    "reversible": True,
                    "compensation_method": "accounts.delete",
                }
            ],
            cost={"currency": "USD", "amount": 0.25},
            metadata={"region": "eu"},
        )

    async def fail(self, payload: dict[str, Any]) -> Any:
        raise StepError(
            payload["message"],
            error_class=payload["error_class"],
            retry_after=payload.get("retry_after"),
        )

    async def crash(self, payload: Any) -> Any:
        raise RuntimeError("disk on fire")

    async def hang(self, payload: Any) -> Any:
        await self.release.wait()
        return {"late": True}

    async def slow_echo(self, payload: Any, request: Request) -> Any:
        await asyncio.sleep(random.uniform(0, 0.05))
        return {"payload": payload, "correlation": request.headers.get("correlation-id")}

    async def long(self, payload: dict[str, Any], request: Request) -> Any:
        self.seen.append(request)
        await self.release.wait()
        if payload.get("fail"):
            raise StepError("the directory refused", error_class="VALIDATION")
        return {"account": payload["user"]}


OPERATIONS = ("echo", "provision", "fail", "crash", "hang", "slow_echo", "long", "operation.status")


def routes(uid: str) -> dict[str, str]:
    """operation -> this test's subject."""
    return {op: f"legato-test.{uid}.{op}" for op in OPERATIONS}


@pytest.fixture
async def service(nats_url: str, uid: str) -> AsyncIterator[Service]:
    service = Service()
    async with service.executor.serve_nats(nats_url, subjects=routes(uid)):
        yield service
    service.release.set()


@pytest.fixture
def config(nats_url: str, uid: str) -> ServiceConfig:
    return make_config(
        nats_url,
        uid,
        operations={op: {"subject": subject} for op, subject in routes(uid).items()},
        **{"async": {"status_operation": "operation.status", "poll_interval": 0.1}},
    )


@pytest.fixture
async def connector(config: ServiceConfig) -> AsyncIterator[NatsConnector]:
    connector = NatsConnector(config)
    yield connector
    await connector.aclose()


@pytest.fixture
async def raw(nats_url: str) -> AsyncIterator[Any]:
    """A plain nats-py client, for hand-written services."""
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


# ---- sockets as the kernel sees them (server side included: the server is on loopback) --


def _tcp_rows() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every TCP socket in this namespace."""
    rows: list[tuple[int, int, str, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            rows.append(
                (
                    int(local.rsplit(":", 1)[1], 16),
                    int(remote.rsplit(":", 1)[1], 16),
                    state,
                    int(inode),
                )
            )
    return rows


def _own_socket_inodes() -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list(Path("/proc/self/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


_ESTABLISHED = "01"
HAVE_PROC = Path("/proc/net/tcp").exists()


def client_ports(server_port: int) -> set[int]:
    """Local ports of this process's open connections to ``server_port``."""
    own = _own_socket_inodes()
    return {
        local
        for local, remote, state, inode in _tcp_rows()
        if remote == server_port and state == _ESTABLISHED and inode in own
    }


def server_side(server_port: int, ports: set[int]) -> set[int]:
    """The client ports among ``ports`` that the server still has an open connection to."""
    return {
        remote
        for local, remote, state, _ in _tcp_rows()
        if local == server_port and remote in ports and state == _ESTABLISHED
    }


async def eventually(check: Callable[[], bool], *, within: float = 5.0) -> bool:
    give_up = time.monotonic() + within
    while time.monotonic() < give_up:
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Proxy:
    """A TCP relay to the server whose connections the test can cut: a lost connection
    (the relay keeps listening, so the client can reconnect)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Drop every relayed connection at once, both ends."""
        links, self._links = self._links, []
        for writer in links:
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            self._links += [writer, up_writer]
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()


# ---- round trips ----------------------------------------------------------------------------


async def test_round_trip_with_side_effects_cost_and_metadata(
    service: Service, connector: NatsConnector
) -> None:
    assert isinstance(connector, Connector)
    result = await connector.execute(make_task("provision", {"user": "ada"}))
    assert result == Result(
        output={"account": "acct-ada"},
        side_effects=(
            {
                "effect_id": "acct-ada",
                "effect_type": "account.created",
                "description": "directory account",
                "reversible": True,
                "compensation_method": "accounts.delete",
            },
        ),
        cost={"currency": "USD", "amount": 0.25},
        metadata={"region": "eu"},
    )
    echoed = await connector.execute(make_task("echo", [1, "two", None, {"x": 1.5}], attempt=3))
    assert echoed.output == {"payload": [1, "two", None, {"x": 1.5}], "attempt": 3}
    assert connector.is_connected


async def test_default_subject_is_the_operation_name(nats_url: str, uid: str) -> None:
    operation = f"legato-test.{uid}.accounts.provision"
    executor = MqExecutor({operation: lambda payload: {"got": payload}})
    async with (
        executor.serve_nats(nats_url),  # one subject per handler, named after it
        NatsConnector(make_config(nats_url, uid)) as connector,
    ):
        assert connector.subject(operation) == operation
        result = await connector.execute(make_task(operation, {"user": "bo"}))
    assert result.output == {"got": {"user": "bo"}}


async def test_the_subject_string_shorthand(nats_url: str, uid: str) -> None:
    subject = f"legato-test.{uid}.short"
    executor = MqExecutor({"accounts.provision": lambda payload: payload * 2})
    async with executor.serve_nats(nats_url, subjects=[subject]):
        config = make_config(nats_url, uid, operations={"accounts.provision": subject})
        async with NatsConnector(config) as connector:
            result = await connector.execute(make_task("accounts.provision", 21))
    assert result.output == 42


# ---- correlation --------------------------------------------------------------------------


async def test_fifty_concurrent_requests_each_get_their_own_reply(
    service: Service, connector: NatsConnector
) -> None:
    tasks = [
        make_task("slow_echo", {"n": n, "blob": uuid.uuid4().hex}, correlation_id=f"run-1:step-{n}")
        for n in range(50)
    ]
    results = await asyncio.gather(*(connector.execute(t) for t in tasks))
    for task, result in zip(tasks, results, strict=True):
        assert result.output == {"payload": task.input, "correlation": task.correlation_id}


async def test_a_late_reply_does_not_answer_another_call(
    service: Service, nats_url: str, uid: str
) -> None:
    config = make_config(
        nats_url,
        uid,
        timeout={"connect": 5, "request": 0.5},
        operations={op: {"subject": s} for op, s in routes(uid).items()},
    )
    async with NatsConnector(config) as connector:
        started = time.monotonic()
        with pytest.raises(StepError) as caught:
            await connector.execute(make_task("hang", None))
        assert caught.value.error_class is ErrorClass.TIMEOUT
        assert time.monotonic() - started < 3
        assert caught.value.details["subject"] == routes(uid)["hang"]
        service.release.set()  # the hung call now answers, too late
        await asyncio.sleep(0.2)
        result = await connector.execute(make_task("echo", "mine"))
        assert result.output == {"payload": "mine", "attempt": 1}


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_class", "retry_after", "expected_retry_after"),
    [
        ("RETRYABLE", None, None),
        ("PERMANENT", None, None),
        ("RATE_LIMITED", 2.2, 3.0),  # whole seconds on the wire, rounded up
        ("AUTH_FAILED", None, None),
        ("VALIDATION", None, None),
        ("TIMEOUT", 4, 4.0),
    ],
)
async def test_every_error_class_of_a_failed_reply(
    service: Service,
    connector: NatsConnector,
    error_class: str,
    retry_after: float | None,
    expected_retry_after: float | None,
) -> None:
    payload = {"message": f"scripted {error_class}", "error_class": error_class}
    if retry_after is not None:
        payload["retry_after"] = retry_after
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("fail", payload))
    error = caught.value
    assert error.error_class == ErrorClass(error_class)
    assert error.retry_after == expected_retry_after
    assert f"scripted {error_class}" in error.message
    assert error.details["status"] == "FAILED"
    assert error.details["operation"] == "fail"


async def test_an_unexpected_exception_is_retryable(
    service: Service, connector: NatsConnector, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("crash"))
    assert caught.value.error_class is ErrorClass.RETRYABLE
    assert "RuntimeError: disk on fire" in caught.value.message


async def test_replies_that_are_not_results(nats_url: str, uid: str, raw: Any) -> None:
    subject = f"legato-test.{uid}.raw"

    async def answer(message: Any) -> None:
        script = json.loads(message.data)["payload"]
        body = script if isinstance(script, str) else json.dumps(script)
        await raw.publish(message.reply, body.encode())

    await raw.subscribe(subject, cb=answer)
    await raw.flush()
    config = make_config(nats_url, uid, operations={"raw": {"subject": subject}})
    cases: list[tuple[Any, ErrorClass, str]] = [
        ({"status": "FAILED", "error_message": "no class"}, ErrorClass.PERMANENT, "no class"),
        ({"status": "FAILED", "error_class": "NONE"}, ErrorClass.PERMANENT, "answered FAILED"),
        ({"status": "RETRY", "retry_after_seconds": 9}, ErrorClass.RETRYABLE, "answered RETRY"),
        ({"status": "FAILED", "error_class": "BOGUS"}, ErrorClass.PERMANENT, "answered FAILED"),
        ({"status": "IN_PROGRESS"}, ErrorClass.PERMANENT, "async: true"),
        ({"status": "COMPENSATED"}, ErrorClass.PERMANENT, "cannot end with"),
        ("not json at all", ErrorClass.PERMANENT, "not JSON"),
        ([1, 2], ErrorClass.PERMANENT, "not a Legato reply envelope"),
    ]
    async with NatsConnector(config) as connector:
        for script, error_class, text in cases:
            with pytest.raises(StepError) as caught:
                await connector.execute(make_task("raw", script))
            assert caught.value.error_class is error_class, script
            assert text in caught.value.message, (script, caught.value.message)
        with pytest.raises(StepError) as caught:
            await connector.execute(make_task("raw", {"status": "RETRY", "retry_after_seconds": 9}))
        assert caught.value.retry_after == 9.0
        done = await connector.execute(make_task("raw", {"status": "completed", "result": 5}))
        assert done.output == 5


async def test_no_responders_is_retryable_at_once(
    nats_url: str, uid: str, connector: NatsConnector
) -> None:
    started = time.monotonic()
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("echo", 1))  # nobody subscribes
    assert time.monotonic() - started < 2  # the server said so, no timeout
    error = caught.value
    assert error.error_class is ErrorClass.RETRYABLE
    assert f"no service is listening on subject 'legato-test.{uid}.echo'" in error.message
    assert error.details["exception"] == "NoRespondersError"


async def test_a_service_that_never_answers_times_out(nats_url: str, uid: str, raw: Any) -> None:
    subject = f"legato-test.{uid}.silent"
    received: list[Any] = []

    async def swallow(message: Any) -> None:
        received.append(message)  # and never answer

    await raw.subscribe(subject, cb=swallow)
    await raw.flush()
    config = make_config(
        nats_url,
        uid,
        timeout={"connect": 5, "request": 0.4},
        operations={"silent": {"subject": subject}},
    )
    async with NatsConnector(config) as connector:
        started = time.monotonic()
        with pytest.raises(StepError) as caught:
            await connector.execute(make_task("silent", 1))
        elapsed = time.monotonic() - started
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert "no reply on subject" in caught.value.message
    assert 0.35 < elapsed < 3
    assert caught.value.details["timeout"] == pytest.approx(0.4)
    assert len(received) == 1


async def test_a_passed_deadline_input_that_is_not_json_and_oversized_input_are_not_sent(
    service: Service, connector: NatsConnector
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("echo", 1, deadline=past))
    assert caught.value.error_class is ErrorClass.TIMEOUT
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("echo", {"when": datetime.now(UTC)}))
    assert caught.value.error_class is ErrorClass.VALIDATION
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("echo", "x" * (2 * 1024 * 1024)))
    assert caught.value.error_class is ErrorClass.VALIDATION
    assert "the server takes at most" in caught.value.message
    assert service.seen == []


async def test_an_unreachable_server_is_retryable_at_once(nats_url: str, uid: str) -> None:
    config = make_config(nats_url, uid, endpoint=f"nats://127.0.0.1:{free_port()}")
    async with NatsConnector(config) as connector:
        started = time.monotonic()
        with pytest.raises(StepError) as caught:
            await connector.execute(make_task("echo", 1))
        assert time.monotonic() - started < 3  # the first failure, not timeout.connect
        assert caught.value.error_class is ErrorClass.RETRYABLE
        assert caught.value.details["phase"] == "connect"
        with pytest.raises(StepError):
            await connector.health_check()


@pytest.fixture
def private_server() -> Iterator[str]:
    """A nats-server of our own that wants a user and password (for refusals)."""
    binary = shutil.which("nats-server")
    if binary is None:
        pytest.skip("nats-server is not on PATH: the credentials test starts its own server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "--user", "legato", "--pass", "s3cret"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        give_up = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > give_up or process.poll() is not None:
                    pytest.fail(f"the private nats-server on port {port} did not start")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_refused_credentials_are_auth_failed(
    nats_url: str, uid: str, private_server: str
) -> None:
    config = make_config(nats_url, uid, endpoint=f"nats://legato:wrong@{private_server}")
    async with NatsConnector(config) as connector:
        started = time.monotonic()
        with pytest.raises(StepError) as caught:
            await connector.execute(make_task("echo", 1))
        assert time.monotonic() - started < 3
    assert caught.value.error_class is ErrorClass.AUTH_FAILED
    assert "wrong" not in caught.value.message  # no password in messages

    executor = MqExecutor({"echo": lambda payload: payload})
    async with executor.serve_nats(f"nats://legato:s3cret@{private_server}", subjects=["echo"]):
        good = make_config(nats_url, uid, endpoint=f"nats://legato:s3cret@{private_server}")
        async with NatsConnector(good) as connector:
            assert (await connector.execute(make_task("echo", "in"))).output == "in"


# ---- what the service receives ------------------------------------------------------------


async def test_the_service_receives_the_idempotency_key_traceparent_and_headers(
    service: Service, nats_url: str, uid: str
) -> None:
    config = make_config(
        nats_url,
        uid,
        headers={"X-Team": "it"},
        operations={op: {"subject": s} for op, s in routes(uid).items()},
    )
    auth = build_auth(ApiKeyAuth(type="api_key", header="X-Api-Key", value="k-123"))
    task = make_task(
        "echo",
        {"user": "cy"},
        idempotency_key="run-7/step-3",
        correlation_id="run-7:step-3",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        metadata={"tenant_region": "eu"},
        attempt=2,
        tenant_id="acme",
        environment_id="prod",
        deadline=datetime.now(UTC) + timedelta(minutes=5),
    )
    async with NatsConnector(config, auth=auth) as connector:
        await connector.execute(task)
    (seen,) = service.seen
    assert seen.idempotency_key == "run-7/step-3"
    assert seen.headers["idempotency-key"] == "run-7/step-3"
    assert seen.trace_parent == task.traceparent
    assert seen.headers["traceparent"] == task.traceparent
    assert seen.correlation_id == "run-7:step-3"
    assert seen.headers["correlation-id"] == "run-7:step-3"
    assert seen.headers["x-team"] == "it"
    assert seen.headers["x-api-key"] == "k-123"
    assert seen.metadata == {"tenant_region": "eu"}
    assert (seen.task_id, seen.workflow_id, seen.workflow) == (
        "step-echo",
        "run-1",
        "it_onboarding",
    )
    assert (seen.attempt, seen.tenant_id, seen.environment_id) == (2, "acme", "prod")
    assert seen.deadline == task.deadline
    assert seen.is_async is False
    assert seen.callback_token is None


async def test_the_raw_message(nats_url: str, uid: str, raw: Any) -> None:
    subject = f"legato-test.{uid}.props"
    got: list[Any] = []

    async def answer(message: Any) -> None:
        got.append(message)
        await raw.publish(message.reply, b'{"status": "COMPLETED", "result": 1}')

    await raw.subscribe(subject, cb=answer)
    await raw.flush()
    config = make_config(
        nats_url, uid, idempotency_header="X-Idempotency", operations={"props": subject}
    )
    async with NatsConnector(config) as connector:
        await connector.execute(make_task("props", 1, idempotency_key="key-9"))
        await connector.execute(make_task("props", 2, idempotency_key="key-10"))
    first, second = got
    assert first.headers["X-Idempotency"] == "key-9"
    assert first.headers["Correlation-Id"] == "run-1:step"
    assert first.headers["traceparent"].startswith("00-")
    assert first.reply
    assert second.reply
    assert first.reply != second.reply
    envelope = json.loads(first.data)
    assert envelope["task_type"] == "props"
    assert envelope["idempotency_key"] == "key-9"
    assert envelope["payload"] == 1


# ---- batch, async, dedup ------------------------------------------------------------------


async def poll(connector: NatsConnector, task: Task, operation_id: str) -> Result:
    """check_status until the operation has an outcome (its StepError is raised)."""
    for _ in range(100):
        result = await connector.check_status(task, operation_id)
        if result is not None:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"operation {operation_id} still runs")


async def test_batch_gives_one_outcome_per_task_in_order(
    service: Service, connector: NatsConnector
) -> None:
    tasks = [make_task("echo", n) for n in range(5)]
    tasks.insert(2, make_task("fail", {"message": "bad row", "error_class": "VALIDATION"}))
    outcomes = await connector.execute_batch(tasks)
    assert len(outcomes) == 6
    assert isinstance(outcomes[2], StepError)
    assert outcomes[2].error_class is ErrorClass.VALIDATION
    values = [o.output["payload"] for o in outcomes if isinstance(o, Result)]
    assert values == [0, 1, 2, 3, 4]
    assert await connector.execute_batch([]) == []


async def test_async_start_then_check_status(service: Service, connector: NatsConnector) -> None:
    task = make_task("long", {"user": "di"})
    ack = await connector.start_async(task, "callback-token-1")
    assert ack.operation_id
    assert ack.operation_id.startswith("op-")
    assert ack.metadata["task_status"] == "IN_PROGRESS"
    (seen,) = service.seen
    assert seen.is_async is True
    assert seen.callback_token == "callback-token-1"

    assert await connector.check_status(task, ack.operation_id) is None
    service.release.set()
    result = await poll(connector, task, ack.operation_id)
    assert result.output == {"account": "di"}
    assert result.operation_id == ack.operation_id

    failing = make_task("long", {"user": "ed", "fail": True})
    ack = await connector.start_async(failing, "callback-token-2")
    with pytest.raises(StepError) as caught:
        await poll(connector, failing, ack.operation_id)
    assert caught.value.error_class is ErrorClass.VALIDATION

    with pytest.raises(StepError) as caught:
        await connector.check_status(task, "op-unknown")
    assert caught.value.error_class is ErrorClass.PERMANENT


async def test_check_status_needs_a_status_operation(nats_url: str, uid: str) -> None:
    async with NatsConnector(make_config(nats_url, uid)) as connector:
        with pytest.raises(StepError) as caught:
            await connector.check_status(make_task("long"), "op-1")
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert "status_operation" in caught.value.message


async def test_the_executor_deduplicates_by_idempotency_key(nats_url: str, uid: str) -> None:
    service = Service(dedup=True)
    async with service.executor.serve_nats(nats_url, subjects=routes(uid)):
        config = make_config(
            nats_url, uid, operations={op: {"subject": s} for op, s in routes(uid).items()}
        )
        async with NatsConnector(config) as connector:
            first = await connector.execute(make_task("echo", 1, idempotency_key="same"))
            again = await connector.execute(make_task("echo", 1, idempotency_key="same"))
            other = await connector.execute(make_task("echo", 2, idempotency_key="other"))
    assert service.calls["echo"] == 2
    assert first.output == again.output
    assert again.metadata == {"replayed": "true"}
    assert other.output["payload"] == 2


# ---- through the hub ----------------------------------------------------------------------


async def test_through_the_connector_hub(service: Service, config: ServiceConfig) -> None:
    registry = Registry(services=(config,))
    async with Connectors(registry) as hub:
        result = await hub.execute(
            make_task("echo", "via hub", service=config.name, correlation_id="", traceparent="")
        )
        await hub.health_check(config.name)
    assert result.output["payload"] == "via hub"
    (seen,) = service.seen
    assert seen.correlation_id == "run-1:step-echo"  # set by the hub
    assert seen.trace_parent.startswith("00-")


# ---- health and closing -------------------------------------------------------------------


async def test_health_and_aclose_leave_no_connection(
    service: Service, config: ServiceConfig
) -> None:
    before = client_ports(NATS_PORT)
    connector = NatsConnector(config)
    await connector.health_check()
    await asyncio.gather(*(connector.execute(make_task("echo", n)) for n in range(10)))
    ours = client_ports(NATS_PORT) - before
    if HAVE_PROC:
        assert len(ours) == 1, f"one connection per service, found {len(ours)}"
        assert server_side(NATS_PORT, ours) == ours  # the server sees it
    assert connector.is_connected
    client = connector.client

    await connector.aclose()
    await connector.aclose()  # idempotent
    assert connector.is_closed
    assert not connector.is_connected
    assert client is not None
    assert client.is_closed
    assert await eventually(lambda: not (client_ports(NATS_PORT) & ours))
    assert await eventually(lambda: not server_side(NATS_PORT, ours)), "the server still has it"
    with pytest.raises(UsageError):
        await connector.execute(make_task("echo", 1))


async def test_construction_checks_the_endpoint_and_operations(nats_url: str, uid: str) -> None:
    with pytest.raises(ConfigurationError, match="server URL"):
        NatsConnector(make_config(nats_url, uid, endpoint="127.0.0.1:4222"))
    with pytest.raises(ConfigurationError, match=r"operations\.bad"):
        NatsConnector(make_config(nats_url, uid, operations={"bad": {"topic": "x"}}))
    assert NatsConnector(make_config(nats_url, uid, capabilities=["a"])).capabilities() == {"a"}


async def test_a_lost_connection_fails_waiting_calls_and_recovers(
    service: Service, nats_url: str, uid: str
) -> None:
    async with Proxy(NATS_HOST, NATS_PORT) as proxy:
        config = make_config(
            nats_url,
            uid,
            endpoint=f"nats://127.0.0.1:{proxy.port}",
            operations={op: {"subject": s} for op, s in routes(uid).items()},
        )
        async with NatsConnector(config) as connector:
            assert (await connector.execute(make_task("echo", 1))).output["payload"] == 1
            waiting = asyncio.create_task(connector.execute(make_task("hang")))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            proxy.cut()
            with pytest.raises(StepError) as caught:
                await waiting
            assert time.monotonic() - started < 2  # not left to run into timeout.request
            assert caught.value.error_class is ErrorClass.RETRYABLE
            assert "connection to the server was lost" in caught.value.message

            errors: list[StepError] = []
            recovered: Result | None = None  # nats-py reconnects by itself
            for _ in range(100):
                try:
                    recovered = await connector.execute(make_task("echo", 2))
                    break
                except StepError as exc:
                    errors.append(exc)
                    await asyncio.sleep(0.1)
            assert recovered is not None
            assert recovered.output["payload"] == 2
            assert {e.error_class for e in errors} <= {ErrorClass.RETRYABLE, ErrorClass.TIMEOUT}
