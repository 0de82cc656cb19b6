"""Legato embedded on one SQLite file: the engine and its worker in this process.

W5 (trigger) goes through Legato's HTTP API instead: on its first ``prepare("trigger")``
this starts ``legato serve`` on a SQLite file of its own (API, engine and embedded worker
in that one process, as an operator runs it on SQLite) and posts events to it over
loopback HTTP (:mod:`bench.engines.legato_api`). The engine of this process stays on its
own file, so no two workers share one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from bench.engines.base import BenchEngine, Finished
from bench.engines.legato_api import ApiRun, ApiServer, require_server_extra
from bench.engines.legato_common import load, mark_of, sqlite_durability


class LegatoEmbedded(BenchEngine):
    name = "legato-sqlite"
    label = "Legato embedded (SQLite)"
    # Engine.wait re-reads the run every second as a fallback to its commit listener, so
    # 10,000 concurrent waits would cost 10,000 reads a second on the store's one thread.
    # Waiting on a bounded number at a time keeps W4 about timers, not about waiting.
    max_waiters = 64

    async def setup(self) -> None:
        import legato

        self._dir = tempfile.mkdtemp(prefix="legato-bench-")
        self._sync = str(self.options.get("sqlite_synchronous", "FULL")).upper()
        self._cm = legato.Engine.open(
            os.path.join(self._dir, "legato.db"),
            options=legato.WorkerOptions(),
            sqlite_synchronous=self._sync,
        )
        self.engine = await self._cm.__aenter__()
        self._names: dict[tuple[str, float], str] = {}
        self._api: ApiServer | None = None

    async def teardown(self) -> None:
        try:
            if self._api is not None:
                await self._api.stop()
        finally:
            try:
                await self._cm.__aexit__(None, None, None)
            finally:
                shutil.rmtree(self._dir, ignore_errors=True)

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
        result = await self.engine.wait(run_id, timeout=900)
        done_at = time.time()
        mark = mark_of(result.steps) if shape in ("timer", "trigger") else None
        return Finished(
            ok=result.status == "completed",
            done_at=done_at,
            mark=mark,
            error=None if result.status == "completed" else f"{result.status}: {result.error}",
        )

    async def trigger(self, arg: float) -> Any:
        """POST one CloudEvent to ``legato serve``; the execution it started."""
        return await self._api_server().publish()

    async def _start_api(self) -> None:
        if self._api is not None:
            return
        require_server_extra()
        self._api = ApiServer(
            os.path.join(self._dir, "api.db"),
            worker=True,
            env={"LEGATO_SQLITE_SYNCHRONOUS": self._sync},
        )
        await self._api.start()

    def _api_server(self) -> ApiServer:
        if self._api is None:
            raise RuntimeError("prepare('trigger', ...) starts the API; call it first")
        return self._api

    def child_pids(self) -> dict[str, int]:
        proc = self._api.proc if self._api is not None else None
        return {"legato-serve": proc.pid} if proc is not None else {}

    def durability(self) -> str:
        return sqlite_durability(self._sync)

    def versions(self) -> dict[str, str]:
        import sqlite3

        import legato

        return {"legato": legato.__version__, "sqlite": sqlite3.sqlite_version}
