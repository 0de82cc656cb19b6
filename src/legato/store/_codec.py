"""How values are written to and read from the database: JSON text and UTC timestamps.

JSON is stored as TEXT that we serialise ourselves, identically on SQLite and PostgreSQL,
and timestamps as fixed-width ISO-8601 UTC text (``2024-05-01T12:00:00.000000Z``), which
sorts in time order as a string.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson

from legato.errors import UsageError

_ENCODER = json.JSONEncoder(
    separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
)


def dumps(value: Any, *, what: str = "value") -> str:
    """Canonical JSON text: compact, keys sorted, no NaN/Infinity."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the {what} is not JSON-serialisable: {exc}") from exc


def dumps_fast(value: Any, *, what: str = "value") -> str:
    """Compact JSON text, keys in their own order, by orjson (decision 0010); for data
    that is neither hashed nor compared as text and was JSON-checked where it entered
    (work payloads). What orjson refuses (an integer beyond 64 bits, a key that is not a
    string) goes to :func:`dumps`, which keeps it or says why not."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return dumps(value, what=what)


# Snapshots are rewritten on every commit and read back by key, never compared as text:
# no key sorting, no cycle check (the engine's state is a tree).
_SNAPSHOT_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)


def dumps_snapshot(value: Any) -> str:
    """JSON text of a run snapshot (compact; keys in the state's own order). Text is
    taken as already encoded (``RunState.to_json``)."""
    if isinstance(value, str):
        return value
    try:
        return _SNAPSHOT_ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise UsageError(f"the run snapshot is not JSON-serialisable: {exc}") from exc


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def require_aware(value: datetime, *, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise UsageError(
            f"{what} must be a timezone-aware datetime (for example datetime.now(UTC)), "
            f"got {value!r}"
        )
    return value


def ts(value: datetime, *, what: str = "timestamp") -> str:
    """A datetime as stored: ISO-8601 UTC text with microseconds and a ``Z``."""
    offset = value.utcoffset() if isinstance(value, datetime) else None
    if offset is None:
        require_aware(value, what=what)  # raises, saying what to pass
    if offset:
        value = value - offset
    # isoformat then cut the "+00:00": a third faster than strftime, and this runs several
    # times per step
    return value.isoformat(timespec="microseconds")[:26] + "Z"


def ts_or_none(value: datetime | None, *, what: str = "timestamp") -> str | None:
    return None if value is None else ts(value, what=what)


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def parse_ts_or_none(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
