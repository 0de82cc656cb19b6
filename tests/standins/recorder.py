"""A recording, idempotent HTTP stand-in service on loopback.

Every request is recorded as a :class:`Call` (method, path, body, ``Idempotency-Key``,
the ``X-Legato-Run-Id`` / ``X-Legato-Step`` headers, and when it arrived and was answered).
A request that is not a GET applies an *effect* once per idempotency key:

* the first request with a key applies the effect (a global effect counter moves on, the
  key's :class:`Effect` is stored with its response) and answers ``201``;
* a later request with the same key applies nothing: it increments the effect's
  ``attempts`` and answers ``200`` with the stored response and ``Idempotent-Replayed:
  true``, as a payment API does;
* a request without a key is refused with ``400`` (and recorded).

The effect is applied as soon as the request arrives; the configured latency is spent
afterwards, before the response is written.  So a client killed during that latency
leaves an effect applied whose outcome it never saw: exactly the case idempotency keys
exist for.

Reading what happened: ``GET /calls`` and ``GET /effects`` (JSON), or, in-process, the
:attr:`Recorder.calls` and :attr:`Recorder.effects` snapshots.

Which process made a call: with ``identify_clients=True`` (Linux) each call's
``client_pid`` is the pid of the local process whose socket sent it, looked up in
``/proc`` while the request is open; tests with several worker processes use it to tell
which worker applied which effect.  ``delay`` (a function of the :class:`Call`) replaces
the random latency when some paths must answer slowly and others fast.

In tests::

    with Recorder(latency=(0.005, 0.03), seed=7) as recorder:
        ...  # POST f"{recorder.url}/anything" with an Idempotency-Key header
        assert all(e.applied == 1 for e in recorder.effects.values())

The server runs on a thread of the test's process, so it outlives any worker process the
test kills.  Standalone (for a shell session)::

    python -m tests.standins.recorder --port 8766 --latency 5ms..30ms
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Call", "Effect", "Recorder"]


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the stand-in saw it.

    Times are ``time.monotonic()`` of the recorder's process (system-wide on Linux, so
    they compare with another local process's monotonic clock) and ``wall`` is
    ``time.time()`` at arrival.  ``answering_at`` is taken just before the response is
    written: before it, the client cannot have seen the outcome.  ``delivered`` is False
    when writing the response failed (the client had gone).
    """

    seq: int
    method: str
    path: str
    body: str
    idempotency_key: str | None
    run_id: str | None
    step: str | None
    wall: float
    received_at: float
    replayed: bool = False
    status: int | None = None
    answering_at: float | None = None
    answered_at: float | None = None
    delivered: bool | None = None
    client_pid: int | None = None
    """The local process that sent it (``identify_clients=True``); None if not known."""

    def in_flight_at(self, instant: float) -> bool:
        """Was this call received, but not yet answered, at monotonic ``instant``?"""
        return self.received_at <= instant and (
            self.answering_at is None or instant < self.answering_at
        )


