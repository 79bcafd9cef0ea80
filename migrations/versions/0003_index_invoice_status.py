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


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index("ix_invoices_status", "invoices", ["status"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_invoices_status", table_name="invoices")
