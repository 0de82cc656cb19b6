"""Serve Python functions to Legato over AMQP (RabbitMQ) or NATS: the other end of the
message-queue adapters (:mod:`legato.connectors.amqp`, :mod:`legato.connectors.nats`).

::

    from legato import StepError
    from legato.mq_executor import MqExecutor

    async def provision(payload: dict, request) -> dict:
        if not payload.get("email"):
            raise StepError("email is required", error_class="VALIDATION")
        return {"account": await make_account(payload, key=request.idempotency_key)}

    executor = MqExecutor({"accounts.provision": provision}, dedup=True)
    async with executor.serve_amqp("amqp://guest:guest@127.0.0.1:5672/",
                                   queues={"accounts.provision": "it.accounts"}):
        ...                                        # or: executor.serve_nats(url, subjects=...)

A handler is a function, sync (run in a worker thread) or async, of the task's payload
(the JSON input) and, if it asks for it, ``request`` (a :class:`Request`: idempotency
key, attempt, metadata, correlation id, traceparent, deadline, the message's headers). It

* returns JSON data, or ``MqExecutor.result(output, side_effects=..., cost=...,
  metadata=...)``: the task is COMPLETED;
* raises :class:`legato.StepError`: FAILED with its error class, message and
  ``retry_after`` (rounded up to whole seconds);
* raises anything else: FAILED, RETRYABLE (the exception is logged).

A request sent with ``start_async`` (header ``legato-async: true``) runs in the background:
the reply is ``{"status": "IN_PROGRESS", "operation_id": ...}`` at once, and the status
operation (``status_operation``, default ``operation.status``, answered by the executor
unless a handler of that name is given) reports ``IN_PROGRESS`` until the handler's outcome
is known. ``dedup=True`` remembers replies by (operation, idempotency key) in memory: a
repeated key gets the stored reply (with ``metadata["replayed"] = "true"``) instead of
running the handler again; failures that may be retried are not stored.

Messages are dispatched by the envelope's ``task_type`` (the operation's name), so one
queue or subject may carry several operations. Replies go to the request's ``reply_to``
(AMQP, with its ``correlation_id``) or reply subject (NATS). An AMQP request is
acknowledged after its reply is published (a consumer that dies mid-way leaves it to be
delivered again, and its idempotency key to deduplicate it).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from legato.connectors import _mq
from legato.errors import ErrorClass, StepError, UsageError

__all__ = ["MqExecutor", "Reply", "Request", "Serving", "result"]

log = logging.getLogger("legato.mq_executor")

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[..., Any]

DEFAULT_STATUS_OPERATION = "operation.status"


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """The task around the payload, for handlers that take a ``request`` argument."""

    task_id: str
    workflow_id: str
    workflow: str
    task_type: str
    idempotency_key: str
    attempt: int
    metadata: dict[str, str] = field(default_factory=dict)
    correlation_id: str = ""  # the envelope's (the task's ``<run id>:<task id>``)
    trace_parent: str = ""
    deadline: datetime | None = None
    tenant_id: str = ""
    environment_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # the message's, names lower-cased
    callback_token: str | None = None  # `legato-callback-token`, on async starts
    is_async: bool = False  # started with `legato-async: true`


@dataclass(frozen=True, kw_only=True, slots=True)
class Reply:
    """A COMPLETED answer with more than the output: side effects, cost, metadata."""

    output: Any = None
    side_effects: tuple[Mapping[str, Any], ...] = ()
    cost: Mapping[str, Any] | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


def result(
    output: Any = None,
    *,
    side_effects: Iterable[Mapping[str, Any]] = (),
    cost: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Reply:
    """A COMPLETED answer that reports side effects (``effect_id``, ``effect_type``,
    ``description``, ``reversible``, ``compensation_method``) and cost."""
    return Reply(
        output=output, side_effects=tuple(side_effects), cost=cost, metadata=dict(metadata or {})
    )


@dataclass(frozen=True, slots=True)
class Serving:
    """What ``serve_amqp`` / ``serve_nats`` yield: where the executor listens."""

    transport: str  # "amqp" or "nats"
    names: tuple[str, ...]  # the queues or subjects consumed
    client: Any  # the aio-pika connection or the nats-py client


@dataclass(slots=True)
class _Handler:
    name: str
    fn: Handler
    is_async_fn: bool
    request_arg: str | None  # "request" (by keyword), "positional", or None


@dataclass(slots=True)
class _Background:
    operation_id: str
    task_id: str
    task: asyncio.Task[None] | None = None
    reply: dict[str, Any] | None = None


def _request_arg(fn: Callable[..., Any]) -> str | None:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.name == "request" for p in params):
        return "request"
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) >= 2 or any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return "positional"
    return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


class MqExecutor:
    """Python functions served over AMQP or NATS (see the module docstring)."""

    result = staticmethod(result)

    def __init__(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        name: str = "legato-mq-executor",
        dedup: bool = False,
        status_operation: str = DEFAULT_STATUS_OPERATION,
    ) -> None:
        self.name = name
        self.dedup = dedup
        self.status_operation = status_operation
        self._handlers: dict[str, _Handler] = {}
        self._stored: dict[tuple[str, str], dict[str, Any]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._background: dict[str, _Background] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        for operation, fn in (handlers or {}).items():
            self.add(operation, fn)

    # ---- registration ----------------------------------------------------------------------

    def add(self, operation: str, fn: Handler) -> None:
        if not operation:
            raise UsageError("a handler needs an operation name")
        if operation in self._handlers:
            raise UsageError(f"operation {operation!r} is registered twice on {self.name}")
        if not callable(fn):
            raise UsageError(f"the handler of {operation!r} is not callable: {fn!r}")
        self._handlers[operation] = _Handler(
            name=operation,
            fn=fn,
            is_async_fn=inspect.iscoroutinefunction(fn),
            request_arg=_request_arg(fn),
        )

    def operation(self, name: str) -> Callable[[F], F]:
        """Register the decorated function as the handler of ``name``."""

        def register(fn: F) -> F:
            self.add(name, fn)
            return fn

        return register

    @property
    def operations(self) -> list[str]:
        return sorted(self._handlers)

    # ---- one request -----------------------------------------------------------------------

    async def handle(self, body: bytes, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The reply envelope to one request message (transport-independent)."""
        names = {str(k).lower(): _text(v) for k, v in (headers or {}).items() if v is not None}
        try:
            envelope = _mq.parse_request(body)
        except StepError as exc:
            return _mq.failed_reply("", exc)
        reply = await self._dispatch(envelope, names)
        correlation_id = _str(envelope.get("correlation_id"))
        if correlation_id:
            reply.setdefault("correlation_id", correlation_id)
        return reply

    async def _dispatch(self, envelope: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        task_type = envelope["task_type"]
        task_id = _str(envelope.get("task_id"))
        handler = self._handlers.get(task_type)
        if handler is None:
            if task_type == self.status_operation:
                return self._status(envelope)
            known = ", ".join(self.operations) or "none"
            return _mq.failed_reply(
                task_id,
                StepError(
                    f"service {self.name} has no operation {task_type!r} (it offers: {known})",
                    error_class=ErrorClass.PERMANENT,
                ),
            )
        key = _str(envelope.get("idempotency_key"))
        if not (self.dedup and key) or task_type == self.status_operation:
            return await self._run(handler, envelope, headers)
        lock = self._locks.setdefault((task_type, key), asyncio.Lock())
        async with lock:
            stored = self._stored.get((task_type, key))
            if stored is not None:
                replay = dict(stored)
                replay["task_id"] = task_id
                replay["metadata"] = {**stored.get("metadata", {}), "replayed": "true"}
                return replay
            reply = await self._run(handler, envelope, headers)
            if _mq.is_final(reply):
                self._stored[(task_type, key)] = dict(reply)
            return reply

    def _context(self, envelope: dict[str, Any], headers: dict[str, str]) -> Request:
        deadline: datetime | None = None
        raw_deadline = envelope.get("deadline")
        if isinstance(raw_deadline, str) and raw_deadline:
            try:
                deadline = datetime.fromisoformat(raw_deadline)
            except ValueError:
                deadline = None
            if deadline is not None and deadline.tzinfo is None:
                deadline = deadline.replace(tzinfo=UTC)
        raw_auth = envelope.get("auth")
        auth: dict[str, Any] = raw_auth if isinstance(raw_auth, dict) else {}
        metadata = envelope.get("metadata")
        attempt = envelope.get("attempt_number")
        return Request(
            task_id=_str(envelope.get("task_id")),
            workflow_id=_str(envelope.get("workflow_id")),
            workflow=_str(envelope.get("workflow")),
            task_type=envelope["task_type"],
            idempotency_key=_str(envelope.get("idempotency_key")),
            attempt=attempt if isinstance(attempt, int) else 1,
            metadata=(
                {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
            ),
            correlation_id=_str(envelope.get("correlation_id")),
            trace_parent=_str(envelope.get("trace_parent")),
            deadline=deadline,
            tenant_id=_str(auth.get("tenant_id")),
            environment_id=_str(auth.get("environment_id")),
            headers=headers,
            callback_token=headers.get(_mq.CALLBACK_TOKEN_HEADER),
            is_async=headers.get(_mq.ASYNC_HEADER, "").lower() == "true",
        )

    async def _run(
        self, handler: _Handler, envelope: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        context = self._context(envelope, headers)
        if context.deadline is not None and context.deadline <= datetime.now(UTC):
            return _mq.failed_reply(
                context.task_id,
                StepError(
                    f"the deadline of task {context.task_id} had passed when it arrived",
                    error_class=ErrorClass.TIMEOUT,
                ),
            )
        payload = envelope.get("payload")
        if context.is_async:
            return self._start(context, self._call(handler, payload, context))
        try:
            outcome = await self._call(handler, payload, context)
        except Exception as exc:
            return self._failure(context, exc)
        return self._reply(context.task_id, outcome)

    async def _call(self, handler: _Handler, payload: Any, context: Request) -> Any:
        args: list[Any] = [payload]
        kwargs: dict[str, Any] = {}
        if handler.request_arg == "request":
            kwargs["request"] = context
        elif handler.request_arg == "positional":
            args.append(context)
        if handler.is_async_fn:
            return await handler.fn(*args, **kwargs)
        outcome = await asyncio.to_thread(handler.fn, *args, **kwargs)
        if inspect.isawaitable(outcome):  # a sync function that returned a coroutine
            return await outcome
        return outcome

    def _failure(self, context: Request, exc: Exception) -> dict[str, Any]:
        if isinstance(exc, StepError):
            return _mq.failed_reply(context.task_id, exc)
        log.exception(
            "handler failed with an unexpected exception",
            extra={"executor": self.name, "task_type": context.task_type, "task": context.task_id},
        )
        return _mq.failed_reply(
            context.task_id,
            StepError(
                f"{context.task_type} raised {type(exc).__name__}: {exc}",
                error_class=ErrorClass.RETRYABLE,
            ),
        )

    def _reply(self, task_id: str, outcome: Any) -> dict[str, Any]:
        reply_data = outcome if isinstance(outcome, Reply) else Reply(output=outcome)
        try:
            reply = _mq.completed_reply(
                task_id,
                reply_data.output,
                side_effects=reply_data.side_effects,
                cost=reply_data.cost,
                metadata=reply_data.metadata,
            )
            _mq.encode_json(reply)
        except (TypeError, ValueError) as exc:
            return _mq.failed_reply(
                task_id,
                StepError(
                    f"the operation's answer cannot be sent as JSON: {exc}",
                    error_class=ErrorClass.PERMANENT,
                ),
            )
        return reply

    # ---- async operations -------------------------------------------------------------------

    def _start(self, context: Request, work: Awaitable[Any]) -> dict[str, Any]:
        operation_id = f"op-{uuid.uuid4().hex}"
        background = _Background(operation_id=operation_id, task_id=context.task_id)
        self._background[operation_id] = background

        async def finish() -> None:
            try:
                outcome = await work
            except Exception as exc:
                reply = self._failure(context, exc)
            else:
                reply = self._reply(context.task_id, outcome)
            reply["operation_id"] = operation_id
            background.reply = reply

        background.task = asyncio.get_running_loop().create_task(
            finish(), name=f"legato-mq-executor-{operation_id}"
        )
        return {
            "task_id": context.task_id,
            "status": "IN_PROGRESS",
            "operation_id": operation_id,
            "metadata": {"operation_id": operation_id},
        }

    def _status(self, envelope: dict[str, Any]) -> dict[str, Any]:
        payload = envelope.get("payload")
        operation_id = _str(payload.get("operation_id")) if isinstance(payload, dict) else ""
        task_id = _str(envelope.get("task_id"))
        background = self._background.get(operation_id)
        if background is None:
            return _mq.failed_reply(
                task_id,
                StepError(
                    f"service {self.name} knows no operation {operation_id!r}",
                    error_class=ErrorClass.PERMANENT,
                ),
            )
        if background.reply is None:
            return {
                "task_id": background.task_id,
                "status": "IN_PROGRESS",
                "operation_id": operation_id,
            }
        return dict(background.reply)

    async def stop(self) -> None:
        """Cancel the requests being handled and the background operations."""
        tasks = [t for t in self._inflight if not t.done()]
        tasks += [b.task for b in self._background.values() if b.task and not b.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("serving a request failed", extra={"executor": self.name})

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    # ---- AMQP ------------------------------------------------------------------------------

    def _names(self, given: Mapping[str, str] | Iterable[str] | None) -> tuple[str, ...]:
        if given is None:
            names = list(self._handlers)
            if self.status_operation not in names:
                names.append(self.status_operation)
        elif isinstance(given, Mapping):
            names = list(given.values())
        else:
            names = list(given)
        return tuple(dict.fromkeys(names))  # unique, in order

    @contextlib.asynccontextmanager
    async def serve_amqp(
        self,
        url: str,
        *,
        queues: Mapping[str, str] | Iterable[str] | None = None,
        prefetch: int = 32,
        durable: bool = False,
        auto_delete: bool = True,
        declare: bool = True,
    ) -> AsyncIterator[Serving]:
        """Consume ``queues`` (operation -> queue, a list of queues, or by default one queue
        per handler named after it, plus the status operation's) on a broker while the block
        runs. ``declare`` declares them (``durable``, ``auto_delete``: a queue that
        auto-deletes goes away with its last consumer)."""
        import aio_pika

        names = self._names(queues)
        connection = await aio_pika.connect_robust(
            url, client_properties={"connection_name": f"legato-mq-executor {self.name}"}
        )
        try:
            channel = await connection.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=prefetch)

            async def on_message(message: Any) -> None:
                self._spawn(self._serve_amqp_one(channel, message), f"amqp-{message.message_id}")

            for queue_name in names:
                queue: Any
                if declare:
                    queue = await channel.declare_queue(
                        queue_name, durable=durable, auto_delete=auto_delete
                    )
                else:
                    queue = await channel.get_queue(queue_name, ensure=True)
                await queue.consume(on_message, no_ack=False)
            yield Serving("amqp", names, connection)
        finally:
            await self.stop()
            await connection.close()

    async def _serve_amqp_one(self, channel: Any, message: Any) -> None:
        import aio_pika

        reply = await self.handle(message.body, message.headers or {})
        if message.reply_to:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    _mq.encode_json(reply),
                    content_type=_mq.CONTENT_TYPE,
                    content_encoding="utf-8",
                    correlation_id=message.correlation_id,
                    headers=_reply_headers(reply),
                ),
                routing_key=message.reply_to,
                mandatory=False,
            )
        else:
            log.warning(
                "a request without reply_to was handled; its reply is dropped",
                extra={"executor": self.name, "task_type": reply.get("task_id")},
            )
        await message.ack()

    # ---- NATS ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve_nats(
        self,
        url: str,
        *,
        subjects: Mapping[str, str] | Iterable[str] | None = None,
        queue_group: str | None = "legato",
    ) -> AsyncIterator[Serving]:
        """Subscribe to ``subjects`` (operation -> subject, a list of subjects, or by
        default one subject per handler named after it, plus the status operation's) while
        the block runs; ``queue_group`` spreads requests over the executors that share it
        (None: every executor gets every request)."""
        import nats

        names = self._names(subjects)
        nc = await nats.connect(url, name=f"legato-mq-executor {self.name}")
        try:

            async def on_message(message: Any) -> None:
                self._spawn(self._serve_nats_one(nc, message), f"nats-{message.subject}")

            for subject in names:
                await nc.subscribe(subject, queue=queue_group or "", cb=on_message)
            await nc.flush()
            yield Serving("nats", names, nc)
        finally:
            await self.stop()
            if not nc.is_closed:
                await nc.close()

    async def _serve_nats_one(self, nc: Any, message: Any) -> None:
        reply = await self.handle(message.data, message.headers or {})
        if message.reply:
            await nc.publish(message.reply, _mq.encode_json(reply), headers=_reply_headers(reply))


def _reply_headers(reply: Mapping[str, Any]) -> dict[str, Any]:
    correlation_id = reply.get("correlation_id")
    return {_mq.CORRELATION_HEADER: correlation_id} if isinstance(correlation_id, str) else {}
