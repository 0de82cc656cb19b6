"""A small HTTP endpoint that hands service callbacks to a running Engine.

Legato's REST API (a later step) will serve callbacks itself; until then an embedding
application, a demo or a test forwards them like this. The service POSTs
``{"result": ...}`` (or ``{"status": "FAILED", "error": {...}}``) with the step's
callback token in ``X-Callback-Token``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from legato.errors import LegatoError


class CallbackReceiver:
    def __init__(self) -> None:
        self.engine: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.received: list[tuple[str, int]] = []  # (token, HTTP status answered)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                token = self.headers.get("X-Callback-Token") or body.get("callback_token", "")
                status = receiver.deliver(token, body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/callbacks"

    def attach(self, engine: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.engine, self.loop = engine, loop

    def deliver(self, token: str, body: dict[str, Any]) -> int:
        if self.engine is None or self.loop is None:
            return 503
        failed = str(body.get("status", "COMPLETED")).upper() == "FAILED"
        future = asyncio.run_coroutine_threadsafe(
            self.engine.callback(
                token,
                None if failed else body.get("result"),
                error=(body.get("error") or {"message": "the service failed"}) if failed else None,
            ),
            self.loop,
        )
        try:
            future.result(timeout=30)
            status = 204
        except LegatoError:
            status = 409  # unexpected or duplicate: refused, nothing changed
        self.received.append((token, status))
        return status

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
