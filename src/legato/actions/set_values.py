"""``set``: return the input, so the step's output mapping can place values in the context.

Input: an object (``{}`` or nothing gives ``{}``).  Output: the same object.
"""

from __future__ import annotations

from typing import Any

from legato.activity import activity
from legato.errors import ErrorClass, StepError


@activity("set")
async def set_values(values: Any = None, /) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise StepError(
            f"set: the input must be an object of names to values, not {type(values).__name__}",
            error_class=ErrorClass.VALIDATION,
        )
    return values
