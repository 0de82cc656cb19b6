"""Legato's HTTP API as W5 uses it: a ``legato serve`` process and an httpx client.

:class:`ApiServer` starts ``legato serve`` on a free loopback port, with a freshly
generated HS256 secret (``LEGATO_API_JWT_SECRET``) and a token minted from it for
tenant ``default``, environment ``default`` (the scope the harness's own ``Engine`` uses).
The harness talks to it over real loopback HTTP only:

- :meth:`ApiServer.deploy`: ``POST /api/v1/workflows/definitions`` (the ``trigger``
  shape, whose definition carries ``trigger: {type: event, event_name: bench.trigger}``);
- :meth:`ApiServer.publish`: ``POST /api/v1/events`` with a CloudEvents 1.0 event of
  that type; the 202 answer names the execution the event started;
- :meth:`ApiServer.wait`: ``GET /api/v1/workflows/executions/{id}`` until the run ends;
  the mark is the ``mark`` step's recorded ``started_at`` in that view.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.engines.base import Finished, NotApplicable
from bench.engines.legato_common import EVENT_TYPE, MARK_STEP, definition

TERMINAL = ("completed", "failed", "cancelled", "compensation_failed")
POLL_S = 0.01
"""How often :meth:`ApiServer.wait` reads the execution (the mark does not depend on it)."""
READY_TIMEOUT_S = 60.0
EVENTS = "/api/v1/events"
DEFINITIONS = "/api/v1/workflows/definitions"
EXECUTIONS = "/api/v1/workflows/executions"


def legato_command() -> list[str]:
    beside = Path(sys.executable).parent / "legato"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("legato")
    return [found] if found else [sys.executable, "-m", "legato.cli"]


def default_sigint() -> None:
    """``preexec_fn``: a harness started in the background (nohup ... &) ignores SIGINT,
    and children inherit that: give the child Ctrl-C back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_server_extra() -> None:
    """NotApplicable when ``legato serve`` cannot run here (the ``server`` extra)."""
    import importlib.util

    gaps = [
        m for m in ("fastapi", "uvicorn", "jwt", "httpx") if importlib.util.find_spec(m) is None
    ]
    if gaps:
        raise NotApplicable(f"n/a (needs legato[server]: {', '.join(gaps)} missing)")


@dataclass(frozen=True, slots=True)
class ApiRun:
    """W5's handle: an execution an event started through the API."""

    execution_id: str


class ApiServer:
    """One ``legato serve`` process and a client of it (see the module)."""

    def __init__(self, db: str, *, worker: bool, env: dict[str, str] | None = None) -> None:
        self.db = db
        self.worker = worker
        self._env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None
        self._workflows: dict[str, str] = {}
        self._dir: str | None = None
        self._log: Any = None

    async def start(self) -> None:
        import httpx

        from legato.api.auth import EXECUTE, READ, WRITE, TokenVerifier

        secret = secrets.token_urlsafe(48)
        token = TokenVerifier(secret=secret).mint(
            scopes=(READ, WRITE, EXECUTE), subject="bench", lifetime=24 * 3600
        )
        port = free_port()
        self._dir = tempfile.mkdtemp(prefix="legato-bench-api-")
        self._log = open(os.path.join(self._dir, "serve.log"), "wb")  # noqa: SIM115, ASYNC230
        # no inherited API settings (keys, dev mode): this server checks our secret only
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEGATO_API_")}
        env["LEGATO_LOG_LEVEL"] = "WARNING"
        env.update(self._env)
        env.update(LEGATO_API_JWT_SECRET=secret, LEGATO_API_DEV="false")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [
                *legato_command(),
                "serve",
                "--db",
                self.db,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--worker" if self.worker else "--no-worker",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=default_sigint,
        )
        self._client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60.0,
        )
        await self._await_ready()

    async def _await_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"legato serve exited: {self._log_tail()}")
            try:
                r = await self._client.get("/ready")
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.TransportError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise TimeoutError(f"legato serve not ready within {READY_TIMEOUT_S:g} s: {last}")
            await asyncio.sleep(0.1)

    def _log_tail(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-2000:]

    async def stop(self) -> None:
        try:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    await self._client.aclose()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.to_thread(self.proc.wait, 20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    await asyncio.to_thread(self.proc.wait)
        finally:
            if self._log is not None:
                self._log.close()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)

    async def deploy(self, shape: str, arg: float) -> str:
        """Create the definition of ``shape`` through the API; its workflow id."""
        if shape in self._workflows:
            return self._workflows[shape]
        r = await self._client.post(DEFINITIONS, json=definition(shape, arg))
        if r.status_code != 201:
            raise RuntimeError(f"creating the {shape} definition: {r.status_code} {r.text}")
        self._workflows[shape] = str(r.json()["id"])
        return self._workflows[shape]

    async def publish(self, event_type: str = EVENT_TYPE) -> ApiRun:
        """Publish one CloudEvent; the execution it started (exactly one must start)."""
        event = {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "/bench/w5",
            "type": event_type,
            "data": {},
        }
        r = await self._client.post(EVENTS, json=event)
        if r.status_code != 202:
            raise RuntimeError(f"POST {EVENTS}: {r.status_code} {r.text}")
        started = r.json()["started"]
        if len(started) != 1:
            raise RuntimeError(f"the event started {len(started)} executions: {r.text}")
        return ApiRun(str(started[0]["execution_id"]))

    async def wait(self, run: ApiRun, timeout: float = 900.0) -> Finished:
        """Read the execution until it ends; the mark is its ``mark`` step's start."""
        deadline = time.monotonic() + timeout
        while True:
            r = await self._client.get(f"{EXECUTIONS}/{run.execution_id}")
            if r.status_code != 200:
                raise RuntimeError(f"GET execution: {r.status_code} {r.text}")
            view = r.json()
            if view["legato_status"] in TERMINAL:
                break
            if time.monotonic() > deadline:
                return Finished(ok=False, done_at=time.time(), error=f"timeout: {view}")
            await asyncio.sleep(POLL_S)
        done_at = time.time()
        ok = view["legato_status"] == "completed"
        return Finished(
            ok=ok,
            done_at=done_at,
            mark=api_mark(view["step_executions"]),
            error=None if ok else f"{view['legato_status']}: {view.get('error')}",
        )


def api_mark(steps: list[dict[str, Any]]) -> float | None:
    """Wall time at which the ``mark`` step started, from the API's execution view (only
    once it completed: then ``started_at`` is the worker's record of the start)."""
    for step in steps:
        if step.get("step_id") == MARK_STEP and step.get("legato_status") == "completed":
            started = step.get("started_at")
            return datetime.fromisoformat(started).timestamp() if started else None
    return None
