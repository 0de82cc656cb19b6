"""One error tree for all of Legato.

::

    LegatoError
    ├── DefinitionError        a workflow definition is invalid (carries every finding)
    ├── InputError             a run's input or a command-line argument is invalid
    ├── ExpressionError        an expression or path does not parse or cannot be evaluated
    ├── StepError              a step failed; classified by ErrorClass (stored in the event log)
    │   └── ActivityNotFound   a task names an action nobody registered
    ├── NotFoundError          a run, definition or signal target does not exist (in this scope)
    ├── ConflictError          the run changed meanwhile, or is not in a state that allows this
    ├── StoreError             the database failed; translated from the driver by error code
    ├── ConfigurationError     settings are missing or wrong
    └── UsageError             the API was misused (for example, an engine used after close)

Operational failures (a service timed out, a run was not found) are apart from misuse
(``UsageError``).  Every error is keyword-only past its message, carries ``details``
(plain JSON data), and survives a round trip through :meth:`LegatoError.to_dict` /
:func:`error_from_dict`, so failures can be stored in the event log and rebuilt.

A class's docstring is its default message.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar


class ErrorClass(enum.StrEnum):
    """How a step failure is classified (the External Service Interface's ErrorClass)."""

    RETRYABLE = "RETRYABLE"
    PERMANENT = "PERMANENT"
    RATE_LIMITED = "RATE_LIMITED"
    AUTH_FAILED = "AUTH_FAILED"
    VALIDATION = "VALIDATION"
    TIMEOUT = "TIMEOUT"


class LegatoError(Exception):
    """Something went wrong in Legato."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = (
            message or (type(self).__doc__ or type(self).__name__).strip().splitlines()[0]
        )
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "message": self.message,
            "details": self.details,
            "retryable": self.retryable,
        }


class DefinitionError(LegatoError):
    """The workflow definition is invalid."""

    def __init__(
        self,
        message: str | None = None,
        *,
        findings: list[Any] | None = None,
        source: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.findings = list(findings or [])
        self.source = source
        if message is None and self.findings:
            where = f"{source}: " if source else ""
            lines = [f"{where}{len(self.findings)} problem(s) in the definition:"]
            lines += [f"  {f}" for f in self.findings]
            message = "\n".join(lines)
        super().__init__(message, details=details)


class InputError(LegatoError):
    """The input is invalid."""


class ExpressionError(LegatoError):
    """The expression is invalid."""


class StepError(LegatoError):
    """The step failed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        error_class: ErrorClass | str = ErrorClass.PERMANENT,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.error_class = ErrorClass(error_class)
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.error_class in (
            ErrorClass.RETRYABLE,
            ErrorClass.RATE_LIMITED,
            ErrorClass.TIMEOUT,
        )

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["error_class"] = self.error_class.value
        if self.retry_after is not None:
            data["retry_after"] = self.retry_after
        return data


class ActivityNotFound(StepError):
    """No activity is registered under this name."""

    def __init__(
        self, message: str | None = None, *, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, error_class=ErrorClass.PERMANENT, details=details)


class NotFoundError(LegatoError):
    """Not found."""


class ConflictError(LegatoError):
    """The resource changed meanwhile or is not in a state that allows this."""


class StoreError(LegatoError):
    """The database failed."""

    retryable = True


class ConfigurationError(LegatoError):
    """The configuration is invalid."""


class UsageError(LegatoError):
    """The API was used in a way it does not support."""


_BY_NAME: dict[str, type[LegatoError]] = {
    cls.__name__: cls
    for cls in (
        LegatoError,
        DefinitionError,
        InputError,
        ExpressionError,
        StepError,
        ActivityNotFound,
        NotFoundError,
        ConflictError,
        StoreError,
        ConfigurationError,
        UsageError,
    )
}


def error_from_dict(data: dict[str, Any]) -> LegatoError:
    """Rebuild an error stored with :meth:`LegatoError.to_dict`."""
    cls = _BY_NAME.get(str(data.get("type")), LegatoError)
    message = str(data.get("message", ""))
    details = dict(data.get("details") or {})
    if issubclass(cls, ActivityNotFound):
        return cls(message, details=details)
    if issubclass(cls, StepError):
        return cls(
            message,
            error_class=data.get("error_class", ErrorClass.PERMANENT),
            details=details,
            retry_after=data.get("retry_after"),
        )
    return cls(message, details=details)
