"""Connector policies against real things: a rate limit shared by two OS processes through
the store (SQLite file and PostgreSQL), OAuth2 against a loopback token server, and the hub
with a store-backed limiter.

PostgreSQL: a freshly created database (dropped afterwards) on
postgresql://postgres@127.0.0.1:5432 (``LEGATO_TEST_POSTGRES_URL`` to use another,
``LEGATO_TEST_POSTGRES=skip`` to leave it out).

This file is also the child process of the rate-limit test::

    python test_connector_policies.py ratelimit URL KEY RATE BURST START DURATION
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import sqlalchemy as sa

from legato.connectors import config
from legato.connectors.auth import OAuth2ClientCredentials, build_auth, call_with_auth
from legato.connectors.base import AuthProvider, Result, Task
from legato.connectors.hub import Connectors
from legato.connectors.registry import parse_registry
from legato.connectors.resilience import RateLimiter
from legato.connectors.secrets import Secrets
from legato.errors import ErrorClass, StepError
from legato.net import NetworkPolicy, raise_for_status, step_error_from_httpx
from legato.store import SqlStore

POSTGRES_SERVER = os.environ.get(
    "LEGATO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
LOOPBACK_OK = NetworkPolicy(allow_private=True)
CLIENT_ID = "legato-client"
CLIENT_SECRET = "client-secret-value-42"
ACQUIRERS = 4  # concurrent callers per process in the rate-limit test


# ---- the rate limit across processes ----------------------------------------------------------


async def _count_acquisitions(
    url: str, key: str, rate: float, burst: float, start: float, duration: float
) -> int:
    """From ``start``, for ``duration`` seconds, acquire as fast as the limiter allows from
    ACQUIRERS concurrent callers (as a worker runs several steps at once); count the tokens
    granted inside the window.  The waiting callers hold reservations, so a process that
    the OS schedules late for a moment does not lose its slots."""
    store = await SqlStore.open(url)
    try:
        limiter = RateLimiter(key, rate, burst, store=store)
        if start <= 0:  # wait for the parent: "ready" out, the start time in
            print("ready", flush=True)
            start = float(await asyncio.to_thread(sys.stdin.readline))
        await asyncio.sleep(max(0.0, start - time.time()))
        end = start + duration

        async def acquirer() -> int:
            count = 0
            while True:
                try:
                    await limiter.acquire()
                except StepError as exc:  # not expected here: wait, as the engine would
                    if exc.error_class is not ErrorClass.RATE_LIMITED:
                        raise
                    await asyncio.sleep(exc.retry_after or 0.05)
                    continue
                if time.time() >= end:
                    return count
                count += 1

        return sum(await asyncio.gather(*(acquirer() for _ in range(ACQUIRERS))))
    finally:
        await store.close()


def _main(argv: list[str]) -> None:
    _, url, key, rate, burst, start, duration = argv
    count = asyncio.run(
        _count_acquisitions(url, key, float(rate), float(burst), float(start), float(duration))
    )
    print(json.dumps({"count": count}))


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if os.environ.get("LEGATO_TEST_POSTGRES") == "skip":
        pytest.skip("LEGATO_TEST_POSTGRES=skip")
    import psycopg

    server = sa.make_url(POSTGRES_SERVER)
    conninfo = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"legato_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_SERVER}: {exc}. Start it or set "
            "LEGATO_TEST_POSTGRES=skip to leave it out knowingly."
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "legato.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.mark.slow
async def test_rate_limit_holds_across_two_processes(store_url: str) -> None:
    rate, burst, duration = 20.0, 1.0, 5.0
    key = f"svc-{uuid.uuid4().hex[:8]}"
    # Migrate once here, so the children only open the store.
    async with await SqlStore.open(store_url):
        pass
    args = [store_url, key, str(rate), str(burst), "0", str(duration)]
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "ratelimit",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        for child in children:  # both are up, with the store open, before the clock starts
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), timeout=60)
            assert line.strip() == b"ready", line
        start = time.time() + 0.3
        for child in children:
            assert child.stdin is not None
            child.stdin.write(f"{start}\n".encode())
            await child.stdin.drain()
            child.stdin.close()
        counts = []
        for child in children:
            out, err = await asyncio.wait_for(child.communicate(), timeout=60)
            assert child.returncode == 0, err.decode()
            counts.append(json.loads(out.decode().strip().splitlines()[-1])["count"])
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    total = sum(counts)
    expected = rate * duration  # (the full bucket's first token is offset by the window's end)
    assert abs(total - expected) <= 0.1 * expected, (counts, expected)
    # both processes got a fair share: the bucket is shared, not split
    assert min(counts) >= 0.3 * total, counts


async def test_store_bucket_reserves_and_refuses(store_url: str) -> None:
    key = f"svc-{uuid.uuid4().hex[:8]}"
    async with await SqlStore.open(store_url) as store:
        take = store.take_rate_limit_token
        first = await take(key, rate=2.0, burst=2, max_wait=1.0, now=100.0)
        second = await take(key, rate=2.0, burst=2, max_wait=1.0, now=100.0)
        third = await take(key, rate=2.0, burst=2, max_wait=1.0, now=100.0)
        assert (first.granted, first.wait, second.wait) == (True, 0.0, 0.0)
        assert third.granted
        assert third.wait == pytest.approx(0.5)
        refused = await take(key, rate=2.0, burst=2, max_wait=0.5, now=100.0)
        assert not refused.granted
        assert refused.wait == pytest.approx(1.0)
        state = await store.rate_limit_state(key)
        assert state is not None
        assert state[0] == pytest.approx(-1.0)
        # the database clock by default: a bucket used long ago is full again
        assert (await take(key, rate=2.0, burst=2, max_wait=0.0)).wait == 0.0
        assert await store.reset_rate_limits([key]) == 1
        assert await store.rate_limit_state(key) is None


# ---- OAuth2 against a loopback token server ---------------------------------------------------


@dataclass
class AuthWorld:
    """What the token server and the API server share (their state, for assertions)."""

    expires_in: float | None = 3600
    token_delay: float = 0.0
    token_status: int = 200
    issued: list[str] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    api_calls: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _TokenHandler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        world = self.server.world
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        basic = self.headers.get("Authorization", "")
        with world.lock:
            world.token_requests.append({"form": form, "authorization": basic})
        if world.token_delay:
            time.sleep(world.token_delay)
        if world.token_status != 200:
            self._json(world.token_status, {"error": "temporarily_unavailable"})
            return
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if basic != expected or form.get("grant_type") != ["client_credentials"]:
            self._json(401, {"error": "invalid_client", "error_description": "bad credentials"})
            return
        with world.lock:
            token = f"token-{len(world.issued) + 1}-{uuid.uuid4().hex[:6]}"
            world.issued.append(token)
            world.valid.add(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if world.expires_in is not None:
            body["expires_in"] = world.expires_in
        self._json(200, body)

    def do_GET(self) -> None:  # the API
        world = self.server.world
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        with world.lock:
            world.api_calls.append(token)
            ok = token in world.valid
        if ok:
            self._json(200, {"hello": "world", "path": self.path})
        else:
            self._json(401, {"error": "invalid_token"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    world: AuthWorld


@pytest.fixture
def world() -> Iterator[tuple[AuthWorld, str]]:
    server = _Server(("127.0.0.1", 0), _TokenHandler)
    server.world = AuthWorld()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.world, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def oauth(base: str, **kw: Any) -> config.OAuth2Auth:
    return config.OAuth2Auth(
        type="oauth2",
        client_id=kw.pop("client_id", CLIENT_ID),
        client_secret=kw.pop("client_secret", CLIENT_SECRET),
        token_url=f"{base}/oauth/token",
        **kw,
    )


@pytest.fixture
async def provider(world: tuple[AuthWorld, str]) -> AsyncIterator[OAuth2ClientCredentials]:
    _, base = world
    made = build_auth(oauth(base, scope="employees:write"), LOOPBACK_OK, secrets=Secrets())
    assert isinstance(made, OAuth2ClientCredentials)
    yield made
    await made.aclose()


async def test_token_is_cached_and_renewed_after_it_expires(
    world: tuple[AuthWorld, str], provider: OAuth2ClientCredentials
) -> None:
    state, _ = world
    state.expires_in = 1  # renewed 10% early: after 0.9 s
    first = await provider.headers()
    assert first == {"Authorization": f"Bearer {state.issued[0]}"}
    assert await provider.headers() == first  # cached
    assert len(state.token_requests) == 1
    request = state.token_requests[0]
    assert request["form"] == {"grant_type": ["client_credentials"], "scope": ["employees:write"]}
    await asyncio.sleep(1.0)
    renewed = await provider.headers()
    assert renewed == {"Authorization": f"Bearer {state.issued[1]}"}
    assert len(state.token_requests) == 2
    assert provider.fetches == 2


async def test_concurrent_callers_fetch_the_token_once(
    world: tuple[AuthWorld, str], provider: OAuth2ClientCredentials
) -> None:
    state, _ = world
    state.token_delay = 0.2
    headers = await asyncio.gather(*(provider.headers() for _ in range(25)))
    assert len(state.token_requests) == 1
    assert {h["Authorization"] for h in headers} == {f"Bearer {state.issued[0]}"}


async def _get(base: str, headers: dict[str, str]) -> Any:
    async with httpx.AsyncClient() as client:
        try:
            response = await client.get(f"{base}/api/employees", headers=headers)
        except httpx.HTTPError as exc:
            raise step_error_from_httpx(exc) from exc
        raise_for_status(response)
        return response.json()


async def test_a_401_from_the_api_refreshes_the_token_once(
    world: tuple[AuthWorld, str], provider: OAuth2ClientCredentials
) -> None:
    state, base = world
    assert (await call_with_auth(provider, lambda h: _get(base, h)))["hello"] == "world"
    assert len(state.token_requests) == 1
    state.valid.clear()  # the API revokes every token
    body = await call_with_auth(provider, lambda h: _get(base, h))
    assert body["hello"] == "world"
    assert len(state.token_requests) == 2  # refreshed exactly once
    assert state.api_calls == [state.issued[0], state.issued[0], state.issued[1]]
    # many calls refused at once: one new token, not one each
    state.valid.clear()
    await asyncio.gather(*(call_with_auth(provider, lambda h: _get(base, h)) for _ in range(5)))
    assert len(state.token_requests) == 3


async def test_token_endpoint_errors_are_classified(world: tuple[AuthWorld, str]) -> None:
    state, base = world
    secrets = Secrets()
    wrong = build_auth(oauth(base, client_secret="wrong-secret"), LOOPBACK_OK, secrets=secrets)
    with pytest.raises(StepError) as caught:
        await wrong.headers()
    assert caught.value.error_class is ErrorClass.AUTH_FAILED
    assert "invalid_client: bad credentials" in caught.value.message
    assert "wrong-secret" not in str(caught.value.to_dict())
    await wrong.aclose()  # type: ignore[attr-defined]

    for status, error_class in ((503, ErrorClass.RETRYABLE), (400, ErrorClass.AUTH_FAILED)):
        state.token_status = status
        provider = build_auth(oauth(base), LOOPBACK_OK)
        with pytest.raises(StepError) as caught:
            await provider.headers()
        assert caught.value.error_class is error_class, status
        await provider.aclose()  # type: ignore[attr-defined]

    # nothing listening: RETRYABLE
    closed = build_auth(
        config.OAuth2Auth(
            type="oauth2", client_id="a", client_secret="b", token_url="http://127.0.0.1:9/t"
        ),
        LOOPBACK_OK,
    )
    with pytest.raises(StepError) as caught:
        await closed.headers()
    assert caught.value.error_class is ErrorClass.RETRYABLE
    await closed.aclose()  # type: ignore[attr-defined]

    # the SSRF guard stands unless the operator allows private networks
    guarded = build_auth(oauth(base), NetworkPolicy())
    with pytest.raises(StepError, match="LEGATO_ALLOW_PRIVATE_NETWORKS") as caught:
        await guarded.headers()
    assert caught.value.error_class is ErrorClass.PERMANENT
    await guarded.aclose()  # type: ignore[attr-defined]


async def test_static_credentials() -> None:
    api_key = build_auth(
        config.ApiKeyAuth(type="api_key", header="X-API-Key", value="k-123456"), None
    )
    assert await api_key.headers() == {"X-API-Key": "k-123456"}
    bearer = build_auth(config.BearerAuth(type="bearer", token="t-123456"), None)
    assert await bearer.headers() == {"Authorization": "Bearer t-123456"}
    for provider in (api_key, bearer, build_auth(None, None)):
        await provider.refresh()
        assert provider.ssl_context() is None
    assert "k-123456" not in repr(api_key)
    assert "t-123456" not in repr(bearer)


# ---- mTLS against a loopback TLS server that requires a client certificate -----------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=legato-test-ca", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "localhost"), ("client", "legato-client")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return d


class _TlsHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        peer = self.connection.getpeercert()  # type: ignore[attr-defined]
        subject = dict(item[0] for item in peer["subject"]) if peer else {}
        data = json.dumps({"client": subject.get("commonName")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pki: Path) -> None:
        super().__init__(("127.0.0.1", 0), _TlsHandler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
        context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
        context.verify_mode = ssl.CERT_REQUIRED
        self.context = context

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        try:
            return self.context.wrap_socket(sock, server_side=True), address
        except BaseException:  # a refused handshake: close the socket, never leak it
            sock.close()
            raise


async def test_mtls_client_certificate(pki: Path) -> None:
    server = _TlsServer(pki)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://localhost:{server.server_address[1]}/whoami"
    try:
        mtls = build_auth(
            config.MtlsAuth(
                type="mtls",
                cert=str(pki / "client.pem"),
                key=str(pki / "client.key"),
                ca=str(pki / "ca.pem"),
            ),
            None,
        )
        context = mtls.ssl_context()
        assert context is mtls.ssl_context()  # built once
        async with httpx.AsyncClient(verify=context) as client:
            response = await client.get(url)
        assert response.json() == {"client": "legato-client"}
        assert await mtls.headers() == {}
        # without the client certificate the server refuses the handshake
        bare = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        async with httpx.AsyncClient(verify=bare) as client:
            # TLS 1.3 reports the refusal after the handshake: httpx raises its own error,
            # or the raw SSLError when the alert arrives while reading the response
            with pytest.raises((httpx.HTTPError, ssl.SSLError)):
                await client.get(url)
        credentials = mtls.grpc_credentials()  # type: ignore[attr-defined]
        import grpc

        assert isinstance(credentials, grpc.ChannelCredentials)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

    missing = build_auth(
        config.MtlsAuth(type="mtls", cert=str(pki / "nope.pem"), key=str(pki / "client.key")),
        None,
    )
    with pytest.raises(StepError, match="cannot read the mTLS cert file") as caught:
        missing.ssl_context()
    assert caught.value.error_class is ErrorClass.PERMANENT
    mismatched = build_auth(
        config.MtlsAuth(type="mtls", cert=str(pki / "client.pem"), key=str(pki / "server.key")),
        None,
    )
    with pytest.raises(StepError, match="do not match") as caught:
        mismatched.ssl_context()
    assert caught.value.error_class is ErrorClass.PERMANENT


# ---- the hub with real OAuth2 and a store-backed limiter --------------------------------------


class LoopbackAdapter:
    """A tiny REST adapter written to the base contract: GET {endpoint}/{operation} with the
    provider's headers; one refresh and retry after a 401."""

    def __init__(
        self, service: config.ServiceConfig, *, auth: AuthProvider, network: NetworkPolicy
    ) -> None:
        self.name = service.name
        self.endpoint = service.endpoint
        self.auth = auth
        self.client = httpx.AsyncClient()
        self.seen: list[Task] = []

    async def execute(self, task: Task) -> Result:
        self.seen.append(task)

        async def call(headers: dict[str, str]) -> Any:
            response = await self.client.get(
                f"{self.endpoint}/{task.operation}",
                headers={**headers, "traceparent": task.traceparent},
            )
            raise_for_status(response)
            return response.json()

        return Result(output=await call_with_auth(self.auth, call))

    async def execute_batch(self, tasks: list[Task]) -> list[Result | Exception]:
        return [await self.execute(task) for task in tasks]

    async def start_async(self, task: Task, callback_token: str) -> Result:
        raise NotImplementedError

    async def check_status(self, task: Task, operation_id: str) -> Result | None:
        raise NotImplementedError

    async def health_check(self) -> None:
        return None

    def capabilities(self) -> set[str]:
        return set()

    async def aclose(self) -> None:
        await self.client.aclose()


