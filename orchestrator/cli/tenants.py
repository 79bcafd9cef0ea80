"""``tenantctl tenants …``: the registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from .. import registry, reports
from ..controldb.store import ImportCounts, Store
from ..exceptions import SyncRefused
from ..models import TenantSpec
from ..secrets import SecretBox
from .common import JsonOpt, err, out, print_json, run, settings, who

if TYPE_CHECKING:
    from ..sync import Change, SyncPlan

app = typer.Typer(help="Register and inspect tenants.", no_args_is_help=True)


def _box() -> SecretBox:
    cfg = settings()
    return SecretBox(cfg.secret_key.get_secret_value() if cfg.secret_key else None)


@app.command("add")
def add(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="Tenant id (a slug).")],
    url: Annotated[str, typer.Option("--url", help="Database URL; a password is encrypted at rest.")],
    schema: Annotated[
        str | None, typer.Option("--schema", help="PostgreSQL schema (schema per tenant).")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Group name.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Register it disabled.")] = False,
) -> None:
    """Register a tenant."""
    spec = TenantSpec(
        id=tenant_id, url=url, schema=schema, tags=tuple(tag or ()), group=group, enabled=not disabled
    )
    box = _box()
    tenant = run(lambda store: registry.add(store, spec, box, who()), cfg=settings())
    err.print(f"added tenant {tenant.id} ({registry.display_url(tenant)})", highlight=False)


@app.command("list")
def list_(
    as_json: JsonOpt = False,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, max=2**31 - 1, help="At most this many tenants (default: all)."),
    ] = None,
    offset: Annotated[
        int, typer.Option("--offset", min=0, max=2**31 - 1, help="Skip this many first (in id order).")
    ] = 0,
) -> None:
    """List tenants in id order (passwords masked); --limit and --offset page through them."""
    tenants = run(lambda store: store.list_tenants(limit, offset), cfg=settings())
    if as_json:
        print_json([reports.tenant(t) for t in tenants])
        return
    table = Table("id", "url", "schema", "tags", "group", "enabled", box=None, header_style="bold")
    for t in tenants:
        table.add_row(
            t.id,
            registry.display_url(t),
            t.schema or "",
            ",".join(t.tags),
            t.group or "",
            "yes" if t.enabled else "no",
        )
    out.print(table)
    err.print(f"{len(tenants)} tenant(s)")


@app.command("show")
def show(tenant_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False) -> None:
    """Show one tenant."""
    tenant = run(lambda store: store.get_tenant(tenant_id), cfg=settings())
    if as_json:
        print_json(reports.tenant(tenant))
        return
    for key, value in reports.tenant(tenant).items():
        shown = ",".join(value) if isinstance(value, list) else ("" if value is None else str(value))
        out.print(f"{key:8} {shown}", highlight=False)


@app.command("remove")
def remove(tenant_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Remove a tenant from the registry (its database is not touched; its run history is kept)."""
    run(lambda store: store.remove_tenant(tenant_id), cfg=settings())
    err.print(f"removed tenant {tenant_id}")


@app.command("enable")
def enable(tenant_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Include a tenant in default selections again."""
    run(lambda store: store.set_enabled(tenant_id, True, who()), cfg=settings())
    err.print(f"enabled tenant {tenant_id}")


@app.command("disable")
def disable(tenant_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Leave a tenant out of every rollout until it is enabled."""
    run(lambda store: store.set_enabled(tenant_id, False, who()), cfg=settings())
    err.print(f"disabled tenant {tenant_id}")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="YAML, JSON or CSV list of tenants.")],
    as_json: JsonOpt = False,
) -> None:
    """Create or update tenants from a file, all or nothing; re-running it changes nothing."""
    from .. import tenantfile  # YAML and CSV readers: only this command needs them

    with tenantfile.collector_paused():  # every row and record of the file at once: see there
        specs = tenantfile.read(file)
        box = _box()

        async def go(store: Store) -> ImportCounts:
            return await registry.import_specs(store, specs, box, who())

        counts = run(go, cfg=settings())
    if as_json:
        print_json(reports.imported(counts))
    else:
        out.print(f"created {counts.created}, updated {counts.updated}, unchanged {counts.unchanged}")


