"""Fresh PostgreSQL databases for one benchmark run (created, then dropped)."""

from __future__ import annotations

import os
import uuid

ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _base() -> str:
    return ADMIN_URL.rsplit("/", 1)[0]


def create_database(prefix: str) -> tuple[str, str]:
    """Create an empty database; returns (name, URL)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{_base()}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_durability() -> str:
    """PostgreSQL's own durability settings, as configured on this server."""
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        values = {
            key: conn.execute(f"SHOW {key}").fetchone()[0]  # type: ignore[index]
            for key in ("fsync", "synchronous_commit", "wal_sync_method", "server_version")
        }
    return (
        f"PostgreSQL {values['server_version']}: fsync={values['fsync']}, "
        f"synchronous_commit={values['synchronous_commit']}, "
        f"wal_sync_method={values['wal_sync_method']}"
    )


def available() -> bool:
    try:
        import psycopg

        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3):
            return True
    except Exception:
        return False
