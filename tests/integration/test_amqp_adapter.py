"""AmqpConnector against a real RabbitMQ on loopback, with MqExecutor (or a raw aio-pika
consumer) on the other end: round trips, correlation under concurrency, every error class,
unroutable requests, timeouts, what the consumer receives, batch, async start + status,
health, and that closing leaves no connection behind.

Needs RabbitMQ on 127.0.0.1:5672 (guest/guest), or ``LEGATO_TEST_AMQP_URL``.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest

from legato import ErrorClass, StepError
from legato.connectors.amqp import AmqpConnector
from legato.connectors.auth import build_auth
from legato.connectors.base import Connector, Result, Task
from legato.connectors.config import ApiKeyAuth, Registry, ServiceConfig
from legato.connectors.hub import Connectors
from legato.errors import UsageError
from legato.mq_executor import MqExecutor, Request

AMQP_URL = os.environ.get("LEGATO_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
_PARTS = urlsplit(AMQP_URL)
AMQP_HOST = _PARTS.hostname or "127.0.0.1"
AMQP_PORT = _PARTS.port or 5672


# ---- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The broker's URL; FAILS (never skips) when RabbitMQ is not reachable."""
    try:
        socket.create_connection((AMQP_HOST, AMQP_PORT), timeout=3).close()
    except OSError as exc:
        pytest.fail(
            f"RabbitMQ is not reachable at {AMQP_HOST}:{AMQP_PORT} ({exc}). Start it: "
            "`sudo service rabbitmq-server start` (or `rabbitmq-server -detached`), or "
            "`docker run -d --name legato-rabbit -p 5672:5672 rabbitmq:3`; or point "
            "LEGATO_TEST_AMQP_URL at a broker (amqp://user:password@host:port/vhost).",
            pytrace=False,
        )
    return AMQP_URL


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def queues(amqp_url: str) -> AsyncIterator[list[str]]:
    """Names of queues the test uses; deleted afterwards (whether or not they exist)."""
    names: list[str] = []
    yield names
    connection = await aio_pika.connect(amqp_url)
    try:
        for name in names:
            channel = await connection.channel()
            try:
                await channel.queue_delete(name)
            except Exception:  # the queue auto-deleted already
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await connection.close()


