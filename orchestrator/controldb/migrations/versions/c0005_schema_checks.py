"""Schema-audit results handed back by workers (the control DB, not a Celery result backend, carries
them).

Revision ID: c0005
Revises: c0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c0005"
down_revision = "c0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schema_checks",
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token", "tenant_id", name="pk_schema_checks"),
    )


def downgrade() -> None:
    op.drop_table("schema_checks")
