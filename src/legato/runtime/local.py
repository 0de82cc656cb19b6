"""The embedded runtime: Legato inside your application, on one SQLite file or PostgreSQL.

.. code-block:: python

    import legato

    @legato.activity("greet")
    async def greet(name: str) -> dict:
        return {"greeting": f"Hello, {name}!"}

    async with legato.Engine.open("sqlite:///legato.db", activities=[greet]) as engine:
        result = await engine.run("hello.yaml", {"name": "Ada"})
        print(result.status, result.output)

The CLI is built on this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from legato.activity import ActivityRegistry, activity
from legato.dsl.model import Definition
from legato.engine import events as ev
from legato.engine.machine import (
    Program,
    callback_target,
    pause_refusal,
    resume_refusal,
    retry_refusal,
)
from legato.engine.state import RunState, RunStatus
from legato.engine.views import step_views
from legato.errors import (
    ConflictError,
    DefinitionError,
    InputError,
    LegatoError,
    NotFoundError,
    UsageError,
)
from legato.runtime.advance import advance
from legato.runtime.clock import Clock, SystemClock
from legato.runtime.worker import (
    Programs,
    Worker,
    WorkerOptions,
    finished_at_of,
    start_run,
)
from legato.store import Scope, SqlStore
from legato.store.records import EventRecord, RunCommit, RunRecord

TERMINAL = {"completed", "failed", "cancelled", "compensation_failed"}


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run looks like from outside: its status, output, error and steps."""

    run_id: str
    workflow: str
    version: str
    status: str
    output: Any = None
    error: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    parent_run_id: str | None = None
    paused: bool = False  # suspended: it starts no new work until resumed

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == RunStatus.COMPLETED

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "version": self.version,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "paused": self.paused,
            "steps": self.steps,
        }


