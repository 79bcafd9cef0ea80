"""The ``tenantctl`` commands: Alembic's verbs across tenants. Each parses, calls a core verb, renders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import scripts
from ..secrets import mask_text
from . import check, prune, rollouts, service
from .audit import app as audit_app
from .common import (
    err,
    out,
    run,
    settings,
)
from .tenants import app as tenants_app

app = typer.Typer(
    help="Roll Alembic migrations across many tenant databases, and know where each one stands.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
db_app = typer.Typer(help="The control database.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.registered_commands += (
    rollouts.commands.registered_commands
    + service.commands.registered_commands
    + check.commands.registered_commands
    + prune.commands.registered_commands
)


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


@app.command()
def heads() -> None:
    """The head revision(s) of the tenant scripts."""
    script = scripts.scripts(settings().alembic_config)
    for rev in sorted(script.get_revisions("heads"), key=lambda r: r.revision if r else ""):
        if rev is not None:
            out.print(f"{rev.revision} (head)  {rev.doc or ''}".rstrip(), highlight=False)


@app.command()
def history(
    rev_range: Annotated[
        str | None,
        typer.Option("--rev-range", "-r", metavar="[START]:[END]", help="Alembic's history range."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Each revision in full.")] = False,
) -> None:
    """The tenant scripts' revisions, newest first; with -r or -v, Alembic's own `history -r A:B -v`."""
    if rev_range is not None or verbose:
        from ..checks import history as script_history

        ini = scripts.config_path(settings().alembic_config)
        sys.stdout.write(script_history.history(ini, rev_range, verbose=verbose))
        return
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