@app.command("sync")
def sync_(
    from_sql: Annotated[
        str | None,
        typer.Option("--from-sql", metavar="QUERY", help="A SELECT of one row per tenant (id, url, …)."),
    ] = None,
    source_url: Annotated[
        str | None,
        typer.Option(
            "--source-url",
            metavar="URL",
            help="Database the query runs on, read-only (postgresql://… or sqlite:///…; ${ENV} resolved). "
            "Default: TENANTCTL_SYNC_SOURCE_URL.",
        ),
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", metavar="FILE", help="A YAML, JSON or CSV tenant file.")
    ] = None,
    tag_column: Annotated[
        list[str] | None,
        typer.Option("--tag-column", metavar="COLUMN", help="A column whose value is a tag (repeatable)."),
    ] = None,
    group_column: Annotated[
        str | None,
        typer.Option("--group-column", metavar="COLUMN", help="The column whose value is the group."),
    ] = None,
    max_disable: Annotated[
        str | None,
        typer.Option(
            "--max-disable",
            metavar="P%|N",
            help="Refuse to disable more tenants than this share of the enabled ones, or this number "
            "(default: TENANTCTL_SYNC_MAX_DISABLE, 10%).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Disable past --max-disable, even all.")] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0.001,
            help="Statement timeout of the query, seconds (default: TENANTCTL_SYNC_TIMEOUT, 60).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the diff; change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make the registry follow a live source: create, update, re-enable; disable (never delete) the
    tenants it no longer has. All or nothing; each option defaults to its TENANTCTL_SYNC_* setting."""
    import os

    from .. import sync

    cfg = settings()
    source = sync.configured_source(
        cfg,
        query=from_sql,
        file=from_file,
        url=source_url,
        tag_columns=tag_column,
        group_column=group_column,
        timeout=timeout,
    )
    if max_disable is None:
        limit = sync.DisableLimit.parse(cfg.sync_max_disable, "TENANTCTL_SYNC_MAX_DISABLE")
    else:
        limit = sync.DisableLimit.parse(max_disable)
    specs = sync.read(source, os.environ, connect_timeout=cfg.connect_timeout)
    box = _box()

    async def go(store: Store) -> sync.SyncPlan:
        return await sync.apply(store, specs, box, limit=limit, force=force, dry_run=dry_run)

    try:
        plan = run(go, cfg=cfg)
    except SyncRefused as exc:  # show what it would have done, then the one line and exit 3
        _print_sync(exc.plan, source.describe(), dry_run=dry_run, as_json=as_json, refused=exc.message)
        raise
    _print_sync(plan, source.describe(), dry_run=dry_run, as_json=as_json)


def _print_sync(
    plan: SyncPlan, source: str, *, dry_run: bool, as_json: bool, refused: str | None = None
) -> None:
    from ..sync import ChangeKind

    if as_json:
        print_json({"source": source, "dry_run": dry_run, "refused": refused, **plan.as_dict()})
        return
    for change in plan.changes:
        if change.kind is not ChangeKind.UNCHANGED:
            out.print(_change_line(change), highlight=False, markup=False)
    counts = plan.counts()
    names = {"reenabled": "re-enabled"}
    out.print(", ".join(f"{names.get(k, k)} {n}" for k, n in counts.items()), highlight=False)
    if dry_run and refused is None:
        err.print("dry run: nothing was changed", highlight=False)


def _change_line(change: Change) -> str:
    from ..sync import ChangeKind

    also = ", ".join(f for f in change.fields if f != "enabled")
    if change.kind is ChangeKind.CREATED:
        return f"created     {change.tenant}"
    if change.kind is ChangeKind.UPDATED:
        return f"updated     {change.tenant}: {also}"
    also = f" (also {also})" if also else ""
    if change.kind is ChangeKind.REENABLED:
        return f"re-enabled  {change.tenant}{also}"
    why = "not in the source" if change.absent else "disabled in the source"
    return f"disabled    {change.tenant}: {why}{also}"
