"""The ``steps`` graph format (seed 001).

::

    {"name": "user_welcome",
     "steps": [
       {"id": "validate_input", "type": "condition",
        "conditions": [{"field": "email", "operator": "contains", "value": "@"}],
        "next_steps": ["send_welcome", "send_error"]},
       {"id": "send_welcome", "type": "action",
        "config": {"action": "send_email", "to": "{{variables.email}}"},
        "next_steps": ["log_success"]},
       ...]}

The first step is the start. ``next_steps`` of a condition are [if true, if false]; any
other step has at most one next step (use a ``parallel`` step to fan out), and a step
without next steps ends the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from legato.dsl.findings import article, did_you_mean, join, one_of
from legato.dsl.formats._common import (
    BRANCHING,
    METADATA_KEYS,
    SHAPE,
    Reading,
    is_mapping,
    version_text,
)

FORMAT_NAME = "steps"

STEP_TYPES = ("action", "condition", "parallel", "wait", "subflow")
_TOP_KEYS = ("format", "name", "version", "description", "steps")
_STEP_KEYS = (
    "id",
    "name",
    "description",
    "type",
    "config",
    "conditions",
    "next_steps",
    "retry",
    "timeout",
)
_WAIT_KEYS = ("wait_type", "event", "timeout", "timeout_next", "correlation", "duration", "until")
_WAIT_TYPES = ("event", "duration", "until")
_CONDITION_KEYS = ("field", "operator", "value")
_PARALLEL_KEYS = ("parallel_steps", "join")


def read(doc: Mapping[str, Any], *, default_name: str | None = None) -> Reading:
    reading = Reading(data={})
    for key in doc:
        if key not in _TOP_KEYS and key not in METADATA_KEYS:
            reading.unknown_key(key, "", _TOP_KEYS, "a `steps` document")
    data: dict[str, Any] = {
        "name": doc.get("name") or default_name or "workflow",
        "source_format": FORMAT_NAME,
        "input_at_root": True,
    }
    if "version" in doc:
        data["version"] = version_text(doc["version"])
    if "description" in doc:
        data["description"] = doc["description"]
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        reading.error(
            SHAPE,
            "/steps",
            "`steps` must be a list with at least one step.",
            "add `steps: [{id: first, type: action, config: {action: ...}}]`",
        )
        return reading

    states: dict[str, Any] = {}
    ids: list[str] = []
    for i, step in enumerate(steps):
        src = join("/steps", i)
        if not is_mapping(step):
            reading.error(SHAPE, src, "A step must be a mapping.", "write it as {id, type, ...}")
            continue
        sid = step.get("id")
        if not isinstance(sid, str) or not sid:
            reading.error(SHAPE, join(src, "id"), "The step has no `id`.", "add `id: <step_id>`")
            continue
        if sid in states:
            reading.error(
                SHAPE,
                join(src, "id"),
                f"Step id `{sid}` is used by an earlier step too.",
                "give every step its own id",
            )
            continue
        canon = join("/states", sid)
        reading.map(canon, src)
        _step(step, sid, canon, src, states, reading)
        ids.append(sid)
    if not ids:
        return reading
    data["start_at"] = ids[0]
    reading.map("/start_at", "/steps/0/id")
    data["states"] = states
    reading.data = data
    return reading


def _step(
    step: Mapping[str, Any],
    sid: str,
    canon: str,
    src: str,
    states: dict[str, Any],
    reading: Reading,
) -> None:
    for key in step:
        if key not in _STEP_KEYS:
            reading.unknown_key(key, src, _STEP_KEYS, "a step")
    kind = step.get("type")
    config = step.get("config")
    if kind is None and is_mapping(config) and "action" in config:
        kind = "action"
    if kind not in STEP_TYPES:
        reading.error(
            SHAPE,
            join(src, "type"),
            f"`{kind}` is not a step type." if kind is not None else "The step has no `type`.",
            f"use one of {one_of(STEP_TYPES)}{did_you_mean(str(kind), STEP_TYPES)}",
        )
        return
    if config is None:
        config = {}
    if not is_mapping(config):
        reading.error(SHAPE, join(src, "config"), "`config` must be a mapping.", "write {...}")
        return
    nexts = step.get("next_steps", [])
    if isinstance(nexts, str):
        nexts = [nexts]
    if not isinstance(nexts, list) or not all(isinstance(n, str) for n in nexts):
        reading.error(
            SHAPE,
            join(src, "next_steps"),
            "`next_steps` must be a list of step ids.",
            "write `next_steps: [next_step_id]`",
        )
        nexts = []

    state: dict[str, Any]
    if kind == "condition":
        _condition(step, sid, config, nexts, canon, src, states, reading)
        return
    if len(nexts) > 1:
        reading.error(
            BRANCHING,
            join(src, "next_steps"),
            f"{article(kind).capitalize()} step can go on to one step only, "
            f"but it names {len(nexts)}.",
            "to run them at the same time, use a `parallel` step; "
            "to pick one, use a `condition` step",
        )
    if kind == "action":
        state = _action(config, canon, join(src, "config"), reading)
    elif kind == "parallel":
        state = _parallel(sid, config, canon, join(src, "config"), reading)
    elif kind == "wait":
        state = _wait(config, canon, join(src, "config"), reading)
    else:
        state = _subflow(config, canon, join(src, "config"), reading)
    for key in ("name", "description"):
        if key in step:
            state[key] = step[key]
    for key in ("retry", "timeout"):
        if key in step:
            if state["type"] == "task" or (key == "timeout" and state["type"] == "subflow"):
                state[key] = step[key]
            else:
                reading.error(
                    SHAPE,
                    join(src, key),
                    f"`{key}` is not supported on {article(kind)} step.",
                    f"remove `{key}`",
                )
    if nexts:
        state["next"] = nexts[0]
        reading.map(join(canon, "next"), join(src, "next_steps", 0))
    states[sid] = state


def _action(config: Mapping[str, Any], canon: str, src: str, reading: Reading) -> dict[str, Any]:
    state: dict[str, Any] = {"type": "task"}
    action = config.get("action")
    if not isinstance(action, str) or not action:
        reading.error(
            SHAPE,
            join(src, "action"),
            "An action step needs `config.action`, the name of the action to run.",
            "add `action: <name>` to `config` (for example `send_email`)",
        )
    else:
        state["action"] = action
        reading.map(join(canon, "action"), join(src, "action"))
    rest = {k: v for k, v in config.items() if k != "action"}
    if rest:
        state["input"] = rest
        reading.map(join(canon, "input"), src)
    return state


def _condition(
    step: Mapping[str, Any],
    sid: str,
    config: Mapping[str, Any],
    nexts: list[str],
    canon: str,
    src: str,
    states: dict[str, Any],
    reading: Reading,
) -> None:
    rule = join(canon, "choices", 0)
    terms: list[Any] = []
    conditions = step.get("conditions")
    if conditions is not None:
        if isinstance(conditions, list):
            for i, cond in enumerate(conditions):
                reading.map(join(rule, "when", "all", len(terms)), join(src, "conditions", i))
                terms.append(cond)
        else:
            reading.error(
                SHAPE,
                join(src, "conditions"),
                "`conditions` must be a list of conditions (all must hold).",
                "write `conditions: [{field: ..., operator: ..., value: ...}]`",
            )
    if config:
        for key in config:
            if key not in _CONDITION_KEYS:
                reading.unknown_key(key, join(src, "config"), _CONDITION_KEYS, "a condition")
        reading.map(join(rule, "when", "all", len(terms)), join(src, "config"))
        terms.append({k: v for k, v in config.items() if k in _CONDITION_KEYS})
    if not terms and conditions is None:
        reading.error(
            SHAPE,
            src,
            "A condition step needs `conditions` or `config: {field, operator, value}`.",
            "add `conditions: [{field: ..., operator: equals, value: ...}]`",
        )
    if not nexts:
        reading.error(
            SHAPE,
            join(src, "next_steps"),
            "A condition step needs `next_steps`: [where to go if it holds, otherwise].",
            "add `next_steps: [if_true_step, if_false_step]`",
        )
        return
    if len(nexts) > 2:
        reading.error(
            BRANCHING,
            join(src, "next_steps", 2),
            f"A condition step goes on to one of two steps, but it names {len(nexts)}.",
            "keep two next steps (if true, otherwise) and chain more condition steps",
        )
    reading.map(join(rule, "when"), join(src, "conditions") if conditions else join(src, "config"))
    reading.map(join(rule, "next"), join(src, "next_steps", 0))
    state: dict[str, Any] = {
        "type": "choice",
        "choices": [{"when": {"all": terms}, "next": nexts[0]}],
    }
    for key in ("name", "description"):
        if key in step:
            state[key] = step[key]
    for key in ("retry", "timeout"):
        if key in step:
            reading.error(
                SHAPE,
                join(src, key),
                f"`{key}` is not supported on a condition step.",
                f"remove `{key}`",
            )
    if len(nexts) > 1:
        state["default"] = nexts[1]
        reading.map(join(canon, "default"), join(src, "next_steps", 1))
    else:
        end = f"{sid}__end"
        state["default"] = end
        states[end] = {"type": "succeed"}
        reading.map(join("/states", end), src)
        reading.map(join(canon, "default"), join(src, "next_steps"))
    states[sid] = state


def _parallel(
    sid: str, config: Mapping[str, Any], canon: str, src: str, reading: Reading
) -> dict[str, Any]:
    for key in config:
        if key not in _PARALLEL_KEYS:
            reading.unknown_key(key, src, _PARALLEL_KEYS, "a parallel step's `config`")
    state: dict[str, Any] = {"type": "parallel", "branches": []}
    reading.map(join(canon, "branches"), join(src, "parallel_steps"))
    items = config.get("parallel_steps", [])
    if not isinstance(items, list):
        reading.error(
            SHAPE,
            join(src, "parallel_steps"),
            "`parallel_steps` must be a list of actions.",
            "write `parallel_steps: [{action: a}, {action: b}]`",
        )
        items = []
    for i, item in enumerate(items):
        item_src = join(src, "parallel_steps", i)
        name = f"{sid}_{i + 1}"
        if not is_mapping(item):
            reading.error(
                SHAPE, item_src, "A parallel step must be a mapping.", "write {action: ...}"
            )
            continue
        if "type" in item or "config" in item:
            if item.get("type", "action") != "action" or not is_mapping(item.get("config", {})):
                reading.error(
                    SHAPE,
                    item_src,
                    "Parallel steps are actions.",
                    "write {action: ..., ...}; run other kinds of steps in a subflow",
                )
                continue
            name = str(item.get("id") or name)
            body: Mapping[str, Any] = item.get("config", {})
            body_src = join(item_src, "config")
        else:
            body, body_src = item, item_src
        b_canon = join(canon, "branches", len(state["branches"]))
        s_canon = join(b_canon, "states", name)
        reading.map(b_canon, item_src)
        reading.map(s_canon, item_src)
        task = _action(body, s_canon, body_src, reading)
        if is_mapping(item) and "name" in item and "type" in item:
            task["name"] = item["name"]
        state["branches"].append({"name": name, "start_at": name, "states": {name: task}})
    if "join" in config:
        joined = config["join"]
        if isinstance(joined, int) and not isinstance(joined, bool):
            joined = {"at_least": joined}
        state["join"] = joined
    return state


def _wait(config: Mapping[str, Any], canon: str, src: str, reading: Reading) -> dict[str, Any]:
    for key in config:
        if key not in _WAIT_KEYS:
            reading.unknown_key(key, src, _WAIT_KEYS, "a wait step's `config`")
    state: dict[str, Any] = {"type": "wait"}
    kind = config.get("wait_type")
    if kind is None:
        kind = next((k for k in _WAIT_TYPES if k in config), None)
    if kind not in _WAIT_TYPES:
        reading.error(
            SHAPE,
            join(src, "wait_type"),
            f"`{kind}` is not a wait type." if kind else "The wait step says nothing to wait for.",
            f"use `wait_type:` {one_of(_WAIT_TYPES)}{did_you_mean(str(kind), _WAIT_TYPES)}",
        )
        return state
    if kind == "event":
        event: dict[str, Any] = {"name": config.get("event")}
        if not isinstance(event["name"], str) or not event["name"]:
            reading.error(
                SHAPE,
                join(src, "event"),
                "A wait for an event needs `config.event`, the event's name.",
                "add `event: <event name>` to `config`",
            )
        reading.map(join(canon, "event"), src)
        reading.map(join(canon, "event", "name"), join(src, "event"))
        for key in ("timeout", "timeout_next", "correlation"):
            if key in config:
                event[key] = config[key]
        state["event"] = event
    else:
        state[kind] = config.get(kind)
        reading.map(join(canon, kind), join(src, kind))
        for key in ("event", "timeout", "timeout_next", "correlation"):
            if key in config:
                reading.error(
                    SHAPE,
                    join(src, key),
                    f"`{key}` only applies to `wait_type: event`.",
                    f"remove `{key}`",
                )
    return state


def _subflow(config: Mapping[str, Any], canon: str, src: str, reading: Reading) -> dict[str, Any]:
    state: dict[str, Any] = {"type": "subflow", "workflow": config.get("subflow_id")}
    reading.map(join(canon, "workflow"), join(src, "subflow_id"))
    if not isinstance(state["workflow"], str) or not state["workflow"]:
        reading.error(
            SHAPE,
            join(src, "subflow_id"),
            "A subflow step needs `config.subflow_id`, the workflow to run.",
            "add `subflow_id: <workflow name>` to `config`",
        )
    for key in ("version", "wait"):
        if key in config:
            state[key] = config[key]
    rest = {k: v for k, v in config.items() if k not in ("subflow_id", "version", "wait")}
    if "input" in rest:
        for key in rest:
            if key != "input":
                reading.unknown_key(
                    key,
                    src,
                    ["subflow_id", "version", "wait", "input"],
                    "a subflow step's `config`",
                )
        state["input"] = rest["input"]
        reading.map(join(canon, "input"), join(src, "input"))
    elif rest:
        state["input"] = rest
        reading.map(join(canon, "input"), src)
    return state
