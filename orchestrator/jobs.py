"""Building the unit job of a tenant run: the one place that turns settings, a tenant and a rollout into
what ``unit.run_unit`` needs, for the in-process pool and the Celery task alike."""

from __future__ import annotations

from collections.abc import Mapping

from . import scripts
from .models import Rollout, Tenant, TenantRun, UnitJob
from .registry import connection_url
from .secrets import SecretBox
from .settings import Settings


def secret_box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_key.get_secret_value() if settings.secret_key else None)


def build_job(settings: Settings, *, run_id: int, tenant: Tenant, rollout: Rollout, url: str) -> UnitJob:
    """The rollout's own timeouts (``--lock-timeout`` …) win over the settings' defaults."""
    policy = rollout.policy

    def pick(value: float | None, default: float) -> float:
        return default if value is None else value

    return UnitJob(
        run_id=run_id,
        rollout_id=rollout.id,
        tenant_id=tenant.id,
        command=rollout.command,
        target=rollout.target,
        url=url,
        schema=tenant.schema,
        alembic_config=str(scripts.config_path(settings.alembic_config)),
        version_table=settings.version_table,
        lock_timeout_ms=int(pick(policy.lock_timeout, settings.lock_timeout) * 1000),
        statement_timeout_ms=int(pick(policy.statement_timeout, settings.statement_timeout) * 1000),
        task_timeout_s=pick(policy.task_timeout, settings.task_timeout),
        lock_wait_s=settings.lock_wait,
        connect_timeout_s=settings.connect_timeout,
        transient_retries=settings.transient_retries,
        retry_backoff_s=settings.retry_backoff,
        retry_backoff_max_s=settings.retry_backoff_max,
        control_url=settings.database_url.get_secret_value(),
    )


def job_from(
    settings: Settings, run: TenantRun, rollout: Rollout, tenant: Tenant, environ: Mapping[str, str]
) -> UnitJob:
    """The job of a claimed run, its URL resolved here (in the worker), never carried by a message."""
    url = connection_url(tenant, secret_box(settings), environ)
    return build_job(settings, run_id=run.id, tenant=tenant, rollout=rollout, url=url)
