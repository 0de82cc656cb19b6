"""The connector hub with an in-test adapter: routing, checks, policies, errors, stats."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from legato.connectors.base import Result, Task
from legato.connectors.config import Registry, ServiceConfig
from legato.connectors.hub import Connectors, traceparent
from legato.connectors.registry import parse_registry
from legato.connectors.resilience import BreakerState
from legato.errors import ErrorClass, StepError, UsageError
from legato.net import NetworkPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Adapter:
    """Does what ``behaviour(task)`` says: returns its value, raises it, or sleeps first."""

    instances: list[Adapter]

    def __init__(self, config: ServiceConfig, *, auth: Any, network: NetworkPolicy) -> None:
        self.name = config.name
        self.config = config
        self.auth = auth
        self.network = network
        self.calls: list[tuple[str, Task]] = []
        self.behaviour: Callable[[Task], Any] = lambda task: {"ok": task.operation}
        self.closed = False
        self.instances.append(self)

    async def _do(self, kind: str, task: Task) -> Any:
        self.calls.append((kind, task))
        outcome = self.behaviour(task)
        if isinstance(outcome, float):
            await asyncio.sleep(outcome)
            return Result(output={"slept": outcome})
        if isinstance(outcome, BaseException):
            raise outcome
        return Result(output=outcome)

    async def execute(self, task: Task) -> Result:
        result: Result = await self._do("execute", task)
        return result

    async def execute_batch(self, tasks: list[Task]) -> list[Result | Exception]:
        out: list[Result | Exception] = []
        for task in tasks:
            try:
                out.append(await self._do("batch", task))
            except Exception as exc:
                out.append(exc)
        return out

    async def start_async(self, task: Task, callback_token: str) -> Result:
        self.calls.append(("start_async", task))
        return Result(operation_id=f"op-{callback_token}")

    async def check_status(self, task: Task, operation_id: str) -> Result | None:
        self.calls.append(("check_status", task))
        return None if operation_id == "running" else Result(output={"done": operation_id})

    async def health_check(self) -> None:
        return None

    def capabilities(self) -> set[str]:
        return set(self.config.capabilities)

    async def aclose(self) -> None:
        self.closed = True


REGISTRY = {
    "services": [
        {
            "name": "crm",
            "type": "rest",
            "endpoint": "https://crm.example/v1",
            "capabilities": ["contact.create", "contact.merge"],
            "circuit_breaker": {"failure_threshold": 2, "timeout": "30s"},
            "timeout": {"request": "0.2s"},
            "versions": {
                "v1": {},
                "v2": {"endpoint": "https://crm.example/v2"},
                "v0": {"deprecated": True},
            },
            "version_route": {
                "default": "v1",
                "rules": [
                    {"when": "has(input.region) && input.region == 'eu'", "version": "v2"},
                    {
                        "when": {"field": "input.legacy", "operator": "is_true"},
                        "version": "v0",
                    },
                ],
            },
        },
        {"name": "open", "type": "rest", "endpoint": "https://open.example"},
        {
            "name": "paced",
            "type": "rest",
            "endpoint": "https://paced.example",
            "rate_limit": {"requests_per_second": 1, "burst": 1},
        },
    ]
}


@pytest.fixture
def registry() -> Registry:
    return parse_registry(REGISTRY, environ={})


@pytest.fixture
async def hub(registry: Registry) -> Any:
    Adapter.instances = []
    clock = FakeClock()
    async with Connectors(registry, adapters={"rest": Adapter}, clock=clock) as connectors:
        connectors.test_clock = clock  # type: ignore[attr-defined]
        yield connectors
    assert all(adapter.closed for adapter in Adapter.instances)


def task(service: str = "crm", operation: str = "contact.create", **kw: Any) -> Task:
    kw.setdefault("input", {})
    return Task(
        task_id=kw.pop("task_id", "create"),
        run_id=kw.pop("run_id", "run-1"),
        workflow="wf",
        service=service,
        operation=operation,
        idempotency_key="run-1/create/0",
        **kw,
    )


def adapter_for(endpoint: str) -> Adapter:
    return next(a for a in Adapter.instances if a.config.endpoint == endpoint)


# ---- routing and checks -----------------------------------------------------------------------


async def test_version_routing_sets_the_version_and_picks_the_adapter(hub: Connectors) -> None:
    result = await hub.execute(task(input={"region": "eu"}))
    assert result.output == {"ok": "contact.create"}
    v2 = adapter_for("https://crm.example/v2")
    assert v2.calls[0][1].version == "v2"
    await hub.execute(task(input={"region": "us"}))
    base = adapter_for("https://crm.example/v1")
    assert base.calls[0][1].version == "v1"
    # v0 has no overrides of its own: it shares the base adapter
    await hub.execute(task(input={"legacy": True}))
    assert [t.version for _, t in base.calls] == ["v1", "v0"]
    # a task pinned to a version keeps it
    await hub.execute(task(input={"region": "eu"}, version="v1"))
    assert base.calls[-1][1].version == "v1"
    assert len(Adapter.instances) == 2


async def test_unknown_version_service_and_operation(hub: Connectors) -> None:
    with pytest.raises(StepError) as caught:
        await hub.execute(task(version="v9"))
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert caught.value.message == (
        "service crm does not support version 'v9' (it has v0, v1, v2); route the task to a "
        "supported version"
    )
    with pytest.raises(StepError) as caught:
        await hub.execute(task(service="open", version="v1"))
    assert "it defines no versions" in caught.value.message
    with pytest.raises(StepError) as caught:
        await hub.execute(task(service="nope"))
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert "no service named 'nope'" in caught.value.message
    assert "known services: crm, open, paced" in caught.value.message
    with pytest.raises(StepError) as caught:
        await hub.execute(task(operation="contact.delete"))
    assert caught.value.error_class is ErrorClass.VALIDATION
    assert "service crm version v1 has no operation 'contact.delete'" in caught.value.message
    assert caught.value.details["capabilities"] == ["contact.create", "contact.merge"]
    # a service without capabilities accepts any operation
    assert (await hub.execute(task(service="open", operation="anything"))).output == {
        "ok": "anything"
    }
    assert hub.capabilities("crm") == {"contact.create", "contact.merge"}
    assert hub.service("open").endpoint == "https://open.example"


async def test_route_condition_errors_are_permanent(registry: Registry) -> None:
    doc = {
        "services": [
            {
                "name": "bad",
                "type": "rest",
                "endpoint": "https://bad.example",
                "versions": {"v1": {}},
                "version_route": {
                    "default": "v1",
                    "rules": [{"when": "input.x +", "version": "v1"}],
                },
            }
        ]
    }
    async with Connectors(parse_registry(doc, environ={}), adapters={"rest": Adapter}) as hub:
        with pytest.raises(StepError, match="version_route rule 0 cannot be evaluated") as caught:
            await hub.execute(task(service="bad", operation="x"))
    assert caught.value.error_class is ErrorClass.PERMANENT


async def test_correlation_id_and_traceparent_are_added(hub: Connectors) -> None:
    await hub.execute(task(service="open"))
    await hub.execute(task(service="open"))
    await hub.execute(task(service="open", correlation_id="mine", traceparent="00-keep-01"))
    calls = [t for _, t in Adapter.instances[0].calls]
    assert calls[0].correlation_id == "run-1:create"
    pattern = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")
    first, second = (pattern.match(t.traceparent) for t in calls[:2])
    assert first
    assert second
    assert first.group(1) == second.group(1)  # the run's trace
    assert first.group(2) != second.group(2)  # a span per call
    assert (calls[2].correlation_id, calls[2].traceparent) == ("mine", "00-keep-01")
    assert traceparent("run-2").split("-")[1] != first.group(1)


# ---- breaker, timeout, classification ---------------------------------------------------------


async def test_breaker_opens_and_fails_fast_then_probes(hub: Connectors) -> None:
    clock: FakeClock = hub.test_clock  # type: ignore[attr-defined]
    await hub.execute(task())
    adapter = Adapter.instances[0]
    adapter.behaviour = lambda t: StepError("503", error_class=ErrorClass.RETRYABLE)
    for _ in range(2):
        with pytest.raises(StepError, match="503"):
            await hub.execute(task())
    assert hub.breaker("crm").state is BreakerState.OPEN  # type: ignore[union-attr]
    calls = len(adapter.calls)
    with pytest.raises(StepError) as caught:
        await hub.execute(task())
    assert caught.value.error_class is ErrorClass.RETRYABLE
    assert caught.value.message == "circuit open for service crm; retry after 30 s"
    assert len(adapter.calls) == calls  # failed fast: the adapter was not called
    clock.now += 30
    adapter.behaviour = lambda t: {"back": True}
    assert (await hub.execute(task())).output == {"back": True}
    assert hub.breaker("crm").state is BreakerState.CLOSED  # type: ignore[union-attr]
    assert hub.breaker("open") is None


async def test_timeout_and_classification(hub: Connectors) -> None:
    await hub.execute(task())
    adapter = Adapter.instances[0]
    breaker = hub.breaker("crm")
    assert breaker is not None
    adapter.behaviour = lambda t: 5.0  # sleeps longer than timeout.request (0.2 s)
    with pytest.raises(StepError) as caught:
        await hub.execute(task())
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert "did not answer within 0.2 s" in caught.value.message
    breaker.reset()  # threshold 2: keep it closed for the next case
    adapter.behaviour = lambda t: KeyError("missing")
    with pytest.raises(StepError) as caught:
        await hub.execute(task())
    assert caught.value.error_class is ErrorClass.RETRYABLE
    assert (
        caught.value.message == "service crm operation contact.create failed: KeyError: 'missing'"
    )
    assert caught.value.details["exception_type"] == "KeyError"
    breaker.reset()  # threshold 2: keep it closed for the next case
    request = httpx.Request("GET", "https://crm.example/v1/x?token=abc")
    adapter.behaviour = lambda t: httpx.ReadTimeout("slow", request=request)
    with pytest.raises(StepError) as caught:
        await hub.execute(task())
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert "token=abc" not in str(caught.value.to_dict())
    breaker.reset()  # threshold 2: keep it closed for the next case
    adapter.behaviour = lambda t: StepError("bad input", error_class=ErrorClass.VALIDATION)
    with pytest.raises(StepError, match="bad input") as caught:
        await hub.execute(task())
    assert caught.value.error_class is ErrorClass.VALIDATION
    breaker.reset()  # threshold 2: keep it closed for the next case
    # a deadline shorter than the request timeout bounds the call; a past one fails at once
    adapter.behaviour = lambda t: 0.5
    soon = datetime.now(UTC) + timedelta(seconds=0.05)
    with pytest.raises(StepError) as caught:
        await hub.execute(task(deadline=soon))
    assert caught.value.error_class is ErrorClass.TIMEOUT
    with pytest.raises(StepError, match="deadline of task create passed"):
        await hub.execute(task(deadline=datetime.now(UTC) - timedelta(seconds=1)))


async def test_in_memory_rate_limit_refuses_long_waits(registry: Registry) -> None:
    async with Connectors(registry, adapters={"rest": Adapter}, max_rate_wait=0.0) as hub:
        await hub.execute(task(service="paced", operation="x"))
        with pytest.raises(StepError) as caught:
            await hub.execute(task(service="paced", operation="x"))
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert 0.9 < (caught.value.retry_after or 0) <= 1.0
    assert hub.stats()["services"]["paced"]["rate_limit"]["refused"] == 1


# ---- the other calls --------------------------------------------------------------------------


async def test_batch_async_and_status(hub: Connectors) -> None:
    tasks = [
        task(task_id="a", input={"region": "eu"}),
        task(task_id="b", operation="contact.merge"),
        task(task_id="c", operation="contact.nope"),
        task(task_id="d", service="ghost"),
        task(task_id="e", service="open", operation="boom"),
    ]
    Adapter.instances = []
    await hub.execute(task(service="open"))  # build open's adapter to script it
    Adapter.instances[0].behaviour = lambda t: (
        RuntimeError("kaput") if t.operation == "boom" else {"ok": t.task_id}
    )
    results = await hub.execute_batch(tasks)
    assert isinstance(results[0], Result)
    assert results[0].output == {"ok": "contact.create"}
    assert isinstance(results[1], Result)
    assert isinstance(results[2], StepError)
    assert results[2].error_class is ErrorClass.VALIDATION
    assert isinstance(results[3], StepError)
    assert results[3].error_class is ErrorClass.PERMANENT
    assert isinstance(results[4], StepError)
    assert results[4].error_class is ErrorClass.RETRYABLE
    assert "RuntimeError: kaput" in results[4].message

    started = await hub.start_async(task(), "cb-1")
    assert started.operation_id == "op-cb-1"
    assert await hub.check_status(task(), "running") is None
    done = await hub.check_status(task(), "op-cb-1")
    assert done is not None
    assert done.output == {"done": "op-cb-1"}
    await hub.health_check("crm")


async def test_stats_and_close(registry: Registry) -> None:
    Adapter.instances = []
    hub = Connectors(registry, adapters={"rest": Adapter})
    await hub.execute(task(service="open", operation="a"))
    await hub.execute(task(service="open", operation="a"))
    Adapter.instances[0].behaviour = lambda t: StepError("no", error_class=ErrorClass.PERMANENT)
    with pytest.raises(StepError):
        await hub.execute(task(service="open", operation="a"))
    stats = hub.stats()["services"]["open"]
    assert stats["circuit"] is None
    assert stats["rate_limit"] is None
    op = stats["operations"]["a"]
    assert op["outcomes"] == {"ok": 2, "PERMANENT": 1}
    assert op["calls"] == 3
    assert op["latency_seconds_sum"] >= 0
    await hub.aclose()
    await hub.aclose()
    assert Adapter.instances[0].closed
    assert hub.closed
    with pytest.raises(UsageError, match="closed"):
        await hub.execute(task(service="open"))


async def test_adapter_loading_errors(registry: Registry) -> None:
    doc = {"services": [{"name": "g", "type": "grpc", "endpoint": "g:443"}]}
    async with Connectors(
        parse_registry(doc, environ={}), adapters={"grpc": "no.such.module:Nope"}
    ) as hub:
        with pytest.raises(StepError, match=r"cannot be loaded.*legato\[grpc\]") as caught:
            await hub.execute(task(service="g", operation="x"))
    assert caught.value.error_class is ErrorClass.PERMANENT

    def broken(config: ServiceConfig, **kw: Any) -> Any:
        raise ValueError("endpoint is odd")

    async with Connectors(registry, adapters={"rest": broken}) as hub:
        with pytest.raises(StepError, match="cannot build the rest adapter of service open"):
            await hub.execute(task(service="open"))
