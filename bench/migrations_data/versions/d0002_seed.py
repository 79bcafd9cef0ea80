"""seed customers and orders

Revision ID: d0002
Revises: d0001
Create Date: 2026-11-30 00:00:01

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "d0002"
down_revision: str | Sequence[str] | None = "d0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# 200 customers and 1,800 orders: the reference data a new tenant starts with. Unqualified names: env.py's
# search_path puts them in the tenant's schema.
def upgrade() -> None:
    """Upgrade schema."""
    op.execute(
        "INSERT INTO customers (name, region) "
        "SELECT 'customer ' || i, (ARRAY['eu', 'us', 'apac'])[1 + i % 3] FROM generate_series(1, 200) AS i"
    )
    op.execute(
        "INSERT INTO orders (customer_id, amount, status, placed_at) "
        "SELECT 1 + i % 200, (i % 997) * 1.25, (ARRAY['open', 'paid', 'shipped', 'void'])[1 + i % 4], "
        "now() - i * interval '1 hour' FROM generate_series(1, 1800) AS i"
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.execute("DELETE FROM orders")
    op.execute("DELETE FROM customers")
