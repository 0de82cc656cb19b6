"""``send_email``: send a plain-text email over SMTP.

Input ``{to, subject, body, from?, cc?, bcc?, reply_to?}`` (``to``, ``cc`` and ``bcc``
are one address or a list).  Output ``{"sent": true, "to": [...], "message_id": ...}``.

The server comes from :class:`EmailSettings`, given to the registry; the password is never
logged nor put in an error.  The ``Message-ID`` is derived from the step's idempotency key,
so every attempt of one step sends the same ID and a retried send is recognisable.

Failures: a bad address or header -> VALIDATION; connection refused, a 4xx reply or a
dropped connection -> RETRYABLE; a socket timeout -> TIMEOUT; failed login -> AUTH_FAILED;
other 5xx replies (a refused recipient or sender) -> PERMANENT.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, formatdate, getaddresses, parseaddr
from typing import Any

from legato.activity import ActivityContext, activity
from legato.errors import ErrorClass, StepError

__all__ = ["EmailSettings", "make_send_email"]

_KEYS = frozenset({"to", "subject", "body", "from", "cc", "bcc", "reply_to"})


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailSettings:
    """How ``send_email`` reaches the SMTP server.

    ``starttls`` upgrades a plain connection; ``use_ssl`` connects with implicit TLS (port
    465).  ``user``/``password`` log in when given.  ``sender`` is the default ``From``.
    """

    host: str = "localhost"
    port: int = 1025
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    use_ssl: bool = False
    timeout: float = 30.0
    sender: str = "legato@localhost"

    def __post_init__(self) -> None:
        if self.starttls and self.use_ssl:
            raise ValueError("EmailSettings: choose starttls or use_ssl, not both")
        if not 0 < self.port < 65536:
            raise ValueError(f"EmailSettings: port {self.port} is out of range")


def _invalid(message: str, **details: Any) -> StepError:
    return StepError(f"send_email: {message}", error_class=ErrorClass.VALIDATION, details=details)


def _addresses(value: Any, field_name: str, *, required: bool) -> list[str]:
    if value is None or value == [] or value == "":
        if required:
            raise _invalid(f"`{field_name}` is required (an address or a list of addresses)")
        return []
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _invalid(f"`{field_name}` holds {item!r}, which is not an address")
        if any(c in item for c in "\r\n"):
            raise _invalid(f"`{field_name}` contains a line break", field=field_name)
        for name, addr in getaddresses([item]):
            local, at, domain = addr.rpartition("@")
            if not at or not local or not domain or " " in addr:
                raise _invalid(
                    f"{item.strip()!r} in `{field_name}` is not an email address",
                    field=field_name,
                    address=item.strip(),
                )
            out.append(formataddr((name, addr)))
    return out


def _text(value: Any, field_name: str, *, header: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _invalid(f"`{field_name}` must be a string")
    if header and any(c in value for c in "\r\n"):
        raise _invalid(f"`{field_name}` contains a line break", field=field_name)
    return value


def message_id_for(idempotency_key: str, sender: str) -> str:
    """The Message-ID of every attempt of the step with this idempotency key."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "legato.invalid"
    return f"<legato.{digest}@{domain}>"


def _send(settings: EmailSettings, message: EmailMessage, sender: str, rcpts: list[str]) -> None:
    context = ssl.create_default_context() if (settings.use_ssl or settings.starttls) else None
    smtp: smtplib.SMTP
    if settings.use_ssl:
        smtp = smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=settings.timeout, context=context
        )
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    with smtp:
        if settings.starttls:
            smtp.starttls(context=context)
        if settings.user:
            smtp.login(settings.user, settings.password or "")
        smtp.send_message(message, from_addr=sender, to_addrs=rcpts)


def _classify(exc: Exception, settings: EmailSettings) -> StepError:
    where = f"SMTP server {settings.host}:{settings.port}"
    details: dict[str, Any] = {
        "smtp_host": settings.host,
        "smtp_port": settings.port,
        "exception_type": type(exc).__name__,
    }
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        details["smtp_code"] = exc.smtp_code
        return StepError(
            f"send_email: the {where} refused the login (code {exc.smtp_code}); check the "
            "SMTP user and password",
            error_class=ErrorClass.AUTH_FAILED,
            details=details,
        )
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = {rcpt: code for rcpt, (code, _) in exc.recipients.items()}
        details["refused"] = codes
        temporary = all(400 <= code < 500 for code in codes.values())
        return StepError(
            f"send_email: the {where} refused every recipient ({', '.join(codes)})",
            error_class=ErrorClass.RETRYABLE if temporary else ErrorClass.PERMANENT,
            details=details,
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        details["smtp_code"] = exc.smtp_code
        error = exc.smtp_error
        reply = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
        temporary = 400 <= exc.smtp_code < 500
        return StepError(
            f"send_email: the {where} replied {exc.smtp_code} {reply}",
            error_class=ErrorClass.RETRYABLE if temporary else ErrorClass.PERMANENT,
            details=details,
        )
    if isinstance(exc, TimeoutError):
        return StepError(
            f"send_email: the {where} did not answer in {settings.timeout}s",
            error_class=ErrorClass.TIMEOUT,
            details=details,
        )
    if isinstance(exc, ssl.SSLError | smtplib.SMTPNotSupportedError):
        return StepError(
            f"send_email: TLS with the {where} failed: {exc}",
            error_class=ErrorClass.PERMANENT,
            details=details,
        )
    # ConnectionRefusedError, SMTPServerDisconnected, DNS failures and other OSErrors.
    return StepError(
        f"send_email: cannot reach the {where}: {exc}",
        error_class=ErrorClass.RETRYABLE,
        details=details,
    )


def make_send_email(settings: EmailSettings) -> Any:
    """The ``send_email`` action bound to ``settings``."""

    @activity("send_email")
    async def send_email(email: Any, /, *, ctx: ActivityContext) -> dict[str, Any]:
        if not isinstance(email, dict):
            raise _invalid("the input must be an object with `to`, `subject` and `body`")
        unknown = sorted(set(email) - _KEYS)
        if unknown:
            raise _invalid(
                f"unknown input key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(_KEYS))}",
                unknown=unknown,
            )
        to = _addresses(email.get("to"), "to", required=True)
        cc = _addresses(email.get("cc"), "cc", required=False)
        bcc = _addresses(email.get("bcc"), "bcc", required=False)
        reply_to = _addresses(email.get("reply_to"), "reply_to", required=False)
        sender = _addresses(email.get("from") or settings.sender, "from", required=True)
        if len(sender) != 1:
            raise _invalid("`from` must be one address")
        subject = _text(email.get("subject"), "subject", header=True)
        body = _text(email.get("body"), "body", header=False)
        message_id = message_id_for(ctx.idempotency_key, sender[0])

        message = EmailMessage()
        message["From"] = sender[0]
        message["To"] = ", ".join(to)
        if cc:
            message["Cc"] = ", ".join(cc)
        if reply_to:
            message["Reply-To"] = ", ".join(reply_to)
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = message_id
        message["X-Legato-Run-Id"] = ctx.run_id
        message["X-Legato-Step"] = ctx.step
        message.set_content(body)

        envelope_from = parseaddr(sender[0])[1]
        rcpts = [addr for _, addr in getaddresses(to + cc + bcc)]
        try:
            await asyncio.to_thread(_send, settings, message, envelope_from, rcpts)
        except (smtplib.SMTPException, OSError) as exc:
            raise _classify(exc, settings) from exc
        ctx.logger.info("email sent: message_id=%s recipients=%d", message_id, len(rcpts))
        return {"sent": True, "to": to, "message_id": message_id}

    return send_email
