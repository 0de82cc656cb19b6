"""Webhook triggers: a signed HTTP delivery starts one workflow.

The signature scheme (HMAC-SHA256, hex)::

    X-Legato-Timestamp: 1734602400                  (unix seconds)
    X-Legato-Signature: sha256=<hex of HMAC(secret, "<timestamp>.<body>")>

or the combined form ``X-Legato-Signature: t=1734602400,v1=<hex>`` (several ``v1=`` are
allowed, for a sender rotating its secret).  An optional ``X-Legato-Delivery: <id>``
names the delivery; it counts only when the signature covers it, i.e. the HMAC is over
``"<timestamp>.<delivery>.<body>"``.

Checks, in order: the signature must match (constant-time compare); the timestamp must
be within ``tolerance`` seconds (300) of now, in either direction; the delivery must be
new.  Replay protection needs no table and holds across processes and restarts: the run
id is derived from the delivery id when it is signed, otherwise from the signature
itself, so a replayed request conflicts in ``create_run`` for as long as its timestamp
is inside the window, and is stale afterwards.

Secrets live outside the definition and the store: the trigger names an environment
variable (``trigger: {type: webhook, secret_env: WEBHOOK_SECRET_ORDERS}``), read when a
delivery arrives (docs/decisions/0006-webhook-secrets.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from legato.errors import ConfigurationError, ConflictError, InputError, NotFoundError
from legato.runtime.local import Engine
from legato.store import Scope
from legato.triggers._common import (
    check_conditions,
    condition_scope,
    derive_run_id,
    header,
    run_input,
)
from legato.triggers.catalog import Candidate, workflow_candidate

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SecretResolver",
    "VerifiedDelivery",
    "WebhookResult",
    "WebhookSignatureError",
    "accept_webhook",
    "env_secret_resolver",
    "sign",
    "verify_signature",
    "webhook_run_id",
]

log = logging.getLogger("legato.triggers.webhooks")

SIGNATURE_HEADER = "X-Legato-Signature"
TIMESTAMP_HEADER = "X-Legato-Timestamp"
DELIVERY_HEADER = "X-Legato-Delivery"
DEFAULT_TOLERANCE = 300
MAX_DELIVERY_ID = 200
_HEX_RE = re.compile(r"[0-9a-fA-F]{64}")
_SECRET_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Secret = str | bytes
SecretResolver = Callable[[Scope, Candidate], "Secret | Sequence[Secret] | None"]
"""Returns the secret(s) of a webhook workflow, or None when none is configured."""


class WebhookSignatureError(InputError):
    """The webhook delivery is not signed correctly (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class VerifiedDelivery:
    """A delivery whose signature matched.  ``dedup_key`` identifies it: ``delivery:<id>``
    when the signature covers the delivery id, else ``sig:<signature>``."""

    timestamp: int
    signature: str
    delivery_id: str | None
    dedup_key: str


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """``status``: ``started``, ``duplicate`` (a replay or a redelivery: nothing started;
    ``run_id`` is the run the first one started) or ``skipped`` (the workflow is
    disabled, or its trigger conditions do not hold; ``reason`` says which)."""

    workflow_id: str
    status: str
    run_id: str | None = None
    reason: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"workflow_id": self.workflow_id, "status": self.status}
        if self.run_id is not None:
            out["execution_id"] = self.run_id
        if self.reason is not None:
            out["reason"] = self.reason
        if self.detail is not None:
            out["detail"] = self.detail
        return out


def _key(secret: Secret) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def _mac(secret: Secret, timestamp: str, body: bytes, delivery: str | None = None) -> str:
    prefix = f"{timestamp}." if delivery is None else f"{timestamp}.{delivery}."
    return hmac.new(_key(secret), prefix.encode() + body, hashlib.sha256).hexdigest()


def sign(
    secret: Secret, body: bytes, *, timestamp: int, delivery_id: str | None = None
) -> dict[str, str]:
    """The headers a sender attaches (for senders written in Python, and for tests)."""
    headers = {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: "sha256=" + _mac(secret, str(timestamp), body, delivery_id),
    }
    if delivery_id is not None:
        headers[DELIVERY_HEADER] = delivery_id
    return headers


