"""Outbound HTTP: the SSRF guard, and the one place HTTP outcomes become error classes.

The guard
---------
Workflow definitions are untrusted input (invariant 7), so an ``http_request`` step must
not reach the host's loopback, the private network or a cloud metadata endpoint unless
the operator allows it.  :class:`GuardedTransport` is an ``httpx`` transport that

* accepts only ``http`` and ``https`` URLs;
* resolves the host itself (``loop.getaddrinfo``), checks **every** resolved address with
  :func:`refusal_reason` (IPv4-mapped, 6to4 and NAT64 IPv6 addresses are unwrapped and
  judged as the IPv4 address they carry), and refuses the request if any is not public;
* then connects to the address it checked, by handing that IP to the socket layer, while
  the URL keeps the host name: the ``Host`` header, TLS SNI and certificate verification
  all use the name.  A DNS answer that changes between the check and the connection (DNS
  rebinding) therefore cannot redirect the connection: nothing resolves the name twice.

The operator opens the gate with :class:`NetworkPolicy`: ``allow_private`` (the setting
``LEGATO_ALLOW_PRIVATE_NETWORKS=true``) or ``allowed_hosts`` (``LEGATO_ALLOWED_HOSTS``).
Environment proxies are ignored by the guarded client (a proxy would resolve the name
where Legato cannot check it).  See ``docs/decisions/0004-http-ssrf-guard.md``.

Error classes
-------------
:func:`step_error_for_status`, :func:`raise_for_status` and :func:`step_error_from_httpx`
translate HTTP statuses and ``httpx`` exceptions into :class:`~legato.errors.StepError`
by status code and exception type, never by message text.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from legato.errors import ErrorClass, StepError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``async (host, port) -> [ip, ...]``: how the guard resolves a host name."""

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SCHEMES = frozenset({"http", "https"})
_BODY_SNIPPET = 500

__all__ = [
    "GuardedTransport",
    "NetworkPolicy",
    "Resolver",
    "check_addresses",
    "raise_for_status",
    "refusal_reason",
    "retry_after_seconds",
    "safe_url",
    "step_error_for_status",
    "step_error_from_httpx",
    "system_resolver",
]


# ---- policy ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkPolicy:
    """Which destinations outbound HTTP from workflow steps may reach.

    ``allow_private``: reach any address (loopback, private, link-local, ...); the setting
    ``LEGATO_ALLOW_PRIVATE_NETWORKS=true``.  ``allowed_hosts``: exceptions to the rule, each
    a host name (``billing.internal``), a wildcard (``*.corp.example``), an IP address
    (``10.0.0.7``) or a network (``10.1.0.0/16``).
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    # Derived from allowed_hosts in __post_init__: the names, and the IPs/networks.
    _names: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if isinstance(self.allowed_hosts, str):
            raise TypeError("allowed_hosts is a set of host names, not one string")
        hosts = frozenset(h.strip().lower().rstrip(".") for h in self.allowed_hosts)
        names: set[str] = set()
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for host in hosts:
            if not host:
                continue
            try:
                networks.append(ipaddress.ip_network(host.strip("[]"), strict=False))
            except ValueError:
                names.add(host)
        object.__setattr__(self, "allowed_hosts", hosts)
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_networks", tuple(networks))

    def allows_host(self, host: str) -> bool:
        """Whether ``host`` (a name) is listed in ``allowed_hosts``, directly or by wildcard."""
        name = host.strip("[]").lower().rstrip(".")
        if name in self._names:
            return True
        return any(
            pattern.startswith("*.") and name.endswith(pattern[1:]) for pattern in self._names
        )

    def allows_address(self, address: IPAddress) -> bool:
        """Whether ``address`` is inside a network or IP listed in ``allowed_hosts``."""
        return any(address.version == net.version and address in net for net in self._networks)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_reason(address: IPAddress | str) -> str | None:
    """Why the guard refuses ``address`` ("loopback", "private", ...), or None if it is public.

    IPv6 addresses that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4
    ``2002::/16`` and NAT64 ``64:ff9b::/96``) are judged by the IPv4 address they carry.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = refusal_reason(inner)
            return f"{reason}, embedded in {ip}" if reason else None
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for reason, hit in checks:
        if hit:
            return reason
    if not ip.is_global:
        return "not globally routable"
    return None


def _refused(host: str, address: str, reason: str) -> StepError:
    return StepError(
        f"refused to connect to {address} ({reason} address) for host {host!r}: steps may "
        "not reach private networks unless the operator allows it. To allow it, set "
        f"LEGATO_ALLOW_PRIVATE_NETWORKS=true, or add {host!r} to LEGATO_ALLOWED_HOSTS "
        "(NetworkPolicy(allowed_hosts=...))",
        error_class=ErrorClass.PERMANENT,
        details={"host": host, "address": address, "reason": reason, "ssrf_guard": True},
    )


def check_addresses(host: str, addresses: Iterable[str], policy: NetworkPolicy) -> list[str]:
    """Return ``addresses`` if the policy lets ``host`` reach all of them; else StepError.

    Every address is checked: a name resolving to one public and one private address is
    refused, since the caller cannot tell which one a later connection would use.
    """
    checked = list(dict.fromkeys(addresses))
    if not checked:
        raise StepError(
            f"host {host!r} resolved to no address",
            error_class=ErrorClass.RETRYABLE,
            details={"host": host},
        )
    if policy.allow_private or policy.allows_host(host):
        return checked
    for text in checked:
        ip = ipaddress.ip_address(text)
        if policy.allows_address(ip):
            continue
        reason = refusal_reason(ip)
        if reason is not None:
            raise _refused(host, text, reason)
    return checked


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the event loop's ``getaddrinfo`` (every address, in order)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


