"""Table definitions matching the revisions in ``versions/`` at head.

env.py hands this metadata to Alembic so ``alembic check`` / ``--autogenerate`` compare a migrated
tenant against it; keep it in step with the newest revision or autogenerate will propose changes.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("email", sa.String(255), nullable=True),
)

invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", name="fk_invoices_account_id_accounts"),
        nullable=False,
    ),
    sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="open"),
    sa.Index("ix_invoices_status", "status"),
)
