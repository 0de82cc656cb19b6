"""``Connectors``: the one object the worker uses to call external services.

::

    async with Connectors.from_file("services.yaml", store=store, network=policy) as hub:
        result = await hub.execute(task)

It builds each service's adapter lazily (``base.ADAPTERS``: ``module:Class`` per service
type, called as ``Class(config, auth=provider, network=network)``) and sends every call
through the same steps, in this order:

1. the service must exist (else ``StepError(PERMANENT)`` naming the known ones);
2. the task gets a ``correlation_id`` (``{run_id}:{task_id}``) and a W3C ``traceparent``
   (trace id from the run id, a new span id per call) if it has none;
3. version routing: ``versions`` + ``version_route`` (conditions over ``{"input": ...}``)
   choose ``task.version``; an unknown version is ``StepError(PERMANENT)``;
4. the operation must be one the service (version) offers, if it lists any
   (``StepError(VALIDATION)``);
5. the circuit breaker (when ``circuit_breaker`` is set), then the rate limiter (when
   ``rate_limit`` is set: in the store when one is given, else in memory);
6. the adapter call, bounded by ``timeout.request`` (and the task's deadline):
   ``StepError(TIMEOUT)`` when it runs out;
7. classification: a ``StepError`` stays as it is, ``httpx`` errors are classified by
   :mod:`legato.net`, anything else is ``RETRYABLE`` with its type name;
8. redaction: secrets of the registry (and fetched tokens) are masked in errors and
   results before they leave the hub.

Counters per (service, operation, outcome) and latency sums are in :meth:`stats`.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import os
import secrets as _random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from legato.connectors.auth import build_auth
from legato.connectors.base import ADAPTERS, AuthProvider, Connector, Result, Task
from legato.connectors.config import Registry, ServiceConfig
from legato.connectors.registry import load_registry
from legato.connectors.resilience import (
    MAX_IN_MEMORY_WAIT,
    CircuitBreaker,
    RateLimiter,
    retry_policy,
)
from legato.connectors.secrets import Secrets, SecretsFilter, install_log_filter
from legato.dsl import expr
from legato.dsl.model import RetryPolicy
from legato.errors import ErrorClass, ExpressionError, StepError, UsageError
from legato.net import NetworkPolicy, Resolver, step_error_from_httpx

if TYPE_CHECKING:
    from legato.store.sql import SqlStore

__all__ = ["AdapterFactory", "Connectors", "traceparent"]

log = logging.getLogger("legato.connectors")

T = TypeVar("T")
AdapterFactory = Callable[..., Connector]
"""``factory(config, auth=AuthProvider, network=NetworkPolicy) -> Connector``."""

_MESSAGE_LIMIT = 500


def traceparent(run_id: str) -> str:
    """A W3C ``traceparent``: the trace id is derived from the run id (every call of a run
    shares it), the span id is new for each call."""
    trace_id = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:32]
    if trace_id == "0" * 32:  # pragma: no cover - an all-zero id is invalid
        trace_id = "0" * 31 + "1"
    span_id = _random.token_hex(8)
    while span_id == "0" * 16:  # pragma: no cover
        span_id = _random.token_hex(8)
    return f"00-{trace_id}-{span_id}-01"


@dataclass
class _OperationStats:
    outcomes: dict[str, int] = field(default_factory=dict)
    latency_sum: float = 0.0
    latency_count: int = 0

    def add(self, outcome: str, latency: float | None) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if latency is not None:
            self.latency_sum += latency
            self.latency_count += 1


class Connectors:
    """The connector hub (see the module's docstring).

    ``store``: share rate limits with every worker on the database (else in memory).
    ``network``: the SSRF policy for OAuth2 token requests and adapters.  ``clock``: a
    monotonic clock for circuit breakers and in-memory rate limits (tests).
    ``adapters``: service type -> ``module:Class`` or a factory, over ``base.ADAPTERS``.
    ``secrets``: a :class:`Secrets` to fill (the registry's secrets are added to it).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        store: SqlStore | None = None,
        network: NetworkPolicy | None = None,
        clock: Callable[[], float] | None = None,
        adapters: Mapping[str, str | AdapterFactory] | None = None,
        secrets: Secrets | None = None,
        max_rate_wait: float = MAX_IN_MEMORY_WAIT,
        resolver: Resolver | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.network = network or NetworkPolicy()
        self._clock = clock or time.monotonic
        self._factories: dict[str, str | AdapterFactory] = {**ADAPTERS, **(adapters or {})}
        self.secrets = secrets if secrets is not None else Secrets()
        self.secrets.update(Secrets.from_registry(registry))
        self._max_rate_wait = max_rate_wait
        self._resolver = resolver
        self._services = {s.name: s for s in registry.services}
        self._adapters: dict[tuple[str, str | None], Connector] = {}
        self._auth: dict[str, AuthProvider] = {}
        self._breakers: dict[str, CircuitBreaker | None] = {}
        self._limiters: dict[str, RateLimiter | None] = {}
        self._stats: dict[tuple[str, str], _OperationStats] = {}
        self._warned: set[tuple[str, str]] = set()
        self._closed = False

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        store: SqlStore | None = None,
        network: NetworkPolicy | None = None,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Connectors:
        """Load ``services.yaml`` (``${ENV}`` from ``environ``, default ``os.environ``)."""
        return cls(load_registry(Path(path), environ), store=store, network=network, **options)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Connectors:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Close every adapter and credential provider built.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        closers: list[tuple[str, Any]] = [
            (f"adapter of {name}", adapter) for (name, _), adapter in self._adapters.items()
        ]
        closers += [(f"auth of {name}", provider) for name, provider in self._auth.items()]
        self._adapters.clear()
        self._auth.clear()
        for what, thing in closers:
            close = getattr(thing, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception as exc:  # one failing close must not leak the others
                log.warning(
                    "closing the %s failed: %s: %s",
                    what,
                    type(exc).__name__,
                    self.secrets.redact_text(str(exc)),
                )

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("the connector hub is closed; build a new Connectors")

    # -- registry -----------------------------------------------------------------------

    def service(self, name: str) -> ServiceConfig:
        """The service's configuration; ``StepError(PERMANENT)`` if there is none."""
        found = self._services.get(name)
        if found is None:
            known = ", ".join(sorted(self._services)) or "none"
            raise StepError(
                f"no service named {name!r} in the service registry (known services: "
                f"{known}); add it to services.yaml or correct the task's `service`",
                error_class=ErrorClass.PERMANENT,
                details={"service": name, "known": sorted(self._services)},
            )
        return found

    def capabilities(self, service: str) -> set[str]:
        """The operations the service offers in any version (empty: it does not say)."""
        config = self.service(service)
        names = config.operation_names()
        for version in config.versions:
            names |= config.operation_names(version)
        return names

    def retry_policy(self, service: str) -> RetryPolicy | None:
        """The service's ``retry`` block as the engine's RetryPolicy (None without one)."""
        return retry_policy(self.service(service))

    def breaker(self, service: str) -> CircuitBreaker | None:
        """The service's circuit breaker (None when it has no ``circuit_breaker``)."""
        config = self.service(service)
        if config.name not in self._breakers:
            cb = config.circuit_breaker
            self._breakers[config.name] = (
                None
                if cb is None
                else CircuitBreaker.from_config(config.name, cb, clock=self._clock)
            )
        return self._breakers[config.name]

    def rate_limiter(self, service: str) -> RateLimiter | None:
        """The service's rate limiter (None when it has no ``rate_limit``)."""
        config = self.service(service)
        if config.name not in self._limiters:
            rl = config.rate_limit
            self._limiters[config.name] = (
                None
                if rl is None
                else RateLimiter.from_config(
                    config.name,
                    rl,
                    store=self.store,
                    clock=self._clock,
                    max_wait=self._max_rate_wait,
                )
            )
        return self._limiters[config.name]

    def describe(self) -> dict[str, Any]:
        """The registry as JSON data fit for API output and logs: ``SecretStr`` fields show
        as ``**********`` and every other secret (headers, URL passwords, values from
        ``${ENV}`` in auth blocks) is masked.  (``repr`` of the models masks only the
        ``SecretStr`` fields.)"""
        data: dict[str, Any] = self.secrets.redact(
            self.registry.model_dump(mode="json", by_alias=True)
        )
        return data

    def log_filter(self) -> SecretsFilter:
        """A logging filter that masks this hub's secrets (see ``secrets.py``)."""
        return SecretsFilter(self.secrets)

    def install_log_filter(
        self, target: logging.Logger | logging.Handler | str | None = None
    ) -> SecretsFilter:
        """Install :meth:`log_filter` on a handler, or on a logger and its handlers."""
        return install_log_filter(self.secrets, target)

    # -- calls --------------------------------------------------------------------------

    async def execute(self, task: Task) -> Result:
        """Do the task's operation through every policy; raises a classified StepError."""
        service, task, adapter = self._resolve(task)
        return await self._guarded(service, task, lambda: adapter.execute(task))

    async def start_async(self, task: Task, callback_token: str) -> Result:
        """Start a long operation; returns the service's acknowledgement (operation_id)."""
        service, task, adapter = self._resolve(task)
        return await self._guarded(service, task, lambda: adapter.start_async(task, callback_token))

    async def check_status(self, task: Task, operation_id: str) -> Result | None:
        """Poll a started operation: its result, or None while it still runs."""
        service, task, adapter = self._resolve(task)
        return await self._guarded(service, task, lambda: adapter.check_status(task, operation_id))

    async def health_check(self, service: str) -> None:
        """Ask the service's adapter whether it is healthy (StepError if not)."""
        self._check_open()
        config = self.service(service)
        adapter = self._adapter(config, None)
        try:
            await asyncio.wait_for(adapter.health_check(), config.timeout.request)
        except Exception as exc:
            raise self._classified(exc, config, "health_check", config.timeout.request) from None

    async def execute_batch(self, tasks: Sequence[Task]) -> list[Result | StepError]:
        """Do many tasks; one Result or StepError per task, in order.

        Tasks are grouped by service, version and operation; each group is one
        ``execute_batch`` call of its adapter (one rate-limit token, one breaker outcome),
        the groups run concurrently.  A failure of a whole call is every task's error.
        """
        self._check_open()
        out: list[Result | StepError | None] = [None] * len(tasks)
        groups: dict[tuple[str, str | None, str], list[tuple[int, Task]]] = {}
        for i, task in enumerate(tasks):
            try:
                _, prepared, _ = self._resolve(task)
            except StepError as exc:
                out[i] = self._sanitized(exc)
                continue
            key = (prepared.service, prepared.version, prepared.operation)
            groups.setdefault(key, []).append((i, prepared))

        async def run(members: list[tuple[int, Task]]) -> None:
            batch = [task for _, task in members]
            service = self.service(batch[0].service)
            adapter = self._adapter(service, batch[0].version)
            try:
                answers = await self._guarded(
                    service, batch[0], lambda: adapter.execute_batch(batch)
                )
            except StepError as exc:
                for i, _ in members:
                    out[i] = exc
                return
            if not isinstance(answers, list) or len(answers) != len(batch):
                count = len(answers) if isinstance(answers, list) else type(answers).__name__
                error = StepError(
                    f"the adapter of service {service.name} returned {count} results for "
                    f"{len(batch)} tasks",
                    error_class=ErrorClass.PERMANENT,
                    details={"service": service.name, "operation": batch[0].operation},
                )
                for i, _ in members:
                    out[i] = error
                return
            for (i, task), answer in zip(members, answers, strict=True):
                if isinstance(answer, BaseException):
                    out[i] = self._classified(
                        answer, service, task.operation, service.timeout.request
                    )
                else:
                    out[i] = self.secrets.redact(answer)

        await asyncio.gather(*(run(members) for members in groups.values()))
        return [item for item in out if item is not None]

    # -- the pipeline ---------------------------------------------------------------------

    def _resolve(self, task: Task) -> tuple[ServiceConfig, Task, Connector]:
        self._check_open()
        if not isinstance(task, Task):
            raise UsageError(f"expected a connectors.base.Task, got {type(task).__name__}")
        service = self.service(task.service)
        changes: dict[str, Any] = {}
        if not task.correlation_id:
            changes["correlation_id"] = f"{task.run_id}:{task.task_id}"
        if not task.traceparent:
            changes["traceparent"] = traceparent(task.run_id)
        version = self._route(service, task)
        if version != task.version:
            changes["version"] = version
        if changes:
            task = replace(task, **changes)
        offered = service.operation_names(version)
        if offered and task.operation not in offered:
            where = f"service {service.name}" + (f" version {version}" if version else "")
            raise StepError(
                f"{where} has no operation {task.operation!r}; it offers "
                f"{', '.join(sorted(offered))}. Correct the task's `operation`, or add it to "
                "the service's `capabilities` in services.yaml",
                error_class=ErrorClass.VALIDATION,
                details={
                    "service": service.name,
                    "operation": task.operation,
                    "version": version,
                    "capabilities": sorted(offered),
                },
            )
        return service, task, self._adapter(service, version)

    def _route(self, service: ServiceConfig, task: Task) -> str | None:
        known = sorted(service.versions)
        if task.version is not None:
            if task.version not in service.versions:
                offered = f"it has {', '.join(known)}" if known else "it defines no versions"
                raise StepError(
                    f"service {service.name} does not support version {task.version!r} "
                    f"({offered}); route the task to a supported version",
                    error_class=ErrorClass.PERMANENT,
                    details={"service": service.name, "version": task.version, "known": known},
                )
            version: str | None = task.version
        elif service.version_route is None:
            return None
        else:
            version = service.version_route.default
            scope = {"input": task.input}
            for i, rule in enumerate(service.version_route.rules):
                try:
                    hit = expr.test(rule.when, scope)
                except ExpressionError as exc:
                    raise StepError(
                        f"service {service.name}: version_route rule {i} cannot be evaluated "
                        f"on this task's input: {exc.message}; correct the rule's `when`",
                        error_class=ErrorClass.PERMANENT,
                        details={"service": service.name, "rule": i},
                    ) from None
                if hit:
                    version = rule.version
                    break
            if version not in service.versions:  # the model validator makes this rare
                raise StepError(
                    f"service {service.name}: version_route chose version {version!r}, which "
                    f"`versions` does not define ({', '.join(known) or 'none'})",
                    error_class=ErrorClass.PERMANENT,
                    details={"service": service.name, "version": version, "known": known},
                )
        assert version is not None
        if service.versions[version].deprecated and (service.name, version) not in self._warned:
            self._warned.add((service.name, version))
            log.warning("service %s: version %s is deprecated", service.name, version)
        return version

    def _adapter(self, service: ServiceConfig, version: str | None) -> Connector:
        chosen = service.versions.get(version) if version is not None else None
        own = chosen is not None and (
            chosen.endpoint is not None
            or chosen.operations is not None
            or chosen.capabilities is not None
        )
        key = (service.name, version if own else None)
        adapter = self._adapters.get(key)
        if adapter is not None:
            return adapter
        config = service
        if own and chosen is not None:
            config = service.model_copy(
                update={
                    "endpoint": chosen.endpoint or service.endpoint,
                    "operations": (
                        dict(chosen.operations)
                        if chosen.operations is not None
                        else service.operations
                    ),
                    "capabilities": (
                        chosen.capabilities
                        if chosen.capabilities is not None
                        else service.capabilities
                    ),
                }
            )
        factory = self._factory(service)
        auth = self._auth.get(service.name)
        if auth is None:
            auth = build_auth(
                service.auth, self.network, secrets=self.secrets, resolver=self._resolver
            )
            self._auth[service.name] = auth
        extra: dict[str, Any] = {}
        if service.type in ("rest", "graphql") and service.async_ and service.async_.callback_url:
            extra["callback_url"] = service.async_.callback_url
        try:
            adapter = factory(config, auth=auth, network=self.network, **extra)
        except StepError as exc:
            raise self._sanitized(exc) from None
        except Exception as exc:
            raise StepError(
                f"cannot build the {service.type} adapter of service {service.name}: "
                f"{type(exc).__name__}: {self._text(exc)}",
                error_class=ErrorClass.PERMANENT,
                details={"service": service.name, "exception_type": type(exc).__name__},
            ) from None
        self._adapters[key] = adapter
        return adapter

    def _factory(self, service: ServiceConfig) -> AdapterFactory:
        spec = self._factories.get(service.type)
        if spec is None:
            raise StepError(
                f"no adapter for service type {service.type!r} (service {service.name}); "
                f"known types: {', '.join(sorted(self._factories))}",
                error_class=ErrorClass.PERMANENT,
                details={"service": service.name, "type": service.type},
            )
        if not isinstance(spec, str):
            return spec
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
            factory: AdapterFactory = getattr(module, attribute)
        except (ImportError, AttributeError) as exc:
            extra = {"grpc": "grpc", "amqp": "mq", "nats": "mq", "soap": "soap"}.get(service.type)
            hint = f" (install it with pip install 'legato[{extra}]')" if extra else ""
            raise StepError(
                f"the {service.type} adapter {spec!r} of service {service.name} cannot be "
                f"loaded: {exc}{hint}",
                error_class=ErrorClass.PERMANENT,
                details={"service": service.name, "adapter": spec},
            ) from None
        return factory

    async def _guarded(
        self, service: ServiceConfig, task: Task, call: Callable[[], Awaitable[T]]
    ) -> T:
        operation = task.operation
        stats = self._stats.setdefault((service.name, operation), _OperationStats())
        breaker = self.breaker(service.name)
        limiter = self.rate_limiter(service.name)
        try:
            permit = breaker.allow() if breaker is not None else None
        except StepError as exc:
            stats.add("circuit_open", None)
            exc.details.setdefault("operation", operation)
            raise
        try:
            if limiter is not None:
                await limiter.acquire()
            timeout = self._timeout(service, task)
        except BaseException as exc:
            if breaker is not None and permit is not None:
                breaker.release(permit)
            if isinstance(exc, StepError):
                stats.add(
                    "rate_limited"
                    if exc.error_class is ErrorClass.RATE_LIMITED
                    else exc.error_class.value,
                    None,
                )
                exc.details.setdefault("operation", operation)
            raise
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(call(), timeout)
        except asyncio.CancelledError:
            if breaker is not None and permit is not None:
                breaker.release(permit)
            raise
        except Exception as exc:
            error = self._classified(exc, service, operation, timeout)
            if breaker is not None and permit is not None:
                breaker.record(permit, error.error_class)
            stats.add(error.error_class.value, time.perf_counter() - started)
            log.debug(
                "service %s operation %s failed (%s): %s",
                service.name,
                operation,
                error.error_class.value,
                error.message,
            )
            if error is exc:
                raise
            raise error from None
        if breaker is not None and permit is not None:
            breaker.record(permit, None)
        stats.add("ok", time.perf_counter() - started)
        return self.secrets.redact(result)

    def _timeout(self, service: ServiceConfig, task: Task) -> float:
        timeout = float(service.timeout.request)
        if task.deadline is not None:
            deadline = task.deadline
            if deadline.tzinfo is None:
                deadline = deadline.replace(tzinfo=UTC)
            left = (deadline - datetime.now(UTC)).total_seconds()
            if left <= 0:
                raise StepError(
                    f"the deadline of task {task.task_id} passed before service "
                    f"{service.name} was called",
                    error_class=ErrorClass.TIMEOUT,
                    details={"service": service.name, "operation": task.operation},
                )
            timeout = min(timeout, left)
        return timeout

    # -- errors -------------------------------------------------------------------------

    def _text(self, exc: BaseException) -> str:
        return self.secrets.redact_text(str(exc))[:_MESSAGE_LIMIT]

    def _sanitized(self, error: StepError) -> StepError:
        """``error`` with secrets masked (the same object when there was nothing to mask)."""
        if not self.secrets:
            return error
        message = self.secrets.redact_text(error.message)
        details = self.secrets.redact(error.details)
        if message == error.message and details == error.details:
            return error
        return StepError(
            message,
            error_class=error.error_class,
            details=details,
            retry_after=error.retry_after,
        )

    def _classified(
        self, exc: BaseException, service: ServiceConfig, operation: str, timeout: float
    ) -> StepError:
        if isinstance(exc, StepError):
            return self._sanitized(exc)
        if isinstance(exc, TimeoutError):
            return StepError(
                f"service {service.name} operation {operation} did not answer within "
                f"{timeout:g} s (timeout.request)",
                error_class=ErrorClass.TIMEOUT,
                details={"service": service.name, "operation": operation, "timeout": timeout},
            )
        if isinstance(exc, httpx.HTTPError):
            error = step_error_from_httpx(exc)
            error.details.setdefault("service", service.name)
            error.details.setdefault("operation", operation)
            return self._sanitized(error)
        text = self._text(exc)
        return StepError(
            f"service {service.name} operation {operation} failed: {type(exc).__name__}"
            + (f": {text}" if text else ""),
            error_class=ErrorClass.RETRYABLE,
            details={
                "service": service.name,
                "operation": operation,
                "exception_type": type(exc).__name__,
            },
        )

    # -- metrics ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters so far, as plain data::

            {"services": {name: {"circuit": "closed" | "open" | "half_open" | None,
                                 "rate_limit": {"waited_seconds": x, "refused": n} | None,
                                 "operations": {op: {"outcomes": {"ok": n, "RETRYABLE": n,
                                                                  "circuit_open": n, ...},
                                                     "calls": n, "latency_seconds_sum": x}}}}}

        ``calls`` and the latency count the calls that reached the adapter.
        """
        services: dict[str, Any] = {}
        for (name, operation), op in sorted(self._stats.items()):
            entry = services.setdefault(name, {"operations": {}})
            entry["operations"][operation] = {
                "outcomes": dict(op.outcomes),
                "calls": op.latency_count,
                "latency_seconds_sum": op.latency_sum,
            }
        for name, entry in services.items():
            breaker = self._breakers.get(name)
            limiter = self._limiters.get(name)
            entry["circuit"] = breaker.state.value if breaker is not None else None
            entry["rate_limit"] = (
                None
                if limiter is None
                else {"waited_seconds": limiter.waited, "refused": limiter.refused}
            )
        return {"services": services}
