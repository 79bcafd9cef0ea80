"""The reaper: decides runs whose process vanished (lease expired), halts rollouts whose coordinator
vanished, and keeps rollouts moving.

A run whose lease expired (a Celery worker or a child of the in-process pool killed, or cut from the
control DB past its lease) is judged only when its tenant's migration lock is free (no one is still
migrating it). Its revision is read back from the tenant: at the rollout's absolute target it succeeded
(the process died after the work); anywhere else it failed as ``lost``, and ``retry`` brings it on.
A rollout whose in-process coordinator stopped renewing its lease (``tenantctl upgrade`` killed) is
halted: its runs not started wait for ``resume``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from . import scripts
from .controldb.store import Store
from .exceptions import TenantctlError
from .jobs import secret_box
from .models import ErrorClass, RunStatus, TenantRun
from .registry import connection_url
from .revisions import probe_lock
from .runs import Send, close_if_done, dispatch_more, stop
from .settings import Settings

log = logging.getLogger("tenantctl.reaper")


@dataclass(frozen=True, kw_only=True)
class Reaped:
    tenant_id: str
    rollout_id: int
    run_id: int
    status: RunStatus
    message: str


async def reap(
    store: Store, settings: Settings, environ: Mapping[str, str], send: Send | None = None
) -> list[Reaped]:
    """One pass: halt rollouts whose coordinator died, resolve expired runs, re-dispatch lost messages
    (with a sender), close finished rollouts (notifying once)."""
    for rollout_id, owner in await store.orphaned_rollouts():
        reason = f"coordinator {owner} stopped (its lease expired): `tenantctl resume {rollout_id}` continues"
        await stop(store, settings, rollout_id, reason)
    reaped = [
        r for run in await store.expired_leases() if (r := await _resolve(store, settings, environ, run))
    ]
    for rollout_id in await store.open_rollouts():
        if send is not None:
            await dispatch_more(store, settings, rollout_id, send)
        await close_if_done(store, settings, rollout_id)
    return reaped


async def _resolve(
    store: Store, settings: Settings, environ: Mapping[str, str], run: TenantRun
) -> Reaped | None:
    _, rollout, tenant = await store.run_context(run.id)
    lost = f"worker {run.worker} stopped renewing its lease"
    try:
        url = connection_url(tenant, secret_box(settings), environ)
    except TenantctlError as exc:
        return await _verdict(store, run, RunStatus.FAILED, None, f"{lost}; {exc.message}")
    probe = await probe_lock(url, tenant.schema, settings.version_table, settings.connect_timeout)
    if probe.error is not None:
        log.warning("reaper: cannot judge run %s of %s yet: %s", run.id, tenant.id, probe.error)
        return None
    if not probe.lock_free:
        return None  # someone still migrates this tenant: judge it on a later pass
    current = ",".join(probe.heads) or None
    try:
        target = scripts.resolve(scripts.scripts(settings.alembic_config), rollout.command, rollout.target)
    except TenantctlError:
        target = None
    if target is not None and target.reached_by(probe.heads):
        return await _verdict(store, run, RunStatus.SUCCEEDED, current, f"{lost} after reaching the target")
    where = current or "base"
    return await _verdict(store, run, RunStatus.FAILED, current, f"{lost}; the tenant is at {where}")


async def _verdict(
    store: Store, run: TenantRun, status: RunStatus, revision: str | None, message: str
) -> Reaped | None:
    cls = ErrorClass.LOST if status is RunStatus.FAILED else None
    if not await store.resolve_lost(
        run, status=status, to_revision=revision, error_class=cls, message=message
    ):
        return None
    log.warning("reaper: run %s of tenant %s %s: %s", run.id, run.tenant_id, status.value, message)
    return Reaped(
        tenant_id=run.tenant_id, rollout_id=run.rollout_id, run_id=run.id, status=status, message=message
    )
