"""The definition with ordered steps of the orchestration PRD (seed 002).

::

    {"name": "Customer Onboarding - Standard",
     "trigger": {"type": "event", "event_name": "customer.created"},
     "steps": [
       {"id": "step_1", "order": 1, "type": "assign_plan", "config": {...}},
       {"id": "step_2", "order": 2, "type": "create_wallet", "config": {...},
        "depends_on": ["step_1"]}],
     "enabled": true,
     "retry_policy": {"max_attempts": 3, "initial_interval_seconds": 1,
                      "backoff_coefficient": 2.0}}

Steps run one after another, sorted by ``order`` (then position), and moved after the
steps they depend on. Each step becomes a task whose action is the step's ``type``.
A circular ``depends_on`` is reported by the validator (rule L105), naming the cycle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from legato.dsl.findings import join
from legato.dsl.formats._common import (
    METADATA_KEYS,
    SHAPE,
    Reading,
    is_mapping,
    version_text,
)

FORMAT_NAME = "ordered"

_TOP_KEYS = (
    "format",
    "name",
    "version",
    "description",
    "trigger",
    "steps",
    "enabled",
    "retry_policy",
    "timeout_seconds",
)
_STEP_KEYS = (
    "id",
    "order",
    "type",
    "name",
    "description",
    "config",
    "condition",
    "retry_policy",
    "depends_on",
    "timeout_seconds",
)
_RETRY_RENAMES = {
    "max_attempts": "max_attempts",
    "initial_interval_seconds": "initial_interval",
    "backoff_coefficient": "backoff_coefficient",
    "max_interval_seconds": "max_interval",
    "non_retryable": "non_retryable",
}


def read(doc: Mapping[str, Any], *, default_name: str | None = None) -> Reading:
    reading = Reading(data={})
    for key in doc:
        if key not in _TOP_KEYS and key not in METADATA_KEYS:
            reading.unknown_key(key, "", _TOP_KEYS, "a workflow definition")
    data: dict[str, Any] = {
        "name": doc.get("name") or default_name or "workflow",
        "version": version_text(doc.get("version", "1")),
        "source_format": FORMAT_NAME,
        "input_at_root": True,
    }
    for key in ("description", "trigger", "enabled"):
        if key in doc:
            data[key] = doc[key]
    if "timeout_seconds" in doc:
        data["timeout"] = doc["timeout_seconds"]
        reading.map("/timeout", "/timeout_seconds")
    if "retry_policy" in doc:
        data["retry"] = _retry(doc["retry_policy"], "/retry", "/retry_policy", reading)

    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        reading.error(
            SHAPE,
            "/steps",
            "`steps` must be a list with at least one step.",
            "add `steps: [{id: step_1, order: 1, type: ..., config: {...}}]`",
        )
        return reading

    found: list[tuple[float, int, str, Mapping[str, Any]]] = []
    seen: set[str] = set()
    for i, step in enumerate(steps):
        src = join("/steps", i)
        if not is_mapping(step):
            reading.error(SHAPE, src, "A step must be a mapping.", "write it as {id, type, ...}")
            continue
        for key in step:
            if key not in _STEP_KEYS:
                reading.unknown_key(key, src, _STEP_KEYS, "a step")
        sid = step.get("id")
        if not isinstance(sid, str) or not sid:
            reading.error(SHAPE, join(src, "id"), "The step has no `id`.", "add `id: <step_id>`")
            continue
        if sid in seen:
            reading.error(
                SHAPE,
                join(src, "id"),
                f"Step id `{sid}` is used by an earlier step too.",
                "give every step its own id",
            )
            continue
        seen.add(sid)
        order = step.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, int | float)):
            reading.error(
                SHAPE, join(src, "order"), "`order` must be a number.", "write `order: 1`"
            )
            order = None
        found.append((math.inf if order is None else float(order), i, sid, step))

    found.sort(key=lambda item: (item[0], item[1]))
    ordered = _after_dependencies([(sid, step) for _, _, sid, step in found])
    position = {sid: i for _, i, sid, _ in found}

    states: dict[str, Any] = {}
    for k, (sid, step) in enumerate(ordered):
        canon, src = join("/states", sid), join("/steps", position[sid])
        state = _task(step, canon, src, reading)
        if k + 1 < len(ordered):
            state["next"] = ordered[k + 1][0]
            reading.map(join(canon, "next"), src)
        states[sid] = state
    if not states:
        return reading
    data["start_at"] = ordered[0][0]
    reading.map("/start_at", join("/steps", position[ordered[0][0]]))
    data["states"] = states
    reading.data = data
    return reading


def _after_dependencies(
    steps: list[tuple[str, Mapping[str, Any]]],
) -> list[tuple[str, Mapping[str, Any]]]:
    """A stable topological sort: each step after the steps it depends on, otherwise in the
    given order. Unknown dependencies are ignored here; steps caught in a cycle keep their
    given order (the validator reports both)."""
    known = {sid for sid, _ in steps}
    deps: dict[str, set[str]] = {}
    for sid, step in steps:
        raw = step.get("depends_on") or []
        names = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        deps[sid] = {d for d in names if isinstance(d, str) and d in known and d != sid}
    placed: set[str] = set()
    out: list[tuple[str, Mapping[str, Any]]] = []
    pending = list(steps)
    while pending:
        ready = next((i for i, (sid, _) in enumerate(pending) if deps[sid] <= placed), None)
        if ready is None:  # a cycle: keep the given order for the rest
            out.extend(pending)
            break
        out.append(pending.pop(ready))
        placed.add(out[-1][0])
    return out


def _task(step: Mapping[str, Any], canon: str, src: str, reading: Reading) -> dict[str, Any]:
    reading.map(canon, src)
    state: dict[str, Any] = {"type": "task"}
    kind = step.get("type")
    if not isinstance(kind, str) or not kind:
        reading.error(
            SHAPE,
            join(src, "type"),
            "The step has no `type`; the type names the action it runs.",
            "add `type: <action>` (for example `assign_plan`)",
        )
    else:
        state["action"] = kind
        reading.map(join(canon, "action"), join(src, "type"))
    if "config" in step:
        state["input"] = step["config"]
        reading.map(join(canon, "input"), join(src, "config"))
    for key in ("name", "description"):
        if key in step:
            state[key] = step[key]
    if step.get("condition") is not None:
        state["when"] = step["condition"]
        reading.map(join(canon, "when"), join(src, "condition"))
    if "depends_on" in step:
        raw = step["depends_on"]
        state["depends_on"] = [raw] if isinstance(raw, str) else raw
    if "retry_policy" in step:
        state["retry"] = _retry(
            step["retry_policy"], join(canon, "retry"), join(src, "retry_policy"), reading
        )
    if "timeout_seconds" in step:
        state["timeout"] = step["timeout_seconds"]
        reading.map(join(canon, "timeout"), join(src, "timeout_seconds"))
    return state


def _retry(value: Any, canon: str, src: str, reading: Reading) -> Any:
    reading.map(canon, src)
    if not is_mapping(value):
        return value  # the schema check reports it
    out: dict[str, Any] = {}
    for key, item in value.items():
        target = _RETRY_RENAMES.get(key)
        if target is None:
            reading.unknown_key(key, src, _RETRY_RENAMES, "`retry_policy`")
            continue
        out[target] = item
        reading.map(join(canon, target), join(src, key))
    return out
