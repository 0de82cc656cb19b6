"""The ``states`` format of the External Service Interface (seed 000).

::

    {"workflow": {"name": ..., "version": ..., "states": {
        "create_hr_record": {"type": "external_task", "service": ..., "operation": ...,
                             "input_mapping": {...}, "output_mapping": {...},
                             "retry": {"max_attempts": 3, "backoff": "exponential"},
                             "compensation": {"operation": ..., "input": {...}},
                             "timeout": "5m", "on_success": ..., "on_failure": ...},
        "run_background_check": {"type": "parallel", "branches": [{"name": ..., ...}],
                                 "join": "all", "on_complete": ...}}}}

The start state is ``start_at`` if given, else the first state. Canonical state types
(``choice``, ``wait``, ...) and canonical field names are accepted as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from legato.dsl import model
from legato.dsl.findings import article, did_you_mean, join, one_of
from legato.dsl.formats._common import (
    APPROXIMATION,
    FIELD,
    SHAPE,
    Reading,
    is_mapping,
    model_fields,
    version_text,
)

FORMAT_NAME = "states"

TYPE_ALIASES = {"external_task": "task"}

_CLASSES: dict[str, type[BaseModel]] = {
    "task": model.TaskState,
    "choice": model.ChoiceState,
    "parallel": model.ParallelState,
    "foreach": model.ForeachState,
    "wait": model.WaitState,
    "subflow": model.SubflowState,
    "succeed": model.SucceedState,
    "fail": model.FailState,
}

# state keys of this format that the canonical model spells differently
_FORMAT_KEYS = {"input_mapping", "output_mapping", "on_success", "on_complete", "on_failure"}
_CATCHING = {"task", "subflow"}

_RETRY_RENAMES = {
    "initial_delay": "initial_interval",
    "max_delay": "max_interval",
}
_RETRY_KEYS = {"max_attempts", "backoff", "initial_delay", "max_delay"} | model_fields(
    model.RetryPolicy
)
_BACKOFF = {"exponential": 2.0, "fixed": 1.0, "constant": 1.0, "linear": 1.0}

_WORKFLOW_KEYS = model_fields(model.Definition) - {"source_format"}


def read(doc: Mapping[str, Any], *, default_name: str | None = None) -> Reading:
    reading = Reading(data={}, pointers={"": "/workflow"})
    for key in doc:
        if key not in ("workflow", "format"):
            reading.unknown_key(key, "", ["workflow", "format"], "a `states` document")
    wf = doc.get("workflow")
    if not is_mapping(wf):
        reading.error(
            SHAPE,
            "/workflow",
            "`workflow` must be a mapping with `name`, `version` and `states`.",
            "write the definition as {workflow: {name, version, states: {...}}}",
        )
        return reading
    data: dict[str, Any] = {"source_format": FORMAT_NAME, "input_at_root": True}
    for key, value in wf.items():
        if key == "states":
            continue
        if key not in _WORKFLOW_KEYS:
            reading.unknown_key(key, "/workflow", _WORKFLOW_KEYS, "`workflow`")
        elif key == "version":
            data["version"] = version_text(value)
        elif key == "retry" and is_mapping(value):
            data["retry"] = _retry(value, "/retry", "/workflow/retry", reading)
        else:
            data[key] = value
    if "name" not in data:
        data["name"] = default_name or "workflow"
    states = wf.get("states")
    if not is_mapping(states) or not states:
        reading.error(
            SHAPE,
            "/workflow/states",
            "`workflow.states` must be a mapping of state name to state, with at least one.",
            "add `states: {first_state: {type: external_task, ...}}`",
        )
        return reading
    data["states"] = _states(states, "", "/workflow", reading)
    if "start_at" not in data:
        data["start_at"] = next(iter(states))
        reading.map("/start_at", "/workflow/states")
    reading.data = data
    return reading


def _states(states: Mapping[str, Any], canon: str, src: str, reading: Reading) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in states.items():
        state = _state(raw, join(canon, "states", name), join(src, "states", name), reading)
        if state is not None:
            out[str(name)] = state
    return out


def _state(raw: Any, canon: str, src: str, reading: Reading) -> dict[str, Any] | None:
    if not is_mapping(raw):
        reading.error(
            SHAPE, src, "A state must be a mapping.", "write the state as {type: ..., ...}"
        )
        return None
    reading.map(canon, src)
    kinds = sorted({*_CLASSES, *TYPE_ALIASES})
    raw_type = raw.get("type")
    if raw_type is None:
        if "service" in raw or "action" in raw:
            raw_type = "task"
        else:
            reading.error(
                SHAPE,
                join(src, "type"),
                "The state has no `type`.",
                f"add `type:` with one of {one_of(kinds)}",
            )
            return None
    kind = TYPE_ALIASES.get(str(raw_type), str(raw_type))
    if kind not in _CLASSES:
        reading.error(
            SHAPE,
            join(src, "type"),
            f"`{raw_type}` is not a state type.",
            f"use one of {one_of(kinds)}{did_you_mean(str(raw_type), kinds)}",
        )
        return None
    allowed = model_fields(_CLASSES[kind]) | _FORMAT_KEYS
    if kind not in _CATCHING:
        allowed.discard("on_failure")
    out: dict[str, Any] = {"type": kind}
    for key, value in raw.items():
        if key == "type":
            continue
        if key not in allowed:
            if key == "on_failure":
                reading.error(
                    FIELD,
                    join(src, key),
                    f"`on_failure` is not supported on {article(str(raw_type))} state.",
                    "move the failure handling to the tasks inside it, or remove `on_failure`",
                )
            else:
                reading.unknown_key(key, src, sorted(allowed), f"{article(str(raw_type))} state")
            continue
        if key == "input_mapping":
            out["input"] = value
            reading.map(join(canon, "input"), join(src, key))
        elif key == "output_mapping":
            out["output"] = value
            reading.map(join(canon, "output"), join(src, key))
        elif key in ("on_success", "on_complete"):
            if "next" in out or "next" in raw:
                reading.error(
                    SHAPE,
                    join(src, key),
                    "The state names its next state more than once "
                    "(`on_success`, `on_complete`, `next`).",
                    "keep one of them",
                )
                continue
            out["next"] = value
            reading.map(join(canon, "next"), join(src, key))
        elif key == "on_failure":
            _on_failure(value, out, canon, src, reading)
        elif key == "catch" and isinstance(value, list):
            offset = 1 if "on_failure" in raw else 0
            out["catch"] = [*out.get("catch", []), *value]
            for i in range(len(value)):
                reading.map(join(canon, "catch", i + offset), join(src, "catch", i))
        elif key == "retry" and is_mapping(value):
            out["retry"] = _retry(value, join(canon, "retry"), join(src, "retry"), reading)
        elif key == "compensation" and is_mapping(value):
            out["compensation"] = _compensation(value, raw, canon, src, reading)
        elif key == "branches" and kind == "parallel" and isinstance(value, list):
            out["branches"] = _branches(value, canon, src, reading)
        elif key == "join" and kind == "parallel":
            joined = _join(value, join(src, "join"), reading)
            if joined is not None:
                out["join"] = joined
        elif key == "iterator" and kind == "foreach" and is_mapping(value):
            out["iterator"] = _graph(value, join(canon, "iterator"), join(src, key), reading)
        else:
            out[key] = value
    return out


def _on_failure(value: Any, out: dict[str, Any], canon: str, src: str, reading: Reading) -> None:
    if isinstance(value, str):
        entry: Any = {"errors": ["ALL"], "next": value}
        reading.map(join(canon, "catch", 0, "next"), join(src, "on_failure"))
    elif is_mapping(value):
        entry = {"errors": ["ALL"], **value}
    else:
        reading.error(
            SHAPE,
            join(src, "on_failure"),
            "`on_failure` must name the state to go to when the step fails.",
            "write `on_failure: <state name>`",
        )
        return
    existing = out.get("catch", [])
    if not isinstance(existing, list):
        return  # a malformed `catch`; the schema check reports it
    reading.map(join(canon, "catch", 0), join(src, "on_failure"))
    out["catch"] = [entry, *existing]


def _retry(value: Mapping[str, Any], canon: str, src: str, reading: Reading) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in _RETRY_KEYS:
            reading.unknown_key(key, src, sorted(_RETRY_KEYS), "`retry`")
            continue
        if key == "backoff":
            coefficient = _backoff(item, join(src, key), reading)
            if coefficient is not None:
                out["backoff_coefficient"] = coefficient
                reading.map(join(canon, "backoff_coefficient"), join(src, key))
            continue
        target = _RETRY_RENAMES.get(key, key)
        out[target] = item
        if target != key:
            reading.map(join(canon, target), join(src, key))
    return out


def _backoff(value: Any, src: str, reading: Reading) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value)
    if text not in _BACKOFF:
        reading.error(
            SHAPE,
            src,
            f"`{value}` is not a backoff.",
            f"use one of {one_of(['exponential', 'fixed', 'linear'])} or a number "
            f"(the backoff coefficient){did_you_mean(text, _BACKOFF)}",
        )
        return None
    if text == "linear":
        reading.warning(
            APPROXIMATION,
            src,
            "Linear backoff is not supported yet; the delay between attempts stays at "
            "`initial_delay` (fixed backoff).",
            "use `backoff: exponential` or `fixed`, or give the coefficient as a number",
        )
    return _BACKOFF[text]


def _compensation(
    value: Mapping[str, Any], state: Mapping[str, Any], canon: str, src: str, reading: Reading
) -> dict[str, Any]:
    canon, src = join(canon, "compensation"), join(src, "compensation")
    out = dict(value)
    inherits = "operation" in out and "service" not in out and "action" not in out
    if inherits and "service" in state:
        out["service"] = state["service"]
        reading.map(join(canon, "service"), join(src, "operation"))
    if is_mapping(out.get("retry")):
        out["retry"] = _retry(out["retry"], join(canon, "retry"), join(src, "retry"), reading)
    return out


def _branches(value: list[Any], canon: str, src: str, reading: Reading) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        b_canon, b_src = join(canon, "branches", len(out)), join(src, "branches", i)
        if not is_mapping(item):
            reading.error(
                SHAPE,
                b_src,
                "A branch must be a mapping: a state with a `name`, or {name, start_at, states}.",
                "write the branch as {name: ..., type: external_task, ...}",
            )
            continue
        if "states" in item:
            out.append(_graph(item, b_canon, b_src, reading))
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name:
            reading.error(
                SHAPE,
                join(b_src, "name"),
                "A branch needs a `name`; it names the branch and its one state.",
                "add `name: <branch_name>`",
            )
            continue
        reading.map(b_canon, b_src)
        reading.map(join(b_canon, "start_at"), join(b_src, "name"))
        state = _state(
            {k: v for k, v in item.items() if k != "name"},
            join(b_canon, "states", name),
            b_src,
            reading,
        )
        if state is not None:
            out.append({"name": name, "start_at": name, "states": {name: state}})
    return out


def _graph(value: Mapping[str, Any], canon: str, src: str, reading: Reading) -> dict[str, Any]:
    """A full branch: {name, start_at, states}."""
    reading.map(canon, src)
    for key in value:
        if key not in ("name", "start_at", "states"):
            reading.unknown_key(key, src, ["name", "start_at", "states"], "a branch")
    states = value.get("states")
    out: dict[str, Any] = {"name": value.get("name")}
    if not is_mapping(states) or not states:
        reading.error(
            SHAPE,
            join(src, "states"),
            "A branch's `states` must be a mapping with at least one state.",
            "add `states: {first_state: {...}}`",
        )
        out["states"] = {}
        out["start_at"] = value.get("start_at")
        return out
    out["states"] = _states(states, canon, src, reading)
    if "start_at" in value:
        out["start_at"] = value["start_at"]
    else:
        out["start_at"] = next(iter(states))
        reading.map(join(canon, "start_at"), join(src, "states"))
    return out


def _join(value: Any, src: str, reading: Reading) -> Any:
    if value in ("all", "any"):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return {"at_least": value}
    if isinstance(value, str) and value.isdigit():
        return {"at_least": int(value)}
    if is_mapping(value):
        return dict(value)
    reading.error(
        SHAPE,
        src,
        f"`{value}` is not a join.",
        "use `all`, `any` or a number N (at least N branches)",
    )
    return None
