"""One settings object, read from ``LEGATO_*`` environment variables.

| variable | default | meaning |
| --- | --- | --- |
| LEGATO_DB | legato.db | database: a SQLite path/URL or a PostgreSQL URL |
| LEGATO_ACTIVITIES | (none) | comma-separated import paths of your activities |
| LEGATO_SERVICES | (none) | a services.yaml registry: tasks naming a `service` call it |
| LEGATO_WORKER_CONCURRENCY | 100 | steps a worker runs at once |
| LEGATO_LEASE_SECONDS | 30 | how long a claimed step is a worker's before others may take it |
| LEGATO_POLL_INTERVAL | 0.25 | seconds between looks for due work when idle |
| LEGATO_STEP_TIMEOUT | 300 | default step timeout in seconds (a step's `timeout` wins) |
| LEGATO_SQLITE_SYNCHRONOUS | FULL | SQLite `synchronous` pragma: FULL or NORMAL |
| LEGATO_ALLOW_PRIVATE_NETWORKS | false | let http_request reach loopback/private addresses |
| LEGATO_ALLOWED_HOSTS | (none) | comma-separated hosts http_request may reach even if private |
| LEGATO_SMTP_HOST, _PORT | localhost, 1025 | send_email's SMTP server |
| LEGATO_SMTP_USER, _PASSWORD, _STARTTLS | -, -, false | SMTP login and STARTTLS |
| LEGATO_LOG_LEVEL | WARNING | log level |
| LEGATO_API_SCHEDULER | true | `legato serve` fires cron triggers (safe in several processes) |
| LEGATO_API_HOST, _PORT | 127.0.0.1, 8080 | where `legato serve` listens |
| LEGATO_API_DEV | false | dev mode: a random HS256 secret if none is set, and a printed token |
| LEGATO_API_WORKER | true | `legato serve` runs a worker in its process (false: `legato worker`) |
| LEGATO_API_JWT_SECRET | (none) | HS256 secret that signs the API's bearer tokens |
| LEGATO_API_JWT_PUBLIC_KEY | (none) | RS256 public key: PEM text or a path to a PEM file |
| LEGATO_API_JWT_JWKS | (none) | a JWKS file whose keys verify RS256 tokens (chosen by `kid`) |
| LEGATO_API_JWT_ISSUER, _AUDIENCE | (none) | when set, tokens must carry this `iss` / `aud` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from legato.errors import ConfigurationError


def _csv(value: object) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(v) for v in value)  # type: ignore[attr-defined]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    db: str = "legato.db"
    activities: tuple[str, ...] = ()
    services: str | None = None
    worker_concurrency: int = Field(100, ge=1, le=100_000)
    lease_seconds: float = Field(30.0, gt=0)
    poll_interval: float = Field(0.25, gt=0)
    step_timeout: float = Field(300.0, gt=0)
    sqlite_synchronous: str = "FULL"
    allow_private_networks: bool = False
    allowed_hosts: tuple[str, ...] = ()
    smtp_host: str = "localhost"
    smtp_port: int = 1025
    smtp_user: str | None = None
    smtp_password: str | None = Field(None, repr=False)
    smtp_starttls: bool = False
    log_level: str = "WARNING"
    # the REST API (`legato serve`)
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)
    api_dev: bool = False
    api_worker: bool = True
    api_scheduler: bool = True
    api_jwt_secret: str | None = Field(None, repr=False)
    api_jwt_public_key: str | None = None
    api_jwt_jwks: str | None = None
    api_jwt_issuer: str | None = None
    api_jwt_audience: str | None = None

    @field_validator("activities", "allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: object) -> tuple[str, ...]:
        return _csv(value)

    @field_validator("sqlite_synchronous")
    @classmethod
    def _sync(cls, value: str) -> str:
        value = value.upper()
        if value not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("must be FULL, NORMAL or EXTRA")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            key = f"LEGATO_{name.upper()}"
            if key in env:
                values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                f"LEGATO_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigurationError(f"invalid settings: {problems}") from exc
