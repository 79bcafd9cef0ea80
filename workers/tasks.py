"""The Celery tasks: thin adapters over the core. ``migrate`` runs the same unit of work the in-process
pool runs; ``reap`` is the beat-driven reaper pass."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError

from orchestrator import reaper, runs
from orchestrator.dispatch import Dispatch
from orchestrator.settings import Settings
from orchestrator.unit import run_unit, worker_id

from . import audits
from .runtime import runtime

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
    from .app import MIGRATE, REAP

    send = sender(app, settings)

    @app.task(name=MIGRATE, bind=True)  # type: ignore[untyped-decorator]
    def migrate(self: Any, rollout_id: int, run_id: int, attempt: int) -> str:
        rt = runtime(settings)
        job = rt.run(runs.claim(rt.store, settings, run_id, attempt, worker_id(), os.environ))
        if job is None:  # a duplicate, or a run that could not start: keep the rollout moving
            rt.run(runs.keep_moving(rt.store, settings, rollout_id, send))
            return "duplicate"
        with rt.heartbeat.holding(run_id):
            result = run_unit(job)
        if not rt.run(runs.settle(rt.store, settings, rollout_id, result, send)):
            log.warning("run %s was settled by the reaper before this worker finished", run_id)
        return "done"

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
