import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PENDING: _ClassVar[TaskStatus]
    IN_PROGRESS: _ClassVar[TaskStatus]
    COMPLETED: _ClassVar[TaskStatus]
    FAILED: _ClassVar[TaskStatus]
    RETRY: _ClassVar[TaskStatus]
    COMPENSATED: _ClassVar[TaskStatus]

class ErrorClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[ErrorClass]
    RETRYABLE: _ClassVar[ErrorClass]
    PERMANENT: _ClassVar[ErrorClass]
    RATE_LIMITED: _ClassVar[ErrorClass]
    AUTH_FAILED: _ClassVar[ErrorClass]
    VALIDATION: _ClassVar[ErrorClass]
    TIMEOUT: _ClassVar[ErrorClass]
PENDING: TaskStatus
IN_PROGRESS: TaskStatus
COMPLETED: TaskStatus
FAILED: TaskStatus
RETRY: TaskStatus
COMPENSATED: TaskStatus
NONE: ErrorClass
RETRYABLE: ErrorClass
PERMANENT: ErrorClass
RATE_LIMITED: ErrorClass
AUTH_FAILED: ErrorClass
VALIDATION: ErrorClass
TIMEOUT: ErrorClass

class TaskRequest(_message.Message):
    __slots__ = ("task_id", "workflow_id", "task_type", "idempotency_key", "payload", "metadata", "correlation_id", "trace_parent", "auth", "attempt_number", "deadline")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    workflow_id: str
    task_type: str
    idempotency_key: str
    payload: _any_pb2.Any
    metadata: _containers.ScalarMap[str, str]
    correlation_id: str
    trace_parent: str
    auth: AuthContext
    attempt_number: int
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., task_type: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., payload: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., correlation_id: _Optional[str] = ..., trace_parent: _Optional[str] = ..., auth: _Optional[_Union[AuthContext, _Mapping]] = ..., attempt_number: _Optional[int] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskResponse(_message.Message):
    __slots__ = ("task_id", "status", "result", "error_message", "error_class", "metadata", "side_effects", "cost", "retry_after_seconds")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SIDE_EFFECTS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: TaskStatus
    result: _any_pb2.Any
    error_message: str
    error_class: ErrorClass
    metadata: _containers.ScalarMap[str, str]
    side_effects: _containers.RepeatedCompositeFieldContainer[SideEffect]
    cost: CostMetrics
    retry_after_seconds: int
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., result: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., error_message: _Optional[str] = ..., error_class: _Optional[_Union[ErrorClass, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., side_effects: _Optional[_Iterable[_Union[SideEffect, _Mapping]]] = ..., cost: _Optional[_Union[CostMetrics, _Mapping]] = ..., retry_after_seconds: _Optional[int] = ...) -> None: ...

class SideEffect(_message.Message):
    __slots__ = ("effect_id", "effect_type", "description", "reversible", "compensation_method")
    EFFECT_ID_FIELD_NUMBER: _ClassVar[int]
    EFFECT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REVERSIBLE_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_METHOD_FIELD_NUMBER: _ClassVar[int]
    effect_id: str
    effect_type: str
    description: str
    reversible: bool
    compensation_method: str
    def __init__(self, effect_id: _Optional[str] = ..., effect_type: _Optional[str] = ..., description: _Optional[str] = ..., reversible: _Optional[bool] = ..., compensation_method: _Optional[str] = ...) -> None: ...

class AuthContext(_message.Message):
    __slots__ = ("tenant_id", "environment_id", "principal", "scopes", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    environment_id: str
    principal: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, tenant_id: _Optional[str] = ..., environment_id: _Optional[str] = ..., principal: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CostMetrics(_message.Message):
    __slots__ = ("currency", "amount", "units", "unit", "breakdown")
    class BreakdownEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    currency: str
    amount: float
    units: float
    unit: str
    breakdown: _containers.ScalarMap[str, float]
    def __init__(self, currency: _Optional[str] = ..., amount: _Optional[float] = ..., units: _Optional[float] = ..., unit: _Optional[str] = ..., breakdown: _Optional[_Mapping[str, float]] = ...) -> None: ...

class BatchTaskRequest(_message.Message):
    __slots__ = ("tasks", "batch_id")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskRequest]
    batch_id: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskRequest, _Mapping]]] = ..., batch_id: _Optional[str] = ...) -> None: ...

class BatchTaskResponse(_message.Message):
    __slots__ = ("responses", "batch_id")
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[TaskResponse]
    batch_id: str
    def __init__(self, responses: _Optional[_Iterable[_Union[TaskResponse, _Mapping]]] = ..., batch_id: _Optional[str] = ...) -> None: ...

class HealthStatus(_message.Message):
    __slots__ = ("status", "message", "details")
    class ServingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[HealthStatus.ServingStatus]
        SERVING: _ClassVar[HealthStatus.ServingStatus]
        NOT_SERVING: _ClassVar[HealthStatus.ServingStatus]
        DEGRADED: _ClassVar[HealthStatus.ServingStatus]
    UNKNOWN: HealthStatus.ServingStatus
    SERVING: HealthStatus.ServingStatus
    NOT_SERVING: HealthStatus.ServingStatus
    DEGRADED: HealthStatus.ServingStatus
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    status: HealthStatus.ServingStatus
    message: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, status: _Optional[_Union[HealthStatus.ServingStatus, str]] = ..., message: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ServiceCapabilities(_message.Message):
    __slots__ = ("service_name", "version", "operations", "async_operations", "supports_batch", "supports_streaming", "max_batch_size", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    ASYNC_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_BATCH_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STREAMING_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    version: str
    operations: _containers.RepeatedScalarFieldContainer[str]
    async_operations: _containers.RepeatedScalarFieldContainer[str]
    supports_batch: bool
    supports_streaming: bool
    max_batch_size: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, service_name: _Optional[str] = ..., version: _Optional[str] = ..., operations: _Optional[_Iterable[str]] = ..., async_operations: _Optional[_Iterable[str]] = ..., supports_batch: _Optional[bool] = ..., supports_streaming: _Optional[bool] = ..., max_batch_size: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CheckStatusRequest(_message.Message):
    __slots__ = ("operation_id", "task_id", "task_type", "idempotency_key")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    task_id: str
    task_type: str
    idempotency_key: str
    def __init__(self, operation_id: _Optional[str] = ..., task_id: _Optional[str] = ..., task_type: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...
