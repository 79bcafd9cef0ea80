"""Tenant registry, rollouts and tenant runs.

Revision ID: c0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(63), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("password_token", sa.Text, nullable=True),
        sa.Column("schema", sa.String(63), nullable=True),
        sa.Column("tags", sa.Text, nullable=False, server_default=""),
        sa.Column("group", sa.String(63), nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("command", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("selection", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("parallel", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollouts"),
    )
    op.create_table(
        "tenant_runs",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("rollout_id", sa.Integer, nullable=False),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("from_revision", sa.String(255), nullable=True),
        sa.Column("to_revision", sa.String(255), nullable=True),
        sa.Column("applied", sa.Text, nullable=False, server_default=""),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("error_class", sa.String(32), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("traceback", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tenant_runs"),
        sa.ForeignKeyConstraint(
            ["rollout_id"], ["rollouts.id"], name="fk_tenant_runs_rollout_id_rollouts", ondelete="CASCADE"
        ),
        sa.UniqueConstraint(
            "rollout_id", "tenant_id", "attempt", name="uq_tenant_runs_rollout_id_tenant_id_attempt"
        ),
    )
    op.create_index("ix_tenant_runs_rollout_id_status", "tenant_runs", ["rollout_id", "status"])
    op.create_index("ix_tenant_runs_tenant_id_id", "tenant_runs", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_table("tenant_runs")
    op.drop_table("rollouts")
    op.drop_table("tenants")
