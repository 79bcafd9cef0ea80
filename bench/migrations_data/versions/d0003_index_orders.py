"""index orders by customer and status

Revision ID: d0003
Revises: d0002
Create Date: 2026-11-30 00:00:02

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "d0003"
down_revision: str | Sequence[str] | None = "d0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# orders is created by d0001 in the same release: no tenant uses it yet, so a plain CREATE INDEX blocks
# nobody (on a table in use, build it CONCURRENTLY in an autocommit_block instead).
# tenantctl: allow create-index-not-concurrently
def upgrade() -> None:
    """Upgrade schema."""
    op.create_index("ix_orders_customer_status", "orders", ["customer_id", "status"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_orders_customer_status", table_name="orders")
