"""The worker: claim due work, execute it, and commit outcomes in groups.

::

    claim loop ──► dispatch ──► step (activity) ─┐
        ▲            │          timer ───────────┤ outcome events
        │            │          child start ─────┤
        │            ▼                           ▼
        └──── work due now ◄── committer: apply + decide per run, one transaction
              (leased to us       for the whole group (group commit), fenced
               on insert)         by each run's version and each work lease

Nothing durable sleeps in memory: retries, waits and timeouts are rows in ``due_work``
with a ``visible_at``; a restarted worker finds them where they were. A step's outcome
becomes history only in the same transaction that deletes its work row under the lease's
fencing token, so a worker whose lease was taken over cannot record anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from legato.activity import ActivityRegistry
from legato.dsl.model import Definition
from legato.engine import events as ev
from legato.engine.machine import Program, callback_token, compile_definition, wanted
from legato.engine.state import RunState, StepStatus
from legato.errors import (
    ConflictError,
    ErrorClass,
    LegatoError,
    NotFoundError,
    StepError,
    StoreError,
)
from legato.runtime.advance import Advanced, advance
from legato.runtime.clock import Clock, SystemClock
from legato.runtime.deadlines import Deadlines
from legato.runtime.services import ServiceSteps
from legato.store import Scope, SqlStore
from legato.store.records import NewWork, RunCommit, StaleVersionError, WorkItem
from legato.store.work import BOOKKEEPING

log = logging.getLogger("legato.worker")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    concurrency: int = 100
    lease_seconds: float = 30.0
    poll_interval: float = 0.25
    heartbeat_interval: float = 2.0
    batch_size: int = 256
    default_step_timeout: float | None = 300.0


@dataclass(slots=True)
class _Cached:
    state: RunState
    version: int
    program: Program


@dataclass(slots=True)
class _Outcome:
    scope: Scope
    run_id: str
    events: list[ev.Event]
    done: list[tuple[int, int]] = field(default_factory=list)
    attempts: int = 0
    extra_work: list[NewWork] = field(default_factory=list)  # e.g. the next status poll


class Programs:
    """Compiled definitions by (scope, name, version); definitions are immutable."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._cache: dict[tuple[Scope, str, str], Program] = {}
        # the newest version seen per workflow: a hint, checked when a run is created
        self._latest: dict[tuple[Scope, str], str] = {}

    def latest_hint(self, scope: Scope, name: str) -> str | None:
        return self._latest.get((scope, name))

    async def latest(self, scope: Scope, name: str) -> str:
        """The newest stored version, read now (and remembered as the hint)."""
        version = await self._store.latest_version(scope, name)
        self._latest[(scope, name)] = version
        return version

    def put(self, scope: Scope, definition: Definition, version: str) -> Program:
        program = compile_definition(definition)
        self._cache[(scope, definition.name, version)] = program
        return program

    async def get(self, scope: Scope, name: str, version: str) -> Program:
        key = (scope, name, version)
        program = self._cache.get(key)
        if program is None:
            record = await self._store.get_definition(scope, name, version)
            program = compile_definition(Definition.model_validate(record.document))
            self._cache[key] = program
        return program


CommitListener = Callable[[Scope, str, RunState, Program], None]


