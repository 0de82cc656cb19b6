"""Between the ``workflow.v1`` messages and Legato's data: JSON payloads, errors, effects.

Used by both ends of the contract: the client adapter (:mod:`legato.connectors.grpc`) and
the server helper (:mod:`legato.executor`), so the two agree by construction.

JSON payloads travel in ``google.protobuf.Any``: a JSON object as a ``Struct``, any other
JSON value as a ``Value``; ``unpack_json`` also reads ``ListValue`` and the wrapper types,
and a message type it does not know becomes ``{"@type": url, "value": <base64>}``.
Numbers are doubles on the wire; integral numbers are read back as ``int``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf import any_pb2, json_format, struct_pb2, timestamp_pb2

from legato.connectors.proto import pb
from legato.errors import ErrorClass, StepError

__all__ = [
    "cost_from_proto",
    "cost_to_proto",
    "error_class_from_proto",
    "error_class_to_proto",
    "failed_response",
    "pack_json",
    "side_effect_from_proto",
    "side_effect_to_proto",
    "timestamp_from_proto",
    "timestamp_to_proto",
    "unpack_json",
]

_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST = "google.protobuf.ListValue"
_MAX_EXACT = 2**53  # integers up to this survive a double exactly


# ---- JSON payloads --------------------------------------------------------------------------


def pack_json(value: Any) -> any_pb2.Any | None:
    """``value`` (JSON data) in an ``Any``: Struct for an object, Value otherwise.

    None gives None (leave the field unset). Raises ``TypeError`` for data that is not
    JSON (a ``datetime``, an object, a dict with non-string keys).
    """
    if value is None:
        return None
    packed = any_pb2.Any()
    if isinstance(value, Mapping):
        struct = struct_pb2.Struct()
        try:
            struct.update(_checked(value))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the payload is not JSON data: {exc}") from exc
        packed.Pack(struct)
        return packed
    item = struct_pb2.Value()
    try:
        json_format.ParseDict(_checked(value), item)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise TypeError(f"the payload is not JSON data: {exc}") from exc
    packed.Pack(item)
    return packed


def _checked(value: Any) -> Any:
    """Refuse what Struct would mangle silently (tuples are fine, as JSON arrays)."""
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, got {key!r}")
        return {key: _checked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_checked(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, float) and not math.isfinite(value):
            raise TypeError(f"{value!r} is not a JSON number")
        return value
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON data")


def unpack_json(packed: any_pb2.Any | None) -> Any:
    """The JSON data in an ``Any`` (see the module docstring); None when it is unset."""
    if packed is None or not packed.type_url:
        return None
    name = packed.type_url.rsplit("/", 1)[-1]
    if name == _STRUCT:
        struct = struct_pb2.Struct()
        packed.Unpack(struct)
        return _numbers(json_format.MessageToDict(struct))
    if name == _VALUE:
        item = struct_pb2.Value()
        packed.Unpack(item)
        return _numbers(json_format.MessageToDict(item))
    if name == _LIST:
        items = struct_pb2.ListValue()
        packed.Unpack(items)
        return _numbers(json_format.MessageToDict(items))
    try:  # a wrapper type, or a message whose module the process has imported
        data = json_format.MessageToDict(packed, preserving_proto_field_name=True)
    except (TypeError, KeyError, json_format.Error):
        return {"@type": packed.type_url, "value": base64.b64encode(packed.value).decode()}
    if set(data) == {"@type", "value"} and name.startswith("google.protobuf."):
        return _numbers(data["value"])  # StringValue, Int64Value, ...: the plain value
    return _numbers(data)


def _numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_EXACT:
        return int(value)
    if isinstance(value, dict):
        return {key: _numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    return value


# ---- error classes --------------------------------------------------------------------------


def error_class_to_proto(error_class: ErrorClass | str) -> pb.ErrorClass:
    return cast(pb.ErrorClass, pb.ErrorClass.Value(ErrorClass(error_class).value))


def error_class_from_proto(value: int, default: ErrorClass = ErrorClass.PERMANENT) -> ErrorClass:
    """The class of a proto ``ErrorClass``; NONE (or a value this build does not know)
    gives ``default``."""
    try:
        name = pb.ErrorClass.Name(value)
    except ValueError:
        return default
    return default if name == "NONE" else ErrorClass(name)


def failed_response(task_id: str, error: StepError) -> pb.TaskResponse:
    """The FAILED TaskResponse that reports ``error`` (class, message, retry-after)."""
    response = pb.TaskResponse(
        task_id=task_id,
        status=pb.FAILED,
        error_message=error.message,
        error_class=error_class_to_proto(error.error_class),
    )
    if error.retry_after is not None and error.retry_after > 0:
        response.retry_after_seconds = min(math.ceil(error.retry_after), 2**31 - 1)
    return response


# ---- side effects, cost, time -------------------------------------------------------------

_EFFECT_FIELDS = ("effect_id", "effect_type", "description", "reversible", "compensation_method")


def side_effect_to_proto(effect: Mapping[str, Any] | pb.SideEffect) -> pb.SideEffect:
    if isinstance(effect, pb.SideEffect):
        return effect
    unknown = sorted(set(effect) - set(_EFFECT_FIELDS))
    if unknown:
        raise ValueError(
            f"side effect fields {unknown} are not in the contract; use {list(_EFFECT_FIELDS)}"
        )
    return pb.SideEffect(**dict(effect))


def side_effect_from_proto(effect: pb.SideEffect) -> dict[str, Any]:
    return {name: getattr(effect, name) for name in _EFFECT_FIELDS}


def cost_to_proto(cost: Mapping[str, Any] | pb.CostMetrics) -> pb.CostMetrics:
    if isinstance(cost, pb.CostMetrics):
        return cost
    message = pb.CostMetrics()
    try:
        json_format.ParseDict(dict(cost), message)
    except json_format.ParseError as exc:
        raise ValueError(
            f"cost {dict(cost)!r} does not fit CostMetrics (currency, amount, units, unit, "
            f"breakdown): {exc}"
        ) from exc
    return message


def cost_from_proto(cost: pb.CostMetrics) -> dict[str, Any]:
    """The fields the service set (numbers as floats, ``breakdown`` as a dict)."""
    return json_format.MessageToDict(cost, preserving_proto_field_name=True)


def timestamp_to_proto(when: datetime) -> timestamp_pb2.Timestamp:
    if when.tzinfo is None:
        raise ValueError(f"{when!r} is a naive datetime; give it a time zone (UTC)")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def timestamp_from_proto(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)