def content_hash(document: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


class Engine:
    """Legato embedded: a store, your activities, and a worker that runs due work.

    Open it with :meth:`Engine.open` as an async context manager. With ``worker=True``
    (the default) this process executes steps; with ``worker=False`` it only reads and
    writes runs (``legato runs``, ``legato signal``), and a ``legato worker`` elsewhere
    executes them.
    """

    def __init__(
        self,
        store: SqlStore,
        activities: ActivityRegistry,
        *,
        scope: Scope | None = None,
        worker: bool = True,
        options: WorkerOptions | None = None,
        clock: Clock | None = None,
        connectors: Any = None,
    ) -> None:
        self.store = store
        self.activities = activities
        self.connectors = connectors
        self.scope = scope or Scope()
        self.clock = clock or SystemClock()
        self.programs = Programs(store)
        self.options = options or WorkerOptions()
        self.worker: Worker | None = (
            Worker(
                store,
                activities,
                self.programs,
                options=self.options,
                clock=self.clock,
                connectors=connectors,
            )
            if worker
            else None
        )
        # (scope, run_id) -> futures woken with the run's state when it commits; shared
        # with for_scope views
        self._waiters: dict[tuple[Scope, str], list[asyncio.Future[Any]]] = {}
        # (scope, run_id) -> futures of `wait`, woken only when the run ends
        self._enders: dict[tuple[Scope, str], list[asyncio.Future[Any]]] = {}
        if self.worker is not None:
            self.worker.add_listener(self._on_commit)
        self._open = False

    # ---- lifecycle ----------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        url: str | os.PathLike[str] = "legato.db",
        *,
        activities: Iterable[Any] = (),
        scope: Scope | None = None,
        worker: bool = True,
        options: WorkerOptions | None = None,
        registry: ActivityRegistry | None = None,
        clock: Clock | None = None,
        sqlite_synchronous: str = "FULL",
        connectors: Any = None,
        services: str | os.PathLike[str] | None = None,
    ) -> AsyncIterator[Engine]:
        """Open the store at ``url`` (a SQLite path or URL, or a PostgreSQL URL).

        ``services`` is a services.yaml registry: tasks naming a ``service`` then call it
        through the connectors (adapters, auth, circuit breaker, rate limit)."""
        store = await SqlStore.open(os.fspath(url), sqlite_synchronous=sqlite_synchronous)
        try:
            reg = registry or ActivityRegistry()
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(reg)
                if connectors is None and services is not None:
                    from legato.connectors.hub import Connectors

                    connectors = await stack.enter_async_context(
                        Connectors.from_file(services, store=store, network=reg.network)
                    )
                    # mask the registry's secrets in everything this process logs
                    log_filter = connectors.install_log_filter(None)
                    stack.callback(_remove_log_filter, log_filter)
                if registry is None:
                    reg.include_builtins()
                for item in activities:
                    reg.register(item)
                engine = cls(
                    store,
                    reg,
                    scope=scope,
                    worker=worker,
                    options=options,
                    clock=clock,
                    connectors=connectors,
                )
                await engine._start()
                try:
                    yield engine
                finally:
                    await engine._stop()
        finally:
            await store.close()

    async def _start(self) -> None:
        if self.worker is not None:
            await self.worker.start()
        self._open = True

    async def _stop(self) -> None:
        self._open = False
        if self.worker is not None:
            await self.worker.stop()
        for waiting in (self._waiters, self._enders):
            for futures in waiting.values():
                for fut in futures:
                    if not fut.done():
                        fut.cancel()

    def _check_open(self) -> None:
        if not self._open:
            raise UsageError("this Engine is closed; use it inside `async with Engine.open(...)`")

    # ---- activities -----------------------------------------------------------------------

    def activity(self, name: str | None = None, **options: Any) -> Any:
        """Decorator: register a function of yours as activity ``name`` on this engine."""

        def wrap(fn: Any) -> Any:
            marked = activity(name, **options)(fn)
            self.activities.register(marked)
            return marked

        return wrap

    def register(self, *items: Any) -> None:
        for item in items:
            self.activities.register(item)

    # ---- definitions ----------------------------------------------------------------------

    async def deploy(
        self, definition: Definition | str | Path, *, source: str | None = None
    ) -> tuple[str, str]:
        """Store a definition as an immutable version; returns (name, version).

        If another definition already holds the same name and version, this one is stored
        as ``<version>+<hash>`` so runs stay pinned to exactly what they started with.
        """
        self._check_open()
        if not isinstance(definition, Definition):
            definition, source = load_definition(definition)
        if self.connectors is not None:
            definition = _with_service_retries(definition, self.connectors)
        document = definition.model_dump(mode="json", by_alias=True)
        digest = content_hash(document)
        version = definition.version
        try:
            await self.store.put_definition(
                self.scope,
                name=definition.name,
                version=version,
                source_format=definition.source_format,
                document=document,
                source=source,
                content_hash=digest,
                now=self.clock.now(),
            )
        except ConflictError:
            version = f"{definition.version}+{digest[:12]}"
            await self.store.put_definition(
                self.scope,
                name=definition.name,
                version=version,
                source_format=definition.source_format,
                document=document,
                source=source,
                content_hash=digest,
                now=self.clock.now(),
            )
        self.programs.put(self.scope, definition, version)
        return definition.name, version

    # ---- runs -------------------------------------------------------------------------------

    async def start(
        self,
        workflow: Definition | str | Path,
        input: Any = None,
        *,
        version: str | None = None,
        run_id: str | None = None,
        suspended: bool = False,
    ) -> str:
        """Start a run and return its id. ``workflow`` is a definition, a file, or a
        deployed workflow's name. With ``suspended`` the run is created paused: it runs
        nothing until :meth:`resume` starts it."""
        self._check_open()
        if isinstance(workflow, Definition) or (
            isinstance(workflow, Path | str) and _looks_like_file(workflow)
        ):
            name, version = await self.deploy(workflow)
        else:
            name = str(workflow)
        if input is not None:
            try:
                json.dumps(input, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InputError(f"the run's input must be JSON data: {exc}") from exc
        run_id = run_id or uuid.uuid4().hex
        owner = self.worker.owner if self.worker is not None else None
        adv, leased = await start_run(
            self.store,
            self.programs,
            self.scope,
            workflow=name,
            version=version,
            input=input,
            run_id=run_id,
            now=self.clock.now(),
            lease_owner=owner,
            lease_seconds=self.options.lease_seconds,
            suspended=suspended,
        )
        if self.worker is not None:
            # the worker is about to run this: spare it reading back what we just wrote
            program = await self.programs.get(self.scope, name, adv.state.version)
            self.worker.remember(self.scope, run_id, adv.state, 1, program)
            for item in leased:
                self.worker.dispatch(item)
            waiting = adv.next_unleased()
            if waiting is not None:
                self.worker.due(waiting)
        return run_id

    async def run(
        self,
        workflow: Definition | str | Path,
        input: Any = None,
        *,
        timeout: float | None = None,
    ) -> RunResult:
        """Start a run and wait for it to end."""
        run_id = await self.start(workflow, input)
        return await self.wait(run_id, timeout=timeout)

    async def get(self, run_id: str) -> RunResult:
        self._check_open()
        record = await self.store.get_run(self.scope, run_id)
        return await self._result(record)

    async def _result(self, record: RunRecord) -> RunResult:
        state = RunState.from_dict(record.snapshot)
        program = await self.programs.get(self.scope, record.workflow, record.workflow_version)
        return _result_of(program, state, record.status, self.clock.now())

    async def wait(self, run_id: str, *, timeout: float | None = None) -> RunResult:
        """Wait until the run ends (completed, failed, cancelled or compensation_failed).

        A run this process executes wakes the waiter when it ends, without a read (and
        is looked at again every 2 s in case another worker took it over); a run
        executed elsewhere is looked at again every second."""
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        key = (self.scope, run_id)
        here = self.worker is not None and self.worker.executing(self.scope, run_id)
        if not here:
            result = await self.get(run_id)
            if result.done:
                return result
        while True:
            fut: asyncio.Future[RunResult | None] = loop.create_future()
            self._enders.setdefault(key, []).append(fut)
            wait_for = 2.0 if here else 1.0
            if deadline is not None:
                wait_for = min(wait_for, deadline - loop.time())
            got: RunResult | None = None
            timed_out = False
            try:
                if wait_for <= 0:
                    raise TimeoutError
                got = await asyncio.wait_for(fut, wait_for)
            except TimeoutError:
                timed_out = True
            finally:
                futures = self._enders.get(key, [])
                if fut in futures:
                    futures.remove(fut)
                if not futures:
                    self._enders.pop(key, None)
            if got is not None:
                return got
            if timed_out:
                result = await self.get(run_id)  # not ours, or no news: look again
                if result.done:
                    return result
                if deadline is not None and loop.time() >= deadline:
                    raise TimeoutError(f"run {run_id} did not end within {timeout}s")
                here = self.worker is not None and self.worker.executing(self.scope, run_id)

    async def watch(self, run_id: str, *, interval: float = 1.0) -> AsyncIterator[RunResult]:
        """Yield the run each time it changes, until it ends."""
        self._check_open()
        loop = asyncio.get_running_loop()
        last = -1
        while True:
            record = await self.store.get_run(self.scope, run_id)
            if record.version != last:
                last = record.version
                result = await self._result(record)
                yield result
                if result.done:
                    return
            fut: asyncio.Future[Any] = loop.create_future()
            self._waiters.setdefault((self.scope, run_id), []).append(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, interval)

    def _on_commit(self, scope: Scope, run_id: str, state: RunState, program: Program) -> None:
        key = (scope, run_id)
        for fut in self._waiters.pop(key, ()):  # watchers: something changed, look
            if not fut.done():
                fut.set_result(None)
        if not state.finished or key not in self._enders:
            return
        # The result of the run that ended, built now: the worker changes its cached
        # state in place for the next commit.
        result = _result_of(program, state, str(state.status), self.clock.now())
        for fut in self._enders.pop(key):
            if not fut.done():
                fut.set_result(result)

    async def runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 50
    ) -> list[RunRecord]:
        self._check_open()
        return await self.store.list_runs(self.scope, status=status, workflow=workflow, limit=limit)

    async def history(self, run_id: str) -> list[EventRecord]:
        """The run's event log. The run's callback secret is masked."""
        self._check_open()
        await self.store.get_run(self.scope, run_id)  # NotFoundError names the run
        events = await self.store.list_events(self.scope, run_id)
        return [_mask_secret(e) for e in events]

    async def callback(
        self, token: str, output: Any = None, *, error: dict[str, Any] | None = None
    ) -> RunResult:
        """Deliver the result of an async operation (``async: true`` steps).

        ``token`` is the callback token the service was given. An unexpected or duplicate
        callback raises ConflictError and changes nothing."""
        self._check_open()
        run_id, sep, _ = token.partition("~")
        if not sep or not run_id:
            raise InputError(
                f"{token!r} is not a callback token; use the token the service was given"
            )
        if error is not None:
            error = {"message": "the service reported a failure", **error}
            error.setdefault("error_class", "PERMANENT")
        event = ev.CallbackReceived(at=self.clock.now(), token=token, output=output, error=error)

        def check(state: RunState) -> None:
            if callback_target(state, token) is None:
                raise ConflictError(
                    f"unexpected or duplicate callback for run {run_id}: no step is waiting "
                    "for this token (it was answered already, timed out, or never existed)"
                )

        return await self._transact(run_id, event, check=check)

    async def verify(self, run_id: str | None = None) -> dict[str, int | None]:
        """Check hash chains. Returns {run_id: first broken seq, or None when intact}."""
        self._check_open()
        if run_id is not None:
            await self.store.get_run(self.scope, run_id)
            return {run_id: await self.store.verify_run(self.scope, run_id)}
        out: dict[str, int | None] = {}
        offset = 0
        while True:
            page = await self.store.list_runs(self.scope, limit=500, offset=offset)
            for record in page:
                out[record.id] = await self.store.verify_run(self.scope, record.id)
            if len(page) < 500:
                return out
            offset += 500

    # ---- things that happen to a run from outside -------------------------------------

    async def signal(
        self, run_id: str, name: str, data: Any = None, *, correlation: str | None = None
    ) -> RunResult:
        """Deliver signal ``name`` to a run (it is kept for the run if nothing waits yet)."""
        self._check_open()
        now = self.clock.now()
        record = await self.store.add_signal(
            self.scope, run_id=run_id, name=name, payload=data, correlation=correlation, now=now
        )
        event = ev.SignalReceived(
            at=now, name=name, payload_=data, correlation=correlation, signal_id=record.id
        )
        return await self._transact(run_id, event, signals_delivered=[record.id])

    async def retry(self, run_id: str) -> RunResult:
        """Run a failed run again from the step that failed, keeping completed outputs."""
        self._check_open()

        def check(state: RunState) -> None:
            why = retry_refusal(state)
            if why is not None:
                raise ConflictError(f"run {run_id} cannot be retried: {why}")

        return await self._transact(
            run_id, ev.RetryRequested(at=self.clock.now()), check=check, allow_terminal=True
        )

    def for_scope(self, scope: Scope) -> Engine:
        """The same engine (store, worker, activities) acting for another tenant and
        environment: every read and write goes through ``scope``."""
        view = copy.copy(self)
        view.scope = scope
        return view

    async def cancel(self, run_id: str, reason: str = "cancelled by request") -> RunResult:
        """Cancel a run: its active steps stop and its compensations run."""
        self._check_open()
        return await self._transact(run_id, ev.CancelRequested(at=self.clock.now(), reason=reason))

    async def pause(self, run_id: str, reason: str = "paused by request") -> RunResult:
        """Pause a run: it starts no new steps, timers or child runs until :meth:`resume`.

        Steps already running finish and their outcomes are recorded; timers that fire and
        signals that arrive meanwhile are recorded too, and what they make ready waits for
        the resume. A paused run can be cancelled (its compensations run at once); one
        that ends while paused is no longer paused. ConflictError when the run has ended,
        is compensating, or is paused already."""
        self._check_open()

        def check(state: RunState) -> None:
            why = pause_refusal(state)
            if why is not None:
                raise ConflictError(f"run {run_id} cannot be paused: {why}")

        event = ev.RunSuspended(at=self.clock.now(), reason=reason)
        return await self._transact(run_id, event, check=check)

    async def resume(self, run_id: str, reason: str = "resumed by request") -> RunResult:
        """Resume a paused run (or start one created with ``start(..., suspended=True)``):
        the work it held back is scheduled at once. ConflictError when it is not paused."""
        self._check_open()

        def check(state: RunState) -> None:
            why = resume_refusal(state)
            if why is not None:
                raise ConflictError(f"run {run_id} cannot be resumed: {why}")

        # _transact commits the work the resume asks for, leased to this process's worker
        # and dispatched at once (as cancel and signal do); without a worker here, the rows
        # are due now and a `legato worker` claims them on its next poll.
        event = ev.RunResumed(at=self.clock.now(), reason=reason)
        return await self._transact(run_id, event, check=check)

    async def _transact(
        self,
        run_id: str,
        event: ev.Event,
        *,
        signals_delivered: list[int] | None = None,
        check: Callable[[RunState], None] | None = None,
        allow_terminal: bool = False,
    ) -> RunResult:
        for _ in range(50):
            record = await self.store.get_run(self.scope, run_id)
            state = RunState.from_dict(record.snapshot)
            if check is not None:
                check(state)
            if record.status in TERMINAL and not allow_terminal:
                if isinstance(event, ev.SignalReceived):
                    raise ConflictError(
                        f"run {run_id} has already ended ({record.status}); "
                        f"signal {event.name!r} was not delivered"
                    )
                return await self._result(record)
            program = await self.programs.get(self.scope, record.workflow, record.workflow_version)
            now = self.clock.now()
            event = _restamp(event, now)
            adv = advance(program, state, [event], now)
            owner = self.worker.owner if self.worker is not None else None
            [result] = await self.store.commit(
                [
                    RunCommit(
                        scope=self.scope,
                        run_id=run_id,
                        expected_version=record.version,
                        status=str(adv.state.status),
                        snapshot=adv.state.to_json(),
                        events=adv.new_events(),
                        add_work=adv.new_work(
                            now.timestamp(),
                            lease_owner=owner,
                            lease_seconds=self.options.lease_seconds,
                        ),
                        done_work=[],
                        # the state's own instant: an event after RunFinished must not clear it
                        finished_at=finished_at_of(adv.state),
                        now=now,
                        signals_delivered=list(signals_delivered or []),
                    )
                ]
            )
            if result.ok:
                if self.worker is not None:
                    self.worker.forget(self.scope, run_id)
                    for item in result.leased:
                        self.worker.dispatch(item)
                    self.worker.wake()
                self._on_commit(self.scope, run_id, adv.state, program)
                return _result_of(program, adv.state, str(adv.state.status), now)
            await asyncio.sleep(0.01)
        raise ConflictError(f"run {run_id} kept changing; try again")