class Worker:
    """Executes due work from one store. An async context manager; ``start()`` runs it."""

    def __init__(
        self,
        store: SqlStore,
        activities: ActivityRegistry,
        programs: Programs,
        *,
        options: WorkerOptions | None = None,
        clock: Clock | None = None,
        owner: str | None = None,
        connectors: Any = None,
    ) -> None:
        self.store = store
        self.activities = activities
        self.programs = programs
        self.options = options or WorkerOptions()
        self.clock = clock or SystemClock()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.connectors = connectors
        self.services = (
            ServiceSteps(connectors, now=self.clock.now) if connectors is not None else None
        )
        self._states: OrderedDict[tuple[Scope, str], _Cached] = OrderedDict()
        self._queue: asyncio.Queue[_Outcome] = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.options.concurrency)
        self._deadlines = Deadlines()  # step timeouts, sharing the loop's timers
        self._inflight: dict[int, WorkItem] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        # when the claim loop will look next by itself; infinite while it is looking, so
        # that anything due meanwhile makes it look again
        self._wake_at = math.inf
        self._saturated = False  # the claim loop waits for a free slot
        self._loops: list[asyncio.Task[Any]] = []
        self._listeners: list[CommitListener] = []
        self._stopping = False

    # ---- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        now = self.clock.now().timestamp()
        _LIVE_OWNERS.add(self.owner)
        await self.store.register_worker(self.owner, socket.gethostname(), os.getpid(), now)
        await self.recover()
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="legato-claim"),
            asyncio.create_task(self._commit_loop(), name="legato-commit"),
            asyncio.create_task(self._heartbeat_loop(), name="legato-heartbeat"),
            # PostgreSQL: work inserted by other processes wakes the claim loop at once
            asyncio.create_task(self.store.listen_for_work(self.wake), name="legato-listen"),
        ]

    async def stop(self) -> None:
        """Stop claiming, let in-flight work finish its commit, release what is left."""
        self._stopping = True
        _LIVE_OWNERS.discard(self.owner)
        self._wake.set()
        if self.services is not None:
            await self.services.aclose()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # flush outcomes already produced
        with contextlib.suppress(Exception):
            await self._drain_once(block=False)
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.store.release_leases([self.owner])
            await self.store.remove_workers([self.owner])

    async def recover(self) -> None:
        """Release the leases of workers that died: same host with a dead pid, or silent."""
        now = self.clock.now().timestamp()
        dead: list[str] = []
        host = socket.gethostname()
        stale = await self.store.stale_workers(now, self.options.heartbeat_interval * 5)
        dead += [owner for owner, _h, _p in stale]
        for owner, hostname, pid in await self.store.stale_workers(now, -1e12):
            if hostname == host and owner != self.owner and not _owner_alive(owner, pid):
                dead.append(owner)
        if dead:
            dead = sorted(set(dead))
            released = await self.store.release_leases(dead)
            await self.store.remove_workers(dead)
            log.info("recovered work of dead workers", extra={"owners": dead, "rows": released})

    # ---- state cache --------------------------------------------------------------------

    async def load(self, scope: Scope, run_id: str) -> _Cached:
        key = (scope, run_id)
        cached = self._states.get(key)
        if cached is not None:
            self._states.move_to_end(key)
            return cached
        record = await self.store.get_run(scope, run_id)
        program = await self.programs.get(scope, record.workflow, record.workflow_version)
        cached = _Cached(RunState.from_dict(record.snapshot), record.version, program)
        self._remember(key, cached)
        return cached

    def _remember(self, key: tuple[Scope, str], cached: _Cached) -> None:
        self._states[key] = cached
        self._states.move_to_end(key)
        while len(self._states) > 20_000:
            self._states.popitem(last=False)

    def remember(
        self, scope: Scope, run_id: str, state: RunState, version: int, program: Program
    ) -> None:
        """Cache a run this process has just written (its state at ``version``)."""
        self._remember((scope, run_id), _Cached(state, version, program))

    def forget(self, scope: Scope, run_id: str) -> None:
        self._states.pop((scope, run_id), None)

    def executing(self, scope: Scope, run_id: str) -> bool:
        """Is this worker executing the run (it holds its state, and the run goes on)?"""
        cached = self._states.get((scope, run_id))
        return cached is not None and not cached.state.finished

    # ---- claiming and dispatch ------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def due(self, visible_at: float) -> None:
        """New work becomes claimable at ``visible_at``: wake the claim loop if it would
        otherwise look later than that."""
        if visible_at < self._wake_at:
            self._wake.set()

    async def _claim_loop(self) -> None:
        batch = self.options.batch_size
        while not self._stopping:
            self._wake_at = math.inf  # looking now: anything due wakes us again after this
            self._wake.clear()
            busy = sum(1 for item in self._inflight.values() if item.kind not in BOOKKEEPING)
            limit = min(max(0, self.options.concurrency - busy), batch)
            self._saturated = limit == 0
            items: list[WorkItem] = []
            nxt: float | None = None
            try:
                # Timers, cancels and child notices only record an event: they are
                # claimed beside the concurrency limit, so a busy worker fires on time.
                items, nxt = await self.store.claim_round(
                    self.owner,
                    now=self.clock.now().timestamp(),
                    limit=limit,
                    bookkeeping_limit=batch,
                    lease_seconds=self.options.lease_seconds,
                )
            except StoreError as exc:
                log.warning("claiming work failed; trying again", extra={"error": str(exc)})
            for item in items:
                self.dispatch(item)
            bookkeeping = sum(1 for item in items if item.kind in BOOKKEEPING)
            if bookkeeping >= batch or (limit and len(items) - bookkeeping >= limit):
                continue  # there may be more due now
            now = self.clock.now().timestamp()
            timeout = self.options.poll_interval
            if nxt is not None and (nxt > now or not self._saturated):
                # (saturated with steps due: a freed slot wakes us, see _released)
                timeout = max(0.0, min(timeout, nxt - now))
            self._wake_at = now + timeout
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _released(self) -> None:
        """Work left ``_inflight``: if the claim loop waits for a free slot, wake it."""
        if self._saturated:
            self._saturated = False
            self._wake.set()

    def dispatch(self, item: WorkItem) -> None:
        if item.id in self._inflight:
            # We claimed our own running row again (its lease lapsed while a heartbeat was
            # late): keep running it, and finish it under the new fence.
            self._inflight[item.id] = item
            return
        if self._stopping:
            return
        self._inflight[item.id] = item
        task = asyncio.create_task(self._execute(item), name=f"legato-{item.kind}-{item.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, item: WorkItem) -> None:
        try:
            if item.kind in BOOKKEEPING:  # records an event, runs nothing: no slot
                outcome = await self._outcome_for(item)
            else:
                async with self._slots:
                    outcome = await self._outcome_for(item)
            if outcome is not None:
                await self._queue.put(outcome)
            else:
                self._inflight.pop(item.id, None)
                self._released()
        except asyncio.CancelledError:
            self._inflight.pop(item.id, None)
            raise
        except Exception:
            log.exception("work item failed unexpectedly", extra={"item": item.key})
            self._inflight.pop(item.id, None)
            self._released()

    async def _outcome_for(self, item: WorkItem) -> _Outcome | None:
        done = [(item.id, item.fence)]
        try:
            cached = await self.load(item.scope, item.run_id)
        except NotFoundError:
            return None
        if cached.state.finished and item.kind != "child":
            # a leftover of a finished run (its run timeout, a late notice): nothing to add.
            # (A child spawned with wait=false may still be waiting to start: it goes on.)
            return _Outcome(item.scope, item.run_id, [], done)
        if item.kind == "cancel":
            event_: ev.Event = ev.CancelRequested(
                at=self.clock.now(), reason=str(item.payload.get("reason", "cancelled"))
            )
            return _Outcome(item.scope, item.run_id, [event_], done)
        if item.kind == "timer":
            event: ev.Event = ev.TimerFired(at=self.clock.now(), timer_id=item.key)
            return _Outcome(item.scope, item.run_id, [event], done)
        if item.kind == "child_done":
            p = item.payload
            event = ev.ChildFinished(
                at=self.clock.now(),
                path=p["path"],
                child_run_id=p["child_run_id"],
                status=p["status"],
                output=p.get("output"),
                error=p.get("error"),
            )
            return _Outcome(item.scope, item.run_id, [event], done)
        if item.kind == "child":
            return await self._start_child(item)
        if item.kind == "step":
            return await self._run_step(item)
        if item.kind == "poll":
            return await self._poll(item)
        log.warning("unknown work kind; dropping it", extra={"kind": item.kind})
        return _Outcome(item.scope, item.run_id, [], done)

    async def _run_step(self, item: WorkItem) -> _Outcome | None:
        p = item.payload
        done = [(item.id, item.fence)]
        try:
            cached = await self.load(item.scope, item.run_id)
        except NotFoundError:
            return None
        if not wanted(cached.state, p["path"], p["attempt"]):
            # Our cached copy may be older than the row (another process signalled or
            # cancelled the run and scheduled this): look again at the stored run.
            self.forget(item.scope, item.run_id)
            cached = await self.load(item.scope, item.run_id)
            if not wanted(cached.state, p["path"], p["attempt"]):
                # cancelled or already recorded: drop the row without running anything
                return _Outcome(item.scope, item.run_id, [], done)
        started = self.clock.now()
        ctx = self.activities.context(
            run_id=item.run_id,
            workflow=cached.state.workflow,
            step=p["path"],
            attempt=p.get("visit_attempt") or p["attempt"],
            idempotency_key=p["idempotency_key"],
            tenant_id=item.scope.tenant_id,
            environment_id=item.scope.environment_id,
            run_input=cached.state.input,
        )
        timeout = p.get("timeout") or self.options.default_step_timeout
        extra: list[NewWork] = []
        try:
            event: ev.Event
            if p.get("action"):
                with self._deadlines.limit(timeout):  # inline: no task per step
                    output = await self.activities.invoke(p["action"], p.get("input"), ctx)
                event = ev.StepCompleted(
                    at=self.clock.now(),
                    path=p["path"],
                    attempt=p["attempt"],
                    output=output,
                    started_at=started,
                )
            else:
                event, extra = await self._run_service_step(item, cached.state, p, timeout, started)
        except TimeoutError:
            event = ev.StepFailed(
                at=self.clock.now(),
                path=p["path"],
                attempt=p["attempt"],
                error=StepError(
                    f"step {p['path']!r} did not finish within {timeout:g}s",
                    error_class=ErrorClass.TIMEOUT,
                ).to_dict(),
                started_at=started,
            )
        except LegatoError as exc:
            error = exc.to_dict()
            error.setdefault("error_class", ErrorClass.PERMANENT.value)
            event = ev.StepFailed(
                at=self.clock.now(),
                path=p["path"],
                attempt=p["attempt"],
                error=error,
                started_at=started,
            )
        except Exception as exc:  # a bug in user code: retried per the policy
            event = ev.StepFailed(
                at=self.clock.now(),
                path=p["path"],
                attempt=p["attempt"],
                error=StepError(
                    f"{type(exc).__name__}: {exc}",
                    error_class=ErrorClass.RETRYABLE,
                    details={"exception": type(exc).__name__},
                ).to_dict(),
                started_at=started,
            )
        return _Outcome(item.scope, item.run_id, [event], done, extra_work=extra)

    async def _run_service_step(
        self,
        item: WorkItem,
        state: RunState,
        p: dict[str, Any],
        timeout: float | None,
        started: datetime,
    ) -> tuple[ev.Event, list[NewWork]]:
        if self.services is None:
            raise StepError(
                f"step {p['path']!r} calls service {p.get('service')!r} operation "
                f"{p.get('operation')!r}, but no service registry is configured; "
                "pass --services services.yaml (or LEGATO_SERVICES)",
                error_class=ErrorClass.PERMANENT,
            )
        task = self.services.task(
            p, scope=item.scope, run_id=item.run_id, workflow=state.workflow, timeout=timeout
        )
        async with asyncio.timeout(timeout):
            kind, result = await self.services.run(p, task, item.scope)
        if kind == "accepted":
            extra: list[NewWork] = []
            interval = self.services.poll_interval(task.service)
            if interval is not None and result.operation_id:
                extra.append(
                    NewWork(
                        kind="poll",
                        key=p["path"],
                        attempt=1,
                        payload={**p, "operation_id": result.operation_id, "interval": interval},
                        visible_at=self.clock.now().timestamp() + interval,
                    )
                )
            accepted = ev.StepAccepted(
                at=self.clock.now(),
                path=p["path"],
                attempt=p["attempt"],
                operation_id=result.operation_id,
                started_at=started,
                metadata=result.step_metadata(),
            )
            return accepted, extra
        completed = ev.StepCompleted(
            at=self.clock.now(),
            path=p["path"],
            attempt=p["attempt"],
            output=result.output,
            started_at=started,
            metadata=result.step_metadata(),
        )
        return completed, []

    async def _poll(self, item: WorkItem) -> _Outcome | None:
        """Ask a service whether an accepted async operation is done (CheckStatus)."""
        p = item.payload
        done = [(item.id, item.fence)]
        try:
            cached = await self.load(item.scope, item.run_id)
        except NotFoundError:
            return None

        def waiting(state: RunState) -> bool:
            rec = state.steps.get(p["path"])
            return (
                rec is not None
                and rec.status == StepStatus.WAITING
                and rec.operation_id == p["operation_id"]
            )

        if not waiting(cached.state):
            self.forget(item.scope, item.run_id)  # the cache may be older than the row
            cached = await self.load(item.scope, item.run_id)
        rec = cached.state.steps.get(p["path"])
        if rec is None or not waiting(cached.state) or self.services is None:
            return _Outcome(item.scope, item.run_id, [], done)  # no longer waiting: drop
        token = callback_token(cached.state, rec)
        task = self.services.task(
            p,
            scope=item.scope,
            run_id=item.run_id,
            workflow=cached.state.workflow,
            timeout=None,
        )
        try:
            result = await self.services.poll(task, p["operation_id"])
        except LegatoError as exc:
            error = exc.to_dict()
            error.setdefault("error_class", ErrorClass.PERMANENT.value)
            event = ev.CallbackReceived(at=self.clock.now(), token=token, error=error)
            return _Outcome(item.scope, item.run_id, [event], done)
        except Exception as exc:  # a polling hiccup: poll again later
            log.warning("status poll failed", extra={"run_id": item.run_id, "error": str(exc)})
            result = None
        if result is None:
            again = NewWork(
                kind="poll",
                key=p["path"],
                attempt=item.attempt + 1,
                payload=p,
                visible_at=self.clock.now().timestamp() + float(p["interval"]),
            )
            return _Outcome(item.scope, item.run_id, [], done, extra_work=[again])
        event = ev.CallbackReceived(at=self.clock.now(), token=token, output=result.output)
        return _Outcome(item.scope, item.run_id, [event], done)

    async def _start_child(self, item: WorkItem) -> _Outcome | None:
        p = item.payload
        done = [(item.id, item.fence)]
        try:
            parent = await self.load(item.scope, item.run_id)
            adv, leased = await start_run(
                self.store,
                self.programs,
                item.scope,
                workflow=p["workflow"],
                version=p.get("version"),
                input=p.get("input"),
                run_id=p["child_run_id"],
                now=self.clock.now(),
                parent_run_id=item.run_id,
                parent_path=p["path"],
                lease_owner=self.owner,
                lease_seconds=self.options.lease_seconds,
            )
            for child_item in leased:
                self.dispatch(child_item)
            waiting = adv.next_unleased()
            if waiting is not None:
                self.due(waiting)
        except ConflictError:
            pass  # started before a crash: the child exists, nothing to do
        except NotFoundError as exc:
            if p.get("wait", True):
                event = ev.ChildFinished(
                    at=self.clock.now(),
                    path=p["path"],
                    child_run_id=p["child_run_id"],
                    status="failed",
                    error=exc.to_dict() | {"error_class": ErrorClass.PERMANENT.value},
                )
                return _Outcome(item.scope, item.run_id, [event], done)
        del parent
        return _Outcome(item.scope, item.run_id, [], done)

    # ---- committing ---------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await self._drain_once(block=True)

    async def _drain_once(self, *, block: bool) -> None:
        batch: list[_Outcome] = []
        if block:
            batch.append(await self._queue.get())
        while len(batch) < self.options.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        if batch:
            await self.commit(batch)

    async def commit(self, batch: list[_Outcome]) -> None:
        """Apply each run's outcomes and commit them all in one transaction (group commit)."""
        now = self.clock.now()
        now_ts = now.timestamp()
        by_run: dict[tuple[Scope, str], list[_Outcome]] = {}
        for outcome in batch:
            by_run.setdefault((outcome.scope, outcome.run_id), []).append(outcome)
        commits: list[RunCommit] = []
        plans: list[tuple[tuple[Scope, str], list[_Outcome], Advanced, _Cached]] = []
        for key, outcomes in by_run.items():
            try:
                cached = await self.load(*key)
            except NotFoundError:
                self._settle(outcomes)
                continue
            events = [e for o in outcomes for e in o.events]
            # The cached state is changed in place; on any failure it is dropped and reloaded.
            adv = advance(cached.program, cached.state, events, now)
            commits.append(
                RunCommit(
                    scope=key[0],
                    run_id=key[1],
                    expected_version=cached.version,
                    status=str(adv.state.status),
                    snapshot=adv.state.to_json(),
                    events=adv.new_events(),
                    add_work=adv.new_work(
                        now_ts, lease_owner=self.owner, lease_seconds=self.options.lease_seconds
                    )
                    + [w for o in outcomes for w in o.extra_work],
                    done_work=[self._current_fence(d) for o in outcomes for d in o.done],
                    # the state's own instant: an event after RunFinished must not clear it
                    finished_at=finished_at_of(adv.state),
                    now=now,
                )
            )
            plans.append((key, outcomes, adv, cached))
        if not commits:
            return
        try:
            results = await self.store.commit(commits)
        except StoreError as exc:
            log.warning("group commit failed; retrying", extra={"error": str(exc)})
            for key, outcomes, _adv, _cached in plans:
                self._states.pop(key, None)
                await self._retry(outcomes)
            await asyncio.sleep(0.05)
            return
        for (key, outcomes, adv, cached), commit, result in zip(
            plans, commits, results, strict=True
        ):
            if result.ok:
                assert result.version is not None
                self._settle(outcomes)
                cached.version = result.version
                for listener in self._listeners:
                    listener(key[0], key[1], adv.state, cached.program)
                if adv.state.finished and not result.leased:
                    # An ended run needs no cache: what may still come for it (a late
                    # notice, a retry) reads it. Keeping thousands of ended states alive
                    # made each garbage collection walk them all.
                    self._states.pop(key, None)
                for item in result.leased:
                    self.dispatch(item)
                # timers, retries, work for other runs: wake the claim loop if it would
                # look too late (a leased row already there is not re-inserted: skip it)
                waiting = [w.visible_at for w in commit.add_work if w.lease_owner is None]
                if waiting:
                    self.due(min(waiting))
                continue
            self._states.pop(key, None)
            if result.reason == "lease":
                # another worker took this work over; it will record its own outcome
                log.info("lease lost; dropping outcome", extra={"run_id": key[1]})
                self._settle(outcomes)
            else:
                await self._retry(outcomes)

    def _current_fence(self, done: tuple[int, int]) -> tuple[int, int]:
        item = self._inflight.get(done[0])
        return (done[0], item.fence) if item is not None else done

    def _settle(self, outcomes: list[_Outcome]) -> None:
        for o in outcomes:
            for work_id, _ in o.done:
                self._inflight.pop(work_id, None)
        self._released()

    async def _retry(self, outcomes: list[_Outcome]) -> None:
        for o in outcomes:
            o.attempts += 1
            if o.attempts <= 20:
                await self._queue.put(o)
            else:
                log.error("giving up on an outcome after 20 conflicts", extra={"run": o.run_id})
                self._settle([o])

    # ---- leases ---------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        # Extend leases well before they expire, however short they are: a lease that
        # lapses under a running step is re-claimed (even by this worker), its fence moves
        # on, and the step's outcome is dropped and the step run again.
        interval = min(self.options.heartbeat_interval, self.options.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            now = self.clock.now().timestamp()
            try:
                await self.store.heartbeat(self.owner, now)
                if self._inflight:
                    await self.store.extend_leases(
                        self.owner,
                        list(self._inflight),
                        now=now,
                        lease_seconds=self.options.lease_seconds,
                    )
            except StoreError as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)})


