"""Mock services: local stand-ins for external services, over HTTP and gRPC.

Script each operation's answers, latency and failures, point a workflow (or a
connector) at the stand-in, and read back every call it received::

    from legato.mock import MockService

    svc = MockService("background-check")
    svc.operation("criminal.check").respond({"status": "clear"}).after_errors(2, status=503)
    svc.operation("payment.charge").rate_limited(times=1, retry_after=1).respond({"id": "ch_1"})

    with svc.http() as url:                 # POST {url}/criminal/check
        ...
    async with svc.grpc() as address:       # ExecuteTask(task_type="criminal.check")
        ...
    svc.calls("criminal.check")             # [Call(idempotency_key=..., attempt=..., ...)]
    svc.attempts("run-1/check")             # 3

Or from YAML, without code: ``MockService.from_file("mocks/background-check.yaml")``, and
from a shell: ``python -m legato.mock mocks/background-check.yaml --port 8081``.
See docs/reference/mock-services.md.
"""

from __future__ import annotations

from legato.mock._core import Call, Callback, MockOperation, MockRequest, MockService, Plan

__all__ = ["Call", "Callback", "MockOperation", "MockRequest", "MockService", "Plan"]
