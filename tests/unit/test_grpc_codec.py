"""The pieces of the gRPC adapter that need no server: endpoints, payloads, classes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")

from google.protobuf import any_pb2, wrappers_pb2  # noqa: E402

from legato import ConfigurationError, ErrorClass, StepError  # noqa: E402
from legato.connectors.grpc import parse_endpoint, step_error_from_grpc  # noqa: E402
from legato.connectors.proto import codec, pb  # noqa: E402


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1:50051", False)),
        ("localhost:50051", ("localhost:50051", False)),
        ("[::1]:50051", ("[::1]:50051", False)),
        ("workday.internal:443", ("workday.internal:443", True)),
        ("hr.internal:50051", ("hr.internal:50051", True)),
        ("grpc://hr.internal:50051", ("hr.internal:50051", False)),
        ("grpcs://hr.example.com", ("hr.example.com:443", True)),
        ("https://hr.example.com:8443", ("hr.example.com:8443", True)),
        ("http://[::1]:9000", ("[::1]:9000", False)),
        ("grpcs://127.0.0.1:50051", ("127.0.0.1:50051", True)),
        ("unix:/run/hr.sock", ("unix:/run/hr.sock", False)),
        ("dns:///hr.example.com:443", ("dns:///hr.example.com:443", True)),
    ],
)
def test_parse_endpoint(endpoint: str, expected: tuple[str, bool]) -> None:
    assert parse_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["ftp://x:1", "grpc://host:1/path", "grpcs://", ":50051"])
def test_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_endpoint(endpoint)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1, 2.5, "x", None, True, {"c": {}}], "d": ""},
        [1, {"a": []}],
        "text",
        0,
        -3.25,
        False,
        {},
        [],
    ],
)
def test_json_round_trip(value: Any) -> None:
    packed = codec.pack_json(value)
    assert packed is not None
    assert codec.unpack_json(packed) == value


def test_objects_travel_as_struct_and_others_as_value() -> None:
    assert codec.pack_json({"a": 1}).type_url.endswith("/google.protobuf.Struct")  # type: ignore[union-attr]
    assert codec.pack_json([1]).type_url.endswith("/google.protobuf.Value")  # type: ignore[union-attr]
    assert codec.pack_json(None) is None
    assert codec.unpack_json(None) is None
    assert codec.unpack_json(any_pb2.Any()) is None


def test_integral_numbers_come_back_as_int() -> None:
    out = codec.unpack_json(codec.pack_json({"n": 3, "f": 3.5, "big": 2**53}))
    assert out == {"n": 3, "f": 3.5, "big": 2**53}
    assert isinstance(out["n"], int)
    assert isinstance(out["f"], float)


@pytest.mark.parametrize(
    "value",
    [{"when": datetime.now(UTC)}, {1: "x"}, float("nan"), {"s": {1, 2}}, object()],
)
def test_data_that_is_not_json_is_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        codec.pack_json(value)


def test_wrapper_types_and_unknown_messages() -> None:
    packed = any_pb2.Any()
    packed.Pack(wrappers_pb2.StringValue(value="hi"))
    assert codec.unpack_json(packed) == "hi"
    unknown = any_pb2.Any(type_url="type.googleapis.com/acme.Employee", value=b"\x08\x01")
    assert codec.unpack_json(unknown) == {
        "@type": "type.googleapis.com/acme.Employee",
        "value": "CAE=",
    }


def test_error_classes_map_both_ways() -> None:
    for error_class in ErrorClass:
        assert codec.error_class_from_proto(codec.error_class_to_proto(error_class)) is error_class
    assert codec.error_class_from_proto(pb.NONE) is ErrorClass.PERMANENT
    assert codec.error_class_from_proto(pb.NONE, ErrorClass.RETRYABLE) is ErrorClass.RETRYABLE
    assert codec.error_class_from_proto(99) is ErrorClass.PERMANENT


def test_failed_response_rounds_retry_after_up() -> None:
    error = StepError("slow down", error_class="RATE_LIMITED", retry_after=0.2)
    response = codec.failed_response("t1", error)
    assert response.status == pb.FAILED
    assert response.error_class == pb.RATE_LIMITED
    assert response.retry_after_seconds == 1
    assert response.error_message == "slow down"


def test_side_effects_and_cost() -> None:
    effect = {"effect_id": "e", "effect_type": "t", "reversible": True}
    assert codec.side_effect_from_proto(codec.side_effect_to_proto(effect)) == {
        "effect_id": "e",
        "effect_type": "t",
        "description": "",
        "reversible": True,
        "compensation_method": "",
    }
    with pytest.raises(ValueError, match="not in the contract"):
        codec.side_effect_to_proto({"id": "e"})
    cost = {"currency": "EUR", "amount": 1.5, "breakdown": {"api": 1.0}}
    assert codec.cost_from_proto(codec.cost_to_proto(cost)) == cost
    with pytest.raises(ValueError, match="CostMetrics"):
        codec.cost_to_proto({"price": 1})


def test_timestamps() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))
    assert codec.timestamp_from_proto(codec.timestamp_to_proto(when)) == when
    with pytest.raises(ValueError, match="naive"):
        codec.timestamp_to_proto(datetime(2026, 1, 2))


def _rpc_error(code: Any, details: str = "", trailers: tuple[Any, ...] = ()) -> Any:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details)


def test_step_error_from_grpc() -> None:
    error = step_error_from_grpc(
        _rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", (("retry-after", "7"),)),
        service="hr",
        method="ExecuteTask",
        target="hr:443",
    )
    assert error.error_class is ErrorClass.RATE_LIMITED
    assert error.retry_after == 7.0
    assert error.details == {
        "grpc_status": "RESOURCE_EXHAUSTED",
        "service": "hr",
        "method": "ExecuteTask",
        "target": "hr:443",
        "retry_after": 7.0,
    }
    assert "quota" in error.message
    restored = StepError(error.message, error_class=error.error_class)
    assert restored.retryable


def test_every_status_code_has_a_class() -> None:
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        assert isinstance(step_error_from_grpc(_rpc_error(code)).error_class, ErrorClass)