# ---- the pinned transport -------------------------------------------------------------------


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks, and connects to the checked IP; the TLS layer still uses the name."""

    def __init__(
        self, policy: NetworkPolicy, resolver: Resolver, inner: httpcore.AsyncNetworkBackend
    ) -> None:
        self._policy = policy
        self._resolve = resolver
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from exc
        except OSError as exc:  # socket.gaierror and friends
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        pinned = check_addresses(host, addresses, self._policy)
        last: Exception | None = None
        for address in pinned:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the guarded transport does not connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An ``httpx`` transport that enforces a :class:`NetworkPolicy` on every connection.

    Use it as ``httpx.AsyncClient(transport=GuardedTransport(policy), trust_env=False)``.
    ``resolver`` replaces DNS (tests map names to addresses with it).
    """

    def __init__(
        self,
        policy: NetworkPolicy | None = None,
        *,
        resolver: Resolver | None = None,
        verify: bool = True,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),
    ) -> None:
        self.policy = policy or NetworkPolicy()
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        # httpx builds its pool without a way to choose the network backend; build the same
        # pool with ours (public httpcore API).  `_pool` is the one attribute
        # AsyncHTTPTransport's request and close paths use.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(
                self.policy, resolver or system_resolver, httpcore.AnyIOBackend()
            ),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in _SCHEMES:
            raise StepError(
                f"URL scheme {request.url.scheme!r} is not allowed; use http or https",
                error_class=ErrorClass.VALIDATION,
                details={"url": safe_url(request.url)},
            )
        return await super().handle_async_request(request)


# ---- error classification -------------------------------------------------------------------


def safe_url(url: httpx.URL | str) -> str:
    """The URL without credentials, query or fragment: fit for messages and the event log."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid url>"
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header (delay in seconds, or an HTTP date) into seconds."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _status_class(status: int) -> ErrorClass | None:
    if status < 400:
        return None
    if status == 429:
        return ErrorClass.RATE_LIMITED
    if status in (401, 403):
        return ErrorClass.AUTH_FAILED
    if status in (400, 422):
        return ErrorClass.VALIDATION
    if status == 408:
        return ErrorClass.TIMEOUT
    if status < 500:
        return ErrorClass.PERMANENT
    return ErrorClass.RETRYABLE


def step_error_for_status(
    status: int,
    *,
    method: str = "",
    url: httpx.URL | str = "",
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
) -> StepError | None:
    """The StepError for an HTTP status, or None for a status below 400.

    429 -> RATE_LIMITED (``retry_after`` from ``Retry-After``), 401/403 -> AUTH_FAILED,
    400/422 -> VALIDATION, 408 -> TIMEOUT, other 4xx (404 included) -> PERMANENT,
    5xx -> RETRYABLE.
    """
    error_class = _status_class(status)
    if error_class is None:
        return None
    retry_after = None
    if headers is not None:
        lowered = {k.lower(): v for k, v in headers.items()}
        retry_after = retry_after_seconds(lowered.get("retry-after"))
    where = f"{method} {safe_url(url)}".strip() if url else method
    details: dict[str, Any] = {"status": status}
    if url:
        details["url"] = safe_url(url)
    if method:
        details["method"] = method
    if body:
        details["body"] = body[:_BODY_SNIPPET]
    if retry_after is not None:
        details["retry_after"] = retry_after
    phrase = httpx.codes.get_reason_phrase(status)
    text = f"{where} returned {status} {phrase}".strip() if where else f"HTTP {status} {phrase}"
    return StepError(
        text.strip(), error_class=error_class, details=details, retry_after=retry_after
    )


def raise_for_status(response: httpx.Response) -> None:
    """Raise the classified StepError if ``response`` is a 4xx or 5xx (after reading it)."""
    if response.status_code < 400:
        return
    body: str | None
    try:
        body = response.text
    except httpx.ResponseNotRead:
        body = None
    error = step_error_for_status(
        response.status_code,
        method=response.request.method,
        url=response.request.url,
        headers=response.headers,
        body=body,
    )
    assert error is not None
    raise error


def step_error_from_httpx(exc: httpx.HTTPError) -> StepError:
    """Translate an ``httpx`` exception (by type) into a classified StepError."""
    details: dict[str, Any] = {"exception_type": type(exc).__name__}
    try:
        request = exc.request
    except RuntimeError:
        request = None
    if request is not None:
        details["method"] = request.method
        details["url"] = safe_url(request.url)
    where = f" ({details['method']} {details['url']})" if request is not None else ""
    if isinstance(exc, httpx.HTTPStatusError):
        error = step_error_for_status(
            exc.response.status_code,
            method=exc.request.method,
            url=exc.request.url,
            headers=exc.response.headers,
        )
        assert error is not None
        return error
    error_class: ErrorClass
    if isinstance(exc, httpx.TimeoutException):
        error_class = ErrorClass.TIMEOUT
        message = f"the HTTP request timed out{where}"
    elif isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        error_class = ErrorClass.VALIDATION
        message = f"the URL is not valid{where}: {exc}"
    elif isinstance(exc, httpx.LocalProtocolError | httpx.TooManyRedirects):
        error_class = ErrorClass.PERMANENT
        message = f"the HTTP request cannot be sent as written{where}: {exc}"
    else:  # connection errors, protocol errors from the server, decoding errors
        error_class = ErrorClass.RETRYABLE
        message = f"the HTTP request failed{where}: {exc or type(exc).__name__}"
    return StepError(message, error_class=error_class, details=details)
