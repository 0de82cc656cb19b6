"""The ExternalTaskExecutor contract (``workflow.v1``) and its generated Python code.

``executor.proto`` (under ``legato/executor/v1/``) is the source; ``scripts/gen_proto.sh``
generates ``executor_pb2`` (messages), ``executor_pb2_grpc`` (stub and servicer) and the
``.pyi`` stubs next to it, and they are committed so users need no grpcio-tools.

``pb`` and ``pb_grpc`` are those two modules; :mod:`legato.connectors.proto.codec`
converts between them and Legato's data (JSON payloads, error classes, side effects).
Importing this package needs the ``grpc`` extra (``pip install legato[grpc]``).
"""

from __future__ import annotations

from legato.connectors.proto.legato.executor.v1 import executor_pb2 as pb
from legato.connectors.proto.legato.executor.v1 import executor_pb2_grpc as pb_grpc

SERVICE_NAME = "workflow.v1.ExternalTaskExecutor"
"""The full name of the gRPC service (the prefix of every method path)."""

__all__ = ["SERVICE_NAME", "pb", "pb_grpc"]
