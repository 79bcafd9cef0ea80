"""Drift audits and their per-tenant findings.

Revision ID: c0003
Revises: c0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c0003"
down_revision = "c0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audits",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("selection", sa.Text, nullable=False),
        sa.Column("head", sa.String(255), nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
        sa.Column("drift", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audits"),
    )
    op.create_index("ix_audits_kind_id", "audits", ["kind", "id"])
    op.create_table(
        "audit_findings",
        sa.Column("audit_id", sa.Integer, nullable=False),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("revision", sa.Text, nullable=True),
        sa.Column("behind_by", sa.Integer, nullable=True),
        sa.Column("details", sa.Text, nullable=False, server_default="{}"),
        sa.Column("hint", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("audit_id", "tenant_id", name="pk_audit_findings"),
        sa.ForeignKeyConstraint(
            ["audit_id"], ["audits.id"], name="fk_audit_findings_audit_id_audits", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_audit_findings_audit_id_state", "audit_findings", ["audit_id", "state"])
    op.create_index("ix_audit_findings_tenant_id_audit_id", "audit_findings", ["tenant_id", "audit_id"])


def downgrade() -> None:
    op.drop_table("audit_findings")
    op.drop_table("audits")
