"""Token buckets shared by every worker of a deployment (the ``rate_limits`` table).

A connector's ``rate_limit`` (``requests_per_second``, ``burst``) must hold for the whole
deployment, not per process, so the bucket lives in the store: one row per key (the
service name), with the tokens left and when they were counted.  Each acquisition is one
short write transaction: lock the row (``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR
UPDATE`` on PostgreSQL), refill by the time elapsed, take a token, write the row back.

A caller that would wait a little (up to ``max_wait``) *reserves* the next token: the
count may go below zero and the caller is told how long to wait before its slot.  That
keeps the rate exact without a second transaction after the wait.  A caller that would
wait longer takes nothing and is told how long the wait would be (the connector hub then
raises RATE_LIMITED and the engine retries durably).

The clock: PostgreSQL's ``clock_timestamp()`` (one clock for every machine); on SQLite,
which is one machine by construction, the process's ``time.time()``.

Rate limits are infrastructure, global to the deployment: like the worker registry, the
rows carry no tenant or environment.  See docs/decisions/0005.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from legato.store._db import dialect_insert
from legato.store.schema import rate_limits as t

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class RateLimitGrant:
    """The answer of one acquisition.

    ``granted``: a token is yours; start after ``wait`` seconds (0: at once).  Not
    granted: no token was taken; one would be free in ``wait`` seconds.
    """

    granted: bool
    wait: float


def take(
    tokens: float,
    updated_at: float,
    now: float,
    *,
    rate: float,
    burst: float,
    max_wait: float,
) -> tuple[float, float, RateLimitGrant]:
    """The bucket's arithmetic: ``(tokens, updated_at, grant)`` after one acquisition.

    Refill ``rate`` tokens a second since ``updated_at`` (never above ``burst``; a clock
    that goes back refills nothing), then take one token if there is one, else reserve
    the next one if it is at most ``max_wait`` seconds away, else take nothing.
    """
    if rate <= 0 or burst < 1:
        raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
    elapsed = max(0.0, now - updated_at)
    tokens = min(float(burst), tokens + elapsed * rate)
    stamp = max(updated_at, now)
    if tokens >= 1.0 - _EPSILON:
        return tokens - 1.0, stamp, RateLimitGrant(True, 0.0)
    wait = (1.0 - tokens) / rate
    if wait <= max_wait + _EPSILON:
        return tokens - 1.0, stamp, RateLimitGrant(True, wait)
    return tokens, stamp, RateLimitGrant(False, wait)


def _database_now(conn: sa.Connection) -> float:
    if conn.dialect.name == "postgresql":
        value = conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one()
        return float(value)
    return time.time()


def _locked_row(conn: sa.Connection, key: str) -> Any:
    # FOR UPDATE on PostgreSQL; SQLAlchemy renders nothing on SQLite, where the
    # transaction's BEGIN IMMEDIATE already holds the database's write lock.
    query = sa.select(t.c.tokens, t.c.updated_at).where(t.c.key == key).with_for_update()
    return conn.execute(query).first()


def take_token(
    conn: sa.Connection,
    key: str,
    *,
    rate: float,
    burst: float,
    max_wait: float,
    now: float | None = None,
) -> RateLimitGrant:
    """One acquisition from the bucket ``key``, in the caller's write transaction."""
    row = _locked_row(conn, key)
    if row is None:
        # A new bucket starts full (updated_at 0 refills it to `burst`).
        conn.execute(
            dialect_insert(conn, t)
            .values(key=key, tokens=float(burst), updated_at=0.0)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        row = _locked_row(conn, key)
        assert row is not None
    moment = _database_now(conn) if now is None else now
    tokens, stamp, grant = take(
        float(row.tokens), float(row.updated_at), moment, rate=rate, burst=burst, max_wait=max_wait
    )
    conn.execute(sa.update(t).where(t.c.key == key).values(tokens=tokens, updated_at=stamp))
    return grant


def reset(conn: sa.Connection, keys: Sequence[str] | None) -> int:
    """Forget buckets (all of them when ``keys`` is None): they start full again."""
    stmt = sa.delete(t)
    if keys is not None:
        stmt = stmt.where(t.c.key.in_(list(keys)))
    return conn.execute(stmt).rowcount or 0


def state(conn: sa.Connection, key: str) -> tuple[float, float] | None:
    """``(tokens, updated_at)`` of a bucket, or None if it has not been used."""
    row = conn.execute(sa.select(t.c.tokens, t.c.updated_at).where(t.c.key == key)).first()
    return None if row is None else (float(row.tokens), float(row.updated_at))
