"""http_request against a real HTTP server on loopback, and the SSRF guard in front of it."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from legato.activity import ActivityContext, ActivityRegistry
from legato.errors import ErrorClass, StepError
from legato.net import GuardedTransport, NetworkPolicy

LOOPBACK_OK = NetworkPolicy(allow_private=True)


@dataclass
class Seen:
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        self.server.seen.requests.append(
            {
                "method": self.command,
                "path": url.path,
                "query": parse_qs(url.query),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode(),
            }
        )
        parts = [p for p in url.path.split("/") if p]
        match parts:
            case ["ok"]:
                self._send(
                    200,
                    {"hello": "world"},
                    {"Set-Cookie": "session=secret", "X-Request-Id": "req-1"},
                )
            case ["text"]:
                self._send(200, b"plain words", {"Content-Type": "text/plain; charset=utf-8"})
            case ["echo"]:
                self._send(
                    201,
                    {"method": self.command, "query": parse_qs(url.query), "body": body.decode()},
                )
            case ["status", "429-date"]:
                self._send(
                    429, {"error": "slow down"}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
                )
            case ["status", code]:
                extra = {"Retry-After": "7"} if code == "429" else {}
                self._send(int(code), {"error": f"status {code}"}, extra)
            case ["slow"]:
                self.server.seen.release.wait(5)
                self._send(200, {"late": True})
            case ["redirect"]:
                self._send(302, b"", {"Location": "/ok"})
            case ["big"]:
                self._send(200, b"x" * (2 * 1024 * 1024), {"Content-Type": "text/plain"})
            case _:
                self._send(404, {"error": "no such path"})

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.seen = Seen()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left: nothing to report


@pytest.fixture
def server() -> Iterator[tuple[str, Seen]]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", srv.seen
    finally:
        srv.seen.release.set()
        srv.shutdown()
        thread.join()
        srv.server_close()


@pytest.fixture
async def registry() -> AsyncIterator[ActivityRegistry]:
    async with ActivityRegistry(network=LOOPBACK_OK) as reg:
        yield reg.include_builtins()


def _ctx(registry: ActivityRegistry, attempt: int = 1) -> ActivityContext:
    return registry.context(
        run_id="run-42", workflow="billing", step="charge", attempt=attempt, idempotency_key="k-1"
    )


async def test_get_returns_status_safe_headers_and_json(
    server: tuple[str, Seen], registry: ActivityRegistry
) -> None:
    url, seen = server
    result = await registry.invoke("http_request", {"url": f"{url}/ok"}, _ctx(registry))
    assert result["status"] == 200
    assert result["json"] == {"hello": "world"}
    assert "text" not in result
    assert result["headers"]["content-type"] == "application/json"
    assert result["headers"]["x-request-id"] == "req-1"
    assert "set-cookie" not in result["headers"]
    [request] = seen.requests
    assert request["headers"]["idempotency-key"] == "k-1"
    assert request["headers"]["x-legato-run-id"] == "run-42"
    assert request["headers"]["x-legato-step"] == "charge"


async def test_text_response(server: tuple[str, Seen], registry: ActivityRegistry) -> None:
    url, _ = server
    result = await registry.invoke("http_request", {"url": f"{url}/text"}, _ctx(registry))
    result["headers"].pop("date")
    assert result == {
        "status": 200,
        "headers": {"content-type": "text/plain; charset=utf-8", "content-length": "11"},
        "text": "plain words",
    }


async def test_post_json_body_and_query(
    server: tuple[str, Seen], registry: ActivityRegistry
) -> None:
    url, seen = server
    result = await registry.invoke(
        "http_request",
        {"url": f"{url}/echo", "method": "post", "query": {"n": 3}, "json": {"plan": "pro"}},
        _ctx(registry),
    )
    assert result["status"] == 201
    assert result["json"]["method"] == "POST"
    assert result["json"]["query"] == {"n": ["3"]}
    assert json.loads(result["json"]["body"]) == {"plan": "pro"}
    assert seen.requests[0]["headers"]["content-type"] == "application/json"
    result = await registry.invoke(
        "http_request",
        {"url": f"{url}/echo", "method": "PUT", "body": "raw text"},
        _ctx(registry),
    )
    assert result["json"]["body"] == "raw text"


async def test_every_attempt_sends_the_same_idempotency_key(
    server: tuple[str, Seen], registry: ActivityRegistry
) -> None:
    url, seen = server
    for attempt in (1, 2):
        await registry.invoke(
            "http_request", {"url": f"{url}/ok", "method": "POST"}, _ctx(registry, attempt)
        )
    await registry.invoke(
        "http_request",
        {"url": f"{url}/ok", "headers": {"idempotency-key": "mine"}},
        _ctx(registry),
    )
    keys = [r["headers"]["idempotency-key"] for r in seen.requests]
    assert keys == ["k-1", "k-1", "mine"]


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, ErrorClass.VALIDATION),
        (401, ErrorClass.AUTH_FAILED),
        (403, ErrorClass.AUTH_FAILED),
        (404, ErrorClass.PERMANENT),
        (409, ErrorClass.PERMANENT),
        (422, ErrorClass.VALIDATION),
        (500, ErrorClass.RETRYABLE),
        (503, ErrorClass.RETRYABLE),
    ],
)
async def test_error_statuses_are_classified(
    status: int, error_class: ErrorClass, server: tuple[str, Seen], registry: ActivityRegistry
) -> None:
    url, _ = server
    with pytest.raises(StepError) as info:
        await registry.invoke("http_request", {"url": f"{url}/status/{status}"}, _ctx(registry))
    assert info.value.error_class is error_class
    assert info.value.details["status"] == status
    assert f"status {status}" in info.value.details["body"]


async def test_429_is_rate_limited_with_retry_after(
    server: tuple[str, Seen], registry: ActivityRegistry
) -> None:
    url, _ = server
    with pytest.raises(StepError) as info:
        await registry.invoke("http_request", {"url": f"{url}/status/429"}, _ctx(registry))
    assert info.value.error_class is ErrorClass.RATE_LIMITED
    assert info.value.retry_after == 7.0
    assert info.value.retryable
    with pytest.raises(StepError) as info:  # an HTTP date in the past: retry now
        await registry.invoke("http_request", {"url": f"{url}/status/429-date"}, _ctx(registry))
    assert info.value.error_class is ErrorClass.RATE_LIMITED
    assert info.value.retry_after == 0.0


async def test_expect_status(server: tuple[str, Seen], registry: ActivityRegistry) -> None:
    url, _ = server
    result = await registry.invoke(
        "http_request", {"url": f"{url}/status/404", "expect_status": [404]}, _ctx(registry)
    )
    assert result["status"] == 404
    with pytest.raises(StepError) as info:
        await registry.invoke(
            "http_request", {"url": f"{url}/ok", "expect_status": 201}, _ctx(registry)
        )
    assert info.value.error_class is ErrorClass.PERMANENT


async def test_timeout(server: tuple[str, Seen], registry: ActivityRegistry) -> None:
    url, _ = server
    with pytest.raises(StepError) as info:
        await registry.invoke(
            "http_request", {"url": f"{url}/slow", "timeout": "200ms"}, _ctx(registry)
        )
    assert info.value.error_class is ErrorClass.TIMEOUT


async def test_connection_refused_is_retryable(registry: ActivityRegistry) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StepError) as info:
        await registry.invoke("http_request", {"url": f"http://127.0.0.1:{port}/"}, _ctx(registry))
    assert info.value.error_class is ErrorClass.RETRYABLE


async def test_redirects_are_followed_only_when_asked(
    server: tuple[str, Seen], registry: ActivityRegistry
) -> None:
    url, _ = server
    result = await registry.invoke("http_request", {"url": f"{url}/redirect"}, _ctx(registry))
    assert (result["status"], result["headers"]["location"]) == (302, "/ok")
    result = await registry.invoke(
        "http_request", {"url": f"{url}/redirect", "follow_redirects": True}, _ctx(registry)
    )
    assert result["json"] == {"hello": "world"}


async def test_large_responses_fail_the_step(
    server: tuple[str, Seen], registry: ActivityRegistry
) -> None:
    url, _ = server
    with pytest.raises(StepError) as info:
        await registry.invoke("http_request", {"url": f"{url}/big"}, _ctx(registry))
    assert info.value.error_class is ErrorClass.PERMANENT
    assert "larger than" in info.value.message


# ---- the SSRF guard -----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_loopback_is_refused_by_default(host: str, server: tuple[str, Seen]) -> None:
    url, seen = server
    port = url.rsplit(":", 1)[1]
    async with ActivityRegistry() as registry:
        registry.include_builtins()
        with pytest.raises(StepError) as info:
            await registry.invoke(
                "http_request", {"url": f"http://{host}:{port}/ok"}, _ctx(registry)
            )
    err = info.value
    assert err.error_class is ErrorClass.PERMANENT
    assert err.details["ssrf_guard"] is True
    assert err.details["reason"].startswith("loopback")
    assert "LEGATO_ALLOW_PRIVATE_NETWORKS=true" in err.message
    assert seen.requests == []


async def test_allowed_hosts_opens_one_host(server: tuple[str, Seen]) -> None:
    url, seen = server
    policy = NetworkPolicy(allowed_hosts=frozenset({"127.0.0.1"}))
    async with ActivityRegistry(network=policy) as registry:
        registry.include_builtins()
        result = await registry.invoke("http_request", {"url": f"{url}/ok"}, _ctx(registry))
    assert result["status"] == 200
    assert len(seen.requests) == 1


async def test_the_guard_covers_ctx_http_in_user_activities(server: tuple[str, Seen]) -> None:
    url, seen = server

    async def fetch(*, ctx: ActivityContext) -> int:
        response = await ctx.http.get(f"{url}/ok")
        return response.status_code

    async with ActivityRegistry() as registry:
        registry.register(fetch)
        with pytest.raises(StepError) as info:
            await registry.invoke("fetch", None, _ctx(registry))
    assert info.value.details["reason"] == "loopback"
    assert seen.requests == []


async def test_the_connection_goes_to_the_checked_address_under_the_host_name(
    server: tuple[str, Seen],
) -> None:
    """The name is resolved once, by the guard; the socket connects to that IP while the
    Host header keeps the name (the system resolver knows nothing of `billing.test`)."""
    url, seen = server
    port = int(url.rsplit(":", 1)[1])
    lookups: list[str] = []

    async def resolver(host: str, _port: int) -> list[str]:
        lookups.append(host)
        return {"billing.test": ["127.0.0.1"], "rebind.test": ["93.184.216.34", "127.0.0.1"]}[host]

    policy = NetworkPolicy(allowed_hosts=frozenset({"billing.test"}))
    async with httpx.AsyncClient(
        transport=GuardedTransport(policy, resolver=resolver), trust_env=False
    ) as client:
        response = await client.get(f"http://billing.test:{port}/ok")
        assert response.json() == {"hello": "world"}
        with pytest.raises(StepError) as info:
            await client.get(f"http://rebind.test:{port}/ok")
    assert seen.requests[0]["headers"]["host"] == f"billing.test:{port}"
    assert lookups == ["billing.test", "rebind.test"]
    assert info.value.details["address"] == "127.0.0.1"
    assert len(seen.requests) == 1


async def test_the_guarded_transport_refuses_other_schemes() -> None:
    async with httpx.AsyncClient(transport=GuardedTransport(LOOPBACK_OK)) as client:
        with pytest.raises((StepError, httpx.UnsupportedProtocol)):
            await client.get("ftp://127.0.0.1/file")
