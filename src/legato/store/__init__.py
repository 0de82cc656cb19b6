"""The durable store: definitions, runs, hash-chained events, due work, signals.

SQLAlchemy Core on SQLite (the default, a WAL file) or PostgreSQL; every scoped query
filters by tenant and environment.  Start with ``await SqlStore.open(url)``.
"""

from legato.store.chain import GENESIS, event_hash, verify
from legato.store.records import (
    CONFLICT_LEASE,
    CONFLICT_NOT_FOUND,
    CONFLICT_VERSION,
    CommitResult,
    DefinitionRecord,
    EventRecord,
    NewEvent,
    NewWork,
    RunCommit,
    RunRecord,
    SignalRecord,
    WorkItem,
)
from legato.store.scope import Scope
from legato.store.sql import SqlStore

__all__ = [
    "CONFLICT_LEASE",
    "CONFLICT_NOT_FOUND",
    "CONFLICT_VERSION",
    "GENESIS",
    "CommitResult",
    "DefinitionRecord",
    "EventRecord",
    "NewEvent",
    "NewWork",
    "RunCommit",
    "RunRecord",
    "Scope",
    "SignalRecord",
    "SqlStore",
    "WorkItem",
    "event_hash",
    "verify",
]