def make_config(amqp_url: str, uid: str, **fields: Any) -> ServiceConfig:
    data: dict[str, Any] = {
        "name": f"it-{uid}",
        "type": "amqp",
        "endpoint": amqp_url,
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
    """operation -> this test's queue."""
    return {op: f"legato-test.{uid}.{op}" for op in OPERATIONS}


@pytest.fixture
async def service(amqp_url: str, uid: str, queues: list[str]) -> AsyncIterator[Service]:
    service = Service()
    queues.extend(routes(uid).values())
    async with service.executor.serve_amqp(amqp_url, queues=routes(uid)):
        yield service
    service.release.set()


@pytest.fixture
def config(amqp_url: str, uid: str) -> ServiceConfig:
    return make_config(
        amqp_url,
        uid,
        operations={op: {"queue": queue} for op, queue in routes(uid).items()},
        **{"async": {"status_operation": "operation.status", "poll_interval": 0.1}},
    )


@pytest.fixture
async def connector(config: ServiceConfig) -> AsyncIterator[AmqpConnector]:
    connector = AmqpConnector(config)
    yield connector
    await connector.aclose()


# ---- sockets as the kernel sees them (server side included: the broker is on loopback) --


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
    service: Service, connector: AmqpConnector
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
    # many calls, one connection, one reply queue
    assert connector.is_connected


async def test_default_queue_is_the_operation_name(
    amqp_url: str, uid: str, queues: list[str]
) -> None:
    operation = f"legato-test.{uid}.accounts.provision"
    queues.append(operation)
    executor = MqExecutor({operation: lambda payload: {"got": payload}})
    async with (
        executor.serve_amqp(amqp_url),  # one queue per handler, named after it
        AmqpConnector(make_config(amqp_url, uid)) as connector,
    ):
        result = await connector.execute(make_task(operation, {"user": "bo"}))
    assert result.output == {"got": {"user": "bo"}}


async def test_a_named_exchange_and_routing_key(amqp_url: str, uid: str, queues: list[str]) -> None:
    exchange_name = f"legato-test.{uid}.ex"
    queue_name = f"legato-test.{uid}.bound"
    queues.append(queue_name)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(exchange_name, "direct", auto_delete=True)
    executor = MqExecutor({"accounts.provision": lambda payload: {"routed": payload}})
    try:
        async with executor.serve_amqp(amqp_url, queues=[queue_name]):
            bound = await channel.get_queue(queue_name)
            await bound.bind(exchange, routing_key="accounts.key")
            config = make_config(
                amqp_url,
                uid,
                operations={
                    "accounts.provision": {"exchange": exchange_name, "queue": "accounts.key"},
                    "unbound": {"exchange": exchange_name, "queue": "nobody.listens"},
                },
            )
            async with AmqpConnector(config) as connector:
                result = await connector.execute(make_task("accounts.provision", 7))
                assert result.output == {"routed": 7}
                with pytest.raises(StepError) as caught:
                    await connector.execute(make_task("unbound", 1))
                assert caught.value.error_class is ErrorClass.RETRYABLE
                assert "no queue is bound to exchange" in caught.value.message
    finally:
        await channel.exchange_delete(exchange_name)
        await connection.close()


# ---- correlation --------------------------------------------------------------------------


async def test_fifty_concurrent_requests_each_get_their_own_reply(
    service: Service, connector: AmqpConnector
) -> None:
    tasks = [
        make_task("slow_echo", {"n": n, "blob": uuid.uuid4().hex}, correlation_id=f"run-1:step-{n}")
        for n in range(50)
    ]
    results = await asyncio.gather(*(connector.execute(t) for t in tasks))
    for task, result in zip(tasks, results, strict=True):
        assert result.output == {"payload": task.input, "correlation": task.correlation_id}
    assert connector._pending == {}  # every future was matched and released


async def test_a_late_reply_is_dropped_and_does_not_answer_another_call(
    service: Service, amqp_url: str, uid: str
) -> None:
    config = make_config(
        amqp_url,
        uid,
        timeout={"connect": 5, "request": 0.5},
        operations={op: {"queue": q} for op, q in routes(uid).items()},
    )
    async with AmqpConnector(config) as connector:
        started = time.monotonic()
        with pytest.raises(StepError) as caught:
            await connector.execute(make_task("hang", None))
        assert caught.value.error_class is ErrorClass.TIMEOUT
        assert time.monotonic() - started < 3
        assert "no reply from queue" in caught.value.message
        assert caught.value.details["queue"] == routes(uid)["hang"]
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
    connector: AmqpConnector,
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
    if expected_retry_after is not None:
        assert error.details["retry_after"] == expected_retry_after


async def test_an_unexpected_exception_is_retryable(
    service: Service, connector: AmqpConnector, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("crash"))
    assert caught.value.error_class is ErrorClass.RETRYABLE
    assert "RuntimeError: disk on fire" in caught.value.message


async def test_replies_that_are_not_results(amqp_url: str, uid: str, queues: list[str]) -> None:
    """A raw consumer answers what the payload asks for: the adapter's reading of
    statuses and classes it did not produce itself."""
    queue_name = f"legato-test.{uid}.raw"
    queues.append(queue_name)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(queue_name, auto_delete=True)

    async def answer(message: Any) -> None:
        async with message.process():
            import json

            script = json.loads(message.body)["payload"]
            body = script if isinstance(script, str) else json.dumps(script)
            await channel.default_exchange.publish(
                aio_pika.Message(body.encode(), correlation_id=message.correlation_id),
                routing_key=message.reply_to,
            )

    await queue.consume(answer)
    config = make_config(amqp_url, uid, operations={"raw": {"queue": queue_name}})
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
    try:
        async with AmqpConnector(config) as connector:
            for script, error_class, text in cases:
                with pytest.raises(StepError) as caught:
                    await connector.execute(make_task("raw", script))
                assert caught.value.error_class is error_class, script
                assert text in caught.value.message, (script, caught.value.message)
            with pytest.raises(StepError) as caught:
                await connector.execute(
                    make_task("raw", {"status": "RETRY", "retry_after_seconds": 9})
                )
            assert caught.value.retry_after == 9.0
            done = await connector.execute(make_task("raw", {"status": "completed", "result": 5}))
            assert done.output == 5
    finally:
        await connection.close()


async def test_no_consumer_bound_is_retryable_at_once(
    amqp_url: str, uid: str, connector: AmqpConnector
) -> None:
    started = time.monotonic()
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("echo", 1))  # nobody declared the queue
    assert time.monotonic() - started < 2  # returned by the broker, not timed out
    error = caught.value
    assert error.error_class is ErrorClass.RETRYABLE
    assert f"no consumer bound to queue 'legato-test.{uid}.echo'" in error.message
    assert error.details["reply_code"] == 312


