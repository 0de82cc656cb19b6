"""Service steps through the worker: batches by time, a crash mid-batch, late callbacks,
compensation through the same connector, and status polling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import legato
from legato.mock import MockService

FAST = legato.WorkerOptions(poll_interval=0.05, lease_seconds=1.0, heartbeat_interval=0.2)


def registry() -> legato.ActivityRegistry:
    return legato.ActivityRegistry(network=legato.NetworkPolicy(allow_private=True))


def write_services(tmp_path: Path, services: list[dict[str, Any]]) -> Path:
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump({"services": services}))
    return path


def task(service: str, operation: str, **extra: Any) -> dict[str, Any]:
    return {"type": "task", "service": service, "operation": operation, **extra}


@pytest.fixture
async def it_service() -> AsyncIterator[tuple[MockService, str]]:
    svc = MockService("it")
    svc.operation("accounts.provision").respond(lambda r: {"account": r.idempotency_key})
    async with svc.grpc() as address:
        yield svc, address


async def test_a_batch_is_flushed_by_time_when_it_is_not_full(
    tmp_path: Path, it_service: tuple[MockService, str]
) -> None:
    svc, address = it_service
    services = write_services(
        tmp_path,
        [
            {
                "name": "it",
                "type": "grpc",
                "endpoint": address,
                "capabilities": ["accounts.provision"],
            }
        ],
    )
    definition = {
        "name": "provision",
        "start_at": "provision",
        "states": {
            "provision": task(
                "it",
                "accounts.provision",
                batch={"enabled": True, "max_size": 50, "max_wait": "0.4s"},
            )
        },
    }
    async with legato.Engine.open(
        tmp_path / "l.db", registry=registry(), services=services, options=FAST
    ) as engine:
        engine.activities.include_builtins()
        defn = legato.Definition.model_validate(definition)
        runs = [await engine.start(defn, {"n": i}) for i in range(3)]
        results = [await engine.wait(r, timeout=30) for r in runs]
    assert [r.status for r in results] == ["completed"] * 3
    calls = svc.calls("accounts.provision")
    assert len(calls) == 3
    assert {c.method for c in calls} == {"ExecuteBatch"}  # one batch of 3, sent by time


async def test_a_crash_in_the_middle_of_a_batch_loses_nothing(
    tmp_path: Path, it_service: tuple[MockService, str]
) -> None:
    svc, address = it_service
    services = write_services(
        tmp_path,
        [
            {
                "name": "it",
                "type": "grpc",
                "endpoint": address,
                "capabilities": ["accounts.provision"],
            }
        ],
    )
    definition = legato.Definition.model_validate(
        {
            "name": "provision",
            "start_at": "provision",
            "states": {
                "provision": task(
                    "it",
                    "accounts.provision",
                    batch={"enabled": True, "max_size": 50, "max_wait": "1s"},
                )
            },
        }
    )
    db = tmp_path / "l.db"
    async with legato.Engine.open(
        db, registry=registry(), services=services, options=FAST
    ) as engine:
        runs = [await engine.start(definition, {"n": i}) for i in range(2)]
        await asyncio.sleep(0.3)  # both tasks wait in the batch, in memory only
        assert svc.calls() == []
    # the worker is gone with its batch; a new one finds the rows and sends them again
    async with legato.Engine.open(
        db, registry=registry(), services=services, options=FAST
    ) as engine:
        results = [await engine.wait(r, timeout=30) for r in runs]
    assert [r.status for r in results] == ["completed"] * 2
    keys = [c.idempotency_key for c in svc.calls("accounts.provision")]
    assert sorted(keys) == sorted({f"{r}:provision:0" for r in runs})


async def test_a_late_callback_is_refused_and_the_step_times_out(tmp_path: Path) -> None:
    svc = MockService("checks")
    svc.operation("criminal.check").respond({"result": "clear"}).async_(delay=60)
    with svc.http() as url:
        services = write_services(
            tmp_path,
            [
                {
                    "name": "checks",
                    "type": "rest",
                    "endpoint": url,
                    "capabilities": ["criminal.check"],
                }
            ],
        )
        definition = legato.Definition.model_validate(
            {
                "name": "check",
                "start_at": "check",
                "states": {
                    "check": task(
                        "checks",
                        "criminal.check",
                        **{"async": True, "callback_timeout": "0.5s"},
                        retry={"max_attempts": 1},
                    )
                },
            }
        )
        async with legato.Engine.open(
            tmp_path / "l.db", registry=registry(), services=services, options=FAST
        ) as engine:
            run_id = await engine.start(definition, {})
            result = await engine.wait(run_id, timeout=30)
            assert result.status == "failed"
            assert result.error is not None
            assert result.error["error_class"] == "TIMEOUT"
            token = svc.calls("criminal.check")[0].headers["x-callback-token"]
            before = await engine.history(run_id)
            with pytest.raises(legato.ConflictError, match="unexpected or duplicate"):
                await engine.callback(token, {"result": "clear"})  # it came too late
            assert len(await engine.history(run_id)) == len(before)


async def test_an_async_result_found_by_polling_completes_the_step(tmp_path: Path) -> None:
    svc = MockService("checks")
    svc.operation("criminal.check").respond({"result": "clear"}).async_(delay=0.2)
    with svc.http() as url:
        services = write_services(
            tmp_path,
            [
                {
                    "name": "checks",
                    "type": "rest",
                    "endpoint": url,
                    "capabilities": ["criminal.check"],
                    "operations": {
                        "status": {"method": "GET", "path": "/_mock/operations/{operation_id}"}
                    },
                    "async": {"status_operation": "status", "poll_interval": "0.1s"},
                }
            ],
        )
        definition = legato.Definition.model_validate(
            {
                "name": "check",
                "start_at": "check",
                "states": {
                    "check": task(
                        "checks", "criminal.check", **{"async": True}, result_path="$.check"
                    )
                },
            }
        )
        async with legato.Engine.open(
            tmp_path / "l.db", registry=registry(), services=services, options=FAST
        ) as engine:
            result = await engine.run(definition, {}, timeout=30)
    assert result.status == "completed", result.error
    assert result.output["check"] == {"result": "clear"}


async def test_compensation_runs_through_the_same_connector(tmp_path: Path) -> None:
    hr = MockService("hr")
    hr.operation("employee.create").respond({"workdayId": "WD-1"})
    hr.operation("employee.delete").respond({"deleted": True})
    it = MockService("it")
    it.operation("accounts.provision").fail(status=422)
    async with hr.grpc() as hr_address, it.grpc() as it_address:
        services = write_services(
            tmp_path,
            [
                {"name": "hr", "type": "grpc", "endpoint": hr_address},
                {"name": "it", "type": "grpc", "endpoint": it_address},
            ],
        )
        document = {
            "workflow": {
                "name": "onboard",
                "version": "1",
                "states": {
                    "create": {
                        "type": "external_task",
                        "service": "hr",
                        "operation": "employee.create",
                        "output_mapping": {"$.employee.workday_id": "$.result.workdayId"},
                        "compensation": {
                            "operation": "employee.delete",
                            "input": {"employeeId": "$.employee.workday_id"},
                        },
                        "on_success": "provision",
                    },
                    "provision": {
                        "type": "external_task",
                        "service": "it",
                        "operation": "accounts.provision",
                    },
                },
            }
        }
        definition = legato.load_text(yaml.safe_dump(document)).raise_for_errors()
        async with legato.Engine.open(
            tmp_path / "l.db", registry=registry(), services=services, options=FAST
        ) as engine:
            result = await engine.run(definition, {}, timeout=30)
    assert result.status == "failed"
    deletes = hr.calls("employee.delete")
    assert len(deletes) == 1
    assert deletes[0].body == {"employeeId": "WD-1"}
    assert {s["id"]: s["status"] for s in result.steps}["create"] == "compensated"
