"""Circuit breaker, in-memory token bucket, HandleServiceError and the retry-policy mapping."""

from __future__ import annotations

import pytest

from legato.connectors.config import CircuitBreakerConfig, ServiceConfig, ServiceRetry
from legato.connectors.resilience import (
    BREAKER_FAILURES,
    BreakerState,
    CircuitBreaker,
    Decision,
    RateLimiter,
    backoff_delay,
    decide,
    retry_policy,
)
from legato.dsl.model import RetryPolicy
from legato.errors import ErrorClass, StepError
from legato.store.ratelimits import RateLimitGrant, take


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fail(breaker: CircuitBreaker, error_class: ErrorClass = ErrorClass.RETRYABLE) -> None:
    breaker.record(breaker.allow(), error_class)


def succeed(breaker: CircuitBreaker) -> None:
    breaker.record(breaker.allow(), None)


# ---- circuit breaker --------------------------------------------------------------------------


def test_breaker_closed_open_half_open_closed() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 60, 2, clock=clock, service="hr")
    assert breaker.state is BreakerState.CLOSED
    fail(breaker)
    fail(breaker, ErrorClass.TIMEOUT)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2
    fail(breaker, ErrorClass.RATE_LIMITED)
    assert breaker.state is BreakerState.OPEN

    clock.advance(20)
    with pytest.raises(StepError) as caught:
        breaker.allow()
    error = caught.value
    assert error.error_class is ErrorClass.RETRYABLE
    assert error.message == "circuit open for service hr; retry after 40 s"
    assert error.retry_after == pytest.approx(40)

    clock.advance(40)
    assert breaker.state is BreakerState.HALF_OPEN
    first = breaker.allow()
    second = breaker.allow()
    assert first.probe
    assert second.probe
    with pytest.raises(StepError, match="circuit open for service hr"):
        breaker.allow()  # both probes are out
    breaker.record(first, None)
    assert breaker.state is BreakerState.CLOSED
    # the other probe's late outcome belongs to a past period and changes nothing
    breaker.record(second, ErrorClass.RETRYABLE)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    succeed(breaker)


def test_breaker_half_open_probe_failure_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker.from_config(
        "pay", CircuitBreakerConfig(failure_threshold=1, timeout="10s"), clock=clock
    )
    fail(breaker)
    assert breaker.state is BreakerState.OPEN
    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN
    fail(breaker, ErrorClass.TIMEOUT)
    assert breaker.state is BreakerState.OPEN
    clock.advance(9.5)
    with pytest.raises(StepError, match=r"retry after 0\.5 s"):
        breaker.allow()  # the open period started again at the failed probe
    clock.advance(0.5)
    probe = breaker.allow()
    breaker.release(probe)  # a probe that was never sent gives its slot back
    succeed(breaker)
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("error_class", list(ErrorClass))
def test_which_error_classes_count(error_class: ErrorClass) -> None:
    breaker = CircuitBreaker(2, clock=FakeClock(), service="svc")
    fail(breaker, error_class)
    fail(breaker, error_class)
    counted = error_class in (ErrorClass.RETRYABLE, ErrorClass.TIMEOUT, ErrorClass.RATE_LIMITED)
    assert (breaker.state is BreakerState.OPEN) is counted
    assert (error_class in BREAKER_FAILURES) is counted


def test_an_answer_from_the_service_breaks_the_streak() -> None:
    breaker = CircuitBreaker(failure_threshold=3, clock=FakeClock(), service="svc")
    fail(breaker)
    fail(breaker)
    fail(breaker, ErrorClass.VALIDATION)  # the service answered: not consecutive any more
    fail(breaker)
    fail(breaker)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state is BreakerState.OPEN


def test_late_outcomes_of_closed_calls_do_not_reopen() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 5, clock=clock, service="svc")
    slow = breaker.allow()
    fail(breaker)
    clock.advance(5)
    succeed(breaker)  # probe closes it
    breaker.record(slow, ErrorClass.RETRYABLE)  # started before all that
    assert breaker.state is BreakerState.CLOSED


def test_breaker_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CircuitBreaker(failure_threshold=0)


# ---- the bucket arithmetic and the in-memory limiter ------------------------------------------


def test_bucket_arithmetic() -> None:
    # full bucket: take at once
    tokens, stamp, grant = take(2.0, 0.0, 10.0, rate=1.0, burst=2, max_wait=1.0)
    assert (tokens, stamp, grant) == (1.0, 10.0, RateLimitGrant(True, 0.0))
    # empty: reserve the next token if it is close enough
    tokens, stamp, grant = take(0.0, 10.0, 10.5, rate=1.0, burst=2, max_wait=1.0)
    assert grant == RateLimitGrant(True, pytest.approx(0.5))
    assert tokens == pytest.approx(-0.5)
    # in debt: too far away, take nothing and say how long
    tokens, stamp, grant = take(-0.5, 10.5, 10.5, rate=1.0, burst=2, max_wait=1.0)
    assert grant.granted is False
    assert grant.wait == pytest.approx(1.5)
    assert tokens == pytest.approx(-0.5)
    # a clock that goes back refills nothing
    tokens, stamp, grant = take(0.0, 20.0, 19.0, rate=5.0, burst=1, max_wait=0.0)
    assert stamp == 20.0
    assert grant.granted is False
    assert grant.wait == pytest.approx(0.2)
    # never above burst
    tokens, _, _ = take(0.0, 0.0, 1e6, rate=100.0, burst=3, max_wait=0.0)
    assert tokens == pytest.approx(2.0)
    with pytest.raises(ValueError, match="burst"):
        take(0.0, 0.0, 0.0, rate=1.0, burst=0.5, max_wait=1.0)


