"""Audits on the workers: the schema comparison of one tenant per task (heavy: reflection), and the
nightly audit run by beat. Results travel through the control DB, never a Celery result backend."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from celery import Celery

from orchestrator import auditor, notify
from orchestrator.audit import AuditKind
from orchestrator.controldb.store import Store
from orchestrator.exceptions import TenantctlError
from orchestrator.jobs import secret_box
from orchestrator.registry import connection_url
from orchestrator.schema_audit import SchemaJob, SchemaResult, audit_tenant
from orchestrator.secrets import mask_text
from orchestrator.settings import Settings

log = logging.getLogger("tenantctl.worker")
SCHEMA_CHECK = "tenantctl.schema_check"
NIGHTLY_AUDIT = "tenantctl.nightly_audit"


async def check_tenant(
    store: Store, settings: Settings, environ: Mapping[str, str], token: str, tenant_id: str, reference: str
) -> None:
    """Compare one tenant's live schema with the models and hand the result back through the control DB."""
    try:
        tenant = await store.get_tenant(tenant_id)
        url = connection_url(tenant, secret_box(settings), environ)
        result = await asyncio.to_thread(
            audit_tenant, auditor.schema_job(settings, tenant_id, url, tenant.schema, reference)
        )
    except TenantctlError as exc:
        result = SchemaResult(tenant_id=tenant_id, error=mask_text(exc.message))
    await store.put_schema_check(token, tenant_id, json.dumps(asdict(result)))


class CelerySchemaRunner:
    """Schema jobs as Celery tasks (ids only in messages); waits for every answer in the control DB."""

    def __init__(self, settings: Settings, app: Celery, store: Store) -> None:
        self.settings = settings
        self.app = app
        self.store = store

    async def run(self, jobs: Sequence[SchemaJob]) -> list[SchemaResult]:
        if not jobs:
            return []
        token = uuid.uuid4().hex
        for job in jobs:
            self.app.send_task(
                SCHEMA_CHECK, args=[token, job.tenant_id, job.metadata], queue=self.settings.queue
            )
        deadline = time.monotonic() + self.settings.task_soft_time_limit
        wanted = {job.tenant_id for job in jobs}
        try:
            while True:
                answers = await self.store.schema_checks(token)
                if wanted <= set(answers) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(self.settings.poll_interval)
        finally:
            await self.store.drop_schema_checks(token)
        results = []
        for tenant_id in sorted(wanted):
            if tenant_id in answers:
                data = json.loads(answers[tenant_id])
                data["differences"] = tuple(data["differences"])
                results.append(SchemaResult(**data))
            else:
                results.append(
                    SchemaResult(tenant_id=tenant_id, error="schema not compared: no worker answered in time")
                )
        return results


class InTaskSchemaRunner:
    """Inside a worker task (the nightly audit) a prefork child may not start processes, and must not wait
    on tasks of its own queue: compare tenants one after the other, here."""

    async def run(self, jobs: Sequence[SchemaJob]) -> list[SchemaResult]:
        return [await asyncio.to_thread(audit_tenant, job) for job in jobs]


def nightly(settings: Settings, environ: Mapping[str, str]) -> dict[str, object]:
    """The beat-driven audit: revision drift always, schema drift when ``audit_schema_nightly``; a webhook
    when any tenant drifted anew."""
    kinds = [AuditKind.REVISION] + ([AuditKind.SCHEMA] if settings.audit_schema_nightly else [])
    summary: dict[str, object] = {}
    for kind in kinds:
        report = auditor.nightly(settings, environ, kind=kind, schema_runner=InTaskSchemaRunner())
        new = list(report["changes"]["new_drift"])
        summary[kind.value] = {"id": report["id"], "drift": report["drift"], "new_drift": len(new)}
        if new:
            asyncio.run(notify.send(settings, notify.drift_message(report)))
    return summary
