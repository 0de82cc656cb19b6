"""Durations are strings like ``30s``, ``5m``, ``72h``, ``2d`` (or ``1h30m``, ``250ms``)."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")


def parse_duration(value: str | int | float) -> float:
    """Return the duration in seconds.

    Numbers are taken as seconds. Raises ``ValueError`` with a message that shows the
    accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write it like '30s', '5m', '72h' or '2d'")
    if not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a duration; write it like '30s', '5m', '72h' or '2d'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration {value!r} is negative; durations are zero or more")
        return float(value)
    text = value.strip().replace(" ", "")
    if not text or not _WHOLE.match(text):
        raise ValueError(
            f"{value!r} is not a duration; write it like '30s', '5m', '72h', '2d' or '1h30m'"
        )
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest exact form: 90 -> '1m30s', 0.25 -> '250ms'."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    rest = int(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out) or "0s"
