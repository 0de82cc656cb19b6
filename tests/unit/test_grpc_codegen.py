"""The committed gRPC code is what scripts/gen_proto.sh generates from executor.proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("grpc_tools", reason="grpcio-tools generates the code")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src/legato/connectors/proto"
GENERATED = (
    "legato/__init__.py",
    "legato/executor/__init__.py",
    "legato/executor/v1/__init__.py",
    "legato/executor/v1/executor_pb2.py",
    "legato/executor/v1/executor_pb2.pyi",
    "legato/executor/v1/executor_pb2_grpc.py",
)


def test_regenerating_gives_the_committed_files(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        ["bash", str(ROOT / "scripts/gen_proto.sh"), str(tmp_path)],
        check=True,
        env=env,
        capture_output=True,
        timeout=60,
    )
    produced = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert produced == sorted(GENERATED)
    stale = [
        name
        for name in GENERATED
        if (tmp_path / name).read_text(encoding="utf-8")
        != (PACKAGE / name).read_text(encoding="utf-8")
    ]
    assert not stale, (
        f"{stale} differ from what scripts/gen_proto.sh generates from executor.proto: "
        "run scripts/gen_proto.sh and commit the result (or use the grpcio-tools version "
        "the committed files were made with)"
    )


def test_generated_code_imports_as_part_of_the_package() -> None:
    from legato.connectors.proto import SERVICE_NAME, pb, pb_grpc

    assert pb.DESCRIPTOR.services_by_name["ExternalTaskExecutor"].full_name == SERVICE_NAME
    assert pb_grpc.ExternalTaskExecutorStub is not None
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["ExternalTaskExecutor"].methods}
    assert methods == {
        "ExecuteTask",
        "ExecuteBatch",
        "StreamTask",
        "HealthCheck",
        "GetCapabilities",
        "CheckStatus",
    }


def test_the_seed_field_numbers_are_kept() -> None:
    from legato.connectors.proto import pb

    request = {f.name: f.number for f in pb.TaskRequest.DESCRIPTOR.fields}
    assert request == {
        "task_id": 1, "workflow_id": 2, "task_type": 3, "idempotency_key": 4, "payload": 5,
        "metadata": 6, "correlation_id": 7, "trace_parent": 8, "auth": 9,
        "attempt_number": 10, "deadline": 11,
    }  # fmt: skip
    response = {f.name: f.number for f in pb.TaskResponse.DESCRIPTOR.fields}
    assert response == {
        "task_id": 1, "status": 2, "result": 3, "error_message": 4, "error_class": 5,
        "metadata": 6, "side_effects": 7, "cost": 8, "retry_after_seconds": 9,
    }  # fmt: skip
    assert [(v.name, v.number) for v in pb.ErrorClass.DESCRIPTOR.values] == [
        ("NONE", 0), ("RETRYABLE", 1), ("PERMANENT", 2), ("RATE_LIMITED", 3),
        ("AUTH_FAILED", 4), ("VALIDATION", 5), ("TIMEOUT", 6),
    ]  # fmt: skip
    assert [(v.name, v.number) for v in pb.TaskStatus.DESCRIPTOR.values] == [
        ("PENDING", 0), ("IN_PROGRESS", 1), ("COMPLETED", 2), ("FAILED", 3), ("RETRY", 4),
        ("COMPENSATED", 5),
    ]  # fmt: skip
