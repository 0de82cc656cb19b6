"""Legato embedded on one SQLite file: the engine and its worker in this process."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from bench.engines.base import BenchEngine, Finished, NotApplicable
from bench.engines.legato_common import NEEDS_API, load, mark_of, sqlite_durability


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

    async def teardown(self) -> None:
        try:
            await self._cm.__aexit__(None, None, None)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def prepare(self, shape: str, arg: float) -> None:
        name, _version = await self.engine.deploy(load(shape, arg))
        self._names[(shape, arg)] = name

    async def start(self, shape: str, arg: float) -> Any:
        return (shape, await self.engine.start(self._names[(shape, arg)], None))

    async def wait(self, handle: Any) -> Finished:
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
        raise NotApplicable(NEEDS_API)

    def durability(self) -> str:
        return sqlite_durability(self._sync)

    def versions(self) -> dict[str, str]:
        import sqlite3

        import legato

        return {"legato": legato.__version__, "sqlite": sqlite3.sqlite_version}