def _with_service_retries(definition: Definition, hub: Any) -> Definition:
    """Give each task that calls a service, and has no ``retry`` of its own, the retry
    policy of that service's registry entry. The stored version then carries it, so a
    run keeps the policy it started with."""
    document = definition.model_dump(mode="json", by_alias=True, exclude_unset=False)
    changed = False

    def visit(states: dict[str, Any]) -> None:
        nonlocal changed
        for spec in states.values():
            if spec.get("type") == "task" and spec.get("service") and spec.get("retry") is None:
                try:
                    policy = hub.retry_policy(spec["service"])
                except LegatoError:
                    policy = None  # an unknown service fails when the step runs, clearly
                if policy is not None:
                    spec["retry"] = policy.model_dump(mode="json")
                    changed = True
            for branch in spec.get("branches") or ():
                visit(branch["states"])
            if spec.get("iterator"):
                visit(spec["iterator"]["states"])

    visit(document["states"])
    return Definition.model_validate(document) if changed else definition


def _remove_log_filter(log_filter: logging.Filter) -> None:
    root = logging.getLogger()
    root.removeFilter(log_filter)
    for handler in root.handlers:
        handler.removeFilter(log_filter)


def _mask_secret(event: EventRecord) -> EventRecord:
    if event.type != "RunStarted" or not event.payload.get("secret"):
        return event
    import dataclasses

    return dataclasses.replace(event, payload={**event.payload, "secret": "***"})


