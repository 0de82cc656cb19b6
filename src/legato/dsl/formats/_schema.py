"""Turn pydantic's ValidationError into findings located in the source document.

Pydantic reports a location such as ``('states', 'a', 'task', 'when', 'FieldCondition',
'operator')``: the union tags (``task``, ``FieldCondition``) are not part of the
document. We walk the location along the canonical dict and the model's types to drop
them, keep the best-matching alternative of each union (so a condition with one typo
gives one finding, not one per kind of condition), and translate the resulting JSON
pointer back to the source document.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from legato.dsl import model
from legato.dsl.findings import (
    Finding,
    PointerMap,
    article,
    did_you_mean,
    error,
    join,
    one_of,
    source_pointer,
    suggest,
)
from legato.dsl.formats._common import SCHEMA, model_fields

_STATE_CLASSES: dict[str, type[BaseModel]] = {
    "task": model.TaskState,
    "choice": model.ChoiceState,
    "parallel": model.ParallelState,
    "foreach": model.ForeachState,
    "wait": model.WaitState,
    "subflow": model.SubflowState,
    "succeed": model.SucceedState,
    "fail": model.FailState,
}
_STATE_KIND = {cls: kind for kind, cls in _STATE_CLASSES.items()}
_MISSING = object()
_BOUNDS = {
    "greater_than_equal": ("ge", "of at least"),
    "greater_than": ("gt", "above"),
    "less_than_equal": ("le", "of at most"),
    "less_than": ("lt", "below"),
}


@dataclass
class _Err:
    raw: Mapping[str, Any]
    path: list[str | int] = field(default_factory=list)  # location in the document
    branches: list[tuple[tuple[str | int, ...], str]] = field(default_factory=list)
    owner: type[BaseModel] | None = None  # the model holding the last segment


def schema_findings(
    exc: ValidationError, data: Mapping[str, Any], pointers: PointerMap | None = None
) -> list[Finding]:
    """Findings (rule L001) for every problem pydantic found in ``data``."""
    errs = [_locate(e, data) for e in exc.errors(include_url=False)]
    out: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for item in _select(errs, 0):
        finding = _finding(item, data, pointers)
        key = (finding.pointer, finding.message)
        if key not in seen:
            seen.add(key)
            out.append(finding)
    return out


# ---- locating -------------------------------------------------------------------------------


def _locate(raw: Mapping[str, Any], data: Mapping[str, Any]) -> _Err:
    err = _Err(raw=raw)
    tp: Any = model.Definition
    for seg in raw["loc"]:
        tp = _unwrap(tp)
        members = _union_members(tp)
        while len(members) == 1:
            tp = _unwrap(members[0])
            members = _union_members(tp)
        if members:
            err.branches.append((tuple(err.path), str(seg)))
            tp = _pick_member(members, str(seg))
            continue
        err.path.append(seg)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            err.owner = tp
            tp = _field_type(tp, str(seg))
        elif typing.get_origin(tp) in (dict, Mapping):
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) in (tuple, list, Sequence):
            tp = typing.get_args(tp)[0]
        else:
            tp = Any
    return err


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return [m for m in typing.get_args(tp) if m is not type(None)]
    return []


def _pick_member(members: list[Any], tag: str) -> Any:
    for member in members:
        member = _unwrap(member)
        if (
            isinstance(member, type)
            and issubclass(member, BaseModel)
            and (member.__name__ == tag or _STATE_KIND.get(member) == tag)
        ):
            return member
    return Any


def _field_type(cls: type[BaseModel], seg: str) -> Any:
    for name, info in cls.model_fields.items():
        if seg in (name, info.alias):
            return info.annotation
    return Any


# ---- choosing among union alternatives --------------------------------------------------------


def _select(errs: list[_Err], depth: int) -> list[_Err]:
    """Keep, at each union, only the alternative that matched best."""
    out: list[_Err] = []
    groups: dict[tuple[str | int, ...], list[_Err]] = {}
    for e in errs:
        if len(e.branches) <= depth:
            out.append(e)
        else:
            groups.setdefault(e.branches[depth][0], []).append(e)
    for prefix, group in groups.items():
        by_tag: dict[str, list[_Err]] = {}
        for e in group:
            by_tag.setdefault(e.branches[depth][1], []).append(e)
        alternatives = list(by_tag.values())
        if all(_shallow(alt, prefix) for alt in alternatives):
            out.append(_combined(alternatives, prefix))
            continue
        best = min(
            (alt for alt in alternatives if not _shallow(alt, prefix)),
            key=lambda alt: (-min(len(e.path) for e in alt), len(alt)),
        )
        out.extend(_select(best, depth + 1))
    return out


def _shallow(alt: list[_Err], prefix: tuple[str | int, ...]) -> bool:
    """Every error of this alternative is about the value itself (a type mismatch)."""
    return all(tuple(e.path) == prefix and e.raw["type"] != "missing" for e in alt)


def _combined(alternatives: list[list[_Err]], prefix: tuple[str | int, ...]) -> _Err:
    expected: list[str] = []
    for alt in alternatives:
        for e in alt:
            text = _expected(e.raw)
            if text not in expected:
                expected.append(text)
    first = alternatives[0][0]
    raw = {
        "type": "union",
        "loc": first.raw["loc"],
        "msg": " or ".join(expected),
        "input": first.raw.get("input"),
        "ctx": {"expected": expected},
    }
    return _Err(raw=raw, path=list(prefix), owner=first.owner)


def _expected(raw: Mapping[str, Any]) -> str:
    ctx = raw.get("ctx") or {}
    kind = raw["type"]
    if kind in ("literal_error", "enum"):
        return str(ctx.get("expected"))
    if kind == "string_type":
        return "a string"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        cls = getattr(model, str(ctx.get("class_name")), None)
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            required = [
                info.alias or name for name, info in cls.model_fields.items() if info.is_required()
            ]
            return "a mapping {" + ", ".join(required or list(cls.model_fields)) + "}"
        return "a mapping"
    return str(raw.get("msg", "")).removeprefix("Input should be ")


# ---- wording ---------------------------------------------------------------------------------


def _finding(e: _Err, data: Mapping[str, Any], pointers: PointerMap | None) -> Finding:
    raw = e.raw
    kind = raw["type"]
    ctx = raw.get("ctx") or {}
    path = list(e.path)
    value = raw.get("input", _MISSING)
    last = str(path[-1]) if path else ""
    message: str
    fix: str
    if kind == "extra_forbidden":
        allowed = sorted(model_fields(e.owner)) if e.owner else []
        where = _describe(e.owner, path[:-1], data)
        message = f"`{last}` is not a field of {where}."
        hint = did_you_mean(last, allowed)
        fix = f"remove it{hint}" if hint else f"remove it; the fields are {one_of(allowed)}"
    elif kind == "missing":
        where = _describe(e.owner, path[:-1], data)
        message = f"{where[0].upper()}{where[1:]} needs `{last}`."
        fix = f"add `{last}`"
    elif kind == "union_tag_invalid":
        path.append("type")
        tag = str(ctx.get("tag"))
        kinds = list(_STATE_CLASSES)
        message = f"`{tag}` is not a state type."
        fix = f"use one of {one_of(kinds)}{did_you_mean(tag, kinds)}"
    elif kind == "union_tag_not_found":
        path.append("type")
        message = "The state has no `type`."
        fix = f"add `type:` with one of {one_of(_STATE_CLASSES)}"
    elif kind in ("literal_error", "enum", "union"):
        options = _options(ctx.get("expected"))
        expected = " or ".join(ctx["expected"]) if kind == "union" else str(ctx.get("expected"))
        message = f"{_show(value)} is not valid here; expected {expected}."
        close = suggest(str(value), options) if isinstance(value, str) else []
        if close:
            fix = f"use `{close[0]}` (or another of the values listed)"
        elif len(options) <= 4:
            fix = f"use {expected}"
        else:
            fix = "use one of the values listed"
    elif kind == "value_error":
        text = str(raw.get("msg", "")).removeprefix("Value error, ")
        head, _, tail = text.partition("; ")
        message = f"{head[0].upper()}{head[1:]}." if head else "The value is not valid."
        fix = tail or "correct the value"
    elif kind in _BOUNDS:
        bound = ctx.get(_BOUNDS[kind][0])
        message = f"{_show(value)} is out of range; use a value {_BOUNDS[kind][1]} {bound}."
        fix = f"use a value {_BOUNDS[kind][1]} {bound}"
    else:
        msg = str(raw.get("msg", "The value is not valid"))
        shown = f" (got {_show(value)})" if value is not _MISSING and _short(value) else ""
        message = f"{msg}{shown}."
        fix = "change it: " + msg[0].lower() + msg[1:] if msg else "correct the value"
    pointer = source_pointer(join("", *path), pointers)
    return error(SCHEMA, pointer, message, fix)


_DESCRIPTIONS: dict[type[BaseModel], str] = {
    model.Definition: "the definition",
    model.RetryPolicy: "a retry policy",
    model.FieldCondition: "a field condition {field, operator, value}",
    model.AllOf: "an `all` condition",
    model.AnyOf: "an `any` condition",
    model.Not: "a `not` condition",
    model.Catch: "a catch",
    model.Compensation: "`compensation`",
    model.BatchConfig: "`batch`",
    model.ChoiceRule: "a choice rule",
    model.Branch: "a branch",
    model.AtLeast: "`join`",
    model.EventWait: "`event`",
    model.Trigger: "`trigger`",
}


def _describe(owner: type[BaseModel] | None, path: list[str | int], data: Mapping[str, Any]) -> str:
    if owner in _STATE_KIND:
        return f"{article(_STATE_KIND[owner])} state"
    if owner is not None and owner in _DESCRIPTIONS:
        return _DESCRIPTIONS[owner]
    if path:
        return f"`{path[-1]}`" if isinstance(path[-1], str) else f"`{path[-2]}` items"
    return "the definition"


def _options(expected: Any) -> list[str]:
    if isinstance(expected, list):
        return [o for text in expected for o in re.findall(r"'([^']*)'", str(text))]
    return re.findall(r"'([^']*)'", str(expected or ""))


def _short(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 60


def _show(value: Any) -> str:
    if value is _MISSING:
        return "the value"
    if isinstance(value, str):
        return f"`{value}`"
    if _short(value) or value is None:
        return f"`{value!r}`" if not isinstance(value, bool | None) else f"`{value}`"
    return "the value"
