"""backfill orders.amount_cents

Revision ID: d0005
Revises: d0004
Create Date: 2026-11-30 00:00:04

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "d0005"
down_revision: str | Sequence[str] | None = "d0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.execute("UPDATE orders SET amount_cents = (amount * 100)::bigint WHERE amount_cents IS NULL")


def downgrade() -> None:
    """Downgrade schema."""
    op.execute("UPDATE orders SET amount_cents = NULL")