def _reject(message: str, **details: Any) -> WebhookSignatureError:
    return WebhookSignatureError(message, details=details)


def _parse_signature(headers: Any) -> tuple[str, list[str]]:
    """(timestamp text, candidate signatures) from the headers."""
    raw = header(headers, SIGNATURE_HEADER)
    if raw is None or not raw.strip():
        raise _reject(
            f"the delivery has no {SIGNATURE_HEADER} header; sign it: "
            f"{SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256 of '<timestamp>.<body>'> with "
            f"{TIMESTAMP_HEADER}: <unix seconds>"
        )
    raw = raw.strip()
    timestamp = header(headers, TIMESTAMP_HEADER)
    signatures: list[str] = []
    if raw.startswith("sha256="):
        signatures = [
            part.strip()[len("sha256=") :]
            for part in raw.split(",")
            if part.strip().startswith("sha256=")
        ]
    else:  # t=...,v1=...
        for part in raw.split(","):
            name, sep, value = part.strip().partition("=")
            if not sep:
                continue
            if name == "t":
                timestamp = value.strip()
            elif name == "v1":
                signatures.append(value.strip())
    signatures = [s.lower() for s in signatures if _HEX_RE.fullmatch(s)]
    if not signatures:
        raise _reject(
            f"{SIGNATURE_HEADER} holds no signature; write `sha256=<64 hex digits>` "
            "or `t=<unix seconds>,v1=<64 hex digits>`"
        )
    if timestamp is None or not timestamp.strip().isdigit():
        raise _reject(
            f"the delivery has no valid {TIMESTAMP_HEADER} (unix seconds); it is signed "
            "together with the body and bounds replays"
        )
    return timestamp.strip(), signatures


