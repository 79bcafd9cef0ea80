"""The tenant registry: turning user specs into stored tenants (passwords encrypted) and back into the
URL a unit of work connects with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import validation
from .controldb.store import ImportCounts, Store
from .models import Tenant, TenantSpec
from .secrets import SecretBox, mask_url, resolve_url, split_password, with_masked_password


@dataclass(frozen=True, kw_only=True)
class _Checked:
    """A validated spec, its URL without a clear password, and that password: what both the diff and the
    stored tenant need, so each spec's URL is parsed once."""

    spec: TenantSpec
    url: str
    password: str | None = field(repr=False)


def _checked(spec: TenantSpec) -> _Checked:
    spec, parsed = validation.checked(spec)
    url, password = split_password(spec.url, parsed)
    return _Checked(spec=spec, url=url, password=password)


def to_tenant(spec: TenantSpec, box: SecretBox, by: str | None = None) -> Tenant:
    """Validate a spec and encrypt its clear password, if any; ``by`` is who creates or changes it."""
    return _tenant(_checked(spec), box, by)


def _tenant(c: _Checked, box: SecretBox, by: str | None) -> Tenant:
    """Tenants of one URL (role and database) with the same password share a token (:class:`SecretBox`);
    others never do, so two tenants' equal passwords on different roles or databases do not show."""
    return Tenant(
        id=c.spec.id,
        url=c.url,
        password_token=box.encrypt(c.password, scope=c.url) if c.password is not None else None,
        schema=c.spec.schema,
        tags=c.spec.tags,
        group=c.spec.group,
        enabled=c.spec.enabled,
        updated_by=by,
    )


def connection_url(tenant: Tenant, box: SecretBox, environ: Mapping[str, str]) -> str:
    """The tenant's URL with its password: only ever handed to a unit of work, never shown or stored."""
    password = box.decrypt(tenant.password_token) if tenant.password_token else None
    return resolve_url(tenant.url, password, environ)


def display_url(tenant: Tenant) -> str:
    """The URL for people: a stored password shows as ``***``."""
    if tenant.password_token:
        return with_masked_password(tenant.url)
    return mask_url(tenant.url)


FIELDS = ("url", "password", "schema", "tags", "group", "enabled")


def changed_fields(spec: TenantSpec, current: Tenant, box: SecretBox) -> tuple[str, ...]:
    """The fields (of ``FIELDS``) a spec would change on a stored tenant. Passwords are compared in clear,
    so an unchanged one is not a change even though each encryption differs; a changed one is named
    ``password``, never shown."""
    return _changes(_checked(spec), current, box)


def _changes(c: _Checked, current: Tenant, box: SecretBox) -> tuple[str, ...]:
    stored = box.decrypt(current.password_token) if current.password_token else None
    new = (c.url, c.password, c.spec.schema, c.spec.tags, c.spec.group, c.spec.enabled)
    old = (current.url, stored, current.schema, current.tags, current.group, current.enabled)
    return tuple(name for name, a, b in zip(FIELDS, new, old, strict=True) if a != b)


def _differs(c: _Checked, current: Tenant, box: SecretBox) -> bool:
    """Whether a spec changes a stored tenant: :func:`changed_fields` without decrypting the stored
    password of a tenant rewritten anyway (decryption is 30 µs a tenant)."""
    if (c.url, c.spec.schema, c.spec.tags, c.spec.group, c.spec.enabled) != (
        current.url,
        current.schema,
        current.tags,
        current.group,
        current.enabled,
    ):
        return True
    return bool(_changes(c, current, box))


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
        checked = _checked(spec)
        current = existing.get(checked.spec.id)
        if current is None:
            created.append(_tenant(checked, box, by))
        elif _differs(checked, current, box):
            updated.append(_tenant(checked, box, by))
        else:  # an unchanged tenant is not written (its ciphertext kept), so re-imports are no-ops
            unchanged += 1
    await store.write_tenants(created, updated)
    return ImportCounts(created=len(created), updated=len(updated), unchanged=unchanged)