@dataclass(frozen=True, slots=True)
class Effect:
    """What one idempotency key did: applied once, asked for ``attempts`` times."""

    key: str
    path: str
    body: str
    step: str | None
    number: int
    """The effect's place in the order effects were applied (1, 2, ...)."""
    applied: int
    attempts: int
    response: dict[str, Any]
    applied_at: float


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: a killed client is one call

    def do_GET(self) -> None:
        recorder = self.server.recorder
        path = urlsplit(self.path).path
        if path == "/calls":
            self._send(200, [dataclasses.asdict(c) for c in recorder.calls])
        elif path == "/effects":
            self._send(200, {k: dataclasses.asdict(e) for k, e in recorder.effects.items()})
        elif path == "/health":
            self._send(200, {"ok": True})
        else:
            self._send(404, {"error": f"GET {path}: read /calls or /effects"})

    def _effect(self) -> None:
        recorder = self.server.recorder
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        client_pid = None
        if recorder.identify_clients:
            client_pid = recorder._clients.pid_of(self.client_address, self.server.server_address)
        index, status, response, replayed = recorder._arrive(
            method=self.command,
            path=urlsplit(self.path).path,
            body=body,
            key=self.headers.get("Idempotency-Key"),
            run_id=self.headers.get("X-Legato-Run-Id"),
            step=self.headers.get("X-Legato-Step"),
            client_pid=client_pid,
        )
        delay = recorder._delay(index)
        if delay > 0:
            time.sleep(delay)
        recorder._answering(index)
        extra = {"Idempotent-Replayed": "true"} if replayed else {}
        delivered = self._send(status, response, extra)
        recorder._answered(index, delivered)

    do_POST = do_PUT = do_PATCH = do_DELETE = _effect

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> bool:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client was killed: its response has nowhere to go
            return False
        return True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, recorder: Recorder, host: str, port: int) -> None:
        self.recorder = recorder
        super().__init__((host, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that died halfway through a request: nothing to report


class _ClientPids:
    """Finds the local process that owns the client end of a loopback TCP connection:
    its socket inode from ``/proc/net/tcp{,6}``, then the process holding that inode
    among ``/proc/<pid>/fd`` (the processes found before are searched first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: list[int] = []

    def pid_of(self, client: Any, server: Any) -> int | None:
        try:
            inode = self._inode(int(client[1]), int(server[1]))
            if inode is None:
                return None
            target = f"socket:[{inode}]"
            with self._lock:
                known = list(self._known)
            for pid in known:
                if self._holds(pid, target):
                    return pid
            with os.scandir("/proc") as entries:
                pids = [int(e.name) for e in entries if e.name.isdigit()]
            for pid in pids:
                if pid not in known and self._holds(pid, target):
                    with self._lock:
                        self._known.insert(0, pid)
                    return pid
        except OSError:
            return None
        return None

    @staticmethod
    def _inode(client_port: int, server_port: int) -> int | None:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table, encoding="ascii") as lines:
                    next(lines, None)
                    for line in lines:
                        fields = line.split()
                        local, remote, inode = fields[1], fields[2], int(fields[9])
                        if (
                            inode
                            and int(local.rsplit(":", 1)[1], 16) == client_port
                            and int(remote.rsplit(":", 1)[1], 16) == server_port
                        ):
                            return inode
            except FileNotFoundError:
                continue
        return None

    @staticmethod
    def _holds(pid: int, target: str) -> bool:
        try:
            with os.scandir(f"/proc/{pid}/fd") as fds:
                for fd in fds:
                    try:
                        if os.readlink(fd.path) == target:
                            return True
                    except OSError:
                        continue
        except OSError:
            return False
        return False


class Recorder:
    """The stand-in service.  A context manager: entering starts it on a free port.

    ``latency`` is a ``(low, high)`` range of seconds spent on each effect request after
    the effect is applied (uniform, drawn from ``random.Random(seed)``); ``delay``, if
    given, is called with the :class:`Call` instead and returns the seconds to spend.
    ``identify_clients`` records each call's ``client_pid`` (Linux ``/proc``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: tuple[float, float] = (0.0, 0.0),
        seed: int | None = None,
        delay: Callable[[Call], float] | None = None,
        identify_clients: bool = False,
    ) -> None:
        low, high = latency
        if low < 0 or high < low:
            raise ValueError(f"latency must be a (low, high) range of seconds, got {latency!r}")
        self.latency = (low, high)
        self.delay = delay
        self.identify_clients = identify_clients
        self._clients = _ClientPids()
        self._host, self._port = host, port
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._effects: dict[str, Effect] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Recorder:
        if self._server is not None:
            raise RuntimeError("the recorder is already running")
        self._server = _Server(self, self._host, self._port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="recorder",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        if thread is not None:
            thread.join()
        server.server_close()

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the recorder is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- what happened --------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every request so far, in arrival order (a snapshot)."""
        with self._lock:
            return list(self._calls)

    @property
    def effects(self) -> dict[str, Effect]:
        """The applied effects by idempotency key, in the order applied (a snapshot)."""
        with self._lock:
            return dict(self._effects)

    def attempts(self) -> Counter[str]:
        """How many requests each idempotency key took (1 = never repeated)."""
        return Counter(c.idempotency_key for c in self.calls if c.idempotency_key is not None)

    def in_flight_at(self, instant: float) -> list[Call]:
        """The calls received but not yet answered at monotonic ``instant``."""
        return [c for c in self.calls if c.in_flight_at(instant)]

    def wait_for(
        self, predicate: Callable[[Call], bool], *, timeout: float, interval: float = 0.002
    ) -> Call | None:
        """The first call matching ``predicate``, waiting up to ``timeout`` s; None."""
        until = time.monotonic() + timeout
        while True:
            found = next((c for c in self.calls if predicate(c)), None)
            if found is not None or time.monotonic() >= until:
                return found
            time.sleep(interval)

    # ---- the request path (called by the handler threads) ----------------------------------

    def _arrive(
        self,
        *,
        method: str,
        path: str,
        body: str,
        key: str | None,
        run_id: str | None,
        step: str | None,
        client_pid: int | None = None,
    ) -> tuple[int, int, dict[str, Any], bool]:
        now = time.monotonic()
        with self._lock:
            index = len(self._calls)
            replayed = False
            if not key:
                status = 400
                response: dict[str, Any] = {"error": "an Idempotency-Key header is required"}
            elif key in self._effects:
                effect = self._effects[key]
                self._effects[key] = dataclasses.replace(effect, attempts=effect.attempts + 1)
                status, response, replayed = 200, effect.response, True
            else:
                number = len(self._effects) + 1
                response = {"key": key, "effect": number, "path": path, "step": step}
                self._effects[key] = Effect(
                    key=key,
                    path=path,
                    body=body,
                    step=step,
                    number=number,
                    applied=1,
                    attempts=1,
                    response=response,
                    applied_at=now,
                )
                status = 201
            self._calls.append(
                Call(
                    seq=index + 1,
                    method=method,
                    path=path,
                    body=body,
                    idempotency_key=key,
                    run_id=run_id,
                    step=step,
                    wall=time.time(),
                    received_at=now,
                    replayed=replayed,
                    status=status,
                    client_pid=client_pid,
                )
            )
        return index, status, response, replayed

    def _delay(self, index: int | None = None) -> float:
        if self.delay is not None and index is not None:
            with self._lock:
                call = self._calls[index]
            return max(0.0, float(self.delay(call)))
        low, high = self.latency
        if high <= 0:
            return 0.0
        with self._lock:
            return self._rng.uniform(low, high)

    def _answering(self, index: int) -> None:
        with self._lock:
            call = self._calls[index]
            self._calls[index] = dataclasses.replace(call, answering_at=time.monotonic())

    def _answered(self, index: int, delivered: bool) -> None:
        with self._lock:
            call = self._calls[index]
            self._calls[index] = dataclasses.replace(
                call, answered_at=time.monotonic(), delivered=delivered
            )


def _seconds(text: str) -> float:
    text = text.strip()
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    return float(text.removesuffix("s"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--latency", default="0", help="LOW..HIGH, e.g. 5ms..30ms")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    low, _, high = args.latency.partition("..")
    latency = (_seconds(low), _seconds(high or low))
    with Recorder(host=args.host, port=args.port, latency=latency, seed=args.seed) as recorder:
        print(f"recorder listening on {recorder.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
