"""Building the unit job of a tenant run: the one place that turns settings, a tenant and a rollout into
what ``unit.run_unit`` needs, for the in-process pool and the Celery task alike."""

from __future__ import annotations

from collections.abc import Mapping

from . import scripts
from .controldb.store import Store
from .models import Command, Tenant, UnitJob
from .registry import connection_url
from .secrets import SecretBox
from .settings import Settings


def secret_box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_key.get_secret_value() if settings.secret_key else None)


def build_job(
    settings: Settings, *, run_id: int, tenant: Tenant, command: Command, target: str, url: str
) -> UnitJob:
    return UnitJob(
        run_id=run_id,
        tenant_id=tenant.id,
        command=command,
        target=target,
        url=url,
        schema=tenant.schema,
        alembic_config=str(scripts.config_path(settings.alembic_config)),
        version_table=settings.version_table,
        lock_timeout_ms=int(settings.lock_timeout * 1000),
        statement_timeout_ms=int(settings.statement_timeout * 1000),
        lock_wait_s=settings.lock_wait,
        connect_timeout_s=settings.connect_timeout,
    )


async def job_for_run(store: Store, settings: Settings, run_id: int, environ: Mapping[str, str]) -> UnitJob:
    """The job of a claimed run, its URL resolved here (in the worker), never carried by a message."""
    run, rollout, tenant = await store.run_context(run_id)
    url = connection_url(tenant, secret_box(settings), environ)
    return build_job(
        settings, run_id=run.id, tenant=tenant, command=rollout.command, target=rollout.target, url=url
    )
