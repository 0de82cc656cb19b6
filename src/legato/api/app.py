"""The FastAPI application: ``create_app(settings)``.

The application owns one :class:`~legato.runtime.local.Engine` for its lifetime (opened
in the lifespan, with an embedded worker unless ``api_worker`` is false), which serves
every tenant through scoped views (``engine.for_scope``).  Routers: definitions,
executions (with signals and callbacks), health, events, webhooks, and seed 001's
templates and instances (``routers/chorus.py``).  Errors are problem+json
(``problems.py``); identity and scopes are dependencies (``auth.py``, ``deps.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI

from legato.api import definitions, executions, health, problems
from legato.api.auth import TokenVerifier
from legato.api.deps import known_query_parameters
from legato.api.routers import chorus
from legato.api.routers import events as event_routes
from legato.api.routers import webhooks as webhook_routes
from legato.runtime.local import Engine
from legato.settings import Settings

EngineFactory = Callable[[], contextlib.AbstractAsyncContextManager[Engine]]

DESCRIPTION = """\
Legato's REST API: workflow definitions (every update is a new immutable version),
executions (cancel, pause, resume, retry), signals and callbacks; and seed 001's
templates and instances (the same definitions and executions under another name).

Authenticate with `Authorization: Bearer <JWT>`; the token's `tenant_id` and
`environment_id` say whose workflows you act on, its `scopes` what you may do
(`workflows:read`, `workflows:write`, `workflows:execute`, `admin`). Errors are
`application/problem+json` (RFC 9457) and say what to fix.
"""


def open_engine(settings: Settings) -> contextlib.AbstractAsyncContextManager[Engine]:
    """The engine ``settings`` describe (with a worker unless ``api_worker`` is false)."""
    from legato.activity import ActivityRegistry
    from legato.runtime.worker import WorkerOptions

    registry = ActivityRegistry.from_settings(settings)
    return Engine.open(
        settings.db,
        registry=registry,
        activities=ActivityRegistry.import_paths(settings.activities),
        worker=settings.api_worker,
        options=WorkerOptions(
            concurrency=settings.worker_concurrency,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            default_step_timeout=settings.step_timeout,
        ),
        sqlite_synchronous=settings.sqlite_synchronous,
        services=Path(settings.services) if settings.services else None,
    )


def create_app(
    settings: Settings | None = None,
    *,
    engine: EngineFactory | None = None,
    verifier: TokenVerifier | None = None,
) -> FastAPI:
    """The application.  ``engine`` opens the engine for the app's lifetime (default: from
    ``settings``); ``verifier`` checks tokens (default: from ``settings``, which raises
    ConfigurationError when no key is configured and dev mode is off).

    In dev mode ``app.state.dev_token`` holds a token for tenant ``default``, environment
    ``default``, with every scope (when the verifier can mint one)."""
    settings = settings or Settings.from_env()
    verifier = verifier or TokenVerifier.from_settings(settings)
    factory: EngineFactory = engine or (lambda: open_engine(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with factory() as opened, contextlib.AsyncExitStack() as stack:
            if settings.api_scheduler and engine is None:
                # cron triggers: each tick fires once even with several schedulers running
                from legato.triggers.cron import Scheduler

                await stack.enter_async_context(Scheduler(opened))
            app.state.engine = opened
            try:
                yield
            finally:
                app.state.engine = None

    app = FastAPI(
        title="Legato",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
        dependencies=[Depends(known_query_parameters)],
    )
    app.state.settings = settings
    app.state.verifier = verifier
    app.state.engine = None
    app.state.dev_token = verifier.mint() if settings.api_dev and verifier.can_mint else None
    problems.install(app)
    _describe_problems(app)
    app.include_router(definitions.router)
    app.include_router(executions.router)
    app.include_router(executions.signals)
    app.include_router(executions.callbacks)
    app.include_router(health.router)
    app.include_router(event_routes.router)  # POST /api/v1/events (workflows:execute)
    app.include_router(webhook_routes.router)  # signed by the sender; no bearer token
    app.include_router(chorus.templates)  # seed 001: templates are definitions
    app.include_router(chorus.instances)  # seed 001: instances are executions
    return app


def _describe_problems(app: FastAPI) -> None:
    """Add the Problem schema the error responses refer to to the OpenAPI description."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            spec.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                problems.PROBLEM_SCHEMA
            )
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _version() -> str:
    import legato

    return str(getattr(legato, "__version__", "0"))


def routes_of(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route in the OpenAPI description (for tests and docs)."""
    spec: dict[str, Any] = app.openapi()
    return sorted(
        (method.upper(), path)
        for path, item in spec.get("paths", {}).items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    )
