"""Triggers: what starts runs from outside.

* :mod:`~legato.triggers.events`: CloudEvents fan out to every matching workflow of a
  tenant and environment, deduplicated by the event's ``source`` and ``id``;
* :mod:`~legato.triggers.webhooks`: signed HTTP deliveries (HMAC-SHA256, timestamped,
  replay-proof) start one workflow;
* :mod:`~legato.triggers.cron`: the :class:`Scheduler` fires each cron tick exactly once
  across restarts and processes.

Each derives a start's run id from what makes it unique, so ``create_run`` refuses a
second start (docs/reference/triggers.md).
"""

from legato.triggers._common import TRIGGER_KEY
from legato.triggers.cron import Schedule, Scheduler, TickResult, parse_schedule
from legato.triggers.events import EventResult, accept_event, accept_events
from legato.triggers.webhooks import (
    WebhookResult,
    WebhookSignatureError,
    accept_webhook,
    sign,
    verify_signature,
)

__all__ = [
    "TRIGGER_KEY",
    "EventResult",
    "Schedule",
    "Scheduler",
    "TickResult",
    "WebhookResult",
    "WebhookSignatureError",
    "accept_event",
    "accept_events",
    "accept_webhook",
    "parse_schedule",
    "sign",
    "verify_signature",
]
