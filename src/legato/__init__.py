"""Legato: a durable workflow engine for business processes.

Write a workflow as data (YAML or JSON), run it embedded on one SQLite file, and it
survives crashes, restarts and flaky services. See README.md for the quick start.
"""

from legato.actions.send_email import EmailSettings
from legato.activity import ActivityContext, ActivityRegistry, activity
from legato.dsl.findings import Finding
from legato.dsl.loader import LoadResult, load_file, load_text
from legato.dsl.model import Definition, RetryPolicy
from legato.dsl.validate import validate
from legato.errors import (
    ActivityNotFound,
    ConfigurationError,
    ConflictError,
    DefinitionError,
    ErrorClass,
    ExpressionError,
    InputError,
    LegatoError,
    NotFoundError,
    StepError,
    StoreError,
    UsageError,
)
from legato.net import NetworkPolicy
from legato.runtime.local import Engine, RunResult
from legato.runtime.worker import WorkerOptions
from legato.settings import Settings
from legato.store import Scope

__version__ = "0.1.0"

__all__ = [
    "ActivityContext",
    "ActivityNotFound",
    "ActivityRegistry",
    "ConfigurationError",
    "ConflictError",
    "Definition",
    "DefinitionError",
    "EmailSettings",
    "Engine",
    "ErrorClass",
    "ExpressionError",
    "Finding",
    "InputError",
    "LegatoError",
    "LoadResult",
    "NetworkPolicy",
    "NotFoundError",
    "RetryPolicy",
    "RunResult",
    "Scope",
    "Settings",
    "StepError",
    "StoreError",
    "UsageError",
    "WorkerOptions",
    "activity",
    "load_file",
    "load_text",
    "validate",
]
