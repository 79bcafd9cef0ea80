"""The verbs: plan a rollout over a selection, hand its tenant runs to an executor, and report.

The CLI (and later the API) only parse arguments and call these functions, so both behave the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import scripts
from .controldb.store import Store
from .dispatch import db_host
from .exceptions import ConfigurationError, UserError
from .executors import Executor, InProcessExecutor, Observer, Silent
from .models import Command, ErrorClass, RolloutState, RunStatus, Selector, Tenant
from .planning import plan
from .registry import connection_url
from .revisions import Probe, RevisionRead, read_all
from .secrets import SecretBox
from .selection import select
from .settings import Settings


@dataclass(frozen=True, kw_only=True)
class Resolved:
    """The selected tenants with the URL each unit connects with (or why it cannot)."""

    tenants: list[Tenant]
    urls: dict[str, str]
    unusable: dict[str, tuple[ErrorClass, str]]
    secrets: tuple[str, ...]


async def resolve_selection(
    settings: Settings, store: Store, selector: Selector, environ: Mapping[str, str]
) -> Resolved:
    chosen = select(await store.list_tenants(), selector)
    box = SecretBox(settings.secret_key.get_secret_value() if settings.secret_key else None)
    urls: dict[str, str] = {}
    unusable: dict[str, tuple[ErrorClass, str]] = {}
    for tenant in chosen:
        try:
            urls[tenant.id] = connection_url(tenant, box, environ)
        except ConfigurationError as exc:
            unusable[tenant.id] = (ErrorClass.INVALID_CONFIG, exc.message)
    from sqlalchemy.engine import make_url

    secrets = tuple({p for u in urls.values() if (p := make_url(u).password)})
    return Resolved(tenants=chosen, urls=urls, unusable=unusable, secrets=secrets)


async def read_current(settings: Settings, resolved: Resolved) -> dict[str, RevisionRead]:
    probes = [
        Probe(tenant_id=t.id, url=resolved.urls[t.id], schema=t.schema)
        for t in resolved.tenants
        if t.id in resolved.urls
    ]
    return await read_all(
        probes,
        version_table=settings.version_table,
        concurrency=settings.read_concurrency,
        timeout=settings.connect_timeout,
    )


async def current(
    settings: Settings, store: Store, selector: Selector, environ: Mapping[str, str]
) -> list[RevisionRead]:
    """Every selected tenant's live revision, read concurrently."""
    resolved = await resolve_selection(settings, store, selector, environ)
    reads = await read_current(settings, resolved)
    for tenant_id, (cls, message) in resolved.unusable.items():
        reads[tenant_id] = RevisionRead(tenant_id=tenant_id, error_class=cls, error=message)
    return [reads[t.id] for t in resolved.tenants]


async def rollout(
    settings: Settings,
    store: Store,
    *,
    command: Command,
    revision: str,
    selector: Selector,
    parallel: int | None = None,
    created_by: str,
    environ: Mapping[str, str],
    observer: Observer | None = None,
    executor: Executor | None = None,
    wait: bool = True,
) -> int:
    """Run ``command revision`` over the selected tenants; returns the rollout id.

    Preflight first (scripts load, the revision resolves, a single head): a refusal touches nothing.
    Tenants already at an absolute target are recorded as skipped and get no task.
    """
    observer = observer or Silent()
    executor = executor or InProcessExecutor(settings, environ, parallel)
    if not wait and not hasattr(executor, "start"):
        raise ConfigurationError(
            "--no-wait needs workers: set TENANTCTL_BROKER_URL and run `tenantctl worker`"
        )
    script = scripts.scripts(settings.alembic_config)
    target = scripts.resolve(script, command, revision)
    resolved = await resolve_selection(settings, store, selector, environ)
    reads = await read_current(settings, resolved)
    the_plan = plan(resolved.tenants, reads, target, resolved.unusable)
    parallel = parallel or settings.parallelism
    rollout_id = await store.create_rollout(
        command=command,
        target=revision,
        selection=_selection_record(selector, target),
        created_by=created_by,
        parallel=parallel,
        plan=the_plan,
        hosts={t.id: db_host(resolved.urls.get(t.id, t.url)) for t in resolved.tenants},
    )
    observer.planned(
        rollout_id,
        the_plan.total,
        len(the_plan.skipped) + len(the_plan.failed),
        len(the_plan.skipped),
        [(t, message) for t, _cls, message in the_plan.failed],
    )
    if wait:
        await executor.execute(store, rollout_id, observer)
        await store.finish_if_done(rollout_id)
    else:
        await executor.start(store, rollout_id)  # type: ignore[attr-defined]
        await store.finish_if_done(rollout_id)
    return rollout_id


