"""Rollout commands: upgrade, downgrade, stamp, retry, status, current."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import coordinator, executors, interrupts, preview, reports
from ..controldb.store import Store
from ..exceptions import Interrupted, UserError
from ..models import Command, ErrorClass, Policy, Selector
from ..policy import parse_rate
from . import render
from .common import (
    ExcludeOpt,
    GroupOpt,
    JsonOpt,
    TagOpt,
    TenantOpt,
    err,
    out,
    print_json,
    run,
    selector,
    settings,
    who,
)

RevArg = Annotated[
    str, typer.Argument(metavar="REV", help="Revision as Alembic takes it: head, base, +1, -1, an id.")
]
ParallelOpt = Annotated[
    int | None,
    typer.Option(
        "--parallel", "-p", min=1, max=512, help="Tenants at once (default: TENANTCTL_PARALLELISM)."
    ),
]
NoWaitOpt = Annotated[
    bool,
    typer.Option("--no-wait", help="Print the rollout id and return; workers carry it out (needs a broker)."),
]
RolloutArg = Annotated[int, typer.Argument(metavar="ROLLOUT_ID", min=1, max=2**31 - 1)]
CanaryOpt = Annotated[
    int, typer.Option("--canary", min=0, help="Migrate this many tenants first; go on only if all succeed.")
]
CanaryTagOpt = Annotated[
    str | None, typer.Option("--canary-tag", help="The canary is every selected tenant with this tag.")
]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", min=0, help="After the canary, waves of this many tenants.")
]
MaxFailOpt = Annotated[
    int | None, typer.Option("--max-failures", min=1, help="Halt once this many tenants failed.")
]
MaxRateOpt = Annotated[
    str | None,
    typer.Option("--max-failure-rate", help="Halt once this share of the tenants failed (5% or 0.05)."),
]
LockTimeoutOpt = Annotated[
    float | None, typer.Option("--lock-timeout", min=0, help="Seconds (default: TENANTCTL_LOCK_TIMEOUT).")
]
StmtTimeoutOpt = Annotated[
    float | None,
    typer.Option("--statement-timeout", min=0, help="Seconds (default: TENANTCTL_STATEMENT_TIMEOUT)."),
]
TaskTimeoutOpt = Annotated[
    float | None,
    typer.Option("--task-timeout", min=0, help="Seconds per tenant (default: TENANTCTL_TASK_TIMEOUT)."),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan per tenant and touch nothing.")]
SqlOpt = Annotated[
    bool, typer.Option("--sql", help="Write the SQL per tenant plan to --out instead of running it.")
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Directory for --sql files.")]


@dataclass(frozen=True, kw_only=True)
class RolloutOptions:
    parallel: int | None
    as_json: bool
    no_wait: bool
    policy: Policy
    dry_run: bool
    sql: bool
    out: Path | None


def _reporting_interrupts(
    go: Callable[[Store], Awaitable[dict[str, Any]]], as_json: bool
) -> Callable[[Store], Awaitable[dict[str, Any]]]:
    """``go``, printing where the rollout stands before an interrupt ends the command (exit 130)."""

    async def wrapped(store: Store) -> dict[str, Any]:
        try:
            return await go(store)
        except Interrupted as exc:
            report = await coordinator.status(store, exc.rollout)
            if as_json:
                print_json(report)
            else:
                render.summary(report)
            raise

    return wrapped


def _finish(report: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(report)
    else:
        render.summary(report)
    raise typer.Exit(coordinator.exit_code(str(report["state"])))


def _preview(command: Command, revision: str, sel: Selector, opts: RolloutOptions) -> None:
    cfg = settings()
    environ = dict(os.environ)
    if opts.sql and opts.out is None:
        raise UserError("--sql needs --out DIR")

    async def go(store: Store) -> tuple[list[preview.PreviewRow], dict[str, str]]:
        rows = await preview.preview(
            cfg, store, command=command, revision=revision, selector=sel, environ=environ
        )
        resolved = await coordinator.resolve_selection(cfg, store, sel, environ)
        return rows, resolved.urls

    rows, urls = run(go, cfg=cfg)
    groups = preview.group(rows)
    refused = preview.refusal(revision, rows)  # after the plan is shown: exit 3, as the rollout would
    if opts.sql:
        assert opts.out is not None
        index = preview.offline_sql(cfg, rows, urls, command, opts.out)
        if opts.as_json:
            print_json(index)
        else:
            for name, tenants in index["files"].items():
                out.print(f"{opts.out / name}: {len(tenants)} tenant(s)", highlight=False)
            for tenant, why in index["not_written"].items():
                err.print(f"{tenant}: not written ({why})", highlight=False)
        if refused:
            raise refused
        raise typer.Exit(1 if any(r.error for r in rows) else 0)
    if opts.as_json:
        print_json(reports.plan(command, revision, rows, refused.message if refused else None))
    else:
        out.print(
            f"dry run: {command.value} {revision} over {len(rows)} tenant(s); nothing was changed",
            highlight=False,
        )
        for g in groups:
            out.print(f"  {g['summary']}", highlight=False)
    if refused:
        raise refused
    raise typer.Exit(1 if any(r.error for r in rows) else 0)


def _rollout(command: Command, revision: str, sel: Selector, opts: RolloutOptions) -> None:
    if opts.dry_run or opts.sql:
        _preview(command, revision, sel, opts)
    parallel, as_json, no_wait = opts.parallel, opts.as_json, opts.no_wait
    cfg = settings()
    environ = dict(os.environ)
    executor = executors.for_settings(cfg, environ, parallel)

    async def go(store: Store) -> dict[str, Any]:
        with render.ProgressObserver(f"{command.value} {revision}", quiet=no_wait) as observer:
            rollout_id = await coordinator.rollout(
                cfg,
                store,
                command=command,
                revision=revision,
                selector=sel,
                parallel=parallel,
                policy=opts.policy,
                created_by=who(),
                environ=environ,
                observer=observer,
                executor=executor,
                wait=not no_wait,
                guard=interrupts.guard(store, cfg, who()),
            )
        return await coordinator.status(store, rollout_id)

    report = run(_reporting_interrupts(go, as_json), cfg=cfg)
    if no_wait:
        if as_json:
            print_json(report)
        else:
            out.print(report["id"])
            err.print(f"follow it with: tenantctl status {report['id']} --follow")
        raise typer.Exit(0)
    _finish(report, as_json)


commands = typer.Typer()
"""Top-level commands, merged into the main app (see app.py)."""


def _verb(command: Command, doc: str) -> Callable[..., None]:
    """One rollout command (upgrade, downgrade, stamp): the same options, the same behaviour."""

    def verb(
        revision: RevArg,
        tenant: TenantOpt = None,
        tag: TagOpt = None,
        group: GroupOpt = None,
        exclude: ExcludeOpt = None,
        parallel: ParallelOpt = None,
        as_json: JsonOpt = False,
        no_wait: NoWaitOpt = False,
        canary: CanaryOpt = 0,
        canary_tag: CanaryTagOpt = None,
        batch_size: BatchOpt = 0,
        max_failures: MaxFailOpt = None,
        max_failure_rate: MaxRateOpt = None,
        lock_timeout: LockTimeoutOpt = None,
        statement_timeout: StmtTimeoutOpt = None,
        task_timeout: TaskTimeoutOpt = None,
        dry_run: DryRunOpt = False,
        sql: SqlOpt = False,
        out_dir: OutOpt = None,
    ) -> None:
        policy = Policy(
            canary=canary,
            canary_tag=canary_tag,
            batch_size=batch_size,
            max_failures=max_failures,
            max_failure_rate=parse_rate(max_failure_rate) if max_failure_rate is not None else None,
            lock_timeout=lock_timeout,
            statement_timeout=statement_timeout,
            task_timeout=task_timeout,
        )
        opts = RolloutOptions(
            parallel=parallel,
            as_json=as_json,
            no_wait=no_wait,
            policy=policy,
            dry_run=dry_run,
            sql=sql,
            out=out_dir,
        )
        _rollout(command, revision, selector(tenant, tag, group, exclude), opts)

    verb.__doc__ = doc
    return verb


VERBS = {
    Command.UPGRADE: (
        "Upgrade the selected tenants to REV. Exit 0 all succeeded, 1 not all, 2 bad input, 3 refused."
    ),
    Command.DOWNGRADE: "Downgrade the selected tenants to REV (e.g. -1, base, an id).",
    Command.STAMP: "Set the selected tenants' version table to REV without running migrations.",
}
for _command, _doc in VERBS.items():
    commands.command(_command.value)(_verb(_command, _doc))


@commands.command()
def retry(
    rollout: RolloutArg,
    tenant: TenantOpt = None,
    tag: TagOpt = None,
    group: GroupOpt = None,
    exclude: ExcludeOpt = None,
    parallel: ParallelOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    statement_timeout: StmtTimeoutOpt = None,
    task_timeout: TaskTimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the failed and lost tenants of a rollout again, as new attempts of the same rollout, with the
    rollout's own --parallel and timeouts unless given here."""
    cfg = settings()
    environ = dict(os.environ)
    executor = executors.for_settings(cfg, environ, None)
    overrides = coordinator.Overrides(
        parallel=parallel,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        task_timeout=task_timeout,
    )

    async def go(store: Store) -> dict[str, Any]:
        with render.ProgressObserver(f"retry of {rollout}") as observer:
            await coordinator.retry(
                cfg,
                store,
                rollout_id=rollout,
                selector=selector(tenant, tag, group, exclude),
                environ=environ,
                observer=observer,
                executor=executor,
                overrides=overrides,
                guard=interrupts.guard(store, cfg, who()),
            )
        return await coordinator.status(store, rollout)

    _finish(run(_reporting_interrupts(go, as_json), cfg=cfg), as_json)


