"""Alembic environment of the control database. tenantctl always hands it a connection
(``config.attributes["connection"]``); it never opens one itself."""

from __future__ import annotations

from alembic import context

from orchestrator.controldb.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the control database is migrated with `tenantctl db upgrade`, not with alembic")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    version_table="tenantctl_version",
)
with context.begin_transaction():
    context.run_migrations()
