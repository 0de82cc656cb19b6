"""``log`` (alias ``log_message``): write a message to the run's log.

Input ``{message, level="info", fields?}``; logs through the standard logger
``legato.actions.log`` with ``run_id``, ``step``, ``workflow``, ``tenant_id`` and ``fields``
as record attributes; returns ``{"logged": true, "message": message}``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from legato.activity import ActivityContext, activity
from legato.errors import ErrorClass, StepError

_logger = logging.getLogger("legato.actions.log")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


@activity("log")
async def log(
    message: Any,
    level: str = "info",
    fields: dict[str, Any] | None = None,
    *,
    ctx: ActivityContext,
) -> dict[str, Any]:
    number = _LEVELS.get(level.lower()) if isinstance(level, str) else None
    if number is None:
        raise StepError(
            f"log: level {level!r} is not one of {', '.join(_LEVELS)}",
            error_class=ErrorClass.VALIDATION,
            details={"level": level},
        )
    if fields is not None and not isinstance(fields, dict):
        raise StepError(
            "log: fields must be an object of names to values",
            error_class=ErrorClass.VALIDATION,
        )
    text = message if isinstance(message, str) else json.dumps(message, sort_keys=True)
    _logger.log(
        number,
        "%s",
        text,
        extra={
            "run_id": ctx.run_id,
            "step": ctx.step,
            "workflow": ctx.workflow,
            "tenant_id": ctx.tenant_id,
            "fields": dict(fields or {}),
        },
    )
    return {"logged": True, "message": text}
