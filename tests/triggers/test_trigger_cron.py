"""The cron scheduler: every tick fires exactly once, with several schedulers on one
database (one in another process), across restarts; missed ticks follow the policy."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.triggers.conftest import (
    ACME_PROD,
    ACME_STAGING,
    GLOBEX_PROD,
    T0,
    MakeWorkflow,
    create_workflow,
    definition,
)

from legato import Engine
from legato.errors import DefinitionError, UsageError
from legato.store import Scope, SqlStore
from legato.testing import FakeClock
from legato.triggers import TRIGGER_KEY, Scheduler, parse_schedule
from legato.triggers.cron import Schedule, cron_run_id, schedule_problems

PROCESS = Path(__file__).with_name("scheduler_process.py")


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def scheduled(cron: str, catch_up: str = "one", **more: Any) -> dict[str, Any]:
    return {"type": "scheduled", "schedule": {"cron": cron, "catch_up": catch_up, **more}}


async def ticks_of(store: SqlStore, scope: Scope, workflow_id: str) -> list[datetime]:
    """The tick of each run of the workflow (from the run's input), in order."""
    out = []
    for record in await store.list_runs(scope, workflow=workflow_id, limit=10_000):
        [started, *_] = await store.list_events(scope, record.id)
        out.append(datetime.fromisoformat(started.payload["input"][TRIGGER_KEY]["tick"]))
    return sorted(out)


# ---- schedules --------------------------------------------------------------------------------


def test_the_accepted_schedule_shapes() -> None:
    assert parse_schedule("*/5  * * * *") == Schedule("*/5 * * * *", "UTC", "one", 100)
    assert parse_schedule(
        {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "catch_up": "all", "max_catch_up": 7}
    ) == Schedule("0 9 * * 1-5", "Europe/Berlin", "all", 7)
    assert parse_schedule("@HOURLY").cron == "@hourly"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "needs a schedule"),
        ("* * * *", "5-field cron"),
        ("* * * * * *", "5-field cron"),  # croniter's seconds field is not accepted
        ("61 * * * *", "5-field cron"),
        ("@reboot", "unknown cron macro"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "* * * * *", "catch_up": "some"}, "catch_up must be one of"),
        ({"cron": "* * * * *", "max_catch_up": 0}, "max_catch_up"),
        ({"cron": "* * * * *", "every": "5m"}, "unknown key"),
        ({"timezone": "UTC"}, "cron must be"),
        (5, "cron string or an object"),
    ],
)
def test_invalid_schedules_say_how_to_write_them(value: Any, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        parse_schedule(value)
    assert schedule_problems(value)


def test_ticks_are_computed_in_the_schedules_time_zone() -> None:
    berlin = parse_schedule({"cron": "0 9 * * *", "timezone": "Europe/Berlin"})
    winter = datetime(2024, 12, 19, 0, 0, tzinfo=UTC)
    assert berlin.next_after(winter) == datetime(2024, 12, 19, 8, 0, tzinfo=UTC)
    summer = datetime(2024, 7, 1, 0, 0, tzinfo=UTC)
    assert berlin.next_after(summer) == datetime(2024, 7, 1, 7, 0, tzinfo=UTC)
    every5 = parse_schedule("*/5 * * * *")
    assert every5.at_or_before(T0) == T0
    assert every5.before(T0) == T0 - minutes(5)
    assert every5.next_after(T0) == T0 + minutes(5)


def test_the_run_id_is_derived_from_the_tick() -> None:
    a = cron_run_id(ACME_PROD, "wf_report", T0)
    assert a == cron_run_id(ACME_PROD, "wf_report", T0.astimezone())  # same instant
    assert a.startswith("cron_")
    assert len(a) == 5 + 24
    assert a != cron_run_id(ACME_PROD, "wf_report", T0 + minutes(1))
    assert a != cron_run_id(ACME_STAGING, "wf_report", T0)
    assert a != cron_run_id(ACME_PROD, "wf_other", T0)


async def test_scheduler_arguments(engine: Engine) -> None:
    with pytest.raises(UsageError, match="max_interval < grace"):
        Scheduler(engine, grace=10, max_interval=30)
    with pytest.raises(UsageError, match="Engine or a SqlStore"):
        Scheduler("sqlite:///x.db")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="timezone-aware"):
        await Scheduler(engine).tick(datetime(2024, 1, 1))


