"""The AMQP adapter: request/reply over RabbitMQ (AMQP 0-9-1) with ``aio-pika``.

``AmqpConnector(config, auth=..., network=...)`` talks to one service of
``services.yaml`` (``type: amqp``)::

    - name: it-provisioning
      type: amqp
      endpoint: amqp://legato:${RABBIT_PASSWORD}@mq.internal:5672/   # amqps:// for TLS
      timeout: {connect: 5s, request: 30s}
      operations:
        accounts.provision: {queue: it.accounts}        # default queue: the operation name
        accounts.notify: {exchange: it.events, queue: accounts.notify}   # routing key
      async: {status_operation: operation.status}

It opens one robust connection per service on first use (reconnected by aio-pika when it
drops) with two channels: one consumes the connector's exclusive, auto-delete reply queue
(``legato.reply.<service>.<random>``), the other publishes with publisher confirms.

A call publishes the JSON request envelope (:mod:`legato.connectors._mq`) to the
operation's exchange (default: the default exchange) with the queue as routing key and

* ``correlation_id``: a fresh id per call, which the reply must carry back (the replies of
  many concurrent calls share the reply queue); ``reply_to``: the reply queue;
* ``message_id``: the step's idempotency key; ``type``: the operation;
* ``expiration``: the request timeout, so a request nobody took in time is dropped;
* ``mandatory``: a message no queue takes comes back, and the call fails at once;
* headers: the service's ``headers``, the auth provider's ``headers()``,
  ``Idempotency-Key`` (or ``idempotency_header``), ``Correlation-Id`` and ``traceparent``.

It waits ``timeout.connect`` for the connection and ``timeout.request`` (less when the
task's deadline is nearer) for the reply. Errors are :class:`~legato.errors.StepError`:

* a FAILED / RETRY reply carries its own ``error_class`` and ``retry_after_seconds``
  (as a gRPC ``TaskResponse`` does); an AUTH_FAILED reply to a call that sent credentials
  refreshes them (``auth.refresh()``) and tries once more;
* no reply in time: TIMEOUT; a message returned as unroutable (no queue of that name, no
  binding), a missing exchange, a nack, a lost or refused connection: RETRYABLE;
* the broker refusing the login, the virtual host or a resource (ACCESS_REFUSED,
  NOT_ALLOWED): AUTH_FAILED.

The server side of the contract is :class:`legato.mq_executor.MqExecutor`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import uuid
from typing import Any

import aio_pika
import aiormq
import aiormq.exceptions
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.connection import make_url
from aio_pika.exceptions import ChannelInvalidStateError

from legato.connectors import _mq
from legato.connectors.base import AuthProvider, NoAuth, Task
from legato.connectors.config import QueueOperation, ServiceConfig
from legato.errors import ConfigurationError, ErrorClass, StepError, UsageError
from legato.net import NetworkPolicy

__all__ = ["AmqpConnector", "step_error_from_amqp"]

log = logging.getLogger("legato.connectors.amqp")

_SCHEMES = ("amqp", "amqps")
_NO_ROUTE = 312
_CHANNEL_RETRY_PAUSE = 0.05
_RECONNECT_INTERVAL = 1.0  # seconds between reconnection attempts (URL: ?reconnect_interval=)


def step_error_from_amqp(
    exc: BaseException, *, service: str, target: str, route: str = ""
) -> StepError:
    """Classify an ``aio-pika`` / ``aiormq`` failure by its type (and AMQP reply code).

    Login refused, ACCESS_REFUSED, a virtual host the user may not open -> AUTH_FAILED;
    a returned (unroutable) message, a missing exchange, a nack, a closed channel or
    connection, a socket error -> RETRYABLE; PRECONDITION_FAILED -> PERMANENT.
    """
    details: dict[str, Any] = {
        "service": service,
        "target": target,
        "exception": type(exc).__name__,
    }
    if route:
        details["route"] = route
    where = f"{service} ({target})"
    if isinstance(
        exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError
    ):
        return StepError(
            f"{where}: the broker refused the login ({_text(exc)}); check the user and "
            "password in the endpoint URL",
            error_class=ErrorClass.AUTH_FAILED,
            details=details,
        )
    if isinstance(
        exc, aiormq.exceptions.ChannelAccessRefused | aiormq.exceptions.ConnectionNotAllowed
    ):
        return StepError(
            f"{where}: the broker refused access ({_text(exc)}); check the user's permissions "
            "on the virtual host",
            error_class=ErrorClass.AUTH_FAILED,
            details=details,
        )
    if isinstance(exc, aiormq.exceptions.ProtocolSyntaxError) and "Connection.Close" in str(exc):
        # The broker closed the connection while it was being opened: the virtual host
        # does not exist or the user may not use it (NOT_ALLOWED).
        return StepError(
            f"{where}: the broker refused to open the virtual host; check the vhost in the "
            "endpoint URL and that the user may use it",
            error_class=ErrorClass.AUTH_FAILED,
            details=details,
        )
    if isinstance(exc, aiormq.exceptions.PublishError):
        frame = exc.frame
        code = getattr(frame, "reply_code", None)
        exchange = getattr(frame, "exchange", "") or ""
        key = getattr(frame, "routing_key", "") or ""
        details["reply_code"] = code
        if code == _NO_ROUTE and not exchange:
            text = (
                f"{where}: no consumer bound to queue {key!r} (the queue does not exist: is "
                "the service running?); it will be retried"
            )
        elif code == _NO_ROUTE:
            text = (
                f"{where}: no queue is bound to exchange {exchange!r} with routing key "
                f"{key!r} (is the service running?); it will be retried"
            )
        else:
            text = f"{where}: the broker returned the message ({_text(exc)}); it will be retried"
        return StepError(text, error_class=ErrorClass.RETRYABLE, details=details)
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return StepError(
            f"{where}: the broker did not accept the message ({_text(exc)}); it will be retried",
            error_class=ErrorClass.RETRYABLE,
            details=details,
        )
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
        return StepError(
            f"{where}: {_text(exc)} (the service declares it when it starts: is it running? "
            "Otherwise check `exchange` in the operation); it will be retried",
            error_class=ErrorClass.RETRYABLE,
            details=details,
        )
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return StepError(
            f"{where}: the broker refused the request: {_text(exc)}",
            error_class=ErrorClass.PERMANENT,
            details=details,
        )
    if isinstance(exc, ChannelInvalidStateError):
        return StepError(
            f"{where}: the channel to the broker is closed (it is being reopened); it will be "
            "retried",
            error_class=ErrorClass.RETRYABLE,
            details=details,
        )
    return StepError(
        f"{where}: {type(exc).__name__}: {_text(exc)} (the broker is down or unreachable?); it "
        "will be retried",
        error_class=ErrorClass.RETRYABLE,
        details=details,
    )


def _text(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text and exc.args:
        text = " ".join(str(a) for a in exc.args)
    return text or type(exc).__name__


def _header_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class AmqpConnector(_mq.RequestReplyConnector):
    """The adapter for one ``type: amqp`` service (see the module docstring)."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        auth: AuthProvider | None = None,
        network: NetworkPolicy | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._auth: AuthProvider = auth if auth is not None else NoAuth()
        self._network = network  # not applied: broker endpoints are operator configuration
        scheme = config.endpoint.partition("://")[0].lower()
        if scheme not in _SCHEMES or "://" not in config.endpoint:
            raise ConfigurationError(
                f"service {self.name}: the AMQP endpoint must be a broker URL like "
                "'amqp://user:password@host:5672/vhost' (amqps:// for TLS), not "
                f"{_mq.redacted_endpoint(config.endpoint)!r}"
            )
        self._target = _mq.redacted_endpoint(config.endpoint)
        self._routes = _mq.parse_routes(config, "amqp")
        self._reply_queue = f"legato.reply.{self.name}.{uuid.uuid4().hex[:16]}"
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._lock: asyncio.Lock | None = None
        self._closed = False

    # ---- the Connector protocol -----------------------------------------------------------

    async def health_check(self) -> None:
        """Connect if needed; a RETRYABLE StepError unless the connection and both channels
        are open (AUTH_FAILED when the broker refuses the login)."""
        await self._connect()
        connection, publisher = self._connection, self._publisher
        if connection is None or connection.is_closed or not connection.connected.is_set():
            raise StepError(
                f"{self.name} ({self._target}): the connection to the broker is down (it is "
                "being reopened)",
                error_class=ErrorClass.RETRYABLE,
                details={"service": self.name, "target": self._target},
            )
        if publisher is None or publisher.is_closed:
            raise StepError(
                f"{self.name} ({self._target}): the channel to the broker is closed",
                error_class=ErrorClass.RETRYABLE,
                details={"service": self.name, "target": self._target},
            )

    @property
    def is_connected(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def reply_queue(self) -> str:
        return self._reply_queue

    async def aclose(self) -> None:
        """Close the connection (its reply queue goes with it); calls still waiting fail
        RETRYABLE. Idempotent."""
        self._closed = True
        self._fail_pending("the connector was closed while it waited for the reply")
        connection, self._connection, self._publisher = self._connection, None, None
        self._exchanges.clear()
        if connection is not None and not connection.is_closed:
            await connection.close()

    async def __aenter__(self) -> AmqpConnector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- calls ---------------------------------------------------------------------------

    def route(self, operation: str) -> QueueOperation:
        """Where ``operation`` is published: its ``operations`` entry, else the default
        exchange with the operation's name as the queue."""
        route = self._routes.get(operation)
        if route is None:
            return QueueOperation(queue=operation)
        if not route.queue:
            return route.model_copy(update={"queue": operation})
        return route

    def _where(self, task: Task) -> str:
        return f"{self.name} {task.operation}"

    def _details(self, task: Task) -> dict[str, Any]:
        route = self.route(task.operation)
        return {
            "service": self.name,
            "operation": task.operation,
            "queue": route.queue,
            "exchange": route.exchange,
        }

    async def _request(
        self, task: Task, body: bytes, headers: dict[str, str], *, use_deadline: bool
    ) -> dict[str, Any]:
        timeout = _mq.request_timeout(self.config, task, use_deadline=use_deadline)
        route = self.route(task.operation)
        queue = route.queue or task.operation
        where = f"{self.name} {task.operation}"
        await self._connect()
        correlation_id = uuid.uuid4().hex
        message = aio_pika.Message(
            body,
            headers=dict(headers),
            content_type=_mq.CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            correlation_id=correlation_id,
            reply_to=self._reply_queue,
            expiration=max(0.001, math.ceil(timeout * 1000) / 1000),
            message_id=task.idempotency_key or None,
            type=task.operation,
            app_id="legato",
        )
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        published = False
        try:
            async with asyncio.timeout(timeout):
                await self._publish(route.exchange, queue, message)
                published = True
                reply_body = await future
        except TimeoutError:
            text = (
                f"{where}: no reply from queue {queue!r} within {timeout:g}s"
                if published
                else f"{where}: the broker did not confirm the request within {timeout:g}s"
            )
            raise StepError(
                f"{text} (is the consumer alive? raise timeout.request in services.yaml if it "
                "is slow); it will be retried",
                error_class=ErrorClass.TIMEOUT,
                details={**self._details(task), "timeout": timeout},
            ) from None
        finally:
            self._pending.pop(correlation_id, None)
            _settle(future)
        return _mq.decode_reply(reply_body, where=where, details=self._details(task))

    async def _publish(
        self, exchange_name: str, routing_key: str, message: aio_pika.Message
    ) -> None:
        """Publish with ``mandatory``, waiting for the broker's confirm; a channel that a
        channel error closed is waited for (aio-pika reopens it) up to ``timeout.connect``."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + float(self.config.timeout.connect)
        route = f"{exchange_name or '(default exchange)'} -> {routing_key}"
        while True:
            channel = self._publisher
            if channel is None or self._closed:
                raise UsageError(f"the AMQP connector of {self.name} is closed")
            try:
                exchange = await self._exchange(channel, exchange_name)
                await exchange.publish(message, routing_key, mandatory=True)
                return
            except ChannelInvalidStateError as exc:
                if loop.time() >= give_up:
                    raise step_error_from_amqp(
                        exc, service=self.name, target=self._target, route=route
                    ) from exc
                await asyncio.sleep(_CHANNEL_RETRY_PAUSE)
            except (aiormq.exceptions.AMQPError, ConnectionError, OSError) as exc:
                if isinstance(exc, aiormq.exceptions.AMQPChannelError):
                    self._exchanges.pop(exchange_name, None)
                raise step_error_from_amqp(
                    exc, service=self.name, target=self._target, route=route
                ) from exc

    async def _exchange(self, channel: AbstractRobustChannel, name: str) -> AbstractExchange:
        if not name:
            return channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            # The service owns its exchange; not declared here (a missing one is reported
            # when the publish fails).
            exchange = await channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    # ---- the connection ------------------------------------------------------------------

    async def _connect(self) -> None:
        """Open the connection, the reply queue's consumer and the publishing channel
        (once; later calls reuse them), within ``timeout.connect``."""
        if self._closed:
            raise UsageError(f"the AMQP connector of {self.name} is closed")
        if self._connection is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._closed:
                raise UsageError(f"the AMQP connector of {self.name} is closed")
            if self._connection is not None:
                return
            connect = float(self.config.timeout.connect)
            url = make_url(self.config.endpoint)
            options: dict[str, Any] = {}
            if "reconnect_interval" not in url.query:
                options["reconnect_interval"] = _RECONNECT_INTERVAL
            connection = aio_pika.RobustConnection(
                url,
                ssl_context=self._ssl_context(),
                client_properties={"connection_name": f"legato {self.name}"},
                **options,
            )
            try:
                async with asyncio.timeout(connect):
                    await connection.connect(timeout=connect)
                    consumer = await connection.channel(publisher_confirms=False)
                    queue = await consumer.declare_queue(
                        self._reply_queue, exclusive=True, auto_delete=True
                    )
                    await queue.consume(self._on_reply, no_ack=True)
                    publisher = await connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
            except TimeoutError as exc:
                await _close_quietly(connection)
                raise StepError(
                    f"could not connect to {self.name} at {self._target} within {connect:g}s; "
                    "check that the broker is up and the endpoint is right (it will be "
                    "retried)",
                    error_class=ErrorClass.TIMEOUT,
                    details={"service": self.name, "target": self._target, "phase": "connect"},
                ) from exc
            except BaseException as exc:
                await _close_quietly(connection)
                if isinstance(exc, Exception):
                    raise step_error_from_amqp(exc, service=self.name, target=self._target) from exc
                raise
            connection.close_callbacks.add(self._on_connection_closed)
            self._connection, self._publisher = connection, publisher

    def _ssl_context(self) -> ssl.SSLContext | None:
        context = self._auth.ssl_context()
        if context is not None and not self.config.endpoint.lower().startswith("amqps://"):
            raise ConfigurationError(
                f"service {self.name} uses a client certificate (mTLS) but its endpoint is "
                "plaintext; write amqps://host:5671/"
            )
        return context if isinstance(context, ssl.SSLContext) else None

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None or future.done():
            log.debug(
                "reply with an unknown or expired correlation id dropped",
                extra={"service": self.name, "correlation_id": message.correlation_id},
            )
            return
        future.set_result(message.body)

    def _on_connection_closed(self, _sender: Any, exc: BaseException | None = None) -> None:
        if self._closed:
            return
        log.warning(
            "the connection of service %s to %s was lost (%s); reconnecting",
            self.name,
            self._target,
            exc,
        )
        # The reply queue died with the connection: no reply to a pending call can arrive.
        self._fail_pending("the connection to the broker was lost while waiting for the reply")

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(
                    StepError(
                        f"{self.name} ({self._target}): {reason}; it will be retried",
                        error_class=ErrorClass.RETRYABLE,
                        details={"service": self.name, "target": self._target},
                    )
                )


def _settle(future: asyncio.Future[Any]) -> None:
    """Cancel a future nobody awaits any more, or mark its exception as retrieved."""
    if not future.done():
        future.cancel()
    elif not future.cancelled():
        future.exception()


async def _close_quietly(connection: AbstractRobustConnection) -> None:
    try:
        await connection.close()
    except Exception:  # pragma: no cover - closing a half-open connection
        log.debug("closing a failed connection raised", exc_info=True)
