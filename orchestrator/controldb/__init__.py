"""The control database: the tenant registry, rollouts and tenant runs, with its own Alembic history."""
