"""Translate database driver exceptions into Legato's errors, in this one place.

By error code only, never by message text: sqlite3 errors by ``sqlite_errorcode``,
psycopg errors by SQLSTATE.  Callers write ``raise translate(exc) from exc`` (or use
:func:`translated`), so the driver's exception stays attached as ``__cause__``.

=====================================  =========================================
database says                          Legato raises
=====================================  =========================================
SQLITE_BUSY, SQLITE_LOCKED, PROTOCOL   StoreError (retryable)
SQLITE_CONSTRAINT unique/PK/FK         ConflictError
40001, 40P01 (serialization, deadlock) StoreError (retryable)
23505 unique, 23503 foreign key        ConflictError
08xxx, 53xxx, 57P0x, 55P03, lost conn  StoreError (retryable)
anything else                          StoreError (not retryable)
=====================================  =========================================
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import exc as sa_exc

from legato.errors import ConflictError, LegatoError, StoreError

# sqlite3 primary result codes (the low byte of the extended code).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_PROTOCOL = 15
SQLITE_CONSTRAINT = 19
_SQLITE_RETRYABLE = {SQLITE_BUSY, SQLITE_LOCKED, SQLITE_PROTOCOL}
# Extended constraint codes that mean "this row collides with another one".
SQLITE_CONSTRAINT_FOREIGNKEY = 787
SQLITE_CONSTRAINT_PRIMARYKEY = 1555
SQLITE_CONSTRAINT_UNIQUE = 2067
_SQLITE_CONFLICT = {
    SQLITE_CONSTRAINT_FOREIGNKEY,
    SQLITE_CONSTRAINT_PRIMARYKEY,
    SQLITE_CONSTRAINT_UNIQUE,
}

_PG_RETRYABLE = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}
_PG_RETRYABLE_CLASSES = {"08", "53"}  # connection exceptions, insufficient resources
_PG_CONFLICT = {"23505", "23503"}

_DRIVER_ERRORS: tuple[type[BaseException], ...] = (sa_exc.SQLAlchemyError, sqlite3.Error)
try:  # psycopg is an optional dependency (the ``postgres`` extra).
    import psycopg

    _DRIVER_ERRORS += (psycopg.Error,)
except ImportError:  # pragma: no cover - depends on the installed extras
    pass


def _store_error(message: str, *, retryable: bool, details: dict[str, Any]) -> StoreError:
    error = StoreError(message, details={**details, "retryable": retryable})
    if not retryable:
        # StoreError is retryable as a class; this instance is not (a bug, a missing
        # schema, a full disk).  The instance attribute wins in ``to_dict`` too.
        error.retryable = False  # type: ignore[misc]
    return error


def _from_sqlite(orig: sqlite3.Error) -> LegatoError:
    code = getattr(orig, "sqlite_errorcode", None)
    name = getattr(orig, "sqlite_errorname", None)
    details = {"driver": "sqlite3", "code": code, "code_name": name}
    if code is None:
        return _store_error(f"SQLite failed: {orig}", retryable=False, details=details)
    primary = code & 0xFF
    if primary in _SQLITE_RETRYABLE:
        return _store_error(
            f"the SQLite database is busy ({name}); the operation can be retried",
            retryable=True,
            details=details,
        )
    if code in _SQLITE_CONFLICT:
        return ConflictError(
            f"the write conflicts with a row already stored ({name})", details=details
        )
    return _store_error(f"SQLite failed ({name}): {orig}", retryable=False, details=details)


def _from_psycopg(orig: BaseException) -> LegatoError:
    sqlstate = getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    details: dict[str, Any] = {"driver": "psycopg", "sqlstate": sqlstate}
    if diag is not None:
        for field in ("table_name", "constraint_name"):
            value = getattr(diag, field, None)
            if value:
                details[field] = value
    if sqlstate is None:
        # No SQLSTATE: the client failed (connection refused or lost).
        return _store_error(f"cannot reach PostgreSQL: {orig}", retryable=True, details=details)
    if sqlstate in _PG_CONFLICT:
        where = f" ({details['constraint_name']})" if "constraint_name" in details else ""
        return ConflictError(
            f"the write conflicts with a row already stored{where}", details=details
        )
    if sqlstate in _PG_RETRYABLE or sqlstate[:2] in _PG_RETRYABLE_CLASSES:
        return _store_error(
            f"PostgreSQL could not complete the transaction (SQLSTATE {sqlstate}); "
            "the operation can be retried",
            retryable=True,
            details=details,
        )
    return _store_error(
        f"PostgreSQL failed (SQLSTATE {sqlstate}): {orig}", retryable=False, details=details
    )


def translate(exc: BaseException) -> LegatoError:
    """The Legato error for a driver or SQLAlchemy exception."""
    if isinstance(exc, LegatoError):
        return exc
    orig: BaseException | None = exc
    if isinstance(exc, sa_exc.DBAPIError):
        orig = exc.orig
        if exc.connection_invalidated and not isinstance(orig, sqlite3.Error):
            return _store_error(
                f"the database connection was lost: {orig}",
                retryable=True,
                details={"driver": type(orig).__module__.split(".")[0]},
            )
    if isinstance(orig, sqlite3.Error):
        return _from_sqlite(orig)
    if orig is not None and type(orig).__module__.split(".")[0] == "psycopg":
        return _from_psycopg(orig)
    if isinstance(exc, sa_exc.TimeoutError):  # the connection pool is exhausted
        return _store_error(
            "no database connection became free in time", retryable=True, details={}
        )
    return _store_error(
        f"the database layer failed: {exc}",
        retryable=False,
        details={"exception": type(exc).__name__},
    )


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise driver and SQLAlchemy exceptions as Legato errors (``from`` the original)."""
    try:
        yield
    except _DRIVER_ERRORS as exc:
        raise translate(exc) from exc
