"""The hot path's SQL: fixed statement text sent on the driver's own cursor.

Building a SQLAlchemy Core statement costs about 0.7 ms on this project's machines and
executing a prebuilt one about 70 µs; the same statement as text on the DBAPI cursor
costs about 6 µs. A step's commit sends six statements, so the queries a worker runs for
every step (the group commit, run creation, claiming, reading a run) are written here
as text, once per dialect. Everything else stays SQLAlchemy Core. See
docs/decisions/0008-hot-path-sql.md.

The statements run inside the SQLAlchemy connection's transaction (``_transaction`` in
``sql.py``), so BEGIN IMMEDIATE, commit, rollback and error translation are unchanged.
Statement text uses ``?`` placeholders; :func:`sql` turns them into ``%s`` for psycopg.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa

# Rows per multi-row INSERT: well under SQLite's 32,766 bound variables at 12 columns.
CHUNK = 500


def cursor(conn: sa.Connection) -> Any:
    """The driver's cursor on the connection SQLAlchemy has in a transaction."""
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def is_pg(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql"


@cache
def _pg(text: str) -> str:
    # No statement here contains a literal '?' or '%', so this is a plain substitution.
    return text.replace("?", "%s")


def sql(conn: sa.Connection, text: str) -> str:
    """``text`` in the connection's parameter style."""
    return _pg(text) if is_pg(conn) else text


def marks(n: int) -> str:
    """``?, ?, ...`` for an IN list or a VALUES row of ``n``."""
    return ", ".join("?" * n) if n else "NULL"


def chunks(rows: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
