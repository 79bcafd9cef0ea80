"""The Celery tasks: thin adapters over the core. ``migrate`` runs the same unit of work the in-process
pool runs; ``reap`` is the beat-driven reaper pass."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError

from orchestrator import lifecycle, reaper, runs, sync
from orchestrator.dispatch import Dispatch
from orchestrator.exceptions import TenantctlError
from orchestrator.runtime import runtime
from orchestrator.secrets import mask_text
from orchestrator.settings import Settings

from . import audits, metrics

log = logging.getLogger("tenantctl.worker")


def sender(app: Celery, settings: Settings) -> runs.Send:
    """Publish one message per run: ids only. A broker error stops this batch; those runs were stamped
    dispatched and are sent again after ``redispatch_after``."""

    def send(batch: Sequence[Dispatch]) -> int:
        from .app import MIGRATE

        sent = 0
        for d in batch:
            try:
                app.send_task(
                    MIGRATE, args=[d.rollout_id, d.run_id, d.attempt], queue=settings.queue, retry=False
                )
            except (BrokerError, OSError) as exc:
                log.warning("broker unavailable, %d run(s) will be re-dispatched: %s", len(batch) - sent, exc)
                break
            sent += 1
        return sent

    return send


def register(app: Celery, settings: Settings) -> None:
    from .app import MIGRATE, REAP, SYNC

    send = sender(app, settings)
    observe = metrics.record if metrics.enabled() else None  # tenantctl worker --metrics-port

    @app.task(name=MIGRATE, bind=True)  # type: ignore[untyped-decorator]
    def migrate(self: Any, rollout_id: int, run_id: int, attempt: int) -> str:
        """The same life as a run of the in-process pool (``lifecycle.carry``); this worker sends the
        next runs itself."""
        return lifecycle.carry(
            runtime(settings),
            settings,
            os.environ,
            rollout_id=rollout_id,
            run_id=run_id,
            attempt=attempt,
            send=send,
            observe=observe,
        )

    @app.task(name=REAP)  # type: ignore[untyped-decorator]
    def reap() -> int:
        rt = runtime(settings)
        return len(rt.run(reaper.reap(rt.store, settings, os.environ, send)))

    @app.task(name=audits.SCHEMA_CHECK)  # type: ignore[untyped-decorator]
    def schema_check(token: str, tenant_id: str, reference: str) -> str:
        rt = runtime(settings)
        rt.run(audits.check_tenant(rt.store, settings, os.environ, token, tenant_id, reference))
        return "checked"

    @app.task(name=audits.NIGHTLY_AUDIT)  # type: ignore[untyped-decorator]
    def nightly_audit() -> dict[str, object]:
        return audits.nightly(settings, os.environ)

    @app.task(name=SYNC)  # type: ignore[untyped-decorator]
    def sync_tenants() -> dict[str, object]:
        """The scheduled registry sync (``TENANTCTL_SYNC_CRON``): ``tenants sync`` with the settings' source.
        A refused or failed sync is one warning line, as at the CLI, and changes nothing."""
        try:
            return sync.scheduled(settings, os.environ)
        except TenantctlError as exc:
            log.warning("tenant sync: %s", mask_text(exc.message))
            return {"error": mask_text(exc.message)}
