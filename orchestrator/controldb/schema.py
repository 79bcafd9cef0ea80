"""Tables of the control database. Its Alembic history (``migrations/versions``) must match these."""

from __future__ import annotations

import sqlalchemy as sa

ACTIVE = "status IN ('queued', 'running')"
"""A run that holds its tenant (``states.ACTIVE``): at most one per tenant, across all rollouts."""

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(63), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("password_token", sa.Text, nullable=True),
    sa.Column("schema", sa.String(63), nullable=True),
    sa.Column("tags", sa.Text, nullable=False, server_default=""),
    sa.Column("group", sa.String(63), nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=True),
)

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("command", sa.String(16), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("selection", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("parallel", sa.Integer, nullable=False),
    sa.Column("policy", sa.Text, nullable=False, server_default="{}"),
    sa.Column("halt_reason", sa.Text, nullable=True),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("owner_lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index(None, "state"),
)

tenant_runs = sa.Table(
    "tenant_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("tenant_id", sa.String(63), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("from_revision", sa.String(255), nullable=True),
    sa.Column("to_revision", sa.String(255), nullable=True),
    sa.Column("applied", sa.Text, nullable=False, server_default=""),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=True),
    sa.Column("worker", sa.String(255), nullable=True),
    sa.Column("error_class", sa.String(32), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("traceback", sa.Text, nullable=True),
    sa.Column("db_host", sa.String(255), nullable=False, server_default=""),
    sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("wave", sa.Integer, nullable=False, server_default="1"),
    sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("blocked_by", sa.Integer, nullable=True),
    sa.UniqueConstraint("rollout_id", "tenant_id", "attempt"),
    sa.Index(None, "rollout_id", "status"),
    sa.Index(None, "tenant_id", "id"),
    sa.Index(None, "status", "lease_expires_at"),
    sa.Index(None, "status", "dispatched_at"),
    sa.Index(None, "rollout_id", "finished_at"),  # runs finished since a poll (the event feed)
    sa.Index(
        "uq_tenant_runs_active",
        "tenant_id",
        unique=True,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    ),
)

audits = sa.Table(
    "audits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("selection", sa.Text, nullable=False),
    sa.Column("head", sa.String(255), nullable=False),
    sa.Column("counts", sa.Text, nullable=False),
    sa.Column("drift", sa.Integer, nullable=False),
    sa.Index(None, "kind", "id"),
)

audit_findings = sa.Table(
    "audit_findings",
    metadata,
    sa.Column("audit_id", sa.Integer, sa.ForeignKey("audits.id", ondelete="CASCADE"), nullable=False),
    sa.Column("tenant_id", sa.String(63), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("revision", sa.Text, nullable=True),
    sa.Column("behind_by", sa.Integer, nullable=True),
    sa.Column("details", sa.Text, nullable=False, server_default="{}"),
    sa.Column("hint", sa.Text, nullable=True),
    sa.PrimaryKeyConstraint("audit_id", "tenant_id"),
    sa.Index(None, "audit_id", "state"),
    sa.Index(None, "tenant_id", "audit_id"),
)

schema_checks = sa.Table(
    "schema_checks",
    metadata,
    sa.Column("token", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

api_idempotency = sa.Table(
    "api_idempotency",
    metadata,
    sa.Column("principal", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("rollout_id", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
