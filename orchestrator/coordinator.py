"""The verbs: plan a rollout over a selection, hand its tenant runs to an executor, and report.

The CLI (and later the API) only parse arguments and call these functions, so both behave the same.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from . import scripts, states
from .controldb.store import Store
from .dispatch import db_host
from .exceptions import ConcurrentChange, ConfigurationError, RolloutBusy, SelectionNotConfirmed, UserError
from .executors import InProcessExecutor
from .interrupts import Guard
from .models import Command, ErrorClass, Policy, Rollout, RolloutState, RunStatus, Selector, Tenant
from .planning import Plan, check_reachable, known_behind, plan
from .policy import assign_waves
from .progress import Executor, Observer, Silent
from .registry import connection_url
from .revisions import Probe, RevisionRead, read_all
from .runs import close_if_done, stop
from .runs import follow as follow_runs
from .secrets import SecretBox, password_of
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
    secrets = tuple({p for u in urls.values() if (p := password_of(u))})
    return Resolved(tenants=chosen, urls=urls, unusable=unusable, secrets=secrets)


async def read_current(
    settings: Settings, resolved: Resolved, skip: Collection[str] = ()
) -> dict[str, RevisionRead]:
    probes = [
        Probe(tenant_id=t.id, url=resolved.urls[t.id], schema=t.schema)
        for t in resolved.tenants
        if t.id in resolved.urls and t.id not in skip
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
    policy: Policy | None = None,
    created_by: str,
    environ: Mapping[str, str],
    observer: Observer | None = None,
    executor: Executor | None = None,
    wait: bool = True,
    guard: Guard | None = None,
    confirm: Confirmation | None = None,
) -> int:
    """Run ``command revision`` over the selected tenants; returns the rollout id.

    Preflight first (scripts load, the revision resolves, a single head, the canary exists): a refusal
    touches nothing. Each tenant's live revision is read, except where tenantctl last saw the tenant
    short of the target (:func:`planning.known_behind`); tenants read at an absolute target are recorded
    as skipped and get no task.
    """
    observer = observer or Silent()
    policy = policy or Policy()
    executor = executor or InProcessExecutor(settings, environ, parallel)
    _check_detached(executor, wait)
    script = scripts.scripts(settings.alembic_config)
    target = scripts.resolve(script, command, revision)
    resolved = await resolve_selection(settings, store, selector, environ)
    if confirm is not None:
        confirm.check(len(resolved.tenants))
    waves = assign_waves(resolved.tenants, policy)
    executor.ready()
    behind = known_behind(resolved.tenants, await store.known_revisions(), target)
    reads = await read_current(settings, resolved, skip=behind)
    the_plan = plan(resolved.tenants, reads, target, resolved.unusable, behind)
    check_reachable(script, command, revision, the_plan)
    rollout_id = await store.create_rollout(
        command=command,
        target=revision,
        selection=_selection_record(selector, target),
        created_by=created_by,
        parallel=parallel or settings.parallelism,
        plan=the_plan,
        hosts=_hosts(resolved),
        policy=policy,
        waves=waves,
        owner=executor.owner,
        lease_s=settings.lease_seconds,
    )
    await _planned(store, observer, rollout_id, the_plan)
    await _drive(settings, store, executor, rollout_id, observer, wait, guard)
    return rollout_id


def _check_detached(executor: Executor, wait: bool) -> None:
    if not wait and not executor.detached:
        raise ConfigurationError(
            "--no-wait needs workers: set TENANTCTL_BROKER_URL and run `tenantctl worker`"
        )


@dataclass(frozen=True, kw_only=True)
class Confirmation:
    """A selection larger than ``limit`` tenants goes ahead only when the caller states its size
    (``count``), so that a mistaken empty selector cannot roll every tenant; a stated size that is
    wrong is refused whatever the limit."""

    limit: int
    count: int | None = None

    def check(self, selected: int) -> None:
        if self.count is not None and self.count != selected:
            raise SelectionNotConfirmed(
                f"confirm_count is {self.count} but the selection has {selected} tenant(s): "
                "nothing was started"
            )
        if self.count is None and selected > self.limit:
            raise SelectionNotConfirmed(
                f"the selection has {selected} tenants, more than TENANTCTL_API_MAX_SELECTION "
                f'({self.limit}): send "confirm_count": {selected} to go ahead'
            )


async def _drive(
    settings: Settings,
    store: Store,
    executor: Executor,
    rollout_id: int,
    observer: Observer,
    wait: bool,
    guard: Guard | None,
) -> None:
    """Carry the rollout (or only start it: ``--no-wait``, workers carry it), inside ``guard`` (the CLI's
    Ctrl-C handling); close it if nothing is left."""
    if wait:
        async with guard(rollout_id) if guard is not None else contextlib.nullcontext():
            await executor.execute(store, rollout_id, observer)
    else:
        await executor.start(store, rollout_id)
    await close_if_done(store, settings, rollout_id)


def _hosts(resolved: Resolved) -> dict[str, str]:
    return {t.id: db_host(resolved.urls.get(t.id, t.url)) for t in resolved.tenants}


async def _planned(store: Store, observer: Observer, rollout_id: int, the_plan: Plan) -> None:
    """Tell the observer what the rollout starts with, as recorded: a tenant another rollout holds was
    planned to run but is recorded skipped (busy)."""
    counts = await store.rollout_counts(rollout_id)
    at_rest = sum(n for status, n in counts.items() if status.terminal)
    observer.planned(
        rollout_id,
        sum(counts.values()),
        at_rest,
        counts.get(RunStatus.SKIPPED, 0),
        [(t, message) for t, _cls, message in the_plan.failed],
    )


@dataclass(frozen=True, kw_only=True)
class _Attempts:
    plan: Plan
    hosts: dict[str, str]


async def _plan_attempts(
    settings: Settings, store: Store, rollout: Rollout, tenant_ids: list[str], environ: Mapping[str, str]
) -> _Attempts:
    """New attempts at some tenants of a rollout, each planned from its live revision: one already at
    the target (a worker that died after finishing) is recorded as skipped, not migrated again. A target
    some of them cannot reach is refused here, before ``retry``/``resume`` write anything."""
    script = scripts.scripts(settings.alembic_config)
    target = scripts.resolve(script, rollout.command, rollout.target)
    resolved = await resolve_selection(settings, store, Selector(tenants=tuple(tenant_ids)), environ)
    the_plan = plan(resolved.tenants, await read_current(settings, resolved), target, resolved.unusable)
    check_reachable(script, rollout.command, rollout.target, the_plan)
    return _Attempts(plan=the_plan, hosts=_hosts(resolved))


@dataclass(frozen=True, kw_only=True)
class Overrides:
    """What ``retry`` and ``resume`` were told to change; everything else stays the rollout's own
    (its ``--parallel``, timeouts and policy, as stored with it)."""

    parallel: int | None = None
    lock_timeout: float | None = None
    statement_timeout: float | None = None
    task_timeout: float | None = None

    async def apply(self, store: Store, rollout: Rollout) -> None:
        old = rollout.policy
        policy = replace(
            old,
            lock_timeout=old.lock_timeout if self.lock_timeout is None else self.lock_timeout,
            statement_timeout=old.statement_timeout
            if self.statement_timeout is None
            else self.statement_timeout,
            task_timeout=old.task_timeout if self.task_timeout is None else self.task_timeout,
        )
        await store.set_options(rollout.id, parallel=self.parallel, policy=None if policy == old else policy)


async def _carry_again(settings: Settings, store: Store, rollout: Rollout, executor: Executor) -> None:
    """Become the rollout's coordinator before adding work to it (in-process): a live one already
    carrying it wins, and this command says so in one line and changes nothing."""
    if executor.owner is not None:
        holder = await store.take_rollout(rollout.id, executor.owner, settings.lease_seconds)
        if holder is not None:
            raise RolloutBusy(rollout.id, holder)


async def retry(
    settings: Settings,
    store: Store,
    *,
    rollout_id: int,
    selector: Selector,
    environ: Mapping[str, str],
    observer: Observer | None = None,
    executor: Executor | None = None,
    wait: bool = True,
    overrides: Overrides | None = None,
    guard: Guard | None = None,
) -> int:
    """Run the failed (and lost) tenants of a rollout again, as new attempts of the same rollout, with
    the rollout's own parallelism, timeouts and policy unless ``overrides`` says otherwise.
    Tenants a halt left untouched stay halted: ``resume`` continues them."""
    observer = observer or Silent()
    rollout = await store.get_rollout(rollout_id)
    executor = executor or InProcessExecutor(settings, environ)
    _check_detached(executor, wait)
    failed = [r.tenant_id for r in await store.rollout_runs(rollout_id) if r.status is RunStatus.FAILED]
    if selector != Selector():
        chosen = {t.id for t in select(await store.list_tenants(), selector)}
        failed = [t for t in failed if t in chosen]
    if not failed:
        raise UserError(f"rollout {rollout_id} has no failed tenants to retry{_matching(selector)}")
    attempts = await _plan_attempts(settings, store, rollout, failed, environ)
    executor.ready()
    await _carry_again(settings, store, rollout, executor)
    await (overrides or Overrides()).apply(store, rollout)
    await store.add_attempts(
        rollout.id, attempts.plan, attempts.hosts, executor.owner, settings.lease_seconds
    )
    await _planned(store, observer, rollout_id, attempts.plan)
    await _drive(settings, store, executor, rollout_id, observer, wait, guard)
    return rollout_id


async def resume(
    settings: Settings,
    store: Store,
    *,
    rollout_id: int,
    environ: Mapping[str, str],
    observer: Observer | None = None,
    executor: Executor | None = None,
    wait: bool = True,
    overrides: Overrides | None = None,
    guard: Guard | None = None,
) -> int:
    """Continue a halted or cancelled rollout: its tenants never started are queued again, and those
    stopped between two migrations get a new attempt from where they stand; with the rollout's own
    parallelism, timeouts and policy unless ``overrides`` says otherwise."""
    observer = observer or Silent()
    rollout = await store.get_rollout(rollout_id)
    if rollout.state not in states.RESUMABLE:
        raise UserError(
            f"rollout {rollout_id} is {rollout.state.value}: only a halted or cancelled one resumes"
        )
    executor = executor or InProcessExecutor(settings, environ)
    _check_detached(executor, wait)
    midway = [r.tenant_id for r in await store.stopped_midway(rollout_id)]
    attempts = await _plan_attempts(settings, store, rollout, midway, environ) if midway else None
    executor.ready()
    await _carry_again(settings, store, rollout, executor)
    await (overrides or Overrides()).apply(store, rollout)
    if await store.resume(rollout_id, executor.owner, settings.lease_seconds) < 0:
        raise ConcurrentChange(rollout_id, "was resumed by someone else at the same moment")
    if attempts is not None:
        owner, lease = executor.owner, settings.lease_seconds
        await store.add_attempts(rollout.id, attempts.plan, attempts.hosts, owner, lease)
    await _planned(store, observer, rollout_id, attempts.plan if attempts else Plan())
    await _drive(settings, store, executor, rollout_id, observer, wait, guard)
    return rollout_id


async def cancel(settings: Settings, store: Store, *, rollout_id: int, by: str) -> bool:
    """Cancel a rollout: tenants not yet started are not started; running ones stop after their
    current migration. False if the rollout was not running or halted."""
    rollout = await store.get_rollout(rollout_id)
    if rollout.state not in (RolloutState.RUNNING, RolloutState.HALTED):
        raise UserError(f"rollout {rollout_id} is {rollout.state.value}: nothing to cancel")
    return await stop(store, settings, rollout_id, f"cancelled by {by}", RolloutState.CANCELLED)


def _matching(selector: Selector) -> str:
    return "" if selector == Selector() else f" matching {selector.describe()}"


async def follow(settings: Settings, store: Store, rollout_id: int | None, observer: Observer) -> int:
    """Attach to a rollout started anywhere and report it until it ends (closing it, and notifying, if
    this is the first to see it done); returns its id."""
    rollout = await store.get_rollout(rollout_id)
    runs_ = await store.rollout_runs(rollout.id)
    done = sum(1 for r in runs_ if r.status.terminal)
    failures = [(r.tenant_id, r.error_message or "") for r in runs_ if r.status is RunStatus.FAILED]
    skipped = sum(1 for r in runs_ if r.status is RunStatus.SKIPPED)
    observer.planned(rollout.id, len(runs_), done, skipped, failures)
    await follow_runs(store, rollout.id, observer, settings.poll_interval, grace=settings.control_db_grace)
    await close_if_done(store, settings, rollout.id)
    return rollout.id


def _selection_record(selector: Selector, target: scripts.Target) -> dict[str, Any]:
    return {
        "tenants": list(selector.tenants),
        "tags": list(selector.tags),
        "group": selector.group,
        "exclude": list(selector.exclude),
        "resolved_target": target.describe(),
    }


async def status(
    store: Store,
    rollout_id: int | None = None,
    *,
    attempts: bool = False,
    tracebacks: bool = False,
    failed: bool = False,
    error_class: ErrorClass | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    """The rollout as ``status --json`` prints it (and ``GET /api/v1/rollouts/{id}`` returns): a contract
    users' scripts read. ``counts`` are of each tenant's latest attempt; with ``attempts`` the
    ``tenants`` list holds every attempt; with ``tracebacks`` each tenant also gets ``traceback``, the one
    stored for that attempt (scrubbed of passwords, None when it did not fail). ``failed`` or
    ``error_class`` keep only the failed rows (of that class); ``counts`` stay the whole rollout's.
    ``limit``/``offset`` page the ``tenants`` list in SQL, and ``page`` says where."""
    ro = await store.get_rollout(rollout_id)
    runs, total = await store.rollout_rows(
        ro.id, attempts=attempts, failed=failed, error_class=error_class, limit=limit, offset=offset
    )
    counts = {s.value: 0 for s in RunStatus}
    if limit is None and not (attempts or failed or error_class is not None):
        for run in runs:  # the rows are the latest attempts already: no second read
            counts[run.status.value] += 1
    else:
        counts |= {status.value: n for status, n in (await store.rollout_counts(ro.id)).items()}
    page = {} if limit is None else {"page": {"total": total, "limit": limit, "offset": offset}}
    return {
        "id": ro.id,
        "command": ro.command.value,
        "target": ro.target,
        "state": ro.state.value,
        "created_by": ro.created_by,
        "created_at": ro.created_at.isoformat(),
        "finished_at": ro.finished_at.isoformat() if ro.finished_at else None,
        "selection": json.loads(ro.selection),
        "policy": {k: v for k, v in asdict(ro.policy).items() if v not in (None, 0)},
        "halt_reason": ro.halt_reason,
        "counts": counts,
        "tenants": [
            {
                "tenant": r.tenant_id,
                "status": r.status.value,
                "attempt": r.attempt,
                "wave": r.wave,
                "retries": r.retries,
                "from_revision": r.from_revision,
                "to_revision": r.to_revision,
                "applied": list(r.applied),
                "duration_ms": r.duration_ms,
                "worker": r.worker,
                "error_class": r.error_class.value if r.error_class else None,
                "error": r.error_message if r.status is RunStatus.FAILED else None,
                "note": r.error_message if r.status in _NOTED else None,
                "blocked_by": r.blocked_by,
            }
            | ({"traceback": r.traceback} if tracebacks else {})
            for r in runs
        ],
    } | page


_NOTED = (RunStatus.SKIPPED, RunStatus.HALTED, RunStatus.CANCELLED)


async def rollouts(store: Store, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    """``tenantctl rollouts --json`` (and ``GET /api/v1/rollouts``): the newest rollouts, one object each."""
    return [
        {
            "id": ro.id,
            "command": ro.command.value,
            "target": ro.target,
            "state": ro.state.value,
            "created_by": ro.created_by,
            "created_at": ro.created_at.isoformat(),
            "finished_at": ro.finished_at.isoformat() if ro.finished_at else None,
            "halt_reason": ro.halt_reason,
            "counts": {s.value: counts.get(s, 0) for s in RunStatus},
        }
        for ro, counts in await store.list_rollouts(limit, offset)
    ]


def exit_code(state: RolloutState | str) -> int:
    """0 when every tenant succeeded or was skipped, 1 when any failed."""
    return 0 if RolloutState(state) is RolloutState.SUCCEEDED else 1


def failed_tenants(report: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return [t for t in report["tenants"] if t["status"] == RunStatus.FAILED.value]
