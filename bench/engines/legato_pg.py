"""Legato on PostgreSQL: N ``legato worker`` processes and a starter (this process).

Per run of the harness: a fresh database is created (and dropped at the end); the
starter opens it with ``Engine.open(url, worker=False)`` (which migrates the schema),
deploys the definitions and starts runs; the worker processes claim and execute the work.
The starter learns that runs ended by polling their status (every ``POLL_S``), as any
client of a remote worker pool does.

W5 (trigger) goes through Legato's HTTP API: on its first ``prepare("trigger")`` this
starts ``legato serve --no-worker`` on the same database (the API process starts runs;
the ``legato worker`` processes execute them, as in the other workloads) and posts events
to it over loopback HTTP (:mod:`bench.engines.legato_api`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.engines.base import BenchEngine, Finished, pg_backends_cpu_seconds
from bench.engines.legato_api import (
    ApiRun,
    ApiServer,
    default_sigint,
    legato_command,
    require_server_extra,
)
from bench.engines.legato_common import load, mark_of

POLL_S = 0.01
TERMINAL = ("completed", "failed", "cancelled", "compensation_failed")


class _Poller:
    """One query for every run still awaited; resolves futures as runs end."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._waiting: dict[str, asyncio.Future[tuple[str, float]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        import psycopg

        self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._conn.close()

    def wait(self, run_id: str) -> asyncio.Future[tuple[str, float]]:
        fut: asyncio.Future[tuple[str, float]] = asyncio.get_running_loop().create_future()
        self._waiting[run_id] = fut
        self._wake.set()
        return fut

    async def _loop(self) -> None:
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            ids = list(self._waiting)
            cur = await self._conn.execute(
                "SELECT id, status FROM runs WHERE id = ANY(%s) AND status = ANY(%s)",
                (ids, list(TERMINAL)),
            )
            now = time.time()
            for run_id, status in await cur.fetchall():
                fut = self._waiting.pop(run_id, None)
                if fut is not None and not fut.done():
                    fut.set_result((status, now))
            await asyncio.sleep(POLL_S)


class _LegatoPg(BenchEngine):
    workers = 1
    # the starter polls the runs it awaits in one query; keep that query small (W4's
    # marks are the engine's own records, so the order of waiting does not matter)
    max_waiters = 200

    async def setup(self) -> None:
        import legato
        from bench.pg import create_database

        self._db, self.url = await asyncio.to_thread(create_database, "legato_bench")
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logdir = tempfile.mkdtemp(prefix="legato-bench-workers-")
        self._logs: list[Any] = []
        self._cm = legato.Engine.open(self.url, worker=False)
        self.engine = await self._cm.__aenter__()  # migrates the fresh database
        env = dict(os.environ, LEGATO_DB=self.url, LEGATO_LOG_LEVEL="WARNING")
        for key, value in (self.options.get("legato_env") or {}).items():
            env[key] = str(value)
        for i in range(self.workers):
            log = open(os.path.join(self._logdir, f"worker-{i + 1}.log"), "wb")  # noqa: SIM115, ASYNC230
            self._logs.append(log)
            self._procs.append(
                subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
                    [*legato_command(), "worker", "--db", self.url],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    preexec_fn=default_sigint,
                )
            )
        await self._await_workers()
        self._poller = _Poller(self.url)
        await self._poller.start()
        self._names: dict[tuple[str, float], str] = {}
        self._api: ApiServer | None = None

    async def _await_workers(self) -> None:
        import psycopg

        deadline = time.monotonic() + 60
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            while True:
                for i, proc in enumerate(self._procs):
                    if proc.poll() is not None:
                        err = Path(self._logs[i].name).read_text(errors="replace")  # noqa: ASYNC240
                        raise RuntimeError(f"a legato worker exited: {err[-2000:]}")
                cur = await conn.execute("SELECT count(*) FROM workers")
                row = await cur.fetchone()
                if row is not None and row[0] >= self.workers:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("legato workers did not register within 60 s")
                await asyncio.sleep(0.1)

    async def teardown(self) -> None:
        from bench.pg import drop_database

        try:
            if self._api is not None:
                with contextlib.suppress(Exception):
                    await self._api.stop()
            with contextlib.suppress(Exception):
                await self._poller.stop()
            for proc in self._procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            for proc in self._procs:
                try:
                    await asyncio.to_thread(proc.wait, 20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            await self._cm.__aexit__(None, None, None)
        finally:
            for log in self._logs:
                log.close()
            shutil.rmtree(self._logdir, ignore_errors=True)
            await asyncio.to_thread(drop_database, self._db)

    async def prepare(self, shape: str, arg: float) -> None:
        if shape == "trigger":
            await self._start_api()
            await self._api_server().deploy(shape, arg)
            return
        name, _version = await self.engine.deploy(load(shape, arg))
        self._names[(shape, arg)] = name

    async def start(self, shape: str, arg: float) -> Any:
        return (shape, await self.engine.start(self._names[(shape, arg)], None))

    async def wait(self, handle: Any) -> Finished:
        if isinstance(handle, ApiRun):
            return await self._api_server().wait(handle)
        shape, run_id = handle
        status, done_at = await self._poller.wait(run_id)
        mark = None
        if shape in ("timer", "trigger") or status != "completed":
            result = await self.engine.get(run_id)
            mark = mark_of(result.steps)
            error = result.error
        else:
            error = None
        return Finished(
            ok=status == "completed",
            done_at=done_at,
            mark=mark,
            error=None if status == "completed" else f"{status}: {error}",
        )

    async def trigger(self, arg: float) -> Any:
        """POST one CloudEvent to ``legato serve``; the execution it started."""
        return await self._api_server().publish()

    async def _start_api(self) -> None:
        if self._api is not None:
            return
        require_server_extra()
        # the same environment as the workers; no worker in the API process
        env = {str(k): str(v) for k, v in (self.options.get("legato_env") or {}).items()}
        self._api = ApiServer(self.url, worker=False, env=env)
        await self._api.start()

    def _api_server(self) -> ApiServer:
        if self._api is None:
            raise RuntimeError("prepare('trigger', ...) starts the API; call it first")
        return self._api

    def child_pids(self) -> dict[str, int]:
        pids = {f"worker-{i + 1}": p.pid for i, p in enumerate(self._procs)}
        if self._api is not None and self._api.proc is not None:
            pids["legato-serve"] = self._api.proc.pid
        return pids

    def cpu_seconds(self) -> dict[str, float]:
        return super().cpu_seconds() | {"postgres": pg_backends_cpu_seconds(self._db)}

    def durability(self) -> str:
        from bench.pg import server_durability

        return (
            f"{server_durability()}; a step is reported done only after its commit "
            "(group commit per worker)"
        )

    def versions(self) -> dict[str, str]:
        import legato

        return {"legato": legato.__version__}


class LegatoPg1(_LegatoPg):
    name = "legato-pg-1"
    label = "Legato, PostgreSQL, 1 worker"
    workers = 1


class LegatoPg2(_LegatoPg):
    name = "legato-pg-2"
    label = "Legato, PostgreSQL, 2 workers"
    workers = 2


class LegatoPg4(_LegatoPg):
    name = "legato-pg-4"
    label = "Legato, PostgreSQL, 4 workers"
    workers = 4
