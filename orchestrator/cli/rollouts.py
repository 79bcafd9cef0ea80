"""Rollout commands: upgrade, downgrade, stamp, retry, status, current."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import coordinator
from ..controldb.store import Store
from ..executors import Executor, InProcessExecutor
from ..models import Command, Selector
from ..settings import Settings
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
        "--parallel", "-p", min=1, max=512, help="Tenants at once [default: TENANTCTL_PARALLELISM]."
    ),
]
NoWaitOpt = Annotated[
    bool,
    typer.Option("--no-wait", help="Print the rollout id and return; workers carry it out (needs a broker)."),
]
RolloutArg = Annotated[int, typer.Argument(metavar="ROLLOUT_ID")]


def executor_for(cfg: Settings, environ: Mapping[str, str], parallel: int | None) -> Executor:
    """Celery when a broker is configured, else the in-process pool."""
    if cfg.broker_url is not None:
        from workers.executor import CeleryExecutor

        return CeleryExecutor(cfg, environ)
    return InProcessExecutor(cfg, environ, parallel)


def _finish(report: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(report)
    else:
        render.summary(report)
    raise typer.Exit(coordinator.exit_code(str(report["state"])))


def _rollout(
    command: Command, revision: str, sel: Selector, parallel: int | None, as_json: bool, no_wait: bool
) -> None:
    cfg = settings()
    environ = dict(os.environ)
    executor = executor_for(cfg, environ, parallel)

    async def go(store: Store) -> dict[str, Any]:
        with render.ProgressObserver(f"{command.value} {revision}", quiet=no_wait) as observer:
            rollout_id = await coordinator.rollout(
                cfg,
                store,
                command=command,
                revision=revision,
                selector=sel,
                parallel=parallel,
                created_by=who(),
                environ=environ,
                observer=observer,
                executor=executor,
                wait=not no_wait,
            )
        return await coordinator.status(store, rollout_id)

    report = run(go, cfg=cfg)
    if no_wait:
        if as_json:
            print_json(report)
        else:
            out.print(report["id"])
            err.print(f"follow it with: tenantctl status {report['id']} --follow")
        raise typer.Exit(0)
    _finish(report, as_json)


def register(app: typer.Typer) -> None:
    @app.command()
    def upgrade(
        revision: RevArg,
        tenant: TenantOpt = None,
        tag: TagOpt = None,
        group: GroupOpt = None,
        exclude: ExcludeOpt = None,
        parallel: ParallelOpt = None,
        as_json: JsonOpt = False,
        no_wait: NoWaitOpt = False,
    ) -> None:
        """Upgrade the selected tenants to REV. Exit 0 all succeeded, 1 some failed, 2 bad input, 3 refused"""
        _rollout(Command.UPGRADE, revision, selector(tenant, tag, group, exclude), parallel, as_json, no_wait)

    @app.command()
    def downgrade(
        revision: RevArg,
        tenant: TenantOpt = None,
        tag: TagOpt = None,
        group: GroupOpt = None,
        exclude: ExcludeOpt = None,
        parallel: ParallelOpt = None,
        as_json: JsonOpt = False,
        no_wait: NoWaitOpt = False,
    ) -> None:
        """Downgrade the selected tenants to REV (e.g. -1, base, an id)."""
        _rollout(
            Command.DOWNGRADE, revision, selector(tenant, tag, group, exclude), parallel, as_json, no_wait
        )

    @app.command()
    def stamp(
        revision: RevArg,
        tenant: TenantOpt = None,
        tag: TagOpt = None,
        group: GroupOpt = None,
        exclude: ExcludeOpt = None,
        parallel: ParallelOpt = None,
        as_json: JsonOpt = False,
        no_wait: NoWaitOpt = False,
    ) -> None:
        """Set the selected tenants' version table to REV without running migrations."""
        _rollout(Command.STAMP, revision, selector(tenant, tag, group, exclude), parallel, as_json, no_wait)

    @app.command()
    def retry(
        rollout: RolloutArg,
        tenant: TenantOpt = None,
        tag: TagOpt = None,
        group: GroupOpt = None,
        exclude: ExcludeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Run the failed and lost tenants of a rollout again, as new attempts of the same rollout."""
        cfg = settings()
        environ = dict(os.environ)
        executor = executor_for(cfg, environ, None)

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
                )
            return await coordinator.status(store, rollout)

        _finish(run(go, cfg=cfg), as_json)

    @app.command()
    def status(
        rollout: Annotated[
            int | None, typer.Argument(metavar="[ROLLOUT_ID]", help="Default: the latest rollout.")
        ] = None,
        follow: Annotated[
            bool, typer.Option("--follow", "-f", help="Show progress until the rollout ends.")
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Where every tenant of a rollout stands. Exit 1 if the rollout failed."""
        cfg = settings()

        async def go(store: Store) -> dict[str, Any]:
            rollout_id = rollout
            if follow:
                with render.ProgressObserver("") as observer:
                    rollout_id = await coordinator.follow(store, rollout, observer, cfg.poll_interval)
                await store.finish_if_done(rollout_id)
            return await coordinator.status(store, rollout_id)

        report = run(go, cfg=cfg)
        if as_json:
            print_json(report)
        else:
            render.status_table(report)
        raise typer.Exit(0 if report["state"] in ("succeeded", "running") else 1)

    @app.command()
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
            print_json(
                [
                    {"tenant": r.tenant_id, "revision": ",".join(r.heads) or None, "error": r.error}
                    for r in reads
                ]
            )
        else:
            table = Table("tenant", "revision", box=None, header_style="bold")
            for r in reads:
                table.add_row(r.tenant_id, r.describe() if r.ok else f"[red]{r.error}[/red]")
            out.print(table)
        raise typer.Exit(0 if all(r.ok for r in reads) else 1)
