"""add account email

Revision ID: 0004
Revises: 0003
Create Date: 2024-11-24 00:00:03

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("accounts", sa.Column("email", sa.String(255), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    # SQLite cannot always drop a column in place; batch mode rebuilds the table there and is a
    # plain ALTER TABLE on PostgreSQL.
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("email")
