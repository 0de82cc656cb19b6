"""``/health`` (the process answers) and ``/ready`` (it can do its work: the database
answers, its schema is current, and a worker is alive, in this process or elsewhere)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from legato.api.deps import engine_of
from legato.api.schemas import Health, Readiness
from legato.errors import LegatoError
from legato.runtime.local import Engine

log = logging.getLogger("legato.api")
router = APIRouter(tags=["health"])

STALE_AFTER_HEARTBEATS = 5  # the worker's own rule for calling another worker dead


@router.get("/health", response_model=Health, summary="Liveness")
async def health() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: database, migrations, a live worker",
    responses={503: {"description": "Not ready", "model": Readiness}},
)
async def ready(engine: Annotated[Engine, Depends(engine_of)]) -> JSONResponse:
    checks: dict[str, dict[str, Any]] = {}
    try:
        current, head = await engine.store.schema_revision()
    except LegatoError as exc:
        log.warning("readiness: the database does not answer: %s", exc)
        checks["database"] = {"ok": False, "detail": "the database does not answer (see the log)"}
        checks["migrations"] = {"ok": False, "detail": "unknown: the database does not answer"}
        checks["worker"] = {"ok": False, "detail": "unknown: the database does not answer"}
    else:
        checks["database"] = {"ok": True, "detail": f"{engine.store.dialect} answers"}
        checks["migrations"] = (
            {"ok": True, "detail": f"schema at revision {current}"}
            if current == head
            else {
                "ok": False,
                "detail": f"schema at revision {current or 'none'}, this Legato needs {head}; "
                "restart Legato (it migrates on start) or run the migrations",
            }
        )
        checks["worker"] = await _worker_check(engine)
    ok = all(check["ok"] for check in checks.values())
    body = {"status": "ready" if ok else "not_ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ok else 503)


async def _worker_check(engine: Engine) -> dict[str, Any]:
    if engine.worker is not None:
        return {"ok": True, "detail": f"embedded worker {engine.worker.owner}"}
    now = engine.clock.now().timestamp()
    within = engine.options.heartbeat_interval * STALE_AFTER_HEARTBEATS
    try:
        every = {owner for owner, _h, _p in await engine.store.stale_workers(now, -1e12)}
        stale = {owner for owner, _h, _p in await engine.store.stale_workers(now, within)}
    except LegatoError as exc:
        log.warning("readiness: cannot read the workers: %s", exc)
        return {"ok": False, "detail": "cannot read the workers (see the log)"}
    live = every - stale
    if live:
        return {"ok": True, "detail": f"{len(live)} worker(s) with a heartbeat in {within:g} s"}
    return {
        "ok": False,
        "detail": f"no worker has sent a heartbeat in the last {within:g} s; start "
        "`legato worker` on this database, or `legato serve` with its embedded worker",
    }
