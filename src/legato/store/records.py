"""What goes into the store and what comes out: frozen, keyword-only dataclasses.

Inputs (``NewEvent``, ``NewWork``, ``RunCommit``) are validated when built; records
returned by the store carry plain Python values (JSON already decoded, timestamps as
timezone-aware UTC datetimes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from legato.errors import ConflictError, UsageError
from legato.store._codec import require_aware
from legato.store.scope import Scope

# -- inputs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event to append to a run's log; the store assigns ``seq`` and the hashes."""

    type: str
    at: datetime
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise UsageError(f"NewEvent.type must be a non-empty string, got {self.type!r}")
        require_aware(self.at, what="NewEvent.at")


@dataclass(frozen=True, slots=True, kw_only=True)
class NewWork:
    """A row of due work (a step to run, a timer to fire, a child to start...).

    ``(run_id, kind, key, attempt)`` is unique; inserting it again is ignored.
    ``run_id`` is None for the run being created or committed; naming another run of the
    same scope lets a commit hand work to it in the same transaction (a child run's last
    commit notifying its parent); work for a run that does not exist there is ignored.
    With
    ``lease_owner`` set the row is inserted already leased to that owner (``fence`` 1,
    ``lease_expires_at = visible_at + lease_seconds``), so a local worker can run the
    work it just created without polling for it.
    """

    kind: str
    key: str
    run_id: str | None = None
    attempt: int = 1
    payload: dict[str, Any] = field(default_factory=dict)
    visible_at: float
    lease_owner: str | None = None
    lease_seconds: float | None = None

    def __post_init__(self) -> None:
        if not self.kind or not isinstance(self.kind, str):
            raise UsageError(f"NewWork.kind must be a non-empty string, got {self.kind!r}")
        if self.run_id is not None and (not isinstance(self.run_id, str) or not self.run_id):
            raise UsageError(f"NewWork.run_id must be a non-empty string, got {self.run_id!r}")
        if not isinstance(self.key, str):
            raise UsageError(f"NewWork.key must be a string, got {self.key!r}")
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int) or self.attempt < 0:
            raise UsageError(f"NewWork.attempt must be an int >= 0, got {self.attempt!r}")
        if self.lease_owner is not None and not (self.lease_seconds and self.lease_seconds > 0):
            raise UsageError("NewWork.lease_seconds must be > 0 when lease_owner is set")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCommit:
    """One run's share of a group commit (see ``SqlStore.commit``).

    ``done_work`` holds ``(work id, fence)`` pairs the committer finished under its lease;
    ``drop_work_keys`` holds ``(kind, key)`` pairs of this run deleted whatever their lease
    (applied before ``add_work``, so one commit can replace a row); ``finished_at`` is
    written as given (``None`` clears it). ``snapshot`` is the run's state as JSON data,
    or as its JSON text already encoded (``RunState.to_json``).
    """

    scope: Scope
    run_id: str
    expected_version: int
    status: str
    snapshot: dict[str, Any] | str
    now: datetime
    events: Sequence[NewEvent] = ()
    add_work: Sequence[NewWork] = ()
    done_work: Sequence[tuple[int, int]] = ()
    drop_work_keys: Sequence[tuple[str, str]] | None = None
    finished_at: datetime | None = None
    signals_delivered: Sequence[int] = ()

    def __post_init__(self) -> None:
        require_aware(self.now, what="RunCommit.now")
        if self.finished_at is not None:
            require_aware(self.finished_at, what="RunCommit.finished_at")
        for name in ("events", "add_work", "done_work", "signals_delivered"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "drop_work_keys", tuple(self.drop_work_keys or ()))


# -- records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DefinitionRecord:
    scope: Scope
    name: str
    version: str
    source_format: str
    document: dict[str, Any]
    source: str | None
    content_hash: str
    enabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkItem:
    """A row of due work as a worker sees it; ``fence`` proves its lease when done."""

    id: int
    scope: Scope
    run_id: str
    kind: str
    key: str
    attempt: int
    payload: dict[str, Any]
    visible_at: float
    fence: int
    lease_owner: str | None = None
    lease_expires_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """A run's row.  ``snapshot`` is ``None`` in ``list_runs`` results (read ``get_run``),
    and in ``create_run``'s when it was given as JSON text (the caller has the state).

    ``leased_work`` is filled only by ``create_run``: the work rows it inserted already
    leased (``NewWork.lease_owner``), with the ids and fences needed to finish them.
    """

    scope: Scope
    id: str
    workflow: str
    workflow_version: str
    status: str
    snapshot: dict[str, Any] | None
    version: int
    last_seq: int
    last_hash: str
    parent_run_id: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    leased_work: tuple[WorkItem, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    run_id: str
    seq: int
    type: str
    at: datetime
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalRecord:
    id: int
    scope: Scope
    run_id: str
    name: str
    payload: Any
    correlation: str | None
    created_at: datetime
    delivered_at: datetime | None


CONFLICT_VERSION = "version"
CONFLICT_LEASE = "lease"
CONFLICT_NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitResult:
    """The outcome of one ``RunCommit``.

    ``ok`` and ``conflict`` are exclusive.  A conflict's ``reason`` is one of
    ``CONFLICT_VERSION`` (the run's version moved on: reload it and decide again),
    ``CONFLICT_LEASE`` (a ``done_work`` fence did not match: another worker took that
    work over) or ``CONFLICT_NOT_FOUND`` (no such run in that scope).  On success
    ``version``/``last_seq`` are the run's new values and ``leased`` the work rows
    inserted already leased to their owner.
    """

    ok: bool
    conflict: bool
    version: int | None
    last_seq: int | None
    reason: str | None = None
    leased: tuple[WorkItem, ...] = ()


class StaleVersionError(ConflictError):
    """``create_run(latest_only=True)`` found a newer version than the one asked for."""