@commands.command()
def status(
    rollout: Annotated[
        int | None,
        typer.Argument(metavar="[ROLLOUT_ID]", min=1, max=2**31 - 1, help="Default: the latest rollout."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Show progress until the rollout ends.")
    ] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed tenants.")] = False,
    error_class: Annotated[
        ErrorClass | None, typer.Option("--error-class", help="Only failures of this class.")
    ] = None,
    attempts: Annotated[bool, typer.Option("--attempts", help="Every attempt, not only the latest.")] = False,
    tracebacks: Annotated[
        bool, typer.Option("--tracebacks", help="With --json: each tenant's stored, scrubbed traceback.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Where every tenant of a rollout stands. Exit 1 unless it succeeded or is running."""
    cfg = settings()

    async def go(store: Store) -> dict[str, Any]:
        rollout_id = rollout
        if follow:
            with render.ProgressObserver("") as observer:
                rollout_id = await coordinator.follow(cfg, store, rollout, observer)
        return await coordinator.status(
            store,
            rollout_id,
            attempts=attempts,
            tracebacks=tracebacks,
            failed=failed,
            error_class=error_class,
        )

    report = run(go, cfg=cfg)
    if as_json:
        print_json(report)
    else:
        render.status_table(report)
    raise typer.Exit(0 if report["state"] in ("succeeded", "running") else 1)


@commands.command()
def cancel(rollout: RolloutArg) -> None:
    """Cancel a rollout: tenants not started are not started; running ones stop after their current
    migration. `resume` continues it."""
    cfg = settings()
    by = who()
    run(lambda store: coordinator.cancel(cfg, store, rollout_id=rollout, by=by), cfg=cfg)
    err.print(f"rollout {rollout} cancelled: tenants not started will not start; running ones stop soon")


@commands.command()
def resume(
    rollout: RolloutArg,
    parallel: ParallelOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    statement_timeout: StmtTimeoutOpt = None,
    task_timeout: TaskTimeoutOpt = None,
    as_json: JsonOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Continue a halted or cancelled rollout, with its own --parallel and timeouts unless given here."""
    cfg = settings()
    environ = dict(os.environ)
    executor = executors.for_settings(cfg, environ, None)
    overrides = coordinator.Overrides(
        parallel=parallel,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        task_timeout=task_timeout,
    )

    async def go(store: Store) -> dict[str, Any]:
        with render.ProgressObserver(f"resume of {rollout}", quiet=no_wait) as observer:
            await coordinator.resume(
                cfg,
                store,
                rollout_id=rollout,
                environ=environ,
                observer=observer,
                executor=executor,
                wait=not no_wait,
                overrides=overrides,
                guard=interrupts.guard(store, cfg, who()),
            )
        return await coordinator.status(store, rollout)

    report = run(_reporting_interrupts(go, as_json), cfg=cfg)
    if no_wait:
        raise typer.Exit(0)
    _finish(report, as_json)


@commands.command("rollouts")
def rollouts_(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="How many, newest first.")] = 20,
    offset: Annotated[
        int, typer.Option("--offset", min=0, max=2**31 - 1, help="Skip this many newest first.")
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Rollout history, newest first; --limit and --offset page through it."""
    rows = run(lambda store: coordinator.rollouts(store, limit, offset), cfg=settings())
    if as_json:
        print_json(rows)
        return
    table = Table(
        "id", "command", "state", "created", "by", "counts", "halt reason", box=None, header_style="bold"
    )
    for r in rows:
        counts = ", ".join(f"{n} {k}" for k, n in r["counts"].items() if n)
        table.add_row(
            str(r["id"]),
            f"{r['command']} {r['target']}",
            r["state"],
            r["created_at"][:19],
            r["created_by"],
            counts,
            r["halt_reason"] or "",
        )
    out.print(table)


@commands.command()
def current(
    tenant: TenantOpt = None,
    tag: TagOpt = None,
    group: GroupOpt = None,
    exclude: ExcludeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each selected tenant's live revision, read from its database. Exit 1 if any is unreachable."""
    cfg = settings()
    environ = dict(os.environ)
    sel = selector(tenant, tag, group, exclude)
    reads = run(lambda store: coordinator.current(cfg, store, sel, environ), cfg=cfg)
    if as_json:
        print_json(reports.current(reads))
    else:
        table = Table("tenant", "revision", box=None, header_style="bold")
        for r in reads:
            table.add_row(r.tenant_id, r.describe() if r.ok else f"[red]{r.error}[/red]")
        out.print(table)
    raise typer.Exit(0 if all(r.ok for r in reads) else 1)
