"""The tenant registry: turning user specs into stored tenants (passwords encrypted) and back into the
URL a unit of work connects with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy.engine import make_url

from . import validation
from .controldb.store import ImportCounts, Store
from .models import Tenant, TenantSpec
from .secrets import SecretBox, mask_url, resolve_url, split_password


def to_tenant(spec: TenantSpec, box: SecretBox, by: str | None = None) -> Tenant:
    """Validate a spec and encrypt its clear password, if any; ``by`` is who creates or changes it."""
    spec = validation.spec(spec)
    url, password = split_password(spec.url)
    return Tenant(
        id=spec.id,
        url=url,
        password_token=box.encrypt(password) if password is not None else None,
        schema=spec.schema,
        tags=spec.tags,
        group=spec.group,
        enabled=spec.enabled,
        updated_by=by,
    )


def connection_url(tenant: Tenant, box: SecretBox, environ: Mapping[str, str]) -> str:
    """The tenant's URL with its password: only ever handed to a unit of work, never shown or stored."""
    password = box.decrypt(tenant.password_token) if tenant.password_token else None
    return resolve_url(tenant.url, password, environ)


def display_url(tenant: Tenant) -> str:
    """The URL for people: a stored password shows as ``***``."""
    if tenant.password_token:
        return make_url(tenant.url).set(password="hidden").render_as_string(hide_password=True)
    return mask_url(tenant.url)


FIELDS = ("url", "password", "schema", "tags", "group", "enabled")


def changed_fields(spec: TenantSpec, current: Tenant, box: SecretBox) -> tuple[str, ...]:
    """The fields (of ``FIELDS``) a spec would change on a stored tenant. Passwords are compared in clear,
    so an unchanged one is not a change even though each encryption differs; a changed one is named
    ``password``, never shown."""
    spec = validation.spec(spec)
    url, password = split_password(spec.url)
    stored = box.decrypt(current.password_token) if current.password_token else None
    new = (url, password, spec.schema, spec.tags, spec.group, spec.enabled)
    old = (current.url, stored, current.schema, current.tags, current.group, current.enabled)
    return tuple(field for field, a, b in zip(FIELDS, new, old, strict=True) if a != b)


async def add(store: Store, spec: TenantSpec, box: SecretBox, by: str | None = None) -> Tenant:
    tenant = to_tenant(spec, box, by)
    await store.add_tenant(tenant)
    return tenant


UPDATABLE = ("url", "schema", "tags", "group", "enabled")


async def update(
    store: Store, tenant_id: str, changes: Mapping[str, Any], box: SecretBox, by: str | None = None
) -> Tenant:
    """Change some fields of a registered tenant (``UPDATABLE``), validated as a whole spec. A URL not
    given keeps the stored one and its encrypted password; a URL given replaces both."""
    current = await store.get_tenant(tenant_id)
    spec = TenantSpec(
        id=current.id,
        url=changes.get("url", current.url),
        schema=changes.get("schema", current.schema),
        tags=tuple(changes.get("tags", current.tags) or ()),
        group=changes.get("group", current.group),
        enabled=changes.get("enabled", current.enabled),
    )
    tenant = to_tenant(spec, box, by)
    if "url" not in changes:
        tenant = replace(tenant, url=current.url, password_token=current.password_token)
    await store.write_tenants([], [tenant])
    return tenant


async def import_specs(
    store: Store, specs: Sequence[TenantSpec], box: SecretBox, by: str | None = None
) -> ImportCounts:
    """Create or update every spec in one transaction; tenants absent from the file are left alone."""
    existing = {t.id: t for t in await store.list_tenants()}
    created: list[Tenant] = []
    updated: list[Tenant] = []
    unchanged = 0
    for spec in specs:
        current = existing.get(spec.id)
        if current is not None:
            # an unchanged tenant is not written (its ciphertext kept), so re-imports are no-ops
            if changed_fields(spec, current, box):
                updated.append(to_tenant(spec, box, by))
            else:
                unchanged += 1
        else:
            created.append(to_tenant(spec, box, by))
    await store.write_tenants(created, updated)
    return ImportCounts(created=len(created), updated=len(updated), unchanged=unchanged)
