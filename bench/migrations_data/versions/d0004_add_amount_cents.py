"""add orders.amount_cents

Revision ID: d0004
Revises: d0003
Create Date: 2026-11-30 00:00:03

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "d0004"
down_revision: str | Sequence[str] | None = "d0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("orders", sa.Column("amount_cents", sa.BigInteger, nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("orders", "amount_cents")
