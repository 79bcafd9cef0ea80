"""One run lifecycle: a rollout's coordinator lease, busy tenants, one active run per tenant.

- ``rollouts.owner`` / ``owner_lease_expires_at``: the in-process coordinator that carries a rollout
  renews this lease; the reaper halts a rollout whose coordinator stopped renewing it (it was killed).
- ``tenant_runs.blocked_by``: the rollout that held a tenant when another one selected it (skipped).
- ``uq_tenant_runs_active``: at most one queued or running run per tenant across all rollouts, decided
  by the database rather than by waiting on the tenant's advisory lock.

Runs left ``running`` without a lease by earlier in-process coordinators get an expired lease so the
reaper judges them from the tenant's real revision; where a tenant has several active runs (which the
new index forbids), all but its newest are closed as ``lost``.

Revision ID: c0007
Revises: c0006
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "c0007"
down_revision = "c0006"
branch_labels = None
depends_on = None

ACTIVE = "status IN ('queued', 'running')"


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))
        batch.add_column(sa.Column("owner_lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("tenant_runs") as batch:
        batch.add_column(sa.Column("blocked_by", sa.Integer, nullable=True))
    runs = sa.table(
        "tenant_runs",
        sa.column("id", sa.Integer),
        sa.column("tenant_id", sa.String),
        sa.column("status", sa.String),
        sa.column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.column("error_class", sa.String),
        sa.column("error_message", sa.Text),
        sa.column("finished_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    op.execute(
        runs.update()
        .where(runs.c.status == "running", runs.c.lease_expires_at.is_(None))
        .values(lease_expires_at=now)
    )
    active = sa.text(ACTIVE)
    newest = sa.select(sa.func.max(runs.c.id)).where(active).group_by(runs.c.tenant_id).scalar_subquery()
    op.execute(
        runs.update()
        .where(active, runs.c.id.not_in(newest))
        .values(
            status="failed",
            error_class="lost",
            error_message="superseded: the tenant had several active runs (control DB upgrade c0007)",
            finished_at=now,
            lease_expires_at=None,
        )
    )
    op.create_index(
        "uq_tenant_runs_active",
        "tenant_runs",
        ["tenant_id"],
        unique=True,
        postgresql_where=active,
        sqlite_where=active,
    )


def downgrade() -> None:
    op.drop_index("uq_tenant_runs_active", table_name="tenant_runs")
    with op.batch_alter_table("tenant_runs") as batch:
        batch.drop_column("blocked_by")
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("owner_lease_expires_at")
        batch.drop_column("owner")