def finished_at_of(state: RunState) -> datetime | None:
    """When the run finished (its RunFinished instant), for the run row; None until then."""
    return datetime.fromisoformat(state.finished_at) if state.finished_at else None


# Workers alive in this process. A worker row with our own pid but not in this set belongs
# to an earlier process that had the same pid (a container restarted with the same
# hostname, where the worker is PID 1): it is dead.
_LIVE_OWNERS: set[str] = set()


def _owner_alive(owner: str, pid: int) -> bool:
    if pid == os.getpid():
        return owner in _LIVE_OWNERS
    return _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def start_run(
    store: SqlStore,
    programs: Programs,
    scope: Scope,
    *,
    workflow: str,
    version: str | None,
    input: Any,
    run_id: str,
    now: datetime,
    parent_run_id: str | None = None,
    parent_path: str | None = None,
    lease_owner: str | None = None,
    lease_seconds: float = 30.0,
    suspended: bool = False,
) -> tuple[Advanced, list[WorkItem]]:
    """Create a run: RunStarted, the first commands, all in one transaction.

    Returns the engine's result and the work rows inserted already leased to
    ``lease_owner`` (a local worker dispatches them at once, without polling)."""
    latest_only = version is None
    if version is None:
        # The newest version this process has seen; the creation checks it is still the
        # newest, in its transaction, and we read it again if another process deployed.
        version = programs.latest_hint(scope, workflow) or await programs.latest(scope, workflow)
    program = await programs.get(scope, workflow, version)
    started = ev.RunStarted(
        at=now,
        run_id=run_id,
        workflow=workflow,
        version=version,
        input=input,
        parent_run_id=parent_run_id,
        parent_path=parent_path,
        secret=secrets.token_hex(16),
        suspended=suspended,
    )
    adv = advance(program, None, [started], now)
    work = adv.new_work(now.timestamp(), lease_owner=lease_owner, lease_seconds=lease_seconds)
    try:
        record = await store.create_run(
            scope,
            run_id=run_id,
            workflow=workflow,
            workflow_version=version,
            status=str(adv.state.status),
            snapshot=adv.state.to_json(),
            events=adv.new_events(),
            work=work,
            parent_run_id=parent_run_id,
            now=now,
            latest_only=latest_only,
        )
    except StaleVersionError:
        await programs.latest(scope, workflow)
        return await start_run(
            store,
            programs,
            scope,
            workflow=workflow,
            version=None,
            input=input,
            run_id=run_id,
            now=now,
            parent_run_id=parent_run_id,
            parent_path=parent_path,
            lease_owner=lease_owner,
            lease_seconds=lease_seconds,
            suspended=suspended,
        )
    return adv, list(record.leased_work)
