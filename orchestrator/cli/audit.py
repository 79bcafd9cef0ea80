"""``tenantctl audit``: which tenants are not where the code expects them, and how to repair them.

``tenantctl audit [selectors] [--schema] [--json]`` runs an audit and stores it; ``tenantctl audit show
[ID] [--json]`` prints a stored one. Exit 0 no drift, 1 drift found, 2 bad input.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.markup import escape

from .. import auditor
from ..audit import AuditKind
from ..controldb.store import Store
from .common import (
    ExcludeOpt,
    GroupOpt,
    JsonOpt,
    TagOpt,
    TenantOpt,
    out,
    print_json,
    run,
    selector,
    settings,
    who,
)

app = typer.Typer(
    help="Drift audit of the selected tenants, read-only, stored in the control DB: which tenants are not "
    "where the code expects them, and the command that repairs them. `audit show [ID]` prints a stored "
    "one. Exit 0 no drift, 1 drift found, 2 bad input.",
    invoke_without_command=True,
    no_args_is_help=False,
)

SchemaOpt = Annotated[
    bool,
    typer.Option(
        "--schema",
        help="Also compare each tenant's live schema with the models (Alembic autogenerate); slower.",
    ),
]
SHOWN = 20


@app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    tenant: TenantOpt = None,
    tag: TagOpt = None,
    group: GroupOpt = None,
    exclude: ExcludeOpt = None,
    schema: SchemaOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Audit the selected tenants read-only and store the report. Exit 0 no drift, 1 drift, 2 bad input."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = settings()
    environ = dict(os.environ)
    sel = selector(tenant, tag, group, exclude)
    kind = AuditKind.SCHEMA if schema else AuditKind.REVISION
    by = who()

    async def go(store: Store) -> dict[str, Any]:
        runner = auditor.schema_runner_for(cfg, store) if schema else None
        return await auditor.run_audit(
            cfg, store, kind=kind, selector=sel, created_by=by, environ=environ, schema_runner=runner
        )

    _emit(run(go, cfg=cfg), as_json)


@app.command("show")
def show(
    audit_id: Annotated[int | None, typer.Argument(metavar="[ID]", help="Default: the latest audit.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A stored audit and what changed since the audit of its kind before it. Exit 1 if it found drift."""
    report = run(lambda store: auditor.show(store, audit_id), cfg=settings())
    _emit(report, as_json)


def _emit(report: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(report)
    else:
        render(report)
    raise typer.Exit(auditor.exit_code(report))


def _names(tenants: list[str]) -> str:
    shown = ", ".join(tenants[:SHOWN])
    return shown + (f" … and {len(tenants) - SHOWN} more" if len(tenants) > SHOWN else "")


def render(report: Mapping[str, Any]) -> None:
    """Counts, then one line per group of tenants drifting the same way with its repair command, then
    errors and the change since the previous audit."""
    total = len(report["tenants"])
    at_head = report["counts"].get("at_head", 0)
    style = "red" if report["drift"] else "green"
    out.print(
        f"audit {report['id']} ({report['kind']}), head {escape(report['head'] or 'base')}: "
        f"{total} tenant{'' if total == 1 else 's'}, "
        f"{at_head} at head, [{style}]{report['drift']} drifting[/]",
        highlight=False,
    )
    counts = ", ".join(f"{n} {state}" for state, n in report["counts"].items() if n and state != "at_head")
    if counts:
        out.print(f"  {counts}", highlight=False)
    for g in report["groups"]:
        out.print(f"[red]✗[/red] {escape(g['summary'])}", highlight=False)
        out.print(f"    {escape(_names(g['tenants']))}", highlight=False)
        if g["hint"]:
            out.print(f"    → {escape(g['hint'])}", highlight=False)
    errors = [t for t in report["tenants"] if t["error"]]
    if errors:
        out.print("errors:", highlight=False)
        for t in errors[:50]:
            out.print(f"    {escape(t['tenant'])}: {escape(t['error'])}", highlight=False)
        if len(errors) > 50:
            out.print(f"    … and {len(errors) - 50} more: tenantctl audit show {report['id']} --json")
    change = report["changes"]
    if change["previous"] is None:
        out.print("first audit of its kind: every drift is new", highlight=False)
    else:
        new = _names(change["new_drift"]) or "none"
        resolved = _names(change["resolved"]) or "none"
        out.print(
            f"since audit {change['previous']}: new drift: {escape(new)}; resolved: {escape(resolved)}",
            highlight=False,
        )
