"""The connector contract: what every adapter (gRPC, REST, GraphQL, AMQP, NATS, SOAP) does.

A task state that names ``service`` + ``operation`` becomes a :class:`Task`; the runtime
hands it to the service's :class:`Connector` through the policies (circuit breaker, rate
limit, auth, timeouts) and turns the :class:`Result`, or the classified
:class:`~legato.errors.StepError`, into the step's outcome.

Every failure an adapter reports is a ``StepError`` whose ``error_class`` is one of the
External Service Interface's classes (RETRYABLE, PERMANENT, RATE_LIMITED, AUTH_FAILED,
VALIDATION, TIMEOUT); the engine's durable retry decides what happens next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, kw_only=True, slots=True)
class Task:
    """One call of one operation, with everything a service needs to do it once."""

    task_id: str  # the step's path in the run
    run_id: str
    workflow: str
    service: str
    operation: str
    input: Any
    idempotency_key: str  # the same on every attempt of the step
    attempt: int = 1
    correlation_id: str = ""
    traceparent: str = ""  # W3C trace context
    deadline: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    tenant_id: str = "default"
    environment_id: str = "default"
    version: str | None = None  # the service version chosen by the registry's route


@dataclass(frozen=True, kw_only=True, slots=True)
class Result:
    """What a service answered. ``output`` becomes the step's result."""

    output: Any = None
    side_effects: tuple[dict[str, Any], ...] = ()
    cost: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    operation_id: str | None = None  # set by start_async: the service's handle

    def to_step_output(self) -> Any:
        return self.output

    def step_metadata(self) -> dict[str, Any]:
        """What is stored with the step besides its output (side effects, cost)."""
        data: dict[str, Any] = {}
        if self.side_effects:
            data["side_effects"] = list(self.side_effects)
        if self.cost:
            data["cost"] = self.cost
        if self.operation_id:
            data["operation_id"] = self.operation_id
        return data


@runtime_checkable
class Connector(Protocol):
    """An adapter for one service. Async; owns its client and connection pool."""

    name: str

    async def execute(self, task: Task) -> Result:
        """Do the operation; raise a classified StepError on failure."""
        ...

    async def execute_batch(self, tasks: list[Task]) -> list[Result | Exception]:
        """Do many tasks of one operation in one call; one result (or error) per task."""
        ...

    async def start_async(self, task: Task, callback_token: str) -> Result:
        """Start a long operation; its result arrives later by callback or by
        ``check_status``. Returns the service's acknowledgement (``operation_id``)."""
        ...

    async def check_status(self, task: Task, operation_id: str) -> Result | None:
        """Poll a started operation: its result, None while it is still running."""
        ...

    async def health_check(self) -> None:
        """Raise a StepError if the service is not healthy."""
        ...

    def capabilities(self) -> set[str]: ...

    async def aclose(self) -> None: ...


class AuthProvider(Protocol):
    """Credentials for one service (``connectors/auth.py`` builds one from its ``auth``).

    Adapters ask for ``headers()`` on every call; after a 401/UNAUTHENTICATED they call
    ``refresh()`` once and try again, and report AUTH_FAILED if that fails too.
    """

    async def headers(self) -> dict[str, str]:
        """Headers (or gRPC metadata) that authenticate a call."""
        ...

    async def refresh(self) -> None:
        """Forget cached credentials (an OAuth2 token) so the next call gets new ones."""
        ...

    def ssl_context(self) -> Any:
        """An ``ssl.SSLContext`` with the client certificate (mTLS), or None."""
        ...


class NoAuth:
    """A service that needs no credentials."""

    async def headers(self) -> dict[str, str]:
        return {}

    async def refresh(self) -> None:
        return None

    def ssl_context(self) -> Any:
        return None


# How the hub builds an adapter: the class at this import path is called as
# ``cls(config, auth=AuthProvider, network=NetworkPolicy)`` and must satisfy Connector.
ADAPTERS: dict[str, str] = {
    "rest": "legato.connectors.rest:RestConnector",
    "graphql": "legato.connectors.graphql:GraphQLConnector",
    "grpc": "legato.connectors.grpc:GrpcConnector",
    "amqp": "legato.connectors.amqp:AmqpConnector",
    "nats": "legato.connectors.nats:NatsConnector",
    "soap": "legato.connectors.soap:SoapConnector",
}
