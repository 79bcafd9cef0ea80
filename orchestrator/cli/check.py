"""``tenantctl check`` for CI, and Alembic's script verbs over the tenants' history (``show``, ``branches``).

None of them reads a tenant or the control database. ``check`` prints one line per problem on stdout and a
summary on stderr; exit 0 clean, 1 lint findings, 2 bad input, 3 structural problems. Each command imports
``orchestrator.checks`` (and PostgreSQL's parser) itself: the other commands do not pay for it at start.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .. import scripts
from .common import JsonOpt, err, out, print_json, settings

commands = typer.Typer()


@commands.command()
def check(
    schema: Annotated[
        str | None,
        typer.Option(
            "--schema",
            metavar="NAME",
            help="Render as for a schema-per-tenant tenant: env.py gets `-x schema=NAME`.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="REV",
            help="Lint only the revisions after REV (REV and below already ran everywhere).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the tenants' history for CI, touching no tenant and no control DB: one head, every revision
    importing into one graph, offline PostgreSQL SQL rendering, and no SQL that locks a busy table or
    breaks running code. Exit 0 clean, 1 lint findings, 3 structural problems."""
    from .. import checks  # PostgreSQL's parser: loaded by this command only

    report = checks.check(settings(), schema=schema, since=since)
    if as_json:
        print_json(report.to_json())
    else:
        for line in [*map(report.line, report.problems), *map(report.line, report.findings)]:
            out.print(line, highlight=False, markup=False)
    err.print(report.summary(), highlight=False, markup=False)
    error = report.error()
    if error is not None:
        raise error


@commands.command()
def show(revision: Annotated[str, typer.Argument(metavar="REV", help="A revision id, `head`, …")]) -> None:
    """Alembic's `show REV`: a tenant script revision's id, parents, path and message."""
    from ..checks import history

    _write(history.show(scripts.config_path(settings().alembic_config), revision))


@commands.command()
def branches(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Each revision in full.")] = False,
) -> None:
    """Alembic's `branches`: the branch points of the tenant scripts and the revisions leaving them."""
    from ..checks import history

    _write(history.branches(scripts.config_path(settings().alembic_config), verbose=verbose))


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