async def test_hub_with_oauth_and_a_store_rate_limit(
    world: tuple[AuthWorld, str], tmp_path: Path
) -> None:
    state, base = world
    registry = parse_registry(
        {
            "services": [
                {
                    "name": "hr",
                    "type": "rest",
                    "endpoint": f"{base}/api",
                    "auth": {
                        "type": "oauth2",
                        "client_id": "${HR_CLIENT_ID}",
                        "client_secret": "${HR_CLIENT_SECRET}",
                        "token_url": f"{base}/oauth/token",
                    },
                    "rate_limit": {"requests_per_second": 10, "burst": 2},
                    "circuit_breaker": {"failure_threshold": 3},
                    "capabilities": ["employees"],
                }
            ]
        },
        environ={"HR_CLIENT_ID": CLIENT_ID, "HR_CLIENT_SECRET": CLIENT_SECRET},
    )
    task = Task(
        task_id="load",
        run_id="run-9",
        workflow="wf",
        service="hr",
        operation="employees",
        input={},
        idempotency_key="run-9/load/0",
    )
    async with (
        await SqlStore.open(str(tmp_path / "legato.db")) as store,
        Connectors(
            registry, store=store, network=LOOPBACK_OK, adapters={"rest": LoopbackAdapter}
        ) as hub,
    ):
        started = time.monotonic()
        results = [await hub.execute(task) for _ in range(6)]
        elapsed = time.monotonic() - started
        assert all(r.output["hello"] == "world" for r in results)
        # burst 2, then 10/s: four more need about 0.4 s
        assert 0.3 <= elapsed < 2.0
        bucket = await store.rate_limit_state("hr")
        assert bucket is not None
        assert len(state.token_requests) == 1  # one token for all six calls
        state.valid.clear()
        assert (await hub.execute(task)).output["hello"] == "world"
        assert len(state.token_requests) == 2
        assert state.issued[1] in hub.secrets  # fetched tokens are masked too
        assert hub.stats()["services"]["hr"]["operations"]["employees"]["outcomes"] == {"ok": 7}


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "ratelimit":
    _main(sys.argv[1:])
