"""The policies around every connector call: circuit breaker, rate limiter, retry decisions.

* :class:`CircuitBreaker` — per service, in this process.  Closed → open after
  ``failure_threshold`` consecutive failures that say the service is in trouble
  (RETRYABLE, TIMEOUT, RATE_LIMITED); open fails fast with ``StepError(RETRYABLE)`` so the
  engine's durable retry takes over; after ``timeout`` it is half-open and lets
  ``half_open_attempts`` probes through: a success closes it, a failure re-opens it.
* :class:`RateLimiter` — a token bucket (``requests_per_second``, ``burst``) whose state is
  in the store when one is given (so it holds across every worker process sharing the
  database; see docs/decisions/0005), in memory otherwise.  It waits in memory only for
  short gaps (≤ ``max_wait``, 1 s); a longer wait is ``StepError(RATE_LIMITED,
  retry_after=...)`` and the engine retries durably.
* :func:`decide` — the External Service Interface's ``HandleServiceError``.
* :func:`retry_policy` — a service's ``retry`` block as the engine's
  :class:`~legato.dsl.model.RetryPolicy`.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from legato.connectors.config import (
    CircuitBreakerConfig,
    RateLimitConfig,
    ServiceConfig,
    ServiceRetry,
)
from legato.dsl.model import RetryPolicy
from legato.errors import ErrorClass, LegatoError, StepError
from legato.store.ratelimits import RateLimitGrant, take

if TYPE_CHECKING:
    from legato.store.sql import SqlStore

__all__ = [
    "BREAKER_FAILURES",
    "MAX_IN_MEMORY_WAIT",
    "BreakerState",
    "CircuitBreaker",
    "Decision",
    "Permit",
    "RateLimiter",
    "backoff_delay",
    "decide",
    "retry_policy",
]

Clock = Callable[[], float]

BREAKER_FAILURES = frozenset({ErrorClass.RETRYABLE, ErrorClass.TIMEOUT, ErrorClass.RATE_LIMITED})
"""The error classes that count as failures for a circuit breaker.  The others
(PERMANENT, VALIDATION, AUTH_FAILED) mean the service answered: they count as successes."""

MAX_IN_MEMORY_WAIT = 1.0
"""The longest pause the rate limiter takes in memory, inside one attempt."""


# ---- circuit breaker ------------------------------------------------------------------------


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Permit:
    """What :meth:`CircuitBreaker.allow` hands out; give it back with ``record`` (the
    call was made) or ``release`` (it was not)."""

    generation: int
    probe: bool


class CircuitBreaker:
    """A circuit breaker for one service, in this process (thread-safe).

    ::

        permit = breaker.allow()          # StepError(RETRYABLE) while open
        try:
            result = await call()
        except StepError as exc:
            breaker.record(permit, exc.error_class)
            raise
        breaker.record(permit, None)

    Outcomes of calls let through before the last change of state are ignored (a slow
    call that started while closed cannot re-open a breaker that has closed since).
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        timeout: float = 60.0,
        half_open_attempts: int = 1,
        *,
        clock: Clock = time.monotonic,
        service: str = "service",
    ) -> None:
        if failure_threshold < 1 or half_open_attempts < 1 or timeout < 0:
            raise ValueError(
                "failure_threshold and half_open_attempts must be at least 1, timeout >= 0"
            )
        self.service = service
        self.failure_threshold = failure_threshold
        self.timeout = float(timeout)
        self.half_open_attempts = half_open_attempts
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0  # probes let through in this half-open period
        self._generation = 0

    @classmethod
    def from_config(
        cls, service: str, config: CircuitBreakerConfig, *, clock: Clock = time.monotonic
    ) -> CircuitBreaker:
        return cls(
            config.failure_threshold,
            config.timeout,
            config.half_open_attempts,
            clock=clock,
            service=service,
        )

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._advance()
            return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _advance(self) -> None:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.timeout:
            self._change(BreakerState.HALF_OPEN)

    def _change(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._probes = 0
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
        if state is BreakerState.CLOSED:
            self._failures = 0

    def allow(self) -> Permit:
        """A permit to call the service, or ``StepError(RETRYABLE)`` while it is open (or
        half-open with every probe already out)."""
        with self._lock:
            self._advance()
            if self._state is BreakerState.CLOSED:
                return Permit(self._generation, probe=False)
            if self._state is BreakerState.HALF_OPEN and self._probes < self.half_open_attempts:
                self._probes += 1
                return Permit(self._generation, probe=True)
            if self._state is BreakerState.OPEN:
                wait = max(0.0, self.timeout - (self._clock() - self._opened_at))
            else:  # half-open, probes in flight: their outcome is due soon
                wait = min(self.timeout, 1.0)
            raise StepError(
                f"circuit open for service {self.service}; retry after {_seconds(wait)} s",
                error_class=ErrorClass.RETRYABLE,
                retry_after=wait,
                details={
                    "service": self.service,
                    "circuit": self._state.value,
                    "retry_after": wait,
                },
            )

    def record(self, permit: Permit, error_class: ErrorClass | str | None) -> None:
        """The outcome of a call made with ``permit``: None for success, else its class."""
        failed = error_class is not None and ErrorClass(error_class) in BREAKER_FAILURES
        with self._lock:
            if permit.generation != self._generation:
                return
            if self._state is BreakerState.HALF_OPEN:
                self._change(BreakerState.OPEN if failed else BreakerState.CLOSED)
            elif self._state is BreakerState.CLOSED:
                if failed:
                    self._failures += 1
                    if self._failures >= self.failure_threshold:
                        self._change(BreakerState.OPEN)
                else:
                    self._failures = 0

    def release(self, permit: Permit) -> None:
        """The call was not made (rate-limited, cancelled): give a probe slot back."""
        with self._lock:
            if (
                permit.probe
                and permit.generation == self._generation
                and self._state is BreakerState.HALF_OPEN
                and self._probes > 0
            ):
                self._probes -= 1

    def reset(self) -> None:
        with self._lock:
            self._change(BreakerState.CLOSED)


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".rstrip("0").rstrip(".") or "0"


# ---- rate limiter ---------------------------------------------------------------------------


class RateLimiter:
    """A token bucket for one service.

    With a ``store`` the bucket is the store's ``rate_limits`` row named ``key`` (one short
    transaction per acquisition, shared by every process on the database); without one it
    lives in this object.  ``acquire()`` returns at once when a token is free, sleeps in
    memory when the next one is at most ``max_wait`` seconds away (the token is reserved
    first, so the rate holds exactly), and otherwise raises ``StepError(RATE_LIMITED,
    retry_after=...)`` without taking one.
    """

    def __init__(
        self,
        key: str,
        requests_per_second: float,
        burst: float | None = None,
        *,
        store: SqlStore | None = None,
        max_wait: float = MAX_IN_MEMORY_WAIT,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        self.key = key
        self.rate = float(requests_per_second)
        self.burst = float(burst if burst is not None else max(1, int(requests_per_second)))
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self.max_wait = float(max_wait)
        self.store = store
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated_at = clock()
        self.waited = 0.0  # seconds spent pacing, in total (for stats)
        self.refused = 0  # acquisitions turned into RATE_LIMITED

    @classmethod
    def from_config(
        cls,
        key: str,
        config: RateLimitConfig,
        *,
        store: SqlStore | None = None,
        clock: Clock = time.monotonic,
        max_wait: float = MAX_IN_MEMORY_WAIT,
    ) -> RateLimiter:
        return cls(
            key,
            config.requests_per_second,
            config.burst,
            store=store,
            clock=clock,
            max_wait=max_wait,
        )

    async def _take(self) -> RateLimitGrant:
        if self.store is None:
            with self._lock:
                self._tokens, self._updated_at, grant = take(
                    self._tokens,
                    self._updated_at,
                    self._clock(),
                    rate=self.rate,
                    burst=self.burst,
                    max_wait=self.max_wait,
                )
            return grant
        try:
            return await self.store.take_rate_limit_token(
                self.key, rate=self.rate, burst=self.burst, max_wait=self.max_wait
            )
        except LegatoError as exc:
            raise StepError(
                f"the rate limit of service {self.key} could not be checked: {exc.message}",
                error_class=ErrorClass.RETRYABLE,
                details={"service": self.key, "cause": exc.to_dict()},
            ) from exc

    async def acquire(self) -> float:
        """Take a token (see the class); returns the seconds spent waiting for it."""
        grant = await self._take()
        if not grant.granted:
            self.refused += 1
            raise StepError(
                f"rate limit of service {self.key} ({self.rate:g} requests/s) reached; "
                f"retry after {_seconds(grant.wait)} s",
                error_class=ErrorClass.RATE_LIMITED,
                retry_after=grant.wait,
                details={"service": self.key, "retry_after": grant.wait, "local": True},
            )
        if grant.wait > 0:
            self.waited += grant.wait
            await self._sleep(grant.wait)
        return grant.wait


# ---- retry decisions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failed attempt: ``retry`` after ``delay`` seconds, or ``fail``."""

    action: Literal["retry", "fail"]
    delay: float = 0.0


def backoff_delay(retry: ServiceRetry, attempt: int) -> float:
    """Seconds before the next attempt after failed attempt ``attempt`` (1-based):
    exponential ``initial_delay x 2^(attempt-1)``, linear ``initial_delay x attempt``,
    fixed ``initial_delay``; never above ``max_delay``."""
    n = max(attempt, 1)
    if retry.backoff == "exponential":
        raw = retry.initial_delay * 2.0 ** (n - 1)
    elif retry.backoff == "linear":
        raw = retry.initial_delay * n
    else:
        raw = retry.initial_delay
    return float(min(raw, retry.max_delay))


TIMEOUT_MAX_ATTEMPTS = 3
"""HandleServiceError retries a TIMEOUT only while the attempt number is below 3."""


def decide(error: StepError, attempt: int, retry: ServiceRetry | None = None) -> Decision:
    """The External Service Interface's ``HandleServiceError`` for failed attempt
    ``attempt`` (1-based):

    * RETRYABLE → retry after the backoff (:func:`backoff_delay`);
    * RATE_LIMITED → retry after the error's ``retry_after`` (Retry-After), or the backoff
      when the service gave none;
    * TIMEOUT → retry at once while ``attempt < 3``, else fail;
    * PERMANENT, VALIDATION, AUTH_FAILED → fail.

    As in the seed's ``retry.Do(..., retry.Attempts(max_attempts))``, nothing is retried
    once ``attempt`` has reached the service's ``retry.max_attempts``.
    """
    retry = retry or ServiceRetry()
    if attempt >= retry.max_attempts:
        return Decision("fail")
    match error.error_class:
        case ErrorClass.RETRYABLE:
            return Decision("retry", backoff_delay(retry, attempt))
        case ErrorClass.RATE_LIMITED:
            if error.retry_after is not None:
                return Decision("retry", max(0.0, float(error.retry_after)))
            return Decision("retry", backoff_delay(retry, attempt))
        case ErrorClass.TIMEOUT:
            if attempt < TIMEOUT_MAX_ATTEMPTS:
                return Decision("retry", 0.0)
            return Decision("fail")
        case _:
            return Decision("fail")


_COEFFICIENTS = {"exponential": 2.0, "fixed": 1.0, "linear": 1.5}


def retry_policy(service: ServiceConfig) -> RetryPolicy | None:
    """The service's ``retry`` block as the engine's RetryPolicy (None without one).

    ``backoff``: exponential → coefficient 2, fixed → 1; linear has no exact equivalent in
    ``initial x coefficient^n`` and becomes 1.5.  ``initial_delay`` / ``max_delay`` are the
    intervals; PERMANENT, VALIDATION and AUTH_FAILED do not retry.
    """
    retry = service.retry
    if retry is None:
        return None
    return RetryPolicy(
        max_attempts=retry.max_attempts,
        initial_interval=retry.initial_delay,
        backoff_coefficient=_COEFFICIENTS[retry.backoff],
        max_interval=max(retry.max_delay, retry.initial_delay),
        non_retryable=(ErrorClass.PERMANENT, ErrorClass.VALIDATION, ErrorClass.AUTH_FAILED),
    )
