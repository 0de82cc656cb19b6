"""The tables (SQLAlchemy Core).  Every row carries ``tenant_id`` and ``environment_id``.

The same schema runs on SQLite and PostgreSQL: JSON is TEXT we serialise ourselves,
timestamps are ISO-8601 UTC TEXT (see ``_codec``), and instants the workers compare
(``visible_at``, leases, heartbeats) are float epoch seconds.  Strings carry no length
limit, so both databases accept the same values.

The migrations in ``migrations/versions`` create exactly this; a test compares them.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# INTEGER PRIMARY KEY is SQLite's rowid alias (the autoincrementing kind); BIGINT elsewhere.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _scope_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("tenant_id", sa.String(), nullable=False),
        sa.Column("environment_id", sa.String(), nullable=False),
    ]


def _run_fk() -> sa.ForeignKeyConstraint:
    # A row's scope must be its run's scope: the key includes tenant and environment.
    # events and due_work have no such key: they are written only by the group commit,
    # for runs it has just read and locked in that scope, and the per-row checks would
    # halve PostgreSQL's commit throughput (see docs/decisions/0003).
    return sa.ForeignKeyConstraint(
        ["tenant_id", "environment_id", "run_id"],
        ["runs.tenant_id", "runs.environment_id", "runs.id"],
    )


definitions = sa.Table(
    "definitions",
    metadata,
    *_scope_columns(),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("version", sa.String(), nullable=False),
    sa.Column("source_format", sa.String(), nullable=False),
    sa.Column("document", sa.Text(), nullable=False),
    sa.Column("source", sa.Text(), nullable=True),
    sa.Column("content_hash", sa.String(), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.String(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "environment_id", "name", "version"),
)

runs = sa.Table(
    "runs",
    metadata,
    *_scope_columns(),
    sa.Column("id", sa.String(), nullable=False),
    sa.Column("workflow", sa.String(), nullable=False),
    sa.Column("workflow_version", sa.String(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("snapshot", sa.Text(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("last_seq", sa.Integer(), nullable=False),
    sa.Column("last_hash", sa.String(), nullable=False),
    sa.Column("parent_run_id", sa.String(), nullable=True),
    sa.Column("created_at", sa.String(), nullable=False),
    sa.Column("updated_at", sa.String(), nullable=False),
    sa.Column("finished_at", sa.String(), nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "environment_id", "id"),
    sa.Index(None, "id", unique=True),
    sa.Index(None, "tenant_id", "environment_id", "status"),
    sa.Index(None, "tenant_id", "environment_id", "created_at"),
    # Recovery looks for unfinished runs across tenants (runs_with_status).
    sa.Index(None, "status"),
    # Every commit rewrites its run's row: free space on each page lets PostgreSQL
    # update in place (HOT) instead of touching all five indexes (3x faster commits).
    postgresql_with={"fillfactor": 70},
)

events = sa.Table(
    "events",
    metadata,
    *_scope_columns(),
    sa.Column("run_id", sa.String(), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("type", sa.String(), nullable=False),
    sa.Column("at", sa.String(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("prev_hash", sa.String(), nullable=False),
    sa.Column("hash", sa.String(), nullable=False),
    sa.PrimaryKeyConstraint("run_id", "seq"),
)

due_work = sa.Table(
    "due_work",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    *_scope_columns(),
    sa.Column("run_id", sa.String(), nullable=False),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("key", sa.String(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("visible_at", sa.Double(), nullable=False),
    sa.Column("lease_owner", sa.String(), nullable=True),
    sa.Column("lease_expires_at", sa.Double(), nullable=True),
    sa.Column("fence", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("created_at", sa.String(), nullable=False),
    sa.UniqueConstraint("run_id", "kind", "key", "attempt"),
    sa.Index(None, "visible_at"),
    sa.Index(None, "lease_owner"),
    # AUTOINCREMENT: SQLite must never reuse the id of a deleted row, or a stale
    # (id, fence) pair could match a new row.  PostgreSQL sequences never reuse.
    sqlite_autoincrement=True,
)

signals = sa.Table(
    "signals",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    *_scope_columns(),
    sa.Column("run_id", sa.String(), nullable=False),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("correlation", sa.String(), nullable=True),
    sa.Column("created_at", sa.String(), nullable=False),
    sa.Column("delivered_at", sa.String(), nullable=True),
    sa.Index(None, "run_id", "delivered_at"),
    sa.Index(None, "delivered_at"),
    _run_fk(),
    sqlite_autoincrement=True,
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("hostname", sa.String(), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("started_at", sa.Double(), nullable=False),
    sa.Column("heartbeat_at", sa.Double(), nullable=False),
)

# Token buckets of connector rate limits, shared by every worker (store/ratelimits.py).
# Deployment-wide infrastructure like `workers`: no tenant or environment (decision 0005).
rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("tokens", sa.Double(), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
)

# Workflows of the API (store/workflows.py): a stable id (`wf_<12 hex>`) naming a series of
# immutable versions, which live in `definitions` with name = the workflow's id.  The
# trigger columns are copied from the current version so that event fan-out and the cron
# scheduler find their workflows without reading documents.  Deleting marks the row.
workflows = sa.Table(
    "workflows",
    metadata,
    *_scope_columns(),
    sa.Column("id", sa.String(), nullable=False),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("current_version", sa.Integer(), nullable=False),
    sa.Column("trigger_type", sa.String(), nullable=False),
    sa.Column("event_name", sa.String(), nullable=True),
    sa.Column("schedule", sa.Text(), nullable=True),
    sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_by", sa.String(), nullable=True),
    sa.Column("created_at", sa.String(), nullable=False),
    sa.Column("updated_at", sa.String(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "environment_id", "id"),
    sa.Index(None, "tenant_id", "environment_id", "created_at"),
    # event fan-out: the enabled workflows of one scope listening to one event
    sa.Index(None, "tenant_id", "environment_id", "event_name"),
    # the cron scheduler looks across tenants for scheduled workflows
    sa.Index(None, "trigger_type"),
)

# Cron progress of the trigger scheduler (store/schedules.py, triggers/cron.py): per
# scheduled workflow, the schedule it was computed for (`cron|timezone`), the last tick
# fired or skipped and the next one due.  Only progress: a tick fires once because its
# run id is derived from it, so a lost or stale row can cost a look, never a second run.
schedules = sa.Table(
    "schedules",
    metadata,
    *_scope_columns(),
    sa.Column("workflow_id", sa.String(), nullable=False),
    sa.Column("schedule", sa.String(), nullable=False),
    sa.Column("last_tick", sa.String(), nullable=True),
    sa.Column("next_tick", sa.String(), nullable=False),
    sa.Column("updated_at", sa.String(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "environment_id", "workflow_id"),
    sa.Index(None, "next_tick"),
)