async def retry(
    settings: Settings,
    store: Store,
    *,
    rollout_id: int,
    selector: Selector,
    environ: Mapping[str, str],
    observer: Observer | None = None,
    executor: Executor | None = None,
) -> int:
    """Run the failed (and lost) tenants of a rollout again, as new attempts of the same rollout.

    Each retried tenant's revision is read first: one already at the target (a worker that died after
    finishing) is recorded as skipped, not migrated again.
    """
    observer = observer or Silent()
    rollout = await store.get_rollout(rollout_id)
    failed = [r.tenant_id for r in await store.rollout_runs(rollout_id) if r.status is RunStatus.FAILED]
    if selector != Selector():
        chosen = {t.id for t in select(await store.list_tenants(), selector)}
        failed = [t for t in failed if t in chosen]
    if not failed:
        raise UserError(f"rollout {rollout_id} has no failed tenants to retry{_matching(selector)}")
    target = scripts.resolve(scripts.scripts(settings.alembic_config), rollout.command, rollout.target)
    resolved = await resolve_selection(settings, store, Selector(tenants=tuple(failed)), environ)
    the_plan = plan(resolved.tenants, await read_current(settings, resolved), target, resolved.unusable)
    await store.add_attempts(
        rollout_id, the_plan, {t.id: db_host(resolved.urls.get(t.id, t.url)) for t in resolved.tenants}
    )
    observer.planned(
        rollout_id,
        the_plan.total,
        len(the_plan.skipped) + len(the_plan.failed),
        len(the_plan.skipped),
        [(t, message) for t, _cls, message in the_plan.failed],
    )
    await (executor or InProcessExecutor(settings, environ, rollout.parallel)).execute(
        store, rollout_id, observer
    )
    await store.finish_if_done(rollout_id)
    return rollout_id


def _matching(selector: Selector) -> str:
    return "" if selector == Selector() else f" matching {selector.describe()}"


async def follow(store: Store, rollout_id: int | None, observer: Observer, poll_interval: float) -> int:
    """Attach to a rollout started anywhere and report it until it ends; returns its id."""
    rollout = await store.get_rollout(rollout_id)
    runs_ = await store.rollout_runs(rollout.id)
    done = sum(1 for r in runs_ if r.status.terminal)
    failures = [(r.tenant_id, r.error_message or "") for r in runs_ if r.status is RunStatus.FAILED]
    skipped = sum(1 for r in runs_ if r.status is RunStatus.SKIPPED)
    observer.planned(rollout.id, len(runs_), done, skipped, failures)
    from .runs import follow as follow_runs

    await follow_runs(store, rollout.id, observer, poll_interval)
    return rollout.id


def _selection_record(selector: Selector, target: scripts.Target) -> dict[str, Any]:
    return {
        "tenants": list(selector.tenants),
        "tags": list(selector.tags),
        "group": selector.group,
        "exclude": list(selector.exclude),
        "resolved_target": target.describe(),
    }


async def status(store: Store, rollout_id: int | None = None) -> dict[str, Any]:
    """The rollout as ``status --json`` prints it: a contract users' scripts read."""
    ro = await store.get_rollout(rollout_id)
    runs = await store.rollout_runs(ro.id)
    counts = {s.value: 0 for s in RunStatus}
    for run in runs:
        counts[run.status.value] += 1
    return {
        "id": ro.id,
        "command": ro.command.value,
        "target": ro.target,
        "state": ro.state.value,
        "created_by": ro.created_by,
        "created_at": ro.created_at.isoformat(),
        "finished_at": ro.finished_at.isoformat() if ro.finished_at else None,
        "selection": json.loads(ro.selection),
        "counts": counts,
        "tenants": [
            {
                "tenant": r.tenant_id,
                "status": r.status.value,
                "attempt": r.attempt,
                "from_revision": r.from_revision,
                "to_revision": r.to_revision,
                "applied": list(r.applied),
                "duration_ms": r.duration_ms,
                "worker": r.worker,
                "error_class": r.error_class.value if r.error_class else None,
                "error": r.error_message if r.status is RunStatus.FAILED else None,
                "note": r.error_message if r.status is RunStatus.SKIPPED else None,
            }
            for r in runs
        ],
    }


def exit_code(state: RolloutState | str) -> int:
    """0 when every tenant succeeded or was skipped, 1 when any failed."""
    return 0 if RolloutState(state) is RolloutState.SUCCEEDED else 1


def failed_tenants(report: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return [t for t in report["tenants"] if t["status"] == RunStatus.FAILED.value]