def _restamp(event: ev.Event, at: datetime) -> ev.Event:
    import dataclasses

    return dataclasses.replace(event, at=at)


def _result_of(
    program: Program, state: RunState, status: str, now: datetime | None = None
) -> RunResult:
    return RunResult(
        run_id=state.run_id,
        workflow=state.workflow,
        version=state.version,
        status=status,
        output=state.output,
        error=state.error,
        steps=step_views(program, state, now),
        started_at=state.started_at,
        finished_at=state.finished_at,
        parent_run_id=state.parent_run_id,
        paused=state.suspended,
    )


def _looks_like_file(value: str | Path) -> bool:
    if isinstance(value, Path):
        return True
    return value.endswith((".yaml", ".yml", ".json")) or "/" in value or Path(value).is_file()


def load_definition(path_or_text: str | Path) -> tuple[Definition, str]:
    """Load and validate a definition file (any accepted format); raise DefinitionError."""
    from legato.dsl.loader import load_file

    path = Path(path_or_text)
    if not path.is_file():
        raise NotFoundError(f"definition file {str(path)!r} does not exist")
    result = load_file(path)
    result.raise_for_errors()
    assert result.definition is not None
    if result.definition is None:  # pragma: no cover
        raise DefinitionError(source=str(path))
    return result.definition, path.read_text(encoding="utf-8")
