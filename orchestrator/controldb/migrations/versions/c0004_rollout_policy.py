"""Rollout operations: policy (canary, waves, failure budget, timeouts), halt reason, waves and
transient retries of tenant runs.

Revision ID: c0004
Revises: c0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c0004"
down_revision = "c0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("policy", sa.Text, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("halt_reason", sa.Text, nullable=True))
    with op.batch_alter_table("tenant_runs") as batch:
        batch.add_column(sa.Column("wave", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("retries", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_rollouts_state", "rollouts", ["state"])


def downgrade() -> None:
    op.drop_index("ix_rollouts_state", "rollouts")
    with op.batch_alter_table("tenant_runs") as batch:
        batch.drop_column("retries")
        batch.drop_column("wave")
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("halt_reason")
        batch.drop_column("policy")
