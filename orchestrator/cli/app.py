"""The ``tenantctl`` commands: Alembic's verbs across tenants. Each parses, calls a core verb, renders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .. import coordinator, scripts
from ..controldb.store import Store
from ..models import Command
from ..secrets import mask_text
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
)
from .tenants import app as tenants_app

app = typer.Typer(
    help="Roll Alembic migrations across many tenant databases, and know where each one stands.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
db_app = typer.Typer(help="The control database.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(db_app, name="db")

RevArg = Annotated[
    str, typer.Argument(metavar="REV", help="Revision as Alembic takes it: head, base, +1, -1, an id.")
]
ParallelOpt = Annotated[
    int | None,
    typer.Option(
        "--parallel", "-p", min=1, max=512, help="Tenants at once [default: TENANTCTL_PARALLELISM]."
    ),
]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    """tenantctl."""


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the control database, or upgrade it to this version's schema."""
    cfg = settings()
    before, after = run(lambda store: store.migrate(), cfg=cfg, ready=False)
    where = mask_text(cfg.database_url.get_secret_value())
    if before == after:
        err.print(f"control database {where} is up to date ({after})", highlight=False)
    else:
        err.print(f"control database {where}: {before or 'empty'} → {after}", highlight=False)


def _rollout(command: Command, revision: str, sel: object, parallel: int | None, as_json: bool) -> None:
    cfg = settings()
    environ = dict(os.environ)

    async def go(store: Store) -> dict[str, object]:
        with render.ProgressObserver(f"{command.value} {revision}") as observer:
            rollout_id = await coordinator.rollout(
                cfg,
                store,
                command=command,
                revision=revision,
                selector=sel,  # type: ignore[arg-type]
                parallel=parallel,
                created_by=_who(),
                environ=environ,
                observer=observer,
            )
        return await coordinator.status(store, rollout_id)

    report = run(go, cfg=cfg)
    if as_json:
        print_json(report)
    else:
        render.summary(report)
    raise typer.Exit(coordinator.exit_code(str(report["state"])))


def _who() -> str:
    from .common import who

    return who()


@app.command()
def upgrade(
    revision: RevArg,
    tenant: TenantOpt = None,
    tag: TagOpt = None,
    group: GroupOpt = None,
    exclude: ExcludeOpt = None,
    parallel: ParallelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upgrade the selected tenants to REV. Exit 0 all succeeded, 1 some failed, 2 bad input, 3 refused."""
    _rollout(Command.UPGRADE, revision, selector(tenant, tag, group, exclude), parallel, as_json)


@app.command()
def downgrade(
    revision: RevArg,
    tenant: TenantOpt = None,
    tag: TagOpt = None,
    group: GroupOpt = None,
    exclude: ExcludeOpt = None,
    parallel: ParallelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Downgrade the selected tenants to REV (e.g. -1, base, an id)."""
    _rollout(Command.DOWNGRADE, revision, selector(tenant, tag, group, exclude), parallel, as_json)


@app.command()
def stamp(
    revision: RevArg,
    tenant: TenantOpt = None,
    tag: TagOpt = None,
    group: GroupOpt = None,
    exclude: ExcludeOpt = None,
    parallel: ParallelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the selected tenants' version table to REV without running migrations."""
    _rollout(Command.STAMP, revision, selector(tenant, tag, group, exclude), parallel, as_json)


@app.command()
def status(
    rollout: Annotated[
        int | None, typer.Argument(metavar="[ROLLOUT_ID]", help="Default: the latest rollout.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Where every tenant of a rollout stands. Exit 1 if the rollout failed."""
    report = run(lambda store: coordinator.status(store, rollout), cfg=settings())
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
    reads = run(
        lambda store: coordinator.current(cfg, store, selector(tenant, tag, group, exclude), environ), cfg=cfg
    )
    if as_json:
        print_json(
            [{"tenant": r.tenant_id, "revision": ",".join(r.heads) or None, "error": r.error} for r in reads]
        )
    else:
        table = Table("tenant", "revision", box=None, header_style="bold")
        for r in reads:
            table.add_row(r.tenant_id, r.describe() if r.ok else f"[red]{r.error}[/red]")
        out.print(table)
    raise typer.Exit(0 if all(r.ok for r in reads) else 1)


@app.command()
def heads() -> None:
    """The head revision(s) of the tenant scripts."""
    script = scripts.scripts(settings().alembic_config)
    for rev in sorted(script.get_revisions("heads"), key=lambda r: r.revision if r else ""):
        if rev is not None:
            out.print(f"{rev.revision} (head)  {rev.doc or ''}".rstrip(), highlight=False)


@app.command()
def history() -> None:
    """The tenant scripts' revisions, newest first."""
    script = scripts.scripts(settings().alembic_config)
    heads_ = set(script.get_heads())
    for rev in script.walk_revisions():
        down = ", ".join(rev._format_down_revision().split(", ")) if rev.down_revision else "<base>"
        mark = " (head)" if rev.revision in heads_ else ""
        out.print(f"{down} -> {rev.revision}{mark}, {rev.doc or ''}".rstrip(", "), highlight=False)


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option("--workspace", help="Where to create the demo.")] = Path(
        "tenantctl-demo"
    ),
    tenants: Annotated[int, typer.Option("--tenants", min=1, max=500, help="How many tenants.")] = 12,
) -> None:
    """Create a throwaway workspace of local SQLite tenants and roll them to head."""
    from ..demo import run_demo

    raise typer.Exit(run_demo(workspace, tenants))
