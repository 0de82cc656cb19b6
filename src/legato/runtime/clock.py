"""Where the runtime gets the time. The engine never does; it reads instants from events."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def epoch(at: datetime) -> float:
    return at.timestamp()


def monotonic() -> float:
    return time.monotonic()
