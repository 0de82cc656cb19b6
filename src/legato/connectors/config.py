"""The shape of ``services.yaml`` (seed 000's service registry), as pydantic models.

Secrets are :class:`pydantic.SecretStr`: their value never appears in ``repr``, logs,
events or API output; adapters read them with ``.get_secret_value()`` at call time.
``${ENV}`` references are interpolated before validation (see ``registry.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from legato.dsl.model import Condition, Duration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---- auth ---------------------------------------------------------------------------------


class OAuth2Auth(_Model):
    type: Literal["oauth2"]
    client_id: SecretStr
    client_secret: SecretStr
    token_url: str
    scope: str | None = None
    audience: str | None = None


class ApiKeyAuth(_Model):
    type: Literal["api_key"]
    header: str = "X-API-Key"
    value: SecretStr


class BearerAuth(_Model):
    type: Literal["bearer"]
    token: SecretStr


class MtlsAuth(_Model):
    type: Literal["mtls"]
    cert: str  # PEM file path
    key: str  # PEM file path
    ca: str | None = None  # CA bundle to verify the server


class NoAuth(_Model):
    type: Literal["none"] = "none"


Auth = Annotated[
    OAuth2Auth | ApiKeyAuth | BearerAuth | MtlsAuth | NoAuth, Field(discriminator="type")
]


# ---- policies -----------------------------------------------------------------------------


class ServiceRetry(_Model):
    max_attempts: int = Field(3, ge=1, le=100)
    backoff: Literal["exponential", "fixed", "linear"] = "exponential"
    initial_delay: Duration = 1.0
    max_delay: Duration = 60.0
    idempotency_header: str | None = None  # seed 000 puts it here for payment-stripe


class CircuitBreakerConfig(_Model):
    failure_threshold: int = Field(5, ge=1)
    timeout: Duration = 60.0  # open -> half-open after this long
    half_open_attempts: int = Field(1, ge=1)


class TimeoutConfig(_Model):
    connect: Duration = 5.0
    request: Duration = 30.0


class RateLimitConfig(_Model):
    requests_per_second: float = Field(gt=0)
    burst: int | None = Field(None, ge=1)


# ---- operations ---------------------------------------------------------------------------


class RestOperation(_Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str  # may hold {placeholders} filled from the task input
    query: dict[str, Any] | None = None


class GraphQLOperation(_Model):
    query: str  # a query or mutation document; the task input is its variables
    result: str | None = None  # a top-level field of `data` to return


class QueueOperation(_Model):
    queue: str | None = None  # AMQP routing key / queue
    subject: str | None = None  # NATS subject
    exchange: str = ""


class SoapOperation(_Model):
    method: str  # the WSDL operation name
    service: str | None = None
    port: str | None = None


class AsyncConfig(_Model):
    """How a service reports a long operation's result: a callback or polling."""

    status_operation: str | None = None  # polled with CheckStatus when set
    poll_interval: Duration = 5.0
    # where the service should call back (REST/GraphQL send it as X-Callback-Url;
    # `{token}` is replaced by the step's callback token)
    callback_url: str | None = None


class VersionRule(_Model):
    when: Condition
    version: str


class VersionRoute(_Model):
    default: str
    rules: tuple[VersionRule, ...] = ()


class ServiceVersion(_Model):
    endpoint: str | None = None
    operations: dict[str, Any] | None = None
    capabilities: tuple[str, ...] | None = None
    deprecated: bool = False


class BatchPolicy(_Model):
    operation: str | None = None  # the batch operation, if the service names it otherwise


ServiceType = Literal["grpc", "rest", "graphql", "amqp", "nats", "soap"]


class ServiceConfig(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    type: ServiceType
    endpoint: str
    auth: Auth | None = None
    retry: ServiceRetry | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    timeout: TimeoutConfig = TimeoutConfig()
    rate_limit: RateLimitConfig | None = None
    capabilities: tuple[str, ...] = ()
    idempotency_header: str | None = None
    operations: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, ServiceVersion] = Field(default_factory=dict)
    version_route: VersionRoute | None = None
    async_: AsyncConfig | None = Field(None, alias="async")
    batch: BatchPolicy | None = None
    wsdl: str | None = None  # SOAP
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ServiceConfig:
        if self.version_route is not None:
            known = set(self.versions)
            wanted = {self.version_route.default} | {r.version for r in self.version_route.rules}
            missing = sorted(wanted - known)
            if missing:
                raise ValueError(
                    f"version_route names version(s) {missing} that `versions` does not "
                    f"define; define them or route to one of {sorted(known)}"
                )
        return self

    def header_for_idempotency(self) -> str | None:
        return self.idempotency_header or (self.retry.idempotency_header if self.retry else None)

    def operation_names(self, version: str | None = None) -> set[str]:
        """The operations this service (or one of its ``versions``) offers: its
        ``capabilities`` and the names in its ``operations``; a version's own lists replace
        the service's.  Empty means "any operation"."""
        capabilities: tuple[str, ...] = self.capabilities
        operations: dict[str, Any] = self.operations
        if version is not None and version in self.versions:
            chosen = self.versions[version]
            if chosen.capabilities is not None:
                capabilities = chosen.capabilities
            if chosen.operations is not None:
                operations = chosen.operations
        return set(capabilities) | set(operations)


class Registry(_Model):
    services: tuple[ServiceConfig, ...]
    # Values ``${ENV}`` interpolation put where secrets go (set by registry.load_registry;
    # read by connectors.secrets.Secrets.from_registry).  Never serialised.
    _env_secrets: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def capabilities(self) -> dict[str, set[str]]:
        """Service name -> every operation it offers in any version (empty: any)."""
        out: dict[str, set[str]] = {}
        for service in self.services:
            names = service.operation_names()
            for version in service.versions:
                names |= service.operation_names(version)
            out[service.name] = names
        return out

    def get(self, name: str) -> ServiceConfig | None:
        for service in self.services:
            if service.name == name:
                return service
        return None