# ---- firing -----------------------------------------------------------------------------------


async def test_each_tick_fires_once_on_time_in_every_scope(
    engine: Engine, make_workflow: MakeWorkflow
) -> None:
    await make_workflow(ACME_PROD, "wf_report", scheduled("*/5 * * * *"))
    await make_workflow(GLOBEX_PROD, "wf_report", scheduled("*/10 * * * *"))
    await make_workflow(ACME_PROD, "wf_off", scheduled("* * * * *"), enabled=False)
    await make_workflow(ACME_PROD, "wf_manual", None)
    scheduler = Scheduler(engine)

    first = await scheduler.tick(T0 + minutes(1))
    assert first.fired == []
    assert first.next_due == T0 + minutes(5)
    for at in range(2, 31):
        await scheduler.tick(T0 + minutes(at) + timedelta(seconds=3))

    assert await ticks_of(engine.store, ACME_PROD, "wf_report") == [
        T0 + minutes(m) for m in (5, 10, 15, 20, 25, 30)
    ]
    assert await ticks_of(engine.store, GLOBEX_PROD, "wf_report") == [
        T0 + minutes(m) for m in (10, 20, 30)
    ]
    assert await ticks_of(engine.store, ACME_PROD, "wf_off") == []
    progress = await engine.store.get_schedule_progress(ACME_PROD, "wf_report")
    assert progress.last_tick == T0 + minutes(30)
    assert progress.next_tick == T0 + minutes(35)
    assert progress.schedule == "*/5 * * * *|UTC"


async def test_a_bad_schedule_does_not_stop_the_others(
    engine: Engine, make_workflow: MakeWorkflow
) -> None:
    await make_workflow(ACME_PROD, "wf_bad", scheduled("*/5 * * * *", timezone="Nowhere/Land"))
    await make_workflow(ACME_PROD, "wf_good", scheduled("*/5 * * * *"))
    result = await Scheduler(engine).tick(T0 + minutes(5))
    assert [(f.workflow_id, f.tick) for f in result.fired] == [("wf_good", T0 + minutes(5))]
    [(scope, workflow_id, message)] = result.errors
    assert (scope, workflow_id) == (ACME_PROD, "wf_bad")
    assert "time zone" in message


async def _pass(schedulers: Iterable[Scheduler], at: datetime) -> list[Any]:
    return await asyncio.gather(*(s.tick(at) for s in schedulers))


async def test_several_schedulers_and_a_restart_fire_each_tick_once(
    db_path: str, clock: FakeClock
) -> None:
    await _several_schedulers(db_path, clock)


async def test_several_schedulers_on_postgresql(postgres_url: str, clock: FakeClock) -> None:
    await _several_schedulers(postgres_url, clock)


