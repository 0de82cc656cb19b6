"""``sleep``: hold the step for a while (a test helper for long-running steps).

Input ``{seconds}`` or ``{duration: "2s"}``; returns ``{"slept": seconds}``.  It sleeps in
the worker's memory: a durable wait is a ``wait`` state, not this action.
"""

from __future__ import annotations

import asyncio
from typing import Any

from legato.activity import activity
from legato.dsl.durations import parse_duration
from legato.errors import ErrorClass, StepError


@activity("sleep")
async def sleep(seconds: Any = None, duration: Any = None) -> dict[str, Any]:
    if (seconds is None) == (duration is None):
        raise StepError(
            "sleep: give exactly one of `seconds` (a number) or `duration` (like '2s')",
            error_class=ErrorClass.VALIDATION,
        )
    try:
        if seconds is not None and not isinstance(seconds, int | float):
            raise ValueError(f"seconds must be a number, got {seconds!r}")
        value = parse_duration(seconds if seconds is not None else duration)
    except ValueError as exc:
        raise StepError(f"sleep: {exc}", error_class=ErrorClass.VALIDATION) from exc
    await asyncio.sleep(value)
    return {"slept": value}
