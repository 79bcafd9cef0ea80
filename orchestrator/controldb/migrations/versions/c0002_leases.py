"""Distributed execution: dispatch time, database host and lease of each tenant run.

Revision ID: c0002
Revises: c0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c0002"
down_revision = "c0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenant_runs") as batch:
        batch.add_column(sa.Column("db_host", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_tenant_runs_status_lease_expires_at", "tenant_runs", ["status", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_tenant_runs_status_lease_expires_at", "tenant_runs")
    with op.batch_alter_table("tenant_runs") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("dispatched_at")
        batch.drop_column("db_host")
