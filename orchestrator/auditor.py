"""The audit verbs: read every selected tenant's version table, classify it (``audit.py``), for a schema
audit compare its live schema with the models (``schema_audit.py``), store the report in the control DB
and tell what changed since the previous audit of the same kind.

:func:`run_audit` is what ``tenantctl audit`` calls; :func:`nightly` is the same as one plain
synchronous call, for the beat task. Neither ever writes to a tenant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from alembic.script import ScriptDirectory

from . import audit, coordinator, scripts
from .audit import AuditKind, Finding, History, State
from .controldb.store import Store
from .exceptions import ConfigurationError
from .models import Selector
from .revisions import RevisionRead
from .schema_audit import PoolSchemaRunner, SchemaJob, SchemaRunner, default_reference, load_metadata
from .settings import Settings

SCHEMA_STATEMENT_TIMEOUT_S = 60.0


def history_of(script: ScriptDirectory) -> History:
    """The revision graph the classification needs, taken once from the loaded scripts (dependencies
    count as parents: ``upgrade`` applies them first)."""
    return History(
        parents={s.revision: tuple(s._all_down_revisions) for s in script.walk_revisions()},
        heads=tuple(sorted(script.get_heads())),
    )


def metadata_reference(settings: Settings, script: ScriptDirectory) -> str:
    """Where the models' MetaData comes from, checked now so a schema audit with none fails before it
    touches any tenant: ``TENANTCTL_SCHEMA_METADATA`` (module:attribute), else ``metadata`` in
    ``models.py`` beside the tenants' env.py (what the shipped env.py hands Alembic)."""
    reference = settings.schema_metadata or default_reference(script.dir)
    if reference is None:
        raise ConfigurationError(
            f"no models to compare with: {script.dir}/models.py does not exist; set "
            "TENANTCTL_SCHEMA_METADATA=package.module:attribute to your MetaData"
        )
    load_metadata(reference)
    return reference


def classify_all(
    history: History, resolved: coordinator.Resolved, reads: Mapping[str, RevisionRead]
) -> list[Finding]:
    findings = []
    for tenant in resolved.tenants:
        if tenant.id in resolved.unusable:
            _cls, message = resolved.unusable[tenant.id]
            findings.append(audit.classify(history, tenant.id, version_table=False, error=message))
            continue
        read = reads[tenant.id]
        findings.append(
            audit.classify(
                history, tenant.id, version_table=read.version_table, rows=read.heads, error=read.error
            )
        )
    return findings


def schema_job(settings: Settings, tenant_id: str, url: str, schema: str | None, reference: str) -> SchemaJob:
    """The schema comparison of one tenant, built the same way wherever its URL was resolved (here, or
    in a worker that received only the tenant id and ``reference``)."""
    statement_timeout = settings.statement_timeout or SCHEMA_STATEMENT_TIMEOUT_S
    return SchemaJob(
        tenant_id=tenant_id,
        url=url,
        schema=schema,
        metadata=reference,
        version_table=settings.version_table,
        connect_timeout_s=settings.connect_timeout,
        statement_timeout_ms=int(statement_timeout * 1000),
        lock_timeout_ms=int(settings.lock_timeout * 1000),
    )


async def compare_schemas(
    settings: Settings,
    resolved: coordinator.Resolved,
    findings: Sequence[Finding],
    reference: str,
    runner: SchemaRunner,
) -> list[Finding]:
    """Add the schema comparison to every reachable tenant's finding."""
    by_id = {t.id: t for t in resolved.tenants}
    jobs = [
        schema_job(settings, f.tenant_id, resolved.urls[f.tenant_id], by_id[f.tenant_id].schema, reference)
        for f in findings
        if f.state is not State.UNREACHABLE
    ]
    results = {r.tenant_id: r for r in await runner.run(jobs)}
    return [
        audit.with_schema(f, r.differences, empty=r.empty, error=r.error)
        if (r := results.get(f.tenant_id)) is not None
        else f
        for f in findings
    ]


def schema_runner_for(settings: Settings, store: Store) -> SchemaRunner | None:
    """Where a schema audit's comparisons run: on the Celery workers when there are workers (they are
    heavy), else None (a local pool of ``parallelism`` processes)."""
    if settings.broker_url is None:
        return None
    from workers.app import make_app
    from workers.audits import CelerySchemaRunner

    return CelerySchemaRunner(settings, make_app(settings), store)


async def run_audit(
    settings: Settings,
    store: Store,
    *,
    kind: AuditKind,
    selector: Selector,
    created_by: str,
    environ: Mapping[str, str],
    schema_runner: SchemaRunner | None = None,
) -> dict[str, Any]:
    """Audit the selected tenants, store the audit, and return it as ``audit --json`` prints it.

    Revision audit: every version table read concurrently over asyncpg (``read_concurrency``, connect
    timeout, read-only sessions). Schema audit: that, then each reachable tenant's live schema compared
    with the models by ``schema_runner`` (default: a pool of ``parallelism`` processes).
    """
    script = scripts.scripts(settings.alembic_config)
    history = history_of(script)
    reference = metadata_reference(settings, script) if kind is AuditKind.SCHEMA else None
    resolved = await coordinator.resolve_selection(settings, store, selector, environ)
    reads = await coordinator.read_current(settings, resolved)
    findings = classify_all(history, resolved, reads)
    if reference is not None:
        runner = schema_runner or PoolSchemaRunner(settings.parallelism)
        findings = await compare_schemas(settings, resolved, findings, reference, runner)
    previous = await store.previous_audit(None, kind)
    before = await store.audit_findings(previous.id) if previous is not None else None
    audit_id = await store.save_audit(
        kind=kind,
        created_by=created_by,
        selection=_selection_record(selector),
        head=",".join(history.heads),
        counts=audit.counts(findings),
        drift=audit.drift(findings),
        findings=findings,
    )
    record = await store.get_audit(audit_id)
    return audit.report(record, findings, audit.changes(findings, before, previous.id if previous else None))


async def show(store: Store, audit_id: int | None = None) -> dict[str, Any]:
    """A stored audit (the latest by default) with the change since the audit of its kind before it."""
    record = await store.get_audit(audit_id)
    findings = await store.audit_findings(record.id)
    previous = await store.previous_audit(record.id, record.kind)
    before = await store.audit_findings(previous.id) if previous is not None else None
    return audit.report(record, findings, audit.changes(findings, before, previous.id if previous else None))


def nightly(
    settings: Settings,
    environ: Mapping[str, str],
    *,
    kind: AuditKind = AuditKind.REVISION,
    selector: Selector | None = None,
    created_by: str = "nightly",
    schema_runner: SchemaRunner | None = None,
) -> dict[str, Any]:
    """One audit, start to end, from synchronous code (the beat task): opens the control DB, checks it is
    migrated, audits, stores. ``report["changes"]["new_drift"]`` is what a webhook reports."""

    async def main() -> dict[str, Any]:
        async with Store(settings.database_url.get_secret_value()) as store:
            await store.ensure_ready()
            return await run_audit(
                settings,
                store,
                kind=kind,
                selector=selector or Selector(),
                created_by=created_by,
                environ=environ,
                schema_runner=schema_runner,
            )

    return asyncio.run(main())


def exit_code(report: Mapping[str, Any]) -> int:
    """0 when no selected tenant drifts, 1 when any does."""
    return 1 if report["drift"] else 0


def _selection_record(selector: Selector) -> dict[str, Any]:
    return {
        "tenants": list(selector.tenants),
        "tags": list(selector.tags),
        "group": selector.group,
        "exclude": list(selector.exclude),
    }
