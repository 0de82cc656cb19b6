"""The initial schema: definitions, runs, events, due_work, signals, workers.

Revision ID: 0001
Revises:
Create Date: 2024-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _scope() -> list[sa.Column[str]]:
    return [
        sa.Column("tenant_id", sa.String(), nullable=False),
        sa.Column("environment_id", sa.String(), nullable=False),
    ]


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id", "environment_id", "run_id"],
        ["runs.tenant_id", "runs.environment_id", "runs.id"],
        name=f"fk_{table}_tenant_id_environment_id_run_id",
    )


def upgrade() -> None:
    op.create_table(
        "definitions",
        *_scope(),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("source_format", sa.String(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "environment_id", "name", "version", name="pk_definitions"
        ),
    )

    op.create_table(
        "runs",
        *_scope(),
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
        sa.PrimaryKeyConstraint("tenant_id", "environment_id", "id", name="pk_runs"),
        postgresql_with={"fillfactor": 70},
    )
    op.create_index("ix_runs_id", "runs", ["id"], unique=True)
    op.create_index(
        "ix_runs_tenant_id_environment_id_status", "runs", ["tenant_id", "environment_id", "status"]
    )
    op.create_index(
        "ix_runs_tenant_id_environment_id_created_at",
        "runs",
        ["tenant_id", "environment_id", "created_at"],
    )
    op.create_index("ix_runs_status", "runs", ["status"])

    op.create_table(
        "events",
        *_scope(),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("at", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_events"),
    )

    op.create_table(
        "due_work",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        *_scope(),
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
        sa.PrimaryKeyConstraint("id", name="pk_due_work"),
        sa.UniqueConstraint(
            "run_id", "kind", "key", "attempt", name="uq_due_work_run_id_kind_key_attempt"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_due_work_visible_at", "due_work", ["visible_at"])
    op.create_index("ix_due_work_lease_owner", "due_work", ["lease_owner"])

    op.create_table(
        "signals",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        *_scope(),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("correlation", sa.String(), nullable=True),
        sa.Column("created_at", sa.String(), nullable=False),
        sa.Column("delivered_at", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_signals"),
        _run_fk("signals"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_signals_run_id_delivered_at", "signals", ["run_id", "delivered_at"])
    op.create_index("ix_signals_delivered_at", "signals", ["delivered_at"])

    op.create_table(
        "workers",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("hostname", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )


def downgrade() -> None:
    for table in ("workers", "signals", "due_work", "events", "runs", "definitions"):
        op.drop_table(table)
