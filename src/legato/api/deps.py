"""The dependencies routes declare: who calls (with which scope required) and the engine
acting for the caller's tenant and environment."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.exceptions import RequestValidationError

from legato.api.auth import EXECUTE, READ, WRITE, Principal, authorize
from legato.api.problems import NotServing
from legato.runtime.local import Engine


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller and the engine scoped to its tenant and environment: every read and
    write of a route goes through ``engine``."""

    principal: Principal
    engine: Engine

    @property
    def who(self) -> str:
        return self.principal.subject or "an API client"


def _caller(scope: str) -> Callable[..., Awaitable[Caller]]:
    # A default, not an Annotated[...] naming `scope`: annotations are resolved in the
    # module's globals, where this closure's `scope` does not exist.
    async def dependency(
        request: Request,
        principal: Principal = Security(authorize, scopes=[scope]),
    ) -> Caller:
        return Caller(principal, engine_of(request).for_scope(principal.scope))

    dependency.__name__ = f"caller_with_{scope.replace(':', '_')}"
    return dependency


Reader = Annotated[Caller, Depends(_caller(READ))]
"""A caller with ``workflows:read``."""

Writer = Annotated[Caller, Depends(_caller(WRITE))]
"""A caller with ``workflows:write``."""

Executor = Annotated[Caller, Depends(_caller(EXECUTE))]
"""A caller with ``workflows:execute``."""


def engine_of(request: Request) -> Engine:
    """The unscoped engine (callbacks and health checks, which have no tenant)."""
    engine: Engine | None = request.app.state.engine
    if engine is None:
        raise NotServing(
            "the server is starting or stopping and has no engine open. Fix: try again in a moment",
            headers={"Retry-After": "1"},
        )
    return engine


def _query_names(dependant: Any) -> set[str]:
    names = {str(field.alias) for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def known_query_parameters(request: Request) -> None:
    """Refuse query parameters the route does not take (422): a misspelt filter must not
    silently list everything."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = _query_names(dependant)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        takes = ", ".join(f"`{name}`" for name in sorted(allowed)) or "none"
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "msg": f"Unknown query parameter; this route takes {takes}",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ]
        )
