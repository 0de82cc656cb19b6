"""A local stand-in for the billing service of seed 002 (plans, wallets, credits, emails,
entitlements), so the onboarding example runs with nothing else installed.

Run it::

    python -m examples.billing.service --port 8765

or use it in-process (tests)::

    with BillingService() as billing:      # a free loopback port, served from a thread
        billing.url                        # "http://127.0.0.1:<port>"
        billing.calls()                    # every call, with its Idempotency-Key

Endpoints (JSON in, JSON out)::

    POST   /subscriptions          {customer_id, plan_id, currency}
                                   -> 201 {subscription_id, customer_id, plan_id, currency, status}
    DELETE /subscriptions/{id}     cancel (a compensation)   -> 200 {..., status: "cancelled"}
    POST   /wallets                {customer_id, currency, conversion_rate, initial_credits}
                                   -> 201 {wallet_id, balance, ...}
    POST   /wallets/{id}/credits   {amount, reason?}         -> 200 {wallet_id, granted, balance}
    DELETE /wallets/{id}           close (a compensation)    -> 200 {..., status: "closed"}
    POST   /emails                 {to, subject?, body?, template?}  -> 202 {message_id}
    POST   /entitlements           {customer_id, feature_id, usage_limit?}
                                   -> 201 {entitlement_id, ...}
    GET    /subscriptions/{id}, /wallets/{id}                -> the record
    GET    /calls                  every call but /calls and /faults: method, path,
                                   idempotency_key, attempt, status, body
    POST   /faults                 {method, path, status, times=1, retry_after?}: the next
                                   `times` calls to method+path answer `status` (for tests)

Idempotency: a POST or DELETE with an ``Idempotency-Key`` header is done once; a repeat
with the same key gets the stored response (and is counted as another attempt).  Reusing a
key for a different request is a 422.  Responses of 5xx and 429 are not stored, so a retry
after a failure does the work.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["BillingService", "BillingState", "main"]

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_CONTROL_PATHS = frozenset({"/calls", "/faults"})  # not recorded in the call log


@dataclass
class _Fault:
    method: str
    path: str
    status: int
    times: int
    retry_after: float | None = None


@dataclass
class BillingState:
    """The service's memory: records, the idempotency store and the call log."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    wallets: dict[str, dict[str, Any]] = field(default_factory=dict)
    emails: dict[str, dict[str, Any]] = field(default_factory=dict)
    entitlements: dict[str, dict[str, Any]] = field(default_factory=dict)
    stored: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.ids):04d}"


