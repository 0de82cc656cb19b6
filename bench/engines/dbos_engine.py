"""DBOS Transact (the ``dbos`` package) in this process, on SQLite or PostgreSQL.

The idiom: ``@DBOS.workflow`` async functions calling ``@DBOS.step`` functions;
``asyncio.gather`` of steps for the fan-out; ``DBOS.sleep_async`` for the durable timer.
DBOS's own settings are left as they are.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
from typing import Any

from dbos import DBOS

from bench.engines.base import BenchEngine, Finished


@DBOS.step()
async def noop_step() -> None:
    return None


@DBOS.step()
async def mark_step() -> float:
    return time.time()


@DBOS.workflow()
async def seq_workflow(steps: int) -> None:
    for _ in range(steps):
        await noop_step()


@DBOS.workflow()
async def fan_workflow(branches: int) -> None:
    await asyncio.gather(*(noop_step() for _ in range(branches)))


@DBOS.workflow()
async def timer_workflow(seconds: float) -> float:
    await DBOS.sleep_async(seconds)
    return await mark_step()


@DBOS.workflow()
async def trigger_workflow() -> float:
    return await mark_step()


class _Dbos(BenchEngine):
    start_concurrency = 64

    def system_database(self) -> str:
        raise NotImplementedError

    async def setup(self) -> None:
        url = self.system_database()
        DBOS(
            config={
                "name": "legato-bench",
                "system_database_url": url,
                "log_level": "WARNING",
            }
        )
        await asyncio.to_thread(DBOS.launch)

    async def teardown(self) -> None:
        await asyncio.to_thread(DBOS.destroy)

    async def start(self, shape: str, arg: float) -> Any:
        if shape == "seq":
            return await DBOS.start_workflow_async(seq_workflow, int(arg))
        if shape == "fan":
            return await DBOS.start_workflow_async(fan_workflow, int(arg))
        if shape == "timer":
            return await DBOS.start_workflow_async(timer_workflow, float(arg))
        raise ValueError(shape)

    async def trigger(self, arg: float) -> Any:
        # DBOS has no event API of its own: its trigger is start_workflow.
        return await DBOS.start_workflow_async(trigger_workflow)

    async def wait(self, handle: Any) -> Finished:
        try:
            value = await handle.get_result()
        except Exception as exc:
            return Finished(ok=False, done_at=time.time(), error=f"{type(exc).__name__}: {exc}")
        done_at = time.time()
        return Finished(ok=True, done_at=done_at, mark=value if isinstance(value, float) else None)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"dbos": version("dbos")}


class DbosSqlite(_Dbos):
    name = "dbos-sqlite"
    label = "DBOS (SQLite)"

    def system_database(self) -> str:
        self._dir = tempfile.mkdtemp(prefix="dbos-bench-")
        self._path = os.path.join(self._dir, "dbos.sqlite")
        return f"sqlite:///{self._path}"

    async def teardown(self) -> None:
        try:
            await super().teardown()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def durability(self) -> str:
        with sqlite3.connect(self._path) as conn:
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
            sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
                conn.execute("PRAGMA synchronous").fetchone()[0], "?"
            )
        return (
            f"as shipped: SQLite journal_mode={journal} (DBOS sets none), "
            f"synchronous={sync} (SQLite's default); one commit per step"
        )

    def versions(self) -> dict[str, str]:
        return super().versions() | {"sqlite": sqlite3.sqlite_version}


class DbosPg(_Dbos):
    name = "dbos-pg"
    label = "DBOS (PostgreSQL)"

    def system_database(self) -> str:
        from bench.pg import create_database

        self._db, url = create_database("dbos_bench")
        return url

    async def teardown(self) -> None:
        from bench.pg import drop_database

        try:
            await super().teardown()
        finally:
            drop_database(self._db)  # DBOS shut the loop's default executor down

    def cpu_seconds(self) -> dict[str, float]:
        from bench.engines.base import pg_backends_cpu_seconds

        return super().cpu_seconds() | {"postgres": pg_backends_cpu_seconds(self._db)}

    def durability(self) -> str:
        from bench.pg import server_durability

        return f"as shipped, on {server_durability()}; one commit per step"
