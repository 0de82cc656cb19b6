"""The API's workflows: a stable id over immutable definition versions.

Revision ID: 0003
Revises: 0002
Create Date: 2024-12-19
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("tenant_id", sa.String(), nullable=False),
        sa.Column("environment_id", sa.String(), nullable=False),
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
        sa.PrimaryKeyConstraint("tenant_id", "environment_id", "id", name="pk_workflows"),
    )
    op.create_index(
        "ix_workflows_tenant_id_environment_id_created_at",
        "workflows",
        ["tenant_id", "environment_id", "created_at"],
    )
    op.create_index(
        "ix_workflows_tenant_id_environment_id_event_name",
        "workflows",
        ["tenant_id", "environment_id", "event_name"],
    )
    op.create_index("ix_workflows_trigger_type", "workflows", ["trigger_type"])


def downgrade() -> None:
    op.drop_table("workflows")
