"""The canonical workflow model.

Every accepted format (see :mod:`legato.dsl.formats`) is read into :class:`Definition`.
The model is immutable (frozen pydantic v2 models) and exports a JSON Schema
(``legato schema``).

Values that reach a step (``input``, compensation input, subflow input) are JSON, where a
string may be an expression:

* ``"$.a.b"`` or ``"$"``: a JSONPath into the run's context;
* ``"{{ expr }}"`` alone: the value of the expression, with its type;
* ``"Hello {{ expr }}"``: text with the expression's value spliced in;
* anything else: a literal.

Conditions are either a CEL expression string (``"input.amount > 100"``) or structured:
``{field, operator, value}``, ``{all: [...]}``, ``{any: [...]}``, ``{not: ...}``.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from legato.dsl.durations import parse_duration
from legato.errors import ErrorClass

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]*$"

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration such as '30s', '5m', '72h', '2d' (numbers are seconds).",
        }
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryPolicy(_Model):
    """When and how often a failed step is tried again."""

    max_attempts: int = Field(3, ge=1, le=1000)
    initial_interval: Duration = 1.0
    backoff_coefficient: float = Field(2.0, ge=1.0, le=100.0)
    max_interval: Duration = 60.0
    non_retryable: tuple[ErrorClass, ...] = (
        ErrorClass.PERMANENT,
        ErrorClass.VALIDATION,
        ErrorClass.AUTH_FAILED,
    )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        raw = self.initial_interval * self.backoff_coefficient ** max(attempt - 1, 0)
        return float(min(raw, self.max_interval))


NO_RETRY = RetryPolicy(max_attempts=1)


# ---- conditions ---------------------------------------------------------------------------


class Operator(enum.StrEnum):
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    GREATER_THAN = "greater_than"
    GREATER_THAN_OR_EQUAL = "greater_than_or_equal"
    LESS_THAN = "less_than"
    LESS_THAN_OR_EQUAL = "less_than_or_equal"
    IN = "in"
    NOT_IN = "not_in"
    EXISTS = "exists"
    NOT_EXISTS = "not_exists"
    IS_TRUE = "is_true"
    IS_FALSE = "is_false"


class FieldCondition(_Model):
    """``{field, operator, value}``: ``field`` is a path into the context (``email``,
    ``customer.tier`` or ``$.customer.tier``)."""

    field: str
    operator: Operator = Operator.EQUALS
    value: Any = None


class AllOf(_Model):
    all: tuple[Condition, ...]


class AnyOf(_Model):
    any: tuple[Condition, ...]


class Not(_Model):
    not_: Condition = Field(alias="not")


Condition = str | FieldCondition | AllOf | AnyOf | Not

AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


# ---- states -------------------------------------------------------------------------------


class Catch(_Model):
    """A transition taken when a step fails past its retries (``on_failure``)."""

    errors: tuple[ErrorClass | Literal["ALL"], ...] = ("ALL",)
    next: str
    result_path: str | None = "$.error"


class Compensation(_Model):
    """What undoes a completed step when the run later fails or is cancelled."""

    action: str | None = None
    service: str | None = None
    operation: str | None = None
    input: Any = None
    retry: RetryPolicy | None = None
    timeout: Duration | None = None


class BatchConfig(_Model):
    enabled: bool = False
    max_size: int = Field(50, ge=1)
    max_wait: Duration = 1.0


class _StateBase(_Model):
    name: str | None = Field(None, description="Display name.")
    description: str | None = None
    next: str | None = None
    end: bool = False
    when: Condition | None = Field(
        None, description="Guard: when false the state is skipped and the run goes on to `next`."
    )
    depends_on: tuple[str, ...] = Field(
        (), description="States that must have completed; if one did not, this state is skipped."
    )


class TaskState(_StateBase):
    type: Literal["task"] = "task"
    action: str | None = None
    service: str | None = None
    operation: str | None = None
    input: Any = None
    output: dict[str, Any] | None = Field(
        None, description="Target path -> source; `$.result` is the step's result."
    )
    result_path: str | None = None
    retry: RetryPolicy | None = None
    timeout: Duration | None = None
    compensation: Compensation | None = None
    catch: tuple[Catch, ...] = ()
    async_: bool = Field(False, alias="async")
    callback_timeout: Duration | None = None
    batch: BatchConfig | None = None


class ChoiceRule(_Model):
    when: Condition
    next: str


class ChoiceState(_StateBase):
    type: Literal["choice"] = "choice"
    choices: tuple[ChoiceRule, ...]
    default: str | None = None


class Branch(_Model):
    """A small graph of its own: a parallel branch or a foreach body."""

    name: str
    start_at: str
    states: dict[str, State]


class AtLeast(_Model):
    at_least: int = Field(ge=1)


Join = Literal["all", "any"] | AtLeast


class ParallelState(_StateBase):
    type: Literal["parallel"] = "parallel"
    branches: tuple[Branch, ...]
    join: Join = "all"
    result_path: str | None = None
    catch: tuple[Catch, ...] = ()


class ForeachState(_StateBase):
    type: Literal["foreach"] = "foreach"
    items: Any = Field(description="A path or expression giving a list.")
    item_name: str = "item"
    concurrency: int = Field(10, ge=1, le=10000)
    iterator: Branch
    result_path: str | None = None
    catch: tuple[Catch, ...] = ()


class EventWait(_Model):
    name: str
    correlation: Any = Field(
        None, description="Expression; a signal must carry the same correlation value."
    )
    timeout: Duration | None = None
    timeout_next: str | None = Field(
        None, description="Where to go when the timeout fires (default: fail with TIMEOUT)."
    )


class WaitState(_StateBase):
    type: Literal["wait"] = "wait"
    duration: Duration | None = None
    until: Any = Field(None, description="An ISO-8601 instant with a zone, or an expression.")
    event: EventWait | None = None
    result_path: str | None = None


class SubflowState(_StateBase):
    type: Literal["subflow"] = "subflow"
    workflow: str
    version: str | None = None
    input: Any = None
    wait: bool = True
    result_path: str | None = None
    output: dict[str, Any] | None = None
    timeout: Duration | None = None
    catch: tuple[Catch, ...] = ()


class SucceedState(_StateBase):
    type: Literal["succeed"] = "succeed"
    output: Any = None


class FailState(_StateBase):
    type: Literal["fail"] = "fail"
    error: str = "Failed"
    cause: Any = None


State = Annotated[
    TaskState
    | ChoiceState
    | ParallelState
    | ForeachState
    | WaitState
    | SubflowState
    | SucceedState
    | FailState,
    Field(discriminator="type"),
]

STATE_TYPES = ("task", "choice", "parallel", "foreach", "wait", "subflow", "succeed", "fail")

Branch.model_rebuild()


# ---- triggers (used by the service; kept here so definitions round-trip) -----------------------


class Trigger(_Model):
    type: Literal["manual", "api", "event", "scheduled", "webhook"] = "manual"
    event_name: str | None = None
    conditions: tuple[Condition, ...] = ()
    schedule: Any = None
    secret_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Webhooks: the environment variable holding the HMAC secret.",
    )


class Definition(_Model):
    """A workflow definition in canonical form."""

    name: str
    version: str = "1"
    description: str | None = None
    start_at: str
    states: dict[str, State]
    input_at_root: bool = Field(
        False, description="Also place the run's input at the root of the context."
    )
    timeout: Duration | None = None
    retry: RetryPolicy | None = Field(None, description="Default retry policy for tasks.")
    trigger: Trigger | None = None
    enabled: bool = True
    source_format: str = Field("canonical", description="The format this was read from.")


def definition_json_schema() -> dict[str, Any]:
    """JSON Schema of the canonical format (``legato schema``)."""
    schema = Definition.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Legato workflow definition (canonical)"
    return schema
