"""The NATS adapter: request/reply over core NATS with ``nats-py``.

``NatsConnector(config, auth=..., network=...)`` talks to one service of
``services.yaml`` (``type: nats``)::

    - name: it-provisioning
      type: nats
      endpoint: nats://user:${NATS_PASSWORD}@nats.internal:4222     # tls:// for TLS
      timeout: {connect: 5s, request: 30s}
      operations:
        accounts.provision: {subject: it.accounts.provision}  # default: the operation name
      async: {status_operation: operation.status}

It opens one connection per service on first use (nats-py reconnects it when it drops).
A call is ``nc.request(subject, <JSON request envelope>, timeout=..., headers=...)``: the
reply comes back on the connection's request inbox, matched to its call by a unique inbox
token (nats-py), so concurrent calls never mix. Headers: the service's ``headers``, the
auth provider's ``headers()``, ``Idempotency-Key`` (or ``idempotency_header``),
``Correlation-Id`` (the task's correlation id) and ``traceparent``. The envelopes are
those of :mod:`legato.connectors._mq` (the same as the AMQP adapter's).

It waits ``timeout.connect`` for the connection (the first failure of the first
connection is reported at once) and ``timeout.request`` (less when the task's deadline is
nearer) for the reply. Errors are :class:`~legato.errors.StepError`:

* a FAILED / RETRY reply carries its own ``error_class`` and ``retry_after_seconds``; an
  AUTH_FAILED reply to a call that sent credentials refreshes them and tries once more;
* no responders (nobody subscribes to the subject): RETRYABLE; no reply in time: TIMEOUT;
* a refused, lost or reconnecting connection: RETRYABLE; the server refusing the
  credentials or a permission: AUTH_FAILED; a request over the server's ``max_payload``:
  VALIDATION.

JetStream is not used: requests are core NATS messages (at most once; the engine's
durable retry and the idempotency key make the step exactly-once in effect).

The server side of the contract is :class:`legato.mq_executor.MqExecutor`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Coroutine
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from legato.connectors import _mq
from legato.connectors.base import AuthProvider, NoAuth, Task
from legato.connectors.config import ServiceConfig
from legato.errors import ConfigurationError, ErrorClass, StepError, UsageError
from legato.net import NetworkPolicy

__all__ = ["NatsConnector", "step_error_from_nats"]

log = logging.getLogger("legato.connectors.nats")

_SCHEMES = ("nats", "tls", "ws", "wss")
_RECONNECT_WAIT = 1.0


def step_error_from_nats(
    exc: BaseException, *, service: str, target: str, subject: str = ""
) -> StepError:
    """Classify a ``nats-py`` failure by its type.

    NoResponders, a closed / draining / reconnecting connection, socket errors ->
    RETRYABLE; a timeout -> TIMEOUT; authorization (credentials or a permission) ->
    AUTH_FAILED; MaxPayload -> VALIDATION; a bad subject -> PERMANENT.
    """
    details: dict[str, Any] = {
        "service": service,
        "target": target,
        "exception": type(exc).__name__,
    }
    if subject:
        details["subject"] = subject
    where = f"{service} ({target})"
    if isinstance(exc, nats.errors.NoRespondersError):
        return StepError(
            f"{where}: no service is listening on subject {subject!r} (is it running?); it "
            "will be retried",
            error_class=ErrorClass.RETRYABLE,
            details=details,
        )
    if isinstance(
        exc, nats.errors.AuthorizationError | nats.errors.InvalidUserCredentialsError
    ) or (isinstance(exc, nats.errors.Error) and "authorization" in str(exc).lower()):
        return StepError(
            f"{where}: the server refused the credentials or the permission ({_text(exc)}); "
            "check the user, password or token in the endpoint URL and its permissions",
            error_class=ErrorClass.AUTH_FAILED,
            details=details,
        )
    if isinstance(exc, nats.errors.MaxPayloadError):
        return StepError(
            f"{where}: the request is larger than the server's max_payload ({_text(exc)}); "
            "send a reference to the data instead",
            error_class=ErrorClass.VALIDATION,
            details=details,
        )
    if isinstance(exc, nats.errors.BadSubjectError):
        return StepError(
            f"{where}: {subject!r} is not a valid subject; check `subject` in the operation",
            error_class=ErrorClass.PERMANENT,
            details=details,
        )
    if isinstance(exc, TimeoutError):
        return StepError(
            f"{where}: no reply on subject {subject!r} in time (is the service alive? raise "
            "timeout.request in services.yaml if it is slow); it will be retried",
            error_class=ErrorClass.TIMEOUT,
            details=details,
        )
    return StepError(
        f"{where}: {type(exc).__name__}: {_text(exc)} (the server is down or unreachable?); it "
        "will be retried",
        error_class=ErrorClass.RETRYABLE,
        details=details,
    )


def _text(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


class _ConnectionLost(Exception):
    """The connection dropped while a request waited for its reply."""


class _Never(asyncio.Event):
    """An event that is never set (the placeholder before the first connection)."""

    def set(self) -> None:
        return None


_NEVER = _Never()


class NatsConnector(_mq.RequestReplyConnector):
    """The adapter for one ``type: nats`` service (see the module docstring)."""

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
        self._network = network  # not applied: server endpoints are operator configuration
        scheme = config.endpoint.partition("://")[0].lower()
        if scheme not in _SCHEMES or "://" not in config.endpoint:
            raise ConfigurationError(
                f"service {self.name}: the NATS endpoint must be a server URL like "
                "'nats://host:4222' (tls:// for TLS; several separated by commas), not "
                f"{_mq.redacted_endpoint(config.endpoint)!r}"
            )
        self._servers = [s.strip() for s in config.endpoint.split(",") if s.strip()]
        self._target = ",".join(_mq.redacted_endpoint(s) for s in self._servers)
        self._routes = _mq.parse_routes(config, "nats")
        self._nc: NatsClient | None = None
        self._lost: asyncio.Event = (
            _NEVER  # set when the connection drops; a new one once it is back
        )
        self._lock: asyncio.Lock | None = None
        self._closed = False

    # ---- the Connector protocol -----------------------------------------------------------

    async def health_check(self) -> None:
        """Connect if needed, then a PING/PONG round trip within ``timeout.connect``; a
        RETRYABLE StepError when the server does not answer."""
        nc = await self._connect()
        connect = float(self.config.timeout.connect)
        if not nc.is_connected:
            raise StepError(
                f"{self.name} ({self._target}): the connection to the server is down (it is "
                "being reopened)",
                error_class=ErrorClass.RETRYABLE,
                details={"service": self.name, "target": self._target},
            )
        try:
            await nc.flush(timeout=max(1, round(connect)))
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise step_error_from_nats(exc, service=self.name, target=self._target) from exc

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def client(self) -> NatsClient | None:
        """The nats-py client, once connected (for tests and diagnostics)."""
        return self._nc

    async def aclose(self) -> None:
        """Close the connection (requests still waiting fail). Idempotent."""
        self._closed = True
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def __aenter__(self) -> NatsConnector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- calls ---------------------------------------------------------------------------

    def subject(self, operation: str) -> str:
        """The subject of ``operation``: its ``operations`` entry's ``subject``, else the
        operation's name."""
        route = self._routes.get(operation)
        return (route.subject if route is not None else None) or operation

    def _where(self, task: Task) -> str:
        return f"{self.name} {task.operation}"

    def _details(self, task: Task) -> dict[str, Any]:
        return {
            "service": self.name,
            "operation": task.operation,
            "subject": self.subject(task.operation),
        }

    async def _request(
        self, task: Task, body: bytes, headers: dict[str, str], *, use_deadline: bool
    ) -> dict[str, Any]:
        timeout = _mq.request_timeout(self.config, task, use_deadline=use_deadline)
        subject = self.subject(task.operation)
        where = self._where(task)
        nc = await self._connect()
        if not nc.is_connected:
            raise StepError(
                f"{self.name} ({self._target}): the connection to the server is down (it is "
                "being reopened); it will be retried",
                error_class=ErrorClass.RETRYABLE,
                details=self._details(task),
            )
        if len(body) > nc.max_payload:
            raise StepError(
                f"{where}: the request is {len(body)} bytes; the server takes at most "
                f"{nc.max_payload} (send a reference to the data instead)",
                error_class=ErrorClass.VALIDATION,
                details=self._details(task),
            )
        lost = self._lost
        try:
            message = await self._unless_lost(
                nc.request(subject, body, timeout=timeout, headers=headers), lost
            )
        except _ConnectionLost as exc:
            raise StepError(
                f"{self.name} ({self._target}): the connection to the server was lost while "
                "waiting for the reply; it will be retried",
                error_class=ErrorClass.RETRYABLE,
                details=self._details(task),
            ) from exc
        except TimeoutError as exc:  # nats.errors.TimeoutError included
            raise StepError(
                f"{where}: no reply on subject {subject!r} within {timeout:g}s (is the service "
                "alive? raise timeout.request in services.yaml if it is slow); it will be "
                "retried",
                error_class=ErrorClass.TIMEOUT,
                details={**self._details(task), "timeout": timeout},
            ) from exc
        except (nats.errors.Error, OSError) as exc:
            error = step_error_from_nats(
                exc, service=self.name, target=self._target, subject=subject
            )
            error.details.update(self._details(task))
            raise error from exc
        return _mq.decode_reply(message.data, where=where, details=self._details(task))

    @staticmethod
    async def _unless_lost(call: Coroutine[Any, Any, Msg], lost: asyncio.Event) -> Msg:
        """``call``'s outcome, or :class:`_ConnectionLost` as soon as the connection drops
        (nats-py would let the request run into its timeout: its reply cannot come)."""
        request = asyncio.ensure_future(call)
        watch = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({request, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not request.done():
                request.cancel()
        if request.done() and not request.cancelled():
            return request.result()
        raise _ConnectionLost

    # ---- the connection ------------------------------------------------------------------

    async def _connect(self) -> NatsClient:
        """The connection (opened once, within ``timeout.connect``; the first error of the
        first attempt fails the call at once)."""
        if self._closed:
            raise UsageError(f"the NATS connector of {self.name} is closed")
        if self._nc is not None:
            return self._nc
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._closed:
                raise UsageError(f"the NATS connector of {self.name} is closed")
            if self._nc is not None:
                return self._nc
            self._nc = await self._open()
            return self._nc

    async def _open(self) -> NatsClient:
        connect = float(self.config.timeout.connect)
        nc = NatsClient()
        loop = asyncio.get_running_loop()
        first_error: asyncio.Future[BaseException] = loop.create_future()
        connected = False

        async def on_error(exc: Exception) -> None:
            if not connected:
                if not first_error.done():
                    first_error.set_result(exc)
                return
            log.warning("NATS connection of service %s: %s", self.name, _text(exc))

        async def on_disconnected() -> None:
            self._lost.set()  # the requests waiting now will get no reply
            if connected and not self._closed:
                log.warning("service %s disconnected from %s", self.name, self._target)

        async def on_reconnected() -> None:
            self._lost = asyncio.Event()
            log.info("service %s reconnected to %s", self.name, self._target)

        options: dict[str, Any] = {
            "servers": self._servers,
            "name": f"legato {self.name}",
            "connect_timeout": max(1, round(connect)),
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # forever, once connected; the first is bounded here
            "reconnect_time_wait": _RECONNECT_WAIT,
            "error_cb": on_error,
            "disconnected_cb": on_disconnected,
            "reconnected_cb": on_reconnected,
        }
        context = self._ssl_context()
        if context is not None:
            options["tls"] = context
        attempt = asyncio.ensure_future(nc.connect(**options))
        try:
            waiters: set[asyncio.Future[Any]] = {attempt, first_error}
            done, _ = await asyncio.wait(
                waiters, timeout=connect, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            attempt.cancel()
            await _close_quietly(nc, attempt)
            raise
        if attempt in done and attempt.exception() is None:
            connected = True
            self._lost = asyncio.Event()
            if not first_error.done():
                first_error.cancel()
            return nc
        attempt.cancel()
        await _close_quietly(nc, attempt)
        if attempt.done() and not attempt.cancelled() and attempt.exception() is not None:
            cause: BaseException | None = attempt.exception()
        elif first_error.done() and not first_error.cancelled():
            cause = first_error.result()
        else:
            cause = None
        if cause is None:
            raise StepError(
                f"could not connect to {self.name} at {self._target} within {connect:g}s; "
                "check that the server is up and the endpoint is right (it will be retried)",
                error_class=ErrorClass.TIMEOUT,
                details={"service": self.name, "target": self._target, "phase": "connect"},
            )
        error = step_error_from_nats(cause, service=self.name, target=self._target)
        error.details["phase"] = "connect"
        raise error from cause

    def _ssl_context(self) -> ssl.SSLContext | None:
        context = self._auth.ssl_context()
        if context is None:
            return None
        if not all(s.lower().startswith(("tls://", "wss://")) for s in self._servers):
            raise ConfigurationError(
                f"service {self.name} uses a client certificate (mTLS) but its endpoint is "
                "plaintext; write tls://host:4222"
            )
        return context if isinstance(context, ssl.SSLContext) else None


async def _close_quietly(nc: NatsClient, attempt: asyncio.Future[Any]) -> None:
    try:
        await asyncio.gather(attempt, return_exceptions=True)
        if not nc.is_closed:
            await nc.close()
    except Exception:  # pragma: no cover - closing a half-open client
        log.debug("closing a failed NATS client raised", exc_info=True)