async def _several_schedulers(url: str, clock: FakeClock) -> None:
    """Three schedulers on one database: an Engine's, a bare store's, and one in another
    OS process, each making a pass at every minute for half an hour; then a restart."""
    instants = [T0 + minutes(m) + timedelta(seconds=2) for m in range(1, 31)]
    expected = {cron_run_id(ACME_PROD, "wf_minutely", T0 + minutes(m)) for m in range(1, 31)}
    async with Engine.open(url, clock=clock, worker=False) as engine:
        await create_workflow(engine, ACME_PROD, "wf_minutely", scheduled("* * * * *", "none"))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PROCESS),
            url,
            *(at.isoformat() for at in instants),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdin is not None
            assert process.stdout is not None
            assert await asyncio.wait_for(process.stdout.readline(), 30) == b"ready\n"
            store = await SqlStore.open(url)
            try:
                local = [Scheduler(engine), Scheduler(store, clock)]
                process.stdin.write(b"go\n")
                await process.stdin.drain()
                results = []
                for at in instants:
                    results += await _pass(local, at)
            finally:
                await store.close()
            output, _ = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0
        remote = json.loads(output.decode().strip().splitlines()[-1])
        assert remote["errors"] == []
        assert all(not r.errors for r in results)

        fired = [f.run_id for r in results for f in r.fired] + remote["fired"]
        assert sorted(fired) == sorted(expected), "each tick fired by exactly one scheduler"
        runs = {r.id for r in await engine.store.list_runs(ACME_PROD, limit=1000)}
        assert runs == expected
        assert await ticks_of(engine.store, ACME_PROD, "wf_minutely") == [
            T0 + minutes(m) for m in range(1, 31)
        ]

    # A restart: a new engine passes over the same half hour again; nothing fires.
    async with Engine.open(url, clock=clock, worker=False) as engine:
        scheduler = Scheduler(engine)
        again = [await scheduler.tick(at) for at in instants]
        assert [f for r in again for f in r.fired] == []
        # Even with its progress lost, the run ids hold: only duplicates.
        await engine.store.delete_schedule_progress(ACME_PROD, "wf_minutely")
        lost = await Scheduler(engine).tick(instants[-1])
        assert lost.fired == []
        assert len(lost.duplicates) == 1
        assert {r.id for r in await engine.store.list_runs(ACME_PROD, limit=1000)} == expected


@pytest.mark.parametrize(
    ("policy", "fired_after_downtime", "skipped"),
    [
        ("none", [], 11),
        ("one", [60], 10),
        ("all", [10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60], 0),
    ],
)
async def test_catch_up_after_downtime(
    db_path: str,
    clock: FakeClock,
    policy: str,
    fired_after_downtime: list[int],
    skipped: int,
) -> None:
    async with Engine.open(db_path, clock=clock, worker=False) as engine:
        await create_workflow(engine, ACME_PROD, "wf_job", scheduled("*/5 * * * *", policy))
        result = await Scheduler(engine).tick(T0 + minutes(5) + timedelta(seconds=10))
        assert [f.tick for f in result.fired] == [T0 + minutes(5)]
    # Every scheduler is down from 10:05:10 to 11:02:30: ticks 10:10 ... 11:00 are missed.
    down_until = T0 + minutes(62.5)
    clock.set(down_until)
    async with Engine.open(db_path, clock=clock, worker=False) as engine:
        scheduler = Scheduler(engine)
        result = await scheduler.tick(down_until)
        assert [f.tick for f in result.fired] == [T0 + minutes(m) for m in fired_after_downtime]
        assert all(f.missed for f in result.fired)
        assert result.skipped == skipped
        assert result.next_due == T0 + minutes(65)
        # back to normal: the next tick is on time
        later = await scheduler.tick(T0 + minutes(65) + timedelta(seconds=1))
        assert [(f.tick, f.missed) for f in later.fired] == [(T0 + minutes(65), False)]
        expected = [5, *fired_after_downtime, 65]
        assert await ticks_of(engine.store, ACME_PROD, "wf_job") == [
            T0 + minutes(m) for m in expected
        ]
    # Another restart at the same instant: nothing more.
    async with Engine.open(db_path, clock=clock, worker=False) as engine:
        result = await Scheduler(engine).tick(T0 + minutes(65) + timedelta(seconds=1))
        assert result.fired == []
        assert result.duplicates == []


