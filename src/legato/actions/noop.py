"""``noop``: do nothing; return the input, or ``{}`` when there is none."""

from __future__ import annotations

from typing import Any

from legato.activity import activity


@activity("noop")
async def noop(value: Any = None, /) -> Any:
    return {} if value is None else value
