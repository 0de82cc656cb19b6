"""Cron progress of the trigger scheduler.

Revision ID: 0004
Revises: 0003
Create Date: 2024-12-19
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("tenant_id", sa.String(), nullable=False),
        sa.Column("environment_id", sa.String(), nullable=False),
        sa.Column("workflow_id", sa.String(), nullable=False),
        sa.Column("schedule", sa.String(), nullable=False),
        sa.Column("last_tick", sa.String(), nullable=True),
        sa.Column("next_tick", sa.String(), nullable=False),
        sa.Column("updated_at", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "environment_id", "workflow_id", name="pk_schedules"),
    )
    op.create_index("ix_schedules_next_tick", "schedules", ["next_tick"])


def downgrade() -> None:
    op.drop_table("schedules")
