"""Scheduled triggers: cron ticks that fire exactly once, across restarts and processes.

A definition with ``trigger: {type: scheduled, schedule: "*/5 * * * *"}`` (or the object
form ``schedule: {cron: "*/5 * * * *", timezone: "Europe/Berlin", catch_up: one}``) is
started at every tick of its schedule.  Any number of API or worker processes may run a
:class:`Scheduler` on the same database:

* **exactly once**: a tick's run id is derived from (tenant, environment, workflow, tick
  instant), so when two schedulers fire the same tick, or a scheduler fires it again after
  a crash, ``create_run`` refuses the second run (``ConflictError``) and it is counted as
  a duplicate;
* **progress**: the ``schedules`` table (migration 0004) records each workflow's last and
  next tick, so a restart starts from where the deployment was, not from the beginning;
* **missed ticks** (every scheduler was down) follow the schedule's ``catch_up`` policy:
  ``none`` skips them, ``one`` fires the latest of them once, ``all`` fires each of them
  (at most ``max_catch_up``, default 100, the latest ones; older ones are logged and
  skipped).  A tick is *missed* when it is more than ``grace`` seconds (default 60) old
  at the pass that finds it; a younger one is on time and always fires.

The scheduler's loop sleeps in memory until the next tick.  That is not durable state:
the schedule is the definition, its progress is the table, and a tick's identity is its
run id.  A process that dies while sleeping loses nothing: the next pass of any scheduler
(after a restart, or another process's) finds the tick due and fires it, once.

Reading a schedule (:func:`parse_schedule`, :class:`Schedule`, :func:`schedule_problems`)
is pure and lives in :mod:`legato.dsl.schedule`, so that lint rule L121 reports a bad one
when the definition is written; this module re-exports those names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from legato.dsl.schedule import (
    CATCH_UP_POLICIES,
    DEFAULT_CATCH_UP,
    MAX_CATCH_UP,
    Schedule,
    parse_schedule,
    schedule_problems,
)
from legato.errors import ConflictError, LegatoError, UsageError
from legato.runtime.clock import Clock, SystemClock
from legato.runtime.local import Engine
from legato.runtime.worker import Programs, start_run
from legato.store import Scope, SqlStore
from legato.store._codec import ts
from legato.store.schedules import ScheduleProgress
from legato.triggers._common import derive_run_id, run_input
from legato.triggers.catalog import Candidate, scheduled_candidates

__all__ = [
    "CATCH_UP_POLICIES",
    "DEFAULT_CATCH_UP",
    "MAX_CATCH_UP",
    "FiredTick",
    "Schedule",
    "Scheduler",
    "TickResult",
    "cron_run_id",
    "parse_schedule",
    "schedule_problems",
]

log = logging.getLogger("legato.triggers.cron")

_TINY = timedelta(microseconds=1)


def cron_run_id(scope: Scope, workflow_id: str, tick: datetime) -> str:
    """The run id of a tick: the same for every scheduler, on every restart."""
    return derive_run_id("cron", scope, workflow_id, ts(tick, what="tick"))


@dataclass(frozen=True, slots=True)
class FiredTick:
    scope: Scope
    workflow_id: str
    tick: datetime
    run_id: str
    missed: bool


@dataclass(slots=True)
class TickResult:
    """What one pass did.  ``skipped`` counts missed ticks the policy did not fire (a lower
    bound when there were more than ``max_catch_up``)."""

    now: datetime
    fired: list[FiredTick] = field(default_factory=list)
    duplicates: list[FiredTick] = field(default_factory=list)
    skipped: int = 0
    errors: list[tuple[Scope, str, str]] = field(default_factory=list)
    next_due: datetime | None = None

    def _due(self, at: datetime) -> None:
        if self.next_due is None or at < self.next_due:
            self.next_due = at


class Scheduler:
    """Fires the ticks of every scheduled, enabled workflow, of every tenant.

    ``target`` is an :class:`Engine` (runs start through it, and its worker, if it has
    one, picks them up at once) or a :class:`SqlStore` (runs are created unleased for any
    worker on the database).  Call :meth:`tick` for one pass, or run :meth:`run_forever`
    (or ``async with scheduler:``, which runs it in a task).
    """

    def __init__(
        self,
        target: Engine | SqlStore,
        clock: Clock | None = None,
        *,
        grace: float = 60.0,
        max_interval: float = 30.0,
    ) -> None:
        if isinstance(target, Engine):
            self._engine: Engine | None = target
            self.store = target.store
            self.clock: Clock = clock or target.clock
        elif isinstance(target, SqlStore):
            self._engine = None
            self.store = target
            self.clock = clock or SystemClock()
        else:
            raise UsageError(f"Scheduler needs an Engine or a SqlStore, got {target!r}")
        if max_interval <= 0 or grace <= max_interval:
            raise UsageError(
                "Scheduler needs 0 < max_interval < grace, so that a pass sees every tick "
                f"while it is on time (got max_interval={max_interval}, grace={grace})"
            )
        self.grace = timedelta(seconds=grace)
        self.max_interval = max_interval
        self._programs = target.programs if isinstance(target, Engine) else Programs(self.store)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- one pass -------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> TickResult:
        """Fire every tick due at ``now`` (default: the clock) that no scheduler has fired."""
        now = self.clock.now() if now is None else now
        if now.tzinfo is None:
            raise UsageError(f"tick(now) needs a timezone-aware instant, got {now!r}")
        result = TickResult(now=now)
        candidates = await scheduled_candidates(self.store, self._programs)
        progress = {(p.scope, p.workflow_id): p for p in await self.store.list_schedule_progress()}
        for candidate in candidates:
            key = (candidate.scope, candidate.workflow_id)
            try:
                await self._tick_one(candidate, progress.get(key), now, result)
            except LegatoError as exc:
                log.warning(
                    "schedule of workflow %r (%s) failed: %s",
                    candidate.workflow_id,
                    candidate.scope,
                    exc.message,
                    extra={"workflow": candidate.workflow_id, "tenant": candidate.scope.tenant_id},
                )
                result.errors.append((candidate.scope, candidate.workflow_id, exc.message))
        return result

    async def _tick_one(
        self,
        candidate: Candidate,
        row: ScheduleProgress | None,
        now: datetime,
        result: TickResult,
    ) -> None:
        spec = parse_schedule(candidate.trigger.schedule)
        scope, workflow_id = candidate.scope, candidate.workflow_id
        # No tick from before the workflow's current configuration took effect.
        floor = (
            spec.next_after(candidate.since)
            if candidate.since is not None
            else spec.next_after(now - self.grace - _TINY)
        )
        if row is not None and row.schedule == spec.fingerprint:
            start = max(row.next_tick, floor)
        else:  # new, or its schedule changed: re-anchor after the last tick fired
            start = floor
            if row is not None and row.last_tick is not None:
                start = max(start, spec.next_after(row.last_tick))
        if start > now:
            if row is None or row.schedule != spec.fingerprint or row.next_tick < start:
                await self.store.advance_schedule(
                    scope,
                    workflow_id,
                    schedule=spec.fingerprint,
                    last_tick=None,
                    next_tick=start,
                    now=now,
                )
            result._due(start)
            return

        # The due ticks, newest first, until `start` (bounded).
        cutoff = now - self.grace
        due: list[datetime] = []
        missed_seen = 0
        more = False
        at = spec.at_or_before(now)
        while at >= start:
            if at < cutoff:
                if missed_seen == spec.max_catch_up:
                    more = True
                    break
                missed_seen += 1
            due.append(at)
            at = spec.before(at)
        if not due:  # cannot happen: `start` is a tick at or before `now`
            return
        on_time = [t for t in due if t >= cutoff]
        missed = [t for t in due if t < cutoff]
        chosen = {"none": [], "one": missed[:1], "all": missed}[spec.catch_up]
        skipped = len(missed) - len(chosen) + (1 if more else 0)
        if skipped or more:
            result.skipped += skipped
            log.warning(
                "workflow %r (%s): %d%s missed tick(s) of %r not fired (catch_up: %s)",
                workflow_id,
                scope,
                skipped,
                "+" if more else "",
                spec.cron,
                spec.catch_up,
                extra={"workflow": workflow_id, "tenant": scope.tenant_id},
            )
        for tick in sorted(chosen + on_time):
            fired = FiredTick(
                scope, workflow_id, tick, cron_run_id(scope, workflow_id, tick), tick < cutoff
            )
            if await self._fire(candidate, spec, fired):
                result.fired.append(fired)
            else:
                result.duplicates.append(fired)
            await self.store.advance_schedule(
                scope,
                workflow_id,
                schedule=spec.fingerprint,
                last_tick=tick,
                next_tick=spec.next_after(tick),
                now=now,
            )
        latest = due[0]
        following = spec.next_after(latest)
        await self.store.advance_schedule(
            scope,
            workflow_id,
            schedule=spec.fingerprint,
            last_tick=latest,
            next_tick=following,
            now=now,
        )
        result._due(following)

    async def _fire(self, candidate: Candidate, spec: Schedule, fired: FiredTick) -> bool:
        """Start the tick's run; False when it exists already (another scheduler, or an
        earlier pass, fired this tick)."""
        envelope = {
            "type": "scheduled",
            "workflow_id": candidate.workflow_id,
            "tick": ts(fired.tick, what="tick"),
            "schedule": spec.cron,
            "timezone": spec.timezone,
            "missed": fired.missed,
        }
        payload = run_input({}, envelope)
        try:
            if self._engine is not None:
                await self._engine.for_scope(candidate.scope).start(
                    candidate.workflow, payload, version=candidate.version, run_id=fired.run_id
                )
            else:
                await start_run(
                    self.store,
                    self._programs,
                    candidate.scope,
                    workflow=candidate.workflow,
                    version=candidate.version,
                    input=payload,
                    run_id=fired.run_id,
                    now=self.clock.now(),
                )
        except ConflictError:
            return False
        log.info(
            "workflow %r (%s): tick %s started run %s",
            candidate.workflow_id,
            candidate.scope,
            envelope["tick"],
            fired.run_id,
            extra={"workflow": candidate.workflow_id, "run_id": fired.run_id},
        )
        return True

    # ---- the loop -------------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Pass after pass until :meth:`stop`: sleep until the next tick is due (at most
        ``max_interval`` seconds, so new and changed schedules are seen in time)."""
        while not self._stop.is_set():
            delay = self.max_interval
            try:
                result = await self.tick()
            except LegatoError as exc:  # the database is away: try again later
                log.warning("scheduler pass failed: %s", exc.message)
            except Exception:  # a bug must not stop every schedule of the deployment
                log.exception("scheduler pass failed unexpectedly; trying again")
            else:
                if result.next_due is not None:
                    until = (result.next_due - self.clock.now()).total_seconds()
                    delay = min(delay, max(until, 0.0) + 0.01)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return after its current pass."""
        self._stop.set()

    async def __aenter__(self) -> Scheduler:
        # cleared here, not in run_forever: a stop() that comes before the task first runs
        # must still stop it
        self._stop.clear()
        self._task = asyncio.create_task(self.run_forever(), name="legato-scheduler")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
        if self._task is not None:
            await self._task
            self._task = None
