"""index invoice status

Revision ID: 0003
Revises: 0002
Create Date: 2024-11-24 00:00:02

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# invoices is created by 0002, in the same release as this index: no tenant has rows in it yet, so a plain
# CREATE INDEX blocks nobody (on a table in use, build it CONCURRENTLY in an autocommit_block instead).
# tenantctl: allow create-index-not-concurrently
def upgrade() -> None:
    """Upgrade schema."""
    op.create_index("ix_invoices_status", "invoices", ["status"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_invoices_status", table_name="invoices")