async def test_catch_up_all_is_bounded(engine: Engine, make_workflow: MakeWorkflow) -> None:
    await make_workflow(ACME_PROD, "wf_job", scheduled("* * * * *", "all", max_catch_up=5))
    day2 = T0 + timedelta(days=2)
    result = await Scheduler(engine).tick(day2 + timedelta(seconds=30))
    # the on-time tick, and the 5 latest of the 2 days of missed ones
    assert [f.tick for f in result.fired] == [day2 - minutes(m) for m in (5, 4, 3, 2, 1, 0)]
    assert result.skipped >= 1  # a lower bound: the older ones were not counted
    progress = await engine.store.get_schedule_progress(ACME_PROD, "wf_job")
    assert progress.next_tick == day2 + minutes(1)


async def test_a_disabled_period_is_not_caught_up(
    engine: Engine, make_workflow: MakeWorkflow, clock: FakeClock
) -> None:
    await make_workflow(ACME_PROD, "wf_job", scheduled("*/5 * * * *", "all"))
    scheduler = Scheduler(engine)
    await scheduler.tick(T0 + minutes(5) + timedelta(seconds=1))
    await engine.store.set_workflow_enabled(ACME_PROD, "wf_job", False, now=T0 + minutes(6))
    for m in range(10, 35, 5):
        assert (await scheduler.tick(T0 + minutes(m))).fired == []
    await engine.store.set_workflow_enabled(ACME_PROD, "wf_job", True, now=T0 + minutes(33))
    result = await scheduler.tick(T0 + minutes(35) + timedelta(seconds=1))
    assert [f.tick for f in result.fired] == [T0 + minutes(35)]


async def test_run_forever_fires_when_the_tick_comes(
    engine: Engine, make_workflow: MakeWorkflow, clock: FakeClock
) -> None:
    await make_workflow(ACME_PROD, "wf_job", scheduled("* * * * *"))
    clock.set(T0 + timedelta(seconds=30))
    async with Scheduler(engine, grace=60, max_interval=0.05):
        await asyncio.sleep(0.2)
        assert await ticks_of(engine.store, ACME_PROD, "wf_job") == []
        clock.set(T0 + minutes(1) + timedelta(seconds=1))
        for _ in range(100):
            if await ticks_of(engine.store, ACME_PROD, "wf_job"):
                break
            await asyncio.sleep(0.05)
    assert await ticks_of(engine.store, ACME_PROD, "wf_job") == [T0 + minutes(1)]


async def test_a_changed_schedule_takes_over_from_the_update(
    engine: Engine, make_workflow: MakeWorkflow
) -> None:
    await make_workflow(ACME_PROD, "wf_job", scheduled("*/5 * * * *"))
    scheduler = Scheduler(engine)
    await scheduler.tick(T0 + minutes(5) + timedelta(seconds=1))
    # version 2 runs every 10 minutes from 10:06 on
    await engine.for_scope(ACME_PROD).deploy(
        definition("wf_job", scheduled("*/10 * * * *"), version=2)
    )
    await engine.store.set_workflow_version(
        ACME_PROD,
        "wf_job",
        expected_version=1,
        version=2,
        name="job",
        description=None,
        trigger_type="scheduled",
        event_name=None,
        schedule="*/10 * * * *",
        now=T0 + minutes(6),
    )
    for m in (10, 15, 20):
        await scheduler.tick(T0 + minutes(m) + timedelta(seconds=1))
    runs = await engine.store.list_runs(ACME_PROD, limit=100)
    assert sorted((r.workflow_version, r.id) for r in runs) == sorted(
        [
            ("1", cron_run_id(ACME_PROD, "wf_job", T0 + minutes(5))),
            ("2", cron_run_id(ACME_PROD, "wf_job", T0 + minutes(10))),
            ("2", cron_run_id(ACME_PROD, "wf_job", T0 + minutes(20))),
        ]
    )
    progress = await engine.store.get_schedule_progress(ACME_PROD, "wf_job")
    assert progress.schedule == "*/10 * * * *|UTC"
    assert progress.next_tick == T0 + minutes(30)