async def test_in_memory_limiter_paces_then_refuses() -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    limiter = RateLimiter("svc", 2.0, 2, clock=clock, sleep=sleep)
    assert await limiter.acquire() == 0.0
    assert await limiter.acquire() == 0.0
    assert await limiter.acquire() == pytest.approx(0.5)  # reserved, paced in memory
    assert slept == [pytest.approx(0.5)]
    # two more: the next is 0.5 s away (fine), the one after 1.0 s ... then 1.5 s: refused
    assert await limiter.acquire() == pytest.approx(0.5)
    limiter_far = RateLimiter("svc", 0.5, 1, clock=clock, sleep=sleep)
    await limiter_far.acquire()
    with pytest.raises(StepError) as caught:
        await limiter_far.acquire()
    error = caught.value
    assert error.error_class is ErrorClass.RATE_LIMITED
    assert error.retry_after == pytest.approx(2.0)
    assert "rate limit of service svc (0.5 requests/s) reached; retry after 2 s" in error.message
    assert limiter_far.refused == 1
    assert limiter.waited == pytest.approx(1.0)


def test_limiter_defaults() -> None:
    assert RateLimiter("a", 100).burst == 100
    assert RateLimiter("a", 0.2).burst == 1
    with pytest.raises(ValueError, match="positive"):
        RateLimiter("a", 0)


# ---- HandleServiceError -----------------------------------------------------------------------


def error(error_class: ErrorClass, retry_after: float | None = None) -> StepError:
    return StepError("boom", error_class=error_class, retry_after=retry_after)


RETRY = ServiceRetry(max_attempts=5, backoff="exponential", initial_delay="1s", max_delay="10s")


@pytest.mark.parametrize(("attempt", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)])
def test_decide_retryable_backs_off(attempt: int, delay: float) -> None:
    assert decide(error(ErrorClass.RETRYABLE), attempt, RETRY) == Decision("retry", delay)


def test_decide_every_class() -> None:
    # RETRYABLE: backoff, capped by max_delay; nothing once max_attempts is reached
    capped = ServiceRetry(max_attempts=10, initial_delay="1s", max_delay="10s")
    assert decide(error(ErrorClass.RETRYABLE), 6, capped) == Decision("retry", 10.0)
    assert decide(error(ErrorClass.RETRYABLE), 5, RETRY) == Decision("fail")
    # RATE_LIMITED: after Retry-After (even beyond max_delay); backoff without one
    assert decide(error(ErrorClass.RATE_LIMITED, 42.0), 1, RETRY) == Decision("retry", 42.0)
    assert decide(error(ErrorClass.RATE_LIMITED), 3, RETRY) == Decision("retry", 4.0)
    # TIMEOUT: retry (at once) while attempt < 3
    assert decide(error(ErrorClass.TIMEOUT), 1, RETRY) == Decision("retry", 0.0)
    assert decide(error(ErrorClass.TIMEOUT), 2, RETRY) == Decision("retry", 0.0)
    assert decide(error(ErrorClass.TIMEOUT), 3, RETRY) == Decision("fail")
    assert decide(error(ErrorClass.TIMEOUT), 4, RETRY) == Decision("fail")
    # the rest fail at once
    for error_class in (ErrorClass.PERMANENT, ErrorClass.VALIDATION, ErrorClass.AUTH_FAILED):
        assert decide(error(error_class), 1, RETRY) == Decision("fail")
    # without a retry block: the defaults (3 attempts, exponential from 1 s)
    assert decide(error(ErrorClass.RETRYABLE), 2) == Decision("retry", 2.0)
    assert decide(error(ErrorClass.RETRYABLE), 3) == Decision("fail")


def test_backoff_kinds() -> None:
    fixed = ServiceRetry(backoff="fixed", initial_delay="2s")
    linear = ServiceRetry(backoff="linear", initial_delay="2s", max_delay="5s")
    assert [backoff_delay(fixed, n) for n in (1, 2, 3)] == [2.0, 2.0, 2.0]
    assert [backoff_delay(linear, n) for n in (1, 2, 3)] == [2.0, 4.0, 5.0]


# ---- retry_policy -----------------------------------------------------------------------------


def service(**retry: object) -> ServiceConfig:
    return ServiceConfig.model_validate(
        {"name": "svc", "type": "rest", "endpoint": "https://svc.example", "retry": retry or None}
    )


def test_retry_policy_mapping() -> None:
    assert retry_policy(ServiceConfig(name="svc", type="rest", endpoint="x")) is None
    policy = retry_policy(
        service(max_attempts=4, backoff="exponential", initial_delay="2s", max_delay="30s")
    )
    assert policy == RetryPolicy(
        max_attempts=4,
        initial_interval=2.0,
        backoff_coefficient=2.0,
        max_interval=30.0,
        non_retryable=(ErrorClass.PERMANENT, ErrorClass.VALIDATION, ErrorClass.AUTH_FAILED),
    )
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [2.0, 4.0, 8.0, 16.0, 30.0]
    fixed = retry_policy(service(backoff="fixed", initial_delay="5s"))
    assert fixed is not None
    assert fixed.backoff_coefficient == 1.0
    assert [fixed.delay(n) for n in (1, 2, 3)] == [5.0, 5.0, 5.0]
    linear = retry_policy(service(backoff="linear"))
    assert linear is not None
    assert linear.backoff_coefficient == 1.5
    # seed 000's sterling block: only max_attempts and backoff; defaults fill the rest
    sterling = retry_policy(service(max_attempts=5, backoff="exponential"))
    assert sterling is not None
    assert (sterling.max_attempts, sterling.initial_interval, sterling.max_interval) == (
        5,
        1.0,
        60.0,
    )