async def test_a_missing_exchange_is_retryable_and_the_channel_recovers(
    service: Service, amqp_url: str, uid: str
) -> None:
    config = make_config(
        amqp_url,
        uid,
        operations={
            **{op: {"queue": q} for op, q in routes(uid).items()},
            "nowhere": {"exchange": f"legato-test.{uid}.missing", "queue": "x"},
        },
    )
    async with AmqpConnector(config) as connector:
        with pytest.raises(StepError) as caught:
            await connector.execute(make_task("nowhere", 1))
        assert caught.value.error_class is ErrorClass.RETRYABLE
        assert "no exchange" in caught.value.message
        # the broker closed the publishing channel; the next call still goes through
        result = await connector.execute(make_task("echo", "after"))
        assert result.output["payload"] == "after"


async def test_a_consumer_that_never_answers_times_out(
    amqp_url: str, uid: str, queues: list[str]
) -> None:
    queue_name = f"legato-test.{uid}.silent"
    queues.append(queue_name)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(queue_name, auto_delete=True)
    received: list[Any] = []

    async def swallow(message: Any) -> None:
        received.append(message)
        await message.ack()  # and never answer

    await queue.consume(swallow)
    config = make_config(
        amqp_url,
        uid,
        timeout={"connect": 5, "request": 0.4},
        operations={"silent": {"queue": queue_name}},
    )
    try:
        async with AmqpConnector(config) as connector:
            started = time.monotonic()
            with pytest.raises(StepError) as caught:
                await connector.execute(make_task("silent", 1))
            elapsed = time.monotonic() - started
    finally:
        await connection.close()
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert 0.35 < elapsed < 3
    assert caught.value.details["timeout"] == pytest.approx(0.4)
    assert len(received) == 1
    assert received[0].expiration == pytest.approx(0.4)  # the request expires with the call


async def test_a_passed_deadline_and_input_that_is_not_json_are_not_sent(
    service: Service, connector: AmqpConnector
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("echo", 1, deadline=past))
    assert caught.value.error_class is ErrorClass.TIMEOUT
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("echo", {"when": datetime.now(UTC)}))
    assert caught.value.error_class is ErrorClass.VALIDATION
    assert service.seen == []


async def test_broker_refusals_are_classified(amqp_url: str, uid: str) -> None:
    parts = urlsplit(amqp_url)
    bad_password = f"amqp://{parts.username}:wrong-{uid}@{AMQP_HOST}:{AMQP_PORT}/"
    bad_vhost = f"amqp://{parts.username}:{parts.password}@{AMQP_HOST}:{AMQP_PORT}/nope-{uid}"
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nobody = f"amqp://guest:guest@127.0.0.1:{closed_port}/"
    cases = [
        (bad_password, ErrorClass.AUTH_FAILED, "refused the login"),
        (bad_vhost, ErrorClass.AUTH_FAILED, "virtual host"),
        (nobody, ErrorClass.RETRYABLE, "unreachable"),
    ]
    for endpoint, error_class, text in cases:
        async with AmqpConnector(make_config(amqp_url, uid, endpoint=endpoint)) as connector:
            with pytest.raises(StepError) as caught:
                await connector.execute(make_task("echo", 1))
            assert caught.value.error_class is error_class, endpoint
            assert text in caught.value.message
            assert f"wrong-{uid}" not in caught.value.message  # no password in messages
            with pytest.raises(StepError):
                await connector.health_check()


# ---- what the consumer receives -----------------------------------------------------------


async def test_the_consumer_receives_the_idempotency_key_traceparent_and_headers(
    service: Service, amqp_url: str, uid: str
) -> None:
    config = make_config(
        amqp_url,
        uid,
        headers={"X-Team": "it"},
        auth={"type": "api_key", "header": "X-Api-Key", "value": "k-123"},
        operations={op: {"queue": q} for op, q in routes(uid).items()},
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
    async with AmqpConnector(config, auth=auth) as connector:
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


async def test_the_amqp_message_properties(amqp_url: str, uid: str, queues: list[str]) -> None:
    queue_name = f"legato-test.{uid}.props"
    queues.append(queue_name)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(queue_name, auto_delete=True)
    got: list[Any] = []

    async def answer(message: Any) -> None:
        got.append(message)
        await message.ack()
        await channel.default_exchange.publish(
            aio_pika.Message(
                b'{"status": "COMPLETED", "result": 1}', correlation_id=message.correlation_id
            ),
            routing_key=message.reply_to,
        )

    await queue.consume(answer)
    config = make_config(
        amqp_url,
        uid,
        idempotency_header="X-Idempotency",
        operations={"props": queue_name},  # the string shorthand: the queue
    )
    try:
        async with AmqpConnector(config) as connector:
            await connector.execute(make_task("props", 1, idempotency_key="key-9"))
            await connector.execute(make_task("props", 2, idempotency_key="key-10"))
            reply_queue = connector.reply_queue
    finally:
        await connection.close()
    first, second = got
    assert first.message_id == "key-9"
    assert first.headers["X-Idempotency"] == "key-9"
    assert first.reply_to == reply_queue
    assert first.content_type == "application/json"
    assert first.type == "props"
    assert first.app_id == "legato"
    assert first.expiration == pytest.approx(5)
    assert first.correlation_id
    assert second.correlation_id
    assert first.correlation_id != second.correlation_id  # fresh per call


# ---- batch, async, dedup ------------------------------------------------------------------


async def poll(connector: AmqpConnector, task: Task, operation_id: str) -> Result:
    """check_status until the operation has an outcome (its StepError is raised)."""
    for _ in range(100):
        result = await connector.check_status(task, operation_id)
        if result is not None:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"operation {operation_id} still runs")


