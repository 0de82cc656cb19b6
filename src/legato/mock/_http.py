"""The mock service over HTTP: the standard library's ThreadingHTTPServer on a thread.

Routes: each operation answers ``METHOD PATH`` (``{name}`` in the path matches one
segment). Besides those, ``/_mock/`` serves what happened:

* ``GET /_mock/calls`` — every recorded call (JSON list);
* ``GET /_mock/operations/{id}`` — an async operation's state;
* ``GET /_mock/health`` — ``{"ok": true}``;
* ``POST /_mock/reset`` — forget the calls (not the configuration).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from legato.mock._core import MockOperation, MockRequest, MockService, Plan

log = logging.getLogger("legato.mock")

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _pattern(path: str) -> re.Pattern[str]:
    parts: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(path):
        parts.append(re.escape(path[last : match.start()]))
        parts.append(f"(?P<{match.group(1)}>[^/]+)")
        last = match.end()
    parts.append(re.escape(path[last:]))
    return re.compile("".join(parts) + "/?")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, service: MockService, host: str, port: int) -> None:
        self.service = service
        self.stopping = threading.Event()
        self.workers: list[threading.Thread] = []
        self._patterns: dict[str, re.Pattern[str]] = {}
        super().__init__((host, port), _Handler)

    def route(self, method: str, path: str) -> tuple[MockOperation | None, dict[str, str], bool]:
        """The operation for ``method path``, its path parameters, and whether the path
        exists with another method."""
        other = False
        for op in self.service.operations.values():
            pattern = self._patterns.get(op.path)
            if pattern is None:
                pattern = self._patterns[op.path] = _pattern(op.path)
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if op.method == method:
                return op, {k: unquote(v) for k, v in match.groupdict().items()}, False
            other = True
        return None, {}, other

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-request (it timed out): nothing to report

    def later(self, delay: float, work: Any) -> None:
        """Run ``work()`` on a thread after ``delay`` seconds, unless the server stops."""

        def run() -> None:
            if self.stopping.wait(delay):
                return
            try:
                work()
            except Exception:
                log.exception("the mock service's async completion failed")

        thread = threading.Thread(target=run, name="mock-async", daemon=True)
        self.workers.append(thread)
        thread.start()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path or "/"
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if path.startswith("/_mock/"):
            self._admin(path)
            return
        svc = self.server.service
        headers = {k.lower(): v for k, v in self.headers.items()}
        op, params, other_method = self.server.route(self.command, path)
        request = MockRequest(
            operation=op.name if op is not None else "",
            transport="http",
            method=self.command,
            path=path,
            body=_parse(raw, headers.get("content-type", "")),
            headers=headers,
            params=params,
            query=dict(parse_qsl(parts.query)),
            idempotency_key=headers.get(svc.idempotency_header.lower()),
            attempt=_int(headers.get(svc.attempt_header.lower())),
        )
        plan = svc._arrive(op, request)
        if op is None:
            routes = sorted(f"{o.method} {o.path}" for o in svc.operations.values())
            status = 405 if other_method else 404
            if other_method:
                svc._answered(plan.seq, 405, "unknown")
            self._send(
                status,
                {
                    "error": {
                        "message": f"{self.command} {path} is not an operation of {svc.name}",
                        "routes": routes,
                    }
                },
            )
            return
        if plan.delay and self.server.stopping.wait(plan.delay):
            return
        self._answer(op, plan, request)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _answer(self, op: MockOperation, plan: Plan, request: MockRequest) -> None:
        svc = self.server.service
        if plan.kind == "timeout":
            assert plan.step is not None
            if self.server.stopping.wait(plan.step.hang):
                return
            self._send(504, plan.error_body())
        elif plan.kind == "error":
            self._send(plan.status, plan.error_body(), plan.headers)
        elif plan.kind == "accept":
            assert plan.operation_id is not None
            operation_id = plan.operation_id
            url = request.headers.get(svc.callback_header.lower())
            if url is None and isinstance(request.body, dict):
                field = request.body.get("callback_url")
                url = field if isinstance(field, str) else None
            token = request.headers.get(svc.callback_token_header.lower())
            self._send(202, {"operation_id": operation_id, "status": "IN_PROGRESS"})
            delay = float((op._async or {}).get("delay", 0.0))
            self.server.later(
                delay,
                lambda: svc._finish_async(
                    op, operation_id, request, callback_url=url, callback_token=token
                ),
            )
        else:
            try:
                body = op._response_body(request)
            except Exception as exc:
                log.exception("the mock operation's responder failed")
                svc._answered(plan.seq, 500, "error")
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})
                return
            self._send(plan.status, body, plan.headers)

    def _admin(self, path: str) -> None:
        svc = self.server.service
        if self.command == "GET" and path == "/_mock/calls":
            self._send(200, [dataclasses.asdict(c) for c in svc.calls()])
        elif self.command == "GET" and path == "/_mock/health":
            self._send(200, {"ok": True, "service": svc.name})
        elif self.command == "GET" and path.startswith("/_mock/operations/"):
            state = svc.operation_status(unquote(path.removeprefix("/_mock/operations/")))
            if state is None:
                self._send(404, {"error": {"message": "no such operation"}})
            else:
                self._send(200, state)
        elif self.command == "POST" and path == "/_mock/reset":
            svc.reset()
            self._send(200, {"ok": True})
        else:
            self._send(404, {"error": {"message": f"{self.command} {path}: not a mock endpoint"}})

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None and status == 204 else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass  # the client gave up (a scripted timeout): its answer has nowhere to go

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _parse(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    if "json" in content_type or not content_type:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class HttpMock:
    """A running HTTP mock server (``start``/``stop``, or a context manager)."""

    def __init__(self, service: MockService, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service = service
        self._host, self._port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        if self._server is not None:
            raise RuntimeError("the HTTP mock is already running")
        self._server = _Server(self.service, self._host, self._port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mock-http-{self.service.name}",
            daemon=True,
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the HTTP mock is not running")
        address, port = self._server.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else str(address)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.stopping.set()  # ends scripted waits
        server.shutdown()
        if thread is not None:
            thread.join()
        server.server_close()
        for worker in server.workers:
            worker.join(timeout=5)


@contextlib.contextmanager
def serve_http(service: MockService, *, host: str, port: int) -> Iterator[str]:
    mock = HttpMock(service, host=host, port=port)
    url = mock.start()
    try:
        yield url
    finally:
        mock.stop()
