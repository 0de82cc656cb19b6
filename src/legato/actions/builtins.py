"""The built-in actions, by the name a task step uses.

``log_message`` is seed 001's name for ``log``.  ``send_email`` is built per registry,
since it carries the registry's SMTP settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from legato.actions.fail import fail, flaky
from legato.actions.http_request import http_request
from legato.actions.log import log
from legato.actions.noop import noop
from legato.actions.send_email import EmailSettings, make_send_email
from legato.actions.set_values import set_values
from legato.actions.sleep import sleep

__all__ = ["BUILTIN_NAMES", "builtin_activities"]

BUILTIN_NAMES: frozenset[str] = frozenset(
    {"log", "log_message", "set", "noop", "sleep", "fail", "flaky", "http_request", "send_email"}
)


def builtin_activities(*, email: EmailSettings) -> list[tuple[str, Callable[..., Any]]]:
    """Every built-in action as ``(name, function)``, ``send_email`` bound to ``email``."""
    return [
        ("log", log),
        ("log_message", log),
        ("set", set_values),
        ("noop", noop),
        ("sleep", sleep),
        ("fail", fail),
        ("flaky", flaky),
        ("http_request", http_request),
        ("send_email", make_send_email(email)),
    ]
