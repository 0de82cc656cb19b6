"""Credentials for services: api key, bearer token, OAuth2 client credentials, mTLS.

:func:`build_auth` turns a service's ``auth`` block into an
:class:`~legato.connectors.base.AuthProvider`.  Adapters ask it for ``headers()`` on every
call (gRPC: as metadata); after a 401 / UNAUTHENTICATED they call ``refresh()`` once and
try again (:func:`call_with_auth` does exactly that), and report AUTH_FAILED if the second
try fails too.  ``ssl_context()`` (and ``grpc_credentials()``) carry the client
certificate for mTLS; every provider has both, returning None when they do not apply.

OAuth2 (client credentials, RFC 6749 §4.4): the token is fetched with a POST to
``token_url`` (client authentication by HTTP Basic, ``scope`` and ``audience`` in the form
when set) through the SSRF-guarded transport of :mod:`legato.net`, cached until
``expires_in`` minus a small skew, and fetched once however many calls want it at the
same time.  A 400/401/403 from the token endpoint is AUTH_FAILED, 429 is RATE_LIMITED,
5xx and connection failures are RETRYABLE.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from legato.connectors import config
from legato.connectors.base import AuthProvider
from legato.connectors.secrets import Secrets
from legato.errors import ConfigurationError, ErrorClass, StepError
from legato.net import GuardedTransport, NetworkPolicy, Resolver, retry_after_seconds, safe_url

__all__ = [
    "ApiKeyProvider",
    "BearerProvider",
    "MtlsProvider",
    "NoAuthProvider",
    "OAuth2ClientCredentials",
    "build_auth",
    "call_with_auth",
]

T = TypeVar("T")
Clock = Callable[[], float]

TOKEN_TIMEOUT = 10.0  # seconds, for one token request
MAX_SKEW = 30.0  # a token is renewed this long before it expires (at most)
_ERROR_TEXT = 200


class _Base:
    """Defaults every provider shares: no headers, no certificate, nothing to close."""

    async def headers(self) -> dict[str, str]:
        return {}

    async def refresh(self, stale: Mapping[str, str] | None = None) -> None:
        return None

    def ssl_context(self) -> ssl.SSLContext | None:
        return None

    def grpc_credentials(self) -> Any:
        return None

    async def aclose(self) -> None:
        return None


class NoAuthProvider(_Base):
    """A service that needs no credentials."""


class ApiKeyProvider(_Base):
    """``{header: value}`` on every call (``X-API-Key`` by default)."""

    def __init__(self, auth: config.ApiKeyAuth) -> None:
        self._header = auth.header
        self._value = auth.value

    async def headers(self) -> dict[str, str]:
        return {self._header: self._value.get_secret_value()}

    def __repr__(self) -> str:
        return f"ApiKeyProvider(header={self._header!r})"


class BearerProvider(_Base):
    """``Authorization: Bearer <token>`` on every call."""

    def __init__(self, auth: config.BearerAuth) -> None:
        self._token = auth.token

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.get_secret_value()}"}

    def __repr__(self) -> str:
        return "BearerProvider()"


class OAuth2ClientCredentials(_Base):
    """OAuth2 client credentials: ``Authorization: Bearer <access token>``.

    ``clock`` (monotonic seconds) and ``resolver`` are for tests; ``secrets`` receives
    every access token fetched, so logs and events mask it too.
    """

    def __init__(
        self,
        auth: config.OAuth2Auth,
        network: NetworkPolicy,
        *,
        secrets: Secrets | None = None,
        clock: Clock = time.monotonic,
        resolver: Resolver | None = None,
        timeout: float = TOKEN_TIMEOUT,
    ) -> None:
        self._auth = auth
        self._network = network
        self._secrets = secrets
        self._clock = clock
        self._resolver = resolver
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._expires_at: float | None = None  # monotonic; None: until refresh()
        self.fetches = 0  # token requests made (for stats and tests)

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentials(token_url={safe_url(self._auth.token_url)!r})"

    def _valid(self) -> bool:
        return self._token is not None and (
            self._expires_at is None or self._clock() < self._expires_at
        )

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token()}"}

    async def token(self) -> str:
        """The cached access token, fetched first if there is none or it is expiring."""
        if self._valid():
            assert self._token is not None
            return self._token
        async with self._lock:
            if not self._valid():  # another caller may have fetched it meanwhile
                await self._fetch()
            assert self._token is not None
            return self._token

    async def refresh(self, stale: Mapping[str, str] | None = None) -> None:
        """Forget the cached token; the next call fetches a new one.

        ``stale``: the headers the refused call carried.  When they no longer hold the
        cached token, another caller has already refreshed it and nothing is dropped, so
        many calls refused at once fetch one new token, not one each.
        """
        current = self._token
        already_refreshed = (
            stale is not None
            and current is not None
            and stale.get("Authorization") != f"Bearer {current}"
        )
        if already_refreshed:
            return
        self._token = None
        self._expires_at = None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=GuardedTransport(self._network, resolver=self._resolver),
                trust_env=False,
                timeout=self._timeout,
                follow_redirects=False,
            )
        return self._client

    async def _fetch(self) -> None:
        auth = self._auth
        form = {"grant_type": "client_credentials"}
        if auth.scope:
            form["scope"] = auth.scope
        if auth.audience:
            form["audience"] = auth.audience
        where = safe_url(auth.token_url)
        self.fetches += 1
        try:
            response = await self._http().post(
                auth.token_url,
                data=form,
                auth=httpx.BasicAuth(
                    auth.client_id.get_secret_value(), auth.client_secret.get_secret_value()
                ),
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise StepError(
                f"cannot get an OAuth2 token from {where}: {type(exc).__name__}",
                error_class=ErrorClass.RETRYABLE,
                details={"token_url": where, "exception_type": type(exc).__name__},
            ) from None
        if response.status_code >= 400:
            raise self._token_error(response, where)
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise StepError(
                f"the OAuth2 token endpoint {where} answered {response.status_code} without "
                "an access_token; check token_url",
                error_class=ErrorClass.AUTH_FAILED,
                details={"token_url": where, "status": response.status_code},
            )
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        old = self._token
        self._token = token
        if isinstance(expires_in, int | float | str) and _is_number(expires_in):
            lifetime = max(0.0, float(expires_in))
            skew = min(MAX_SKEW, lifetime * 0.1)
            self._expires_at = self._clock() + lifetime - skew
        else:
            self._expires_at = None  # until a 401 makes the adapter call refresh()
        if self._secrets is not None:
            self._secrets.add(token)
            if old is not None and old != token:
                self._secrets.discard(old)

    def _token_error(self, response: httpx.Response, where: str) -> StepError:
        status = response.status_code
        reason = ""
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            reason = body["error"]
            if isinstance(body.get("error_description"), str):
                reason += f": {body['error_description']}"
            reason = reason[:_ERROR_TEXT]
        if self._secrets is not None:
            reason = self._secrets.redact_text(reason)
        text = f" ({reason})" if reason else ""
        details: dict[str, Any] = {"token_url": where, "status": status}
        if reason:
            details["reason"] = reason
        if status in (400, 401, 403):
            return StepError(
                f"the OAuth2 token endpoint {where} refused the client credentials: "
                f"{status}{text}; check client_id, client_secret and scope",
                error_class=ErrorClass.AUTH_FAILED,
                details=details,
            )
        if status == 429:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            return StepError(
                f"the OAuth2 token endpoint {where} is rate limiting: 429{text}",
                error_class=ErrorClass.RATE_LIMITED,
                retry_after=retry_after,
                details=details,
            )
        if status >= 500 or status == 408:
            return StepError(
                f"the OAuth2 token endpoint {where} failed: {status}{text}",
                error_class=ErrorClass.RETRYABLE,
                details=details,
            )
        return StepError(
            f"the OAuth2 token endpoint {where} answered {status}{text}; check token_url",
            error_class=ErrorClass.PERMANENT,
            details=details,
        )


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class MtlsProvider(_Base):
    """A client certificate (``cert`` + ``key`` PEM files, ``ca`` to verify the server)."""

    def __init__(self, auth: config.MtlsAuth) -> None:
        self._auth = auth
        self._context: ssl.SSLContext | None = None
        self._grpc: Any = None

    def __repr__(self) -> str:
        return f"MtlsProvider(cert={self._auth.cert!r})"

    def _file(self, path: str, what: str) -> bytes:
        try:
            return Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise StepError(
                f"cannot read the mTLS {what} file {path!r}: {exc.strerror or exc}; check "
                f"`auth.{what}` in services.yaml",
                error_class=ErrorClass.PERMANENT,
                details={"path": path, "field": f"auth.{what}"},
            ) from None

    def ssl_context(self) -> ssl.SSLContext:
        """A client-side context with the certificate loaded (built once)."""
        if self._context is None:
            auth = self._auth
            for path, what in ((auth.cert, "cert"), (auth.key, "key")):
                self._file(path, what)
            try:
                if auth.ca:
                    self._file(auth.ca, "ca")
                    context = ssl.create_default_context(cafile=str(Path(auth.ca).expanduser()))
                else:
                    context = ssl.create_default_context()
                context.load_cert_chain(
                    str(Path(auth.cert).expanduser()), str(Path(auth.key).expanduser())
                )
            except ssl.SSLError as exc:
                raise StepError(
                    f"the mTLS certificate, key or CA is not valid PEM or they do not match: "
                    f"{exc.reason or exc}; check `auth.cert`, `auth.key` and `auth.ca`",
                    error_class=ErrorClass.PERMANENT,
                    details={"cert": auth.cert, "key": auth.key, "ca": auth.ca},
                ) from None
            self._context = context
        return self._context

    def grpc_credentials(self) -> Any:
        """``grpc.ssl_channel_credentials`` from the same files (needs ``legato[grpc]``)."""
        if self._grpc is None:
            try:
                import grpc  # type: ignore[import-untyped,unused-ignore]
            except ImportError as exc:
                raise ConfigurationError(
                    "gRPC with mTLS needs the grpc extra: pip install 'legato[grpc]'"
                ) from exc
            auth = self._auth
            self._grpc = grpc.ssl_channel_credentials(
                root_certificates=self._file(auth.ca, "ca") if auth.ca else None,
                private_key=self._file(auth.key, "key"),
                certificate_chain=self._file(auth.cert, "cert"),
            )
        return self._grpc


def build_auth(
    auth: config.Auth | None,
    network: NetworkPolicy | None = None,
    *,
    secrets: Secrets | None = None,
    clock: Clock = time.monotonic,
    resolver: Resolver | None = None,
) -> AuthProvider:
    """The provider for a service's ``auth`` block (None or ``type: none``: no credentials).

    ``network`` guards the OAuth2 token request (loopback needs ``allow_private``);
    ``secrets`` collects fetched tokens for masking.
    """
    network = network or NetworkPolicy()
    if auth is None or isinstance(auth, config.NoAuth):
        return NoAuthProvider()
    if isinstance(auth, config.ApiKeyAuth):
        return ApiKeyProvider(auth)
    if isinstance(auth, config.BearerAuth):
        return BearerProvider(auth)
    if isinstance(auth, config.OAuth2Auth):
        return OAuth2ClientCredentials(
            auth, network, secrets=secrets, clock=clock, resolver=resolver
        )
    if isinstance(auth, config.MtlsAuth):
        return MtlsProvider(auth)
    raise ConfigurationError(f"unsupported auth type {type(auth).__name__}")


async def call_with_auth(auth: AuthProvider, call: Callable[[dict[str, str]], Awaitable[T]]) -> T:
    """``await call(headers)``; if it raises AUTH_FAILED, ``refresh()`` the credentials and
    call once more (the second AUTH_FAILED propagates).  For adapters."""
    headers = await auth.headers()
    try:
        return await call(headers)
    except StepError as exc:
        if exc.error_class is not ErrorClass.AUTH_FAILED:
            raise
    refresh: Any = auth.refresh
    try:
        takes_stale = bool(inspect.signature(refresh).parameters)
    except (TypeError, ValueError):
        takes_stale = False
    await (refresh(headers) if takes_stale else refresh())
    return await call(await auth.headers())