class _Reply(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _require(body: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if body.get(n) in (None, "")]
    if missing:
        raise _Reply(422, {"error": f"missing field(s): {', '.join(missing)}"})


def _currency(body: dict[str, Any]) -> str:
    currency = body.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise _Reply(422, {"error": f"currency must be a 3-letter code like USD, got {currency!r}"})
    return currency


def _number(body: dict[str, Any], name: str, default: float | None = None) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _Reply(422, {"error": f"{name} must be a number of zero or more, got {value!r}"})
    return value


def _route(state: BillingState, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """Do the work of one request (under the state lock); return (status, JSON body)."""
    parts = [p for p in path.split("/") if p]
    match method, parts:
        case "POST", ["subscriptions"]:
            _require(body, "customer_id", "plan_id")
            record = {
                "subscription_id": state.new_id("sub"),
                "customer_id": body["customer_id"],
                "plan_id": body["plan_id"],
                "currency": _currency(body),
                "status": "active",
            }
            state.subscriptions[record["subscription_id"]] = record
            return 201, record
        case "GET", ["subscriptions", sub_id]:
            return 200, _find(state.subscriptions, sub_id, "subscription")
        case "DELETE", ["subscriptions", sub_id]:
            record = _find(state.subscriptions, sub_id, "subscription")
            record["status"] = "cancelled"
            return 200, record
        case "POST", ["wallets"]:
            _require(body, "customer_id")
            credits = _number(body, "initial_credits", 0)
            record = {
                "wallet_id": state.new_id("wal"),
                "customer_id": body["customer_id"],
                "currency": _currency(body),
                "conversion_rate": _number(body, "conversion_rate", 1.0),
                "balance": credits,
                "status": "active",
            }
            state.wallets[record["wallet_id"]] = record
            return 201, record
        case "GET", ["wallets", wallet_id]:
            return 200, _find(state.wallets, wallet_id, "wallet")
        case "POST", ["wallets", wallet_id, "credits"]:
            record = _find(state.wallets, wallet_id, "wallet")
            if record["status"] != "active":
                raise _Reply(409, {"error": f"wallet {wallet_id} is {record['status']}"})
            amount = _number(body, "amount")
            record["balance"] += amount
            return 200, {
                "wallet_id": wallet_id,
                "granted": amount,
                "balance": record["balance"],
                "reason": body.get("reason"),
            }
        case "DELETE", ["wallets", wallet_id]:
            record = _find(state.wallets, wallet_id, "wallet")
            record["status"] = "closed"
            return 200, record
        case "POST", ["emails"]:
            _require(body, "to")
            message_id = state.new_id("msg")
            state.emails[message_id] = {"message_id": message_id, **body}
            return 202, {"message_id": message_id, "status": "queued"}
        case "POST", ["entitlements"]:
            _require(body, "customer_id", "feature_id")
            record = {
                "entitlement_id": state.new_id("ent"),
                "customer_id": body["customer_id"],
                "feature_id": body["feature_id"],
                "usage_limit": body.get("usage_limit"),
                "status": "active",
            }
            state.entitlements[record["entitlement_id"]] = record
            return 201, record
        case "POST", ["faults"]:
            _require(body, "method", "path", "status")
            state.faults.append(
                _Fault(
                    method=str(body["method"]).upper(),
                    path=str(body["path"]),
                    status=int(body["status"]),
                    times=int(body.get("times", 1)),
                    retry_after=body.get("retry_after"),
                )
            )
            return 201, {"armed": True}
        case "GET", ["calls"]:
            return 200, {"calls": list(state.calls)}
    raise _Reply(404, {"error": f"no route for {method} {path}"})


def _find(table: dict[str, dict[str, Any]], key: str, what: str) -> dict[str, Any]:
    record = table.get(key)
    if record is None:
        raise _Reply(404, {"error": f"{what} {key} not found"})
    return record


def handle(
    state: BillingState, method: str, path: str, key: str | None, body: dict[str, Any]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request, idempotency and faults included: (status, JSON body, extra headers)."""
    with state.lock:
        attempt = 1
        fingerprint = json.dumps([method, path, body], sort_keys=True)
        if key is not None and method in ("POST", "DELETE"):
            attempt = state.attempts.get(key, 0) + 1
            state.attempts[key] = attempt
        call = {
            "method": method,
            "path": path,
            "idempotency_key": key,
            "attempt": attempt,
            "body": body,
        }
        if path not in _CONTROL_PATHS:
            state.calls.append(call)
        headers: dict[str, str] = {}
        status: int
        reply: dict[str, Any]
        for fault in state.faults:
            if fault.method == method and fault.path == path and fault.times > 0:
                fault.times -= 1
                status, reply = fault.status, {"error": f"injected fault {fault.status}"}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                break
        else:
            stored = state.stored.get(key) if key is not None else None
            if stored is not None and stored[0] != fingerprint:
                status, reply = (
                    422,
                    {"error": "this Idempotency-Key was used for a different request"},
                )
            elif stored is not None:
                status, reply = stored[1], stored[2]
                headers["Idempotent-Replayed"] = "true"
            else:
                try:
                    status, reply = _route(state, method, path, body)
                except _Reply as r:
                    status, reply = r.status, r.body
                storable = status < 500 and status != 429
                if key is not None and method in ("POST", "DELETE") and storable:
                    state.stored[key] = (fingerprint, status, json.loads(json.dumps(reply)))
        call["status"] = status
        return status, json.loads(json.dumps(reply)), headers


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            self._reply(400, {"error": f"invalid JSON: {exc}"}, {})
            return
        key = self.headers.get("Idempotency-Key")
        path = self.path.split("?", 1)[0]
        status, reply, headers = handle(self.server.state, self.command, path, key, body)
        self._reply(status, reply, headers)

    def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: BillingState, verbose: bool) -> None:
        self.state = state
        self.verbose = verbose
        super().__init__(address, _Handler)


class BillingService:
    """The stand-in served from a thread on loopback; a context manager.

    ``port=0`` picks a free port.  ``url``, ``calls()``, ``attempts(key)``,
    ``fail_next(...)`` and ``stop()``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False) -> None:
        self.state = BillingState()
        self._server = _Server((host, port), self.state, verbose)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> BillingService:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                args=(0.05,),  # poll often, so stop() returns at once
                name="billing-service",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> BillingService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def calls(self) -> list[dict[str, Any]]:
        """Every call so far: method, path, idempotency_key, attempt, status, body."""
        with self.state.lock:
            calls: list[dict[str, Any]] = json.loads(json.dumps(self.state.calls))
        return calls

    def attempts(self, key: str) -> int:
        """How many times a request with this Idempotency-Key arrived."""
        with self.state.lock:
            return self.state.attempts.get(key, 0)

    def fail_next(
        self,
        method: str,
        path: str,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Make the next ``times`` calls to ``method path`` answer ``status``."""
        with self.state.lock:
            self.state.faults.append(_Fault(method.upper(), path, status, times, retry_after))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    service = BillingService(args.host, args.port, verbose=not args.quiet)
    print(f"billing stand-in listening on {service.url} (Ctrl-C to stop)", flush=True)
    try:
        service._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service._server.server_close()


if __name__ == "__main__":
    main()