def verify_signature(
    secret: Secret | Sequence[Secret],
    body: bytes,
    headers: Any,
    *,
    now: datetime | float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> VerifiedDelivery:
    """Check a delivery's signature and timestamp; WebhookSignatureError when it is not
    signed with (one of) ``secret``, or its timestamp is outside ``tolerance`` seconds of
    ``now``.  Replays are caught later, by the run id (see the module)."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise _reject("the body must be the raw bytes received; signatures cover bytes")
    body = bytes(body)
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
    if not secrets or any(not s for s in secrets):
        raise ConfigurationError("a webhook secret must not be empty")
    timestamp, signatures = _parse_signature(headers)
    delivery = header(headers, DELIVERY_HEADER)
    if delivery is not None:
        delivery = delivery.strip()
        if not delivery or len(delivery) > MAX_DELIVERY_ID or not delivery.isprintable():
            raise _reject(f"{DELIVERY_HEADER} must be 1 to {MAX_DELIVERY_ID} printable characters")
    matched: str | None = None
    covers_delivery = False
    # Compare against every candidate with compare_digest: no early exit on a prefix.
    for key in secrets:
        plain = _mac(key, timestamp, body)
        with_delivery = _mac(key, timestamp, body, delivery) if delivery else None
        for sig in signatures:
            if with_delivery is not None and hmac.compare_digest(with_delivery, sig):
                matched, covers_delivery = sig, True
            elif hmac.compare_digest(plain, sig) and matched is None:
                matched = sig
    if matched is None:
        raise _reject(
            "the signature does not match: sign the exact body bytes with the workflow's "
            f"secret as HMAC-SHA256 of '<{TIMESTAMP_HEADER}>.<body>'"
        )
    instant = now.timestamp() if isinstance(now, datetime) else float(now)
    age = instant - int(timestamp)
    if abs(age) > tolerance:
        raise _reject(
            f"the delivery's timestamp is {abs(age):.0f} s "
            f"{'old' if age > 0 else 'in the future'}, outside the {tolerance:.0f} s window; "
            "send it again with a fresh timestamp and signature (check the sender's clock)",
            age=round(age),
        )
    return VerifiedDelivery(
        timestamp=int(timestamp),
        signature=matched,
        delivery_id=delivery if covers_delivery else None,
        dedup_key=f"delivery:{delivery}" if covers_delivery else f"sig:{matched}",
    )


def webhook_run_id(scope: Scope, workflow_id: str, dedup_key: str) -> str:
    return derive_run_id("whk", scope, workflow_id, dedup_key)


def env_secret_resolver(environ: Mapping[str, str] | None = None) -> SecretResolver:
    """The default: the environment variable named by the trigger's ``secret_env``."""

    def resolve(scope: Scope, candidate: Candidate) -> Secret | None:
        name = getattr(candidate.trigger, "secret_env", None)
        if not name:
            return None
        if not isinstance(name, str) or not _SECRET_ENV_RE.fullmatch(name):
            raise ConfigurationError(
                f"workflow {candidate.workflow_id!r}: trigger.secret_env must name an "
                f"environment variable, got {name!r:.60}"
            )
        env = os.environ if environ is None else environ
        return env.get(name) or None

    return resolve


def _parse_body(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(
            f"the webhook body must be JSON (it becomes the run's input): {exc}"
        ) from None


async def accept_webhook(
    engine: Engine,
    scope: Scope,
    definition_id: str,
    body: bytes,
    headers: Any,
    *,
    secrets: SecretResolver | None = None,
    now: datetime | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> WebhookResult:
    """Verify a delivery for workflow ``definition_id`` of ``scope`` and start it.

    NotFoundError: no such workflow, or its trigger is not ``type: webhook``.
    ConfigurationError: its secret is not configured (the operator's problem; the caller
    should answer 503 and not say why).  WebhookSignatureError: bad signature or stale
    timestamp (401).  InputError: the body is not JSON (400).  A replayed or redelivered
    delivery returns ``status="duplicate"`` and starts nothing."""
    candidate = await workflow_candidate(engine.store, engine.programs, scope, definition_id)
    if candidate.trigger.type != "webhook":
        raise NotFoundError(
            f"workflow {definition_id!r} in {scope} has no webhook trigger; give it "
            "`trigger: {type: webhook, secret_env: ...}`",
            details={"workflow_id": definition_id},
        )
    resolver = secrets or env_secret_resolver()
    secret = resolver(scope, candidate)
    if not secret:
        log.error(
            "webhook for workflow %r (%s) has no secret configured: set the environment "
            "variable named by its trigger.secret_env",
            definition_id,
            scope,
            extra={"workflow": definition_id, "tenant": scope.tenant_id},
        )
        raise ConfigurationError(
            f"the webhook secret of workflow {definition_id!r} is not configured",
            details={"workflow_id": definition_id},
        )
    when = now or engine.clock.now()
    verified = verify_signature(secret, body, headers, now=when, tolerance=tolerance)
    wid = candidate.workflow_id
    if not candidate.enabled:
        return WebhookResult(wid, "skipped", reason="disabled")
    payload = _parse_body(body)
    outcome = check_conditions(candidate.trigger, condition_scope(payload))
    if not outcome.holds:
        return WebhookResult(wid, "skipped", reason=outcome.reason, detail=outcome.detail)
    run_id = webhook_run_id(scope, wid, verified.dedup_key)
    envelope = {
        "type": "webhook",
        "workflow_id": wid,
        "delivery_id": verified.delivery_id,
        "timestamp": verified.timestamp,
        "received_at": when.astimezone(UTC).isoformat(),
    }
    try:
        await engine.for_scope(scope).start(
            candidate.workflow,
            run_input(payload, envelope),
            version=candidate.version,
            run_id=run_id,
        )
    except ConflictError:
        log.warning(
            "webhook for workflow %r (%s): delivery replayed or redelivered; nothing started",
            wid,
            scope,
            extra={"workflow": wid, "run_id": run_id},
        )
        return WebhookResult(wid, "duplicate", run_id=run_id, reason="replayed")
    return WebhookResult(wid, "started", run_id=run_id)
