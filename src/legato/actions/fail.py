"""Test helpers that fail on purpose, so pure definitions can exercise retry, catch and
compensation.

``fail``: input ``{error_class="PERMANENT", message?, details?, retry_after?}``; always
raises that StepError.

``flaky``: input ``{fail_times=1, error_class="RETRYABLE", message?, result?}``; raises
while ``ctx.attempt <= fail_times``, then returns ``result`` (default
``{"attempt": n}``).
"""

from __future__ import annotations

from typing import Any

from legato.activity import ActivityContext, activity
from legato.errors import ErrorClass, StepError


def _error_class(value: Any, action: str) -> ErrorClass:
    try:
        return ErrorClass(str(value).upper())
    except ValueError:
        raise StepError(
            f"{action}: error_class {value!r} is not one of "
            f"{', '.join(c.value for c in ErrorClass)}",
            error_class=ErrorClass.VALIDATION,
            details={"error_class": value},
        ) from None


@activity("fail")
async def fail(
    error_class: str = "PERMANENT",
    message: str | None = None,
    details: dict[str, Any] | None = None,
    retry_after: float | None = None,
) -> None:
    klass = _error_class(error_class, "fail")
    raise StepError(
        message or f"failed on purpose ({klass.value}, by the fail action)",
        error_class=klass,
        details=dict(details or {}),
        retry_after=retry_after,
    )


@activity("flaky")
async def flaky(
    fail_times: int = 1,
    error_class: str = "RETRYABLE",
    message: str | None = None,
    result: Any = None,
    *,
    ctx: ActivityContext,
) -> Any:
    if isinstance(fail_times, bool) or not isinstance(fail_times, int) or fail_times < 0:
        raise StepError(
            f"flaky: fail_times must be a whole number of attempts, got {fail_times!r}",
            error_class=ErrorClass.VALIDATION,
        )
    klass = _error_class(error_class, "flaky")
    if ctx.attempt <= fail_times:
        raise StepError(
            message or f"failed on purpose on attempt {ctx.attempt} of {fail_times} (flaky)",
            error_class=klass,
            details={"attempt": ctx.attempt, "fail_times": fail_times},
        )
    return {"attempt": ctx.attempt} if result is None else result
