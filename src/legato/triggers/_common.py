"""What every trigger shares: deterministic run ids, the run's input, conditions, starting.

A trigger never decides "have I already started this?" by looking around: it derives the
run's id from what makes the start unique (the event's id, the webhook delivery, the cron
tick) and lets ``create_run`` refuse a second run with that id (``ConflictError``).  The
runs table is the dedup table, shared by every process on the database and kept across
restarts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from legato.dsl.expr import test
from legato.dsl.model import Trigger
from legato.errors import ExpressionError
from legato.store import Scope

TRIGGER_KEY = "_trigger"
"""The key of the run's input that holds the trigger's envelope (event attributes, the
webhook delivery, the cron tick).  Reserved: a payload's own ``_trigger`` is replaced."""


def derive_run_id(prefix: str, scope: Scope, workflow_id: str, *parts: str) -> str:
    """``<prefix>_`` + 24 hex digits of SHA-256 over the scope, the workflow and ``parts``.

    The parts are hashed as a JSON list, so no choice of separator can make two different
    tuples collide (``("a.b", "c")`` vs ``("a", "b.c")``)."""
    material = json.dumps(
        [scope.tenant_id, scope.environment_id, workflow_id, *parts],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return f"{prefix}_{hashlib.sha256(material.encode()).hexdigest()[:24]}"


def run_input(payload: Any, envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The run's input: the payload's keys (an object) or ``{"data": payload}`` (anything
    else), plus ``_trigger``: the envelope."""
    base = dict(payload) if isinstance(payload, Mapping) else {"data": payload}
    base[TRIGGER_KEY] = dict(envelope)
    return base


def condition_scope(data: Any, **extra: Any) -> dict[str, Any]:
    """The names a trigger condition sees: the payload as ``data``, ``input`` and the
    context (so ``tier``, ``data.tier``, ``input.tier`` and ``$.tier`` all read it)."""
    context = data if isinstance(data, Mapping) else {"data": data}
    return {"data": data, "input": data, "context": context, **extra}


@dataclass(frozen=True, slots=True)
class ConditionOutcome:
    holds: bool
    reason: str | None = None  # "condition_false" or "condition_error"
    detail: str | None = None


def check_conditions(trigger: Trigger, scope: Mapping[str, Any]) -> ConditionOutcome:
    """All of the trigger's conditions must hold.  A condition that cannot be evaluated
    (a missing field, a type error) does not hold; its message is the detail."""
    for index, condition in enumerate(trigger.conditions):
        try:
            if not test(condition, scope):
                return ConditionOutcome(False, "condition_false", f"trigger.conditions[{index}]")
        except ExpressionError as exc:
            return ConditionOutcome(
                False, "condition_error", f"trigger.conditions[{index}]: {exc.message}"
            )
    return ConditionOutcome(True)


def header(headers: Any, name: str) -> str | None:
    """A header's value, looked up without regard to case (a dict, starlette ``Headers``
    or a list of pairs)."""
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    if getter is not None and not isinstance(headers, dict):
        value = getter(name)  # starlette / httpx headers are case-insensitive already
        if value is not None:
            return str(value)
    items = headers.items() if hasattr(headers, "items") else headers
    wanted = name.lower()
    for key, value in items:
        text = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        if text.lower() == wanted:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None