async def test_batch_gives_one_outcome_per_task_in_order(
    service: Service, connector: AmqpConnector
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


async def test_async_start_then_check_status(service: Service, connector: AmqpConnector) -> None:
    task = make_task("long", {"user": "di"})
    ack = await connector.start_async(task, "callback-token-1")
    assert ack.operation_id
    assert ack.operation_id.startswith("op-")
    assert ack.metadata["task_status"] == "IN_PROGRESS"
    assert ack.output is None
    (seen,) = service.seen
    assert seen.is_async is True
    assert seen.callback_token == "callback-token-1"
    assert seen.headers["legato-async"] == "true"

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
    assert "knows no operation" in caught.value.message


async def test_check_status_needs_a_status_operation(amqp_url: str, uid: str) -> None:
    async with AmqpConnector(make_config(amqp_url, uid)) as connector:
        with pytest.raises(StepError) as caught:
            await connector.check_status(make_task("long"), "op-1")
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert "status_operation" in caught.value.message


async def test_the_executor_deduplicates_by_idempotency_key(
    amqp_url: str, uid: str, queues: list[str]
) -> None:
    service = Service(dedup=True)
    queues.extend(routes(uid).values())
    async with service.executor.serve_amqp(amqp_url, queues=routes(uid)):
        config = make_config(
            amqp_url, uid, operations={op: {"queue": q} for op, q in routes(uid).items()}
        )
        async with AmqpConnector(config) as connector:
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
    before = client_ports(AMQP_PORT)
    connector = AmqpConnector(config)
    await connector.health_check()
    await asyncio.gather(*(connector.execute(make_task("echo", n)) for n in range(10)))
    ours = client_ports(AMQP_PORT) - before
    if HAVE_PROC:
        assert len(ours) == 1, f"one connection per service, found {len(ours)}"
        assert server_side(AMQP_PORT, ours) == ours  # the broker sees it
    assert connector.is_connected

    await connector.aclose()
    await connector.aclose()  # idempotent
    assert connector.is_closed
    assert not connector.is_connected
    assert await eventually(lambda: not (client_ports(AMQP_PORT) & ours))
    assert await eventually(lambda: not server_side(AMQP_PORT, ours)), "the broker still has it"
    with pytest.raises(UsageError):
        await connector.execute(make_task("echo", 1))


async def test_construction_checks_the_endpoint_and_operations(amqp_url: str, uid: str) -> None:
    from legato.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="broker URL"):
        AmqpConnector(make_config(amqp_url, uid, endpoint="127.0.0.1:5672"))
    with pytest.raises(ConfigurationError, match=r"operations\.bad"):
        AmqpConnector(make_config(amqp_url, uid, operations={"bad": {"topic": "x"}}))
    assert AmqpConnector(make_config(amqp_url, uid, capabilities=["a", "b"])).capabilities() == {
        "a",
        "b",
    }


async def test_a_lost_connection_fails_waiting_calls_and_recovers(
    service: Service, amqp_url: str, uid: str
) -> None:
    async with Proxy(AMQP_HOST, AMQP_PORT) as proxy:
        parts = urlsplit(amqp_url)
        relayed = parts._replace(
            netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
        ).geturl()
        config = make_config(
            amqp_url,
            uid,
            endpoint=relayed,
            operations={op: {"queue": q} for op, q in routes(uid).items()},
        )
        async with AmqpConnector(config) as connector:
            assert (await connector.execute(make_task("echo", 1))).output["payload"] == 1
            waiting = asyncio.create_task(connector.execute(make_task("hang")))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            proxy.cut()
            with pytest.raises(StepError) as caught:
                await waiting
            assert time.monotonic() - started < 2  # not left to run into timeout.request
            assert caught.value.error_class is ErrorClass.RETRYABLE
            assert "connection to the broker was lost" in caught.value.message

            errors: list[StepError] = []
            recovered: Result | None = None  # aio-pika reconnects, the reply queue returns
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
