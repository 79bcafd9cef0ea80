"""``tenantctl tenants …``: the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .. import registry
from ..controldb.store import ImportCounts, Store
from ..models import Tenant, TenantSpec
from ..secrets import SecretBox
from .common import JsonOpt, err, out, print_json, run, settings

app = typer.Typer(help="Register and inspect tenants.", no_args_is_help=True)


def _box() -> SecretBox:
    cfg = settings()
    return SecretBox(cfg.secret_key.get_secret_value() if cfg.secret_key else None)


def _public(t: Tenant) -> dict[str, object]:
    return {
        "id": t.id,
        "url": registry.display_url(t),
        "schema": t.schema,
        "tags": list(t.tags),
        "group": t.group,
        "enabled": t.enabled,
    }


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
    tenant = run(lambda store: registry.add(store, spec, box), cfg=settings())
    err.print(f"added tenant {tenant.id} ({registry.display_url(tenant)})", highlight=False)


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List tenants (passwords masked)."""
    tenants = run(lambda store: store.list_tenants(), cfg=settings())
    if as_json:
        print_json([_public(t) for t in tenants])
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
        print_json(_public(tenant))
        return
    for key, value in _public(tenant).items():
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
    run(lambda store: store.set_enabled(tenant_id, True), cfg=settings())
    err.print(f"enabled tenant {tenant_id}")


@app.command("disable")
def disable(tenant_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Leave a tenant out of every rollout until it is enabled."""
    run(lambda store: store.set_enabled(tenant_id, False), cfg=settings())
    err.print(f"disabled tenant {tenant_id}")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="YAML, JSON or CSV list of tenants.")],
    as_json: JsonOpt = False,
) -> None:
    """Create or update tenants from a file, all or nothing; re-running it changes nothing."""
    from .. import tenantfile  # YAML and CSV readers: only this command needs them

    specs = tenantfile.read(file)
    box = _box()

    async def go(store: Store) -> ImportCounts:
        return await registry.import_specs(store, specs, box)

    counts = run(go, cfg=settings())
    if as_json:
        print_json({"created": counts.created, "updated": counts.updated, "unchanged": counts.unchanged})
    else:
        out.print(f"created {counts.created}, updated {counts.updated}, unchanged {counts.unchanged}")
