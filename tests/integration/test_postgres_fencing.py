"""A paused worker cannot overwrite a step another worker took over (PostgreSQL, real
processes).

A three-step workflow (``before`` → ``long`` → ``after``) POSTs to a recording stand-in
with the built-in ``http_request``; the stand-in answers ``long`` slowly (longer than a
lease).  Leases last 2 s (LEGATO_LEASE_SECONDS=2):

1. worker A claims ``long`` and calls the stand-in (which applies the effect);
2. A is frozen with SIGSTOP (at a moment it holds no open transaction): its heartbeats
   stop, and its lease on ``long`` expires;
3. worker B starts, claims the expired row (``FOR UPDATE SKIP LOCKED``; the fence moves
   from 1 to 2), calls the stand-in again under the same idempotency key (answered from
   the stand-in's record), records ``long`` and finishes the run;
4. A gets SIGCONT: its call returns, it tries to commit the late outcome under fence 1,
   and the store refuses it (``lease lost; dropping outcome``).

Then the run's history is exactly what B wrote, untouched by A: one StepCompleted per
step (``long``'s is B's attempt), the chain verifies, and every effect was applied once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from tests.standins import Call, Recorder
from tests.standins.workers import WorkerProcess, WorkerProcesses, worker_env

from legato import Engine
from legato.store._db import resolve_url

pytestmark = pytest.mark.slow

LEASE_SECONDS = 2.0
SLOW = 3.0  # the stand-in's answer time for `long`: longer than a lease
STEPS = ["before", "long", "after"]


def workflow(url: str) -> dict[str, Any]:
    states: dict[str, Any] = {}
    for i, name in enumerate(STEPS):
        states[name] = {
            "type": "task",
            "action": "http_request",
            "input": {
                "url": f"{url}/effects/{name}",
                "method": "POST",
                "json": {"step": name},
                "timeout": "60s",  # A must get its answer after the pause, not time out
            },
            "timeout": "90s",
            **({"next": STEPS[i + 1]} if i + 1 < len(STEPS) else {"end": True}),
        }
    return {"name": "fenced", "version": "1", "start_at": STEPS[0], "states": states}


def _sql(url: str, query: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(resolve_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(query), params))
    finally:
        engine.dispose()


def _pause_outside_transactions(worker: WorkerProcess, url: str) -> None:
    """SIGSTOP the worker at a moment none of its sessions is inside a transaction.

    A worker frozen inside one (a heartbeat or a commit: a few ms) would hold its row
    locks for as long as it is frozen: claims skip such rows, so nobody could take its
    work over until it runs again, unless the server ends idle transactions
    (idle_in_transaction_session_timeout; see docs/reference/postgres.md)."""
    name = sa.make_url(url).database
    for _ in range(200):
        worker.pause()
        busy = _sql(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
            "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'",
            db=name,
        )[0][0]
        if not busy:
            return
        worker.resume()
        time.sleep(0.003)
    raise AssertionError("the worker was inside a transaction at every attempt to pause it")


async def _wait_status(engine: Engine, run_id: str, timeout: float) -> str:
    until = time.monotonic() + timeout
    status = (await engine.get(run_id)).status
    while status == "running" and time.monotonic() < until:
        await asyncio.sleep(0.05)
        status = (await engine.get(run_id)).status
    return status


@pytest.mark.timeout(120)
async def test_a_paused_worker_cannot_record_a_step_another_worker_took_over(
    tmp_path: Path, postgres_db: str
) -> None:
    definition = tmp_path / "fenced.yaml"
    recorder = Recorder(
        identify_clients=True, delay=lambda c: SLOW if c.path == "/effects/long" else 0.01
    )
    env = worker_env(
        LEGATO_LEASE_SECONDS=str(LEASE_SECONDS),
        LEGATO_POLL_INTERVAL="0.05",
        LEGATO_ALLOW_PRIVATE_NETWORKS="true",
        LEGATO_LOG_LEVEL="INFO",  # "lease lost; dropping outcome" is logged at INFO
    )
    with (
        recorder,
        WorkerProcesses(postgres_db, env=env, logs=tmp_path) as workers,
    ):
        definition.write_text(yaml.safe_dump(workflow(recorder.url), sort_keys=False))
        async with Engine.open(postgres_db, worker=False) as engine:
            run_id = await engine.start(definition)
            key = f"{run_id}:long:0"

            # 1. A claims `long` and calls the stand-in.
            a = workers.spawn().wait_ready()
            call_a = recorder.wait_for(lambda c: c.idempotency_key == key, timeout=30)
            assert call_a is not None, f"A never called `long`:\n{a.output}"
            assert call_a.client_pid == a.pid

            # 2. Freeze A mid-call; its lease on `long` runs out.
            _pause_outside_transactions(a, postgres_db)
            paused_at = time.time()
            [(owner, fence, expires)] = _sql(
                postgres_db,
                "SELECT lease_owner, fence, lease_expires_at FROM due_work "
                "WHERE run_id = :run AND key = 'long'",
                run=run_id,
            )
            assert (owner, fence) == (a.owner, 1)
            assert expires - paused_at <= LEASE_SECONDS + 0.1

            # 3. B takes the expired row over and finishes the run while A is frozen.
            b = workers.spawn().wait_ready()
            status = await _wait_status(engine, run_id, timeout=30)
            assert status == "completed", f"{status}\nA:\n{a.output}\nB:\n{b.output}"
            assert a.paused
            assert a.alive
            calls = [c for c in recorder.calls if c.idempotency_key == key]
            assert [c.client_pid for c in calls] == [a.pid, b.pid], calls
            call_a, call_b = calls
            assert call_b.replayed  # the effect was applied once, by A's call
            assert call_b.wall >= expires - 0.05, "B ran `long` before A's lease expired"
            assert call_a.answering_at is not None  # the stand-in answered A (buffered)
            before = await engine.store.get_run(engine.scope, run_id)
            history = await engine.history(run_id)

            # 4. A wakes up with its answer; its commit under the old fence is refused.
            resumed_at = time.time()
            a.resume()
            refused = a.wait_log("lease lost; dropping outcome", timeout=20)
            refused_at = time.time()
            assert refused, f"A's late outcome was not refused by the fence:\n{a.output}"
            assert a.alive, a.output
            await asyncio.sleep(0.3)  # anything else A might (wrongly) write
            after = await engine.store.get_run(engine.scope, run_id)
            assert (after.version, after.last_seq, after.status) == (
                before.version,
                before.last_seq,
                "completed",
            )
            assert await engine.history(run_id) == history
            assert await engine.verify(run_id) == {run_id: None}
            assert _sql(postgres_db, "SELECT count(*) FROM due_work")[0][0] == 0
            result = await engine.get(run_id)
        a_log, b_log = a.output, b.output

    where = f"\nA:\n{a_log}\nB:\n{b_log}"
    print(
        f"fencing: A paused {paused_at - call_a.wall:.2f}s after its call, lease expired "
        f"{expires - paused_at:.2f}s later; B called {call_b.wall - expires:.2f}s after the "
        f"expiry; A frozen {resumed_at - paused_at:.1f}s; A's outcome refused "
        f"{refused_at - resumed_at:.2f}s after SIGCONT"
    )
    _check_history(history, run_id, call_a, call_b, where)
    # The stand-in: each effect applied once; only `long` was asked twice (A, then B).
    effects = recorder.effects
    assert set(effects) == {f"{run_id}:{s}:0" for s in STEPS}
    assert all(e.applied == 1 for e in effects.values())
    assert recorder.attempts() == Counter({key: 2} | {f"{run_id}:{s}:0": 1 for s in STEPS[::2]})
    views = {s["id"]: s for s in result.steps}
    assert views["long"]["output"]["json"] == effects[key].response


def _check_history(history: list[Any], run_id: str, call_a: Call, call_b: Call, where: str) -> None:
    types = Counter(e.type for e in history)
    assert [e.seq for e in history] == list(range(1, len(history) + 1)), where
    completed = Counter(e.payload["path"] for e in history if e.type == "StepCompleted")
    assert completed == Counter(STEPS), f"StepCompleted per step: {completed}{where}"
    assert types["StepScheduled"] == len(STEPS), where
    assert types["StepFailed"] == 0, where
    assert types["RunFinished"] == 1, where
    # The recorded outcome of `long` is B's: its attempt started after A's call.
    [long_done] = [e for e in history if e.type == "StepCompleted" and e.payload["path"] == "long"]
    started = long_done.payload["started_at"]
    assert call_a.wall < datetime.fromisoformat(started).timestamp() <= call_b.wall, (
        f"`long` recorded the attempt started at {started}, not B's{where}"
    )
    assert history[0].payload["run_id"] == run_id
