"""send_email against a real SMTP server (aiosmtpd) on a free loopback port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope

from legato.actions.send_email import EmailSettings, message_id_for
from legato.activity import ActivityContext, ActivityRegistry
from legato.errors import ErrorClass, StepError


class Sink:
    """Keeps every message; refuses recipients listed in ``refuse`` with their reply."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Envelope, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[Message]:
        return [message_from_bytes(e.original_content or b"") for e in self.envelopes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reject_everyone(*args: Any) -> AuthResult:
    return AuthResult(success=False, handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@pytest.fixture
async def registry(smtp: tuple[Sink, int]) -> AsyncIterator[ActivityRegistry]:
    _, port = smtp
    settings = EmailSettings(host="127.0.0.1", port=port, sender="Billing <billing@example.com>")
    async with ActivityRegistry(email=settings) as reg:
        yield reg.include_builtins()


def _ctx(registry: ActivityRegistry, attempt: int = 1) -> ActivityContext:
    return registry.context(
        run_id="run-7", workflow="onboarding", step="welcome", attempt=attempt, idempotency_key="k7"
    )


WELCOME = {
    "to": ["Ann <ann@example.com>", "bob@example.com"],
    "cc": "carol@example.com",
    "subject": "Welcome!",
    "body": "Welcome to our platform!",
}


async def test_message_arrives_with_the_right_headers(
    smtp: tuple[Sink, int], registry: ActivityRegistry
) -> None:
    sink, _ = smtp
    result = await registry.invoke(
        "send_email", {**WELCOME, "bcc": "dan@example.com"}, _ctx(registry)
    )
    assert result == {
        "sent": True,
        "to": ["Ann <ann@example.com>", "bob@example.com"],
        "message_id": message_id_for("k7", "billing@example.com"),
    }
    [envelope] = sink.envelopes
    assert envelope.mail_from == "billing@example.com"
    assert sorted(envelope.rcpt_tos) == [
        "ann@example.com",
        "bob@example.com",
        "carol@example.com",
        "dan@example.com",
    ]
    [message] = sink.messages()
    assert message["From"] == "Billing <billing@example.com>"
    assert message["To"] == "Ann <ann@example.com>, bob@example.com"
    assert message["Cc"] == "carol@example.com"
    assert message["Bcc"] is None
    assert message["Subject"] == "Welcome!"
    assert message["Message-ID"] == result["message_id"]
    assert message["X-Legato-Run-Id"] == "run-7"
    assert message["X-Legato-Step"] == "welcome"
    assert message.get_payload(decode=True).decode().strip() == "Welcome to our platform!"


async def test_a_retried_send_carries_the_same_message_id(
    smtp: tuple[Sink, int], registry: ActivityRegistry
) -> None:
    sink, _ = smtp
    first = await registry.invoke("send_email", WELCOME, _ctx(registry, 1))
    again = await registry.invoke("send_email", WELCOME, _ctx(registry, 2))
    assert first["message_id"] == again["message_id"]
    assert [m["Message-ID"] for m in sink.messages()] == [first["message_id"]] * 2


async def test_from_in_the_input_replaces_the_default_sender(
    smtp: tuple[Sink, int], registry: ActivityRegistry
) -> None:
    sink, _ = smtp
    await registry.invoke("send_email", {**WELCOME, "from": "support@example.org"}, _ctx(registry))
    assert sink.envelopes[0].mail_from == "support@example.org"
    assert sink.messages()[0]["Message-ID"].endswith("@example.org>")


async def test_bad_address_is_validation_and_nothing_is_sent(
    smtp: tuple[Sink, int], registry: ActivityRegistry
) -> None:
    sink, _ = smtp
    with pytest.raises(StepError) as info:
        await registry.invoke("send_email", {**WELCOME, "to": "ann.example.com"}, _ctx(registry))
    assert info.value.error_class is ErrorClass.VALIDATION
    assert sink.envelopes == []


@pytest.mark.parametrize(
    ("reply", "error_class"),
    [
        ("550 5.1.1 no such user", ErrorClass.PERMANENT),
        ("451 4.3.0 try later", ErrorClass.RETRYABLE),
    ],
)
async def test_refused_recipient_is_classified_by_its_code(
    reply: str, error_class: ErrorClass, smtp: tuple[Sink, int], registry: ActivityRegistry
) -> None:
    sink, _ = smtp
    sink.refuse["ghost@example.com"] = reply
    with pytest.raises(StepError) as info:
        await registry.invoke(
            "send_email", {**WELCOME, "to": "ghost@example.com", "cc": None}, _ctx(registry)
        )
    assert info.value.error_class is error_class


async def test_refused_connection_is_retryable() -> None:
    async with ActivityRegistry(email=EmailSettings(host="127.0.0.1", port=_free_port())) as reg:
        reg.include_builtins()
        with pytest.raises(StepError) as info:
            await reg.invoke("send_email", WELCOME, _ctx(reg))
    assert info.value.error_class is ErrorClass.RETRYABLE
    assert info.value.details["smtp_port"] > 0


async def test_failed_login_is_auth_failed_and_hides_the_password() -> None:
    sink = Sink()
    port = _free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        authenticator=_reject_everyone,
        auth_require_tls=False,
    )
    controller.start()
    try:
        settings = EmailSettings(host="127.0.0.1", port=port, user="mailer", password="hunter2")
        async with ActivityRegistry(email=settings) as reg:
            reg.include_builtins()
            with pytest.raises(StepError) as info:
                await reg.invoke("send_email", WELCOME, _ctx(reg))
    finally:
        controller.stop()
    assert info.value.error_class is ErrorClass.AUTH_FAILED
    assert "hunter2" not in str(info.value.to_dict())
    assert sink.envelopes == []
