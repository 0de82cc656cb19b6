"""Workflow definitions: immutable, versioned, scoped by tenant and environment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from legato.errors import ConflictError, NotFoundError
from legato.store import _raw
from legato.store._codec import dumps, loads, parse_ts, ts
from legato.store._db import dialect_insert
from legato.store.records import DefinitionRecord
from legato.store.schema import definitions as t
from legato.store.scope import Scope


def _scoped(scope: Scope) -> sa.ColumnElement[bool]:
    return sa.and_(t.c.tenant_id == scope.tenant_id, t.c.environment_id == scope.environment_id)


def _record(scope: Scope, row: sa.Row[Any]) -> DefinitionRecord:
    return DefinitionRecord(
        scope=scope,
        name=row.name,
        version=row.version,
        source_format=row.source_format,
        document=loads(row.document),
        source=row.source,
        content_hash=row.content_hash,
        enabled=bool(row.enabled),
        created_at=parse_ts(row.created_at),
    )


def put_definition(
    conn: sa.Connection,
    scope: Scope,
    *,
    name: str,
    version: str,
    source_format: str,
    document: dict[str, Any],
    source: str | None,
    content_hash: str,
    now: datetime,
) -> DefinitionRecord:
    values = {
        "tenant_id": scope.tenant_id,
        "environment_id": scope.environment_id,
        "name": name,
        "version": version,
        "source_format": source_format,
        "document": dumps(document, what="definition document"),
        "source": source,
        "content_hash": content_hash,
        "enabled": True,
        "created_at": ts(now, what="now"),
    }
    conn.execute(dialect_insert(conn, t).values(values).on_conflict_do_nothing())
    existing = get_definition(conn, scope, name, version)
    if existing.content_hash != content_hash:
        raise ConflictError(
            f"workflow {name!r} version {version!r} is already stored in {scope} with "
            "different content; versions are immutable, so bump `version` to publish a change",
            details={
                "name": name,
                "version": version,
                "stored_hash": existing.content_hash,
                "new_hash": content_hash,
            },
        )
    return existing


def get_definition(
    conn: sa.Connection, scope: Scope, name: str, version: str | None = None
) -> DefinitionRecord:
    query = sa.select(t).where(_scoped(scope), t.c.name == name)
    if version is None:
        query = query.order_by(t.c.created_at.desc(), t.c.version.desc()).limit(1)
    else:
        query = query.where(t.c.version == version)
    row = conn.execute(query).first()
    if row is None:
        which = f"version {version!r}" if version is not None else "any version"
        raise NotFoundError(
            f"workflow {name!r} ({which}) is not stored in {scope}; "
            "check the name and version, or deploy the definition first",
            details={"name": name, "version": version, **_scope_details(scope)},
        )
    return _record(scope, row)


def latest_version(conn: sa.Connection, scope: Scope, name: str) -> str:
    """The newest stored version's name (what ``get_definition`` without a version
    returns), without reading the document."""
    cur = _raw.cursor(conn)
    cur.execute(_raw.sql(conn, _LATEST), (scope.tenant_id, scope.environment_id, name))
    row = cur.fetchone()
    if row is None:
        get_definition(conn, scope, name)  # raises the NotFoundError that says what to do
    return str(row[0])


_LATEST = (
    "SELECT version FROM definitions WHERE tenant_id = ? AND environment_id = ? AND name = ? "
    "ORDER BY created_at DESC, version DESC LIMIT 1"
)


def list_definitions(conn: sa.Connection, scope: Scope) -> list[DefinitionRecord]:
    query = sa.select(t).where(_scoped(scope)).order_by(t.c.name, t.c.created_at, t.c.version)
    return [_record(scope, row) for row in conn.execute(query)]


def _scope_details(scope: Scope) -> dict[str, str]:
    return {"tenant_id": scope.tenant_id, "environment_id": scope.environment_id}
