"""``POST /api/v1/webhooks/{tenant_id}/{environment_id}/{workflow_id}``: a signed delivery
starts one workflow (``legato.triggers.webhooks``).

No bearer token: the HMAC signature is the authentication, made with the workflow's own
secret (its trigger names the environment variable holding it, ``secret_env``; see
docs/decisions/0006-webhook-secrets.md).  The tenant and environment are in the path,
since a third-party sender cannot carry a Legato token.  An application may replace how
secrets are found by setting ``app.state.webhook_secrets`` to a
:data:`~legato.triggers.webhooks.SecretResolver`.

Answers: 202 started; 200 skipped (disabled, or the trigger's conditions do not hold);
401 bad signature or stale timestamp; 404 no such webhook; 409 a replay or redelivery
(nothing started); 422 a body that is not JSON; 503 the webhook's secret is not
configured.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from legato.api.bodies import MAX_BODY_BYTES
from legato.api.deps import engine_of
from legato.api.problems import ApiError, PayloadTooLarge, problem, responses
from legato.errors import ConfigurationError, NotFoundError
from legato.store import Scope
from legato.triggers.webhooks import WebhookSignatureError, accept_webhook

log = logging.getLogger("legato.api")

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

PathPart = Annotated[str, Path(min_length=1, max_length=200)]


class SignatureRejected(ApiError):
    """The webhook delivery is not signed correctly."""

    status = 401
    slug = "bad-signature"
    title = "Webhook signature rejected"


class WebhookUnavailable(ApiError):
    """This webhook cannot accept deliveries now."""

    status = 503
    slug = "webhook-unavailable"
    title = "Webhook unavailable"


class WebhookAccepted(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    status: Literal["started", "skipped"]
    execution_id: str | None = None
    reason: str | None = None
    detail: str | None = None


async def _raw_body(request: Request) -> bytes:
    """The exact bytes received (signatures cover bytes), at most MAX_BODY_BYTES."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
        chunks.append(chunk)
    return b"".join(chunks)


_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "JSON; it becomes the execution's input. Sign the exact bytes: "
        "`X-Legato-Signature: sha256=<hex HMAC-SHA256 of '<X-Legato-Timestamp>.<body>'>`",
        "content": {"application/json": {"schema": {}}},
    }
}


@router.post(
    "/{tenant_id}/{environment_id}/{workflow_id}",
    response_model=WebhookAccepted,
    status_code=202,
    summary="Deliver a signed webhook; the workflow starts",
    openapi_extra=_BODY,
    responses={
        200: {"description": "Skipped (disabled, or conditions false)", "model": WebhookAccepted},
        **responses(401, 404, 409, 413, 422, 503),
    },
)
async def deliver_webhook(
    tenant_id: PathPart,
    environment_id: PathPart,
    workflow_id: PathPart,
    request: Request,
) -> Any:
    body = await _raw_body(request)
    engine = engine_of(request)
    scope = Scope(tenant_id, environment_id)
    try:
        result = await accept_webhook(
            engine,
            scope,
            workflow_id,
            body,
            request.headers,
            secrets=getattr(request.app.state, "webhook_secrets", None),
        )
    except WebhookSignatureError as exc:
        raise SignatureRejected(exc.message) from None
    except NotFoundError:
        # The sender carries no bearer token: say the same whether the workflow does not
        # exist, lives in another tenant, or takes no webhooks, so nothing is disclosed.
        raise NotFoundError(
            "no webhook endpoint at this address. Fix: check the tenant, environment and "
            "workflow id in the URL, and that the workflow's trigger is `type: webhook`"
        ) from None
    except ConfigurationError:
        # Logged by accept_webhook; the sender learns only that it cannot deliver now.
        raise WebhookUnavailable(
            "this webhook cannot accept deliveries now. Fix: the operator must configure "
            "its secret; then send the delivery again",
            headers={"Retry-After": "60"},
        ) from None
    if result.status == "duplicate":
        return problem(
            409,
            slug="replayed-delivery",
            title="Delivery already accepted",
            detail=(
                "This delivery was accepted already (a replay or a redelivery), so nothing "
                "started. Fix: nothing to do; to start the workflow again, send a new "
                "delivery with a fresh timestamp"
            ),
            instance=request.url.path,
            extra={"execution_id": result.run_id},
        )
    status = 202 if result.status == "started" else 200
    return JSONResponse(result.to_json(), status_code=status)
