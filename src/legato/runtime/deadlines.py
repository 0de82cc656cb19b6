"""Step timeouts that share the event loop's timers.

``asyncio.timeout`` arms a loop timer for every step and cancels it when the step ends:
about 8 µs a step, and the loop's heap fills with cancelled handles while hundreds of
steps run at once. :class:`Deadlines` groups deadlines into slots of ``resolution``
seconds with one loop timer per slot: entering a limit is a set insertion. A step is
cancelled within ``resolution`` after its deadline (50 ms by default; step timeouts are
seconds to minutes).

Cancellation works like ``asyncio.timeout``: the task is cancelled, and the
``CancelledError`` becomes ``TimeoutError`` when it leaves the limit, unless the task was
also cancelled for another reason (then the cancellation goes on).
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType


class Deadlines:
    """The step timeouts of one event loop (one worker)."""

    def __init__(self, resolution: float = 0.05) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be positive")
        self.resolution = resolution
        self._slots: dict[int, set[Limit]] = {}

    def limit(self, seconds: float | None) -> Limit:
        """A context manager that raises TimeoutError out of its body after ``seconds``
        (None: no limit)."""
        return Limit(self, seconds)

    def _add(self, limit: Limit, loop: asyncio.AbstractEventLoop, seconds: float) -> int:
        slot = math.ceil((loop.time() + seconds) / self.resolution)
        members = self._slots.get(slot)
        if members is None:
            members = self._slots[slot] = set()
            loop.call_at(slot * self.resolution, self._expire, slot)
        members.add(limit)
        return slot

    def _remove(self, limit: Limit, slot: int) -> None:
        members = self._slots.get(slot)
        if members is not None:
            members.discard(limit)  # an emptied slot's timer still fires, finding no one

    def _expire(self, slot: int) -> None:
        for limit in self._slots.pop(slot, ()):
            limit._expire()


class Limit:
    """One body under a deadline; see :meth:`Deadlines.limit`."""

    __slots__ = ("_cancelling", "_owner", "_seconds", "_slot", "_task", "expired")

    def __init__(self, owner: Deadlines, seconds: float | None) -> None:
        self._owner = owner
        self._seconds = seconds
        self._slot: int | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self.expired = False

    def __enter__(self) -> Limit:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        self._task = task
        self._cancelling = task.cancelling()
        if self._seconds is not None:
            self._slot = self._owner._add(self, asyncio.get_running_loop(), self._seconds)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._slot is not None:
            self._owner._remove(self, self._slot)
            self._slot = None
        if self.expired and exc_type is asyncio.CancelledError:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling:
                raise TimeoutError from exc

    def _expire(self) -> None:
        if self._task is not None and not self._task.done():
            self.expired = True
            self._task.cancel()
