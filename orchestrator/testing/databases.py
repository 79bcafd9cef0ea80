"""The databases of one pytest session: the user's history migrated once into a template, then cloned
for each test with ``CREATE DATABASE … TEMPLATE`` (a block copy, whose cost is the template's size,
not the history's length), and everything dropped at the end.

Schema-per-tenant. PostgreSQL cannot clone a schema, and copying a template schema's tables
(``CREATE TABLE … (LIKE … INCLUDING ALL)``) is wrong: foreign keys, views, functions, triggers and
enum types are left behind, defaults keep calling the template's sequences, rows such as the version
table's are not copied. Migrating each tenant's schema afresh in every test is right but costs the
whole history per tenant per test. So a schema template is a *database* in which schemas
``tenant_1`` … ``tenant_N`` were each migrated by Alembic under their own names, once per session for
each N a test asks for (built from the largest smaller one already built: asking for 2, 3 and 5
tenants, in that order, migrates 5 schemas in all); a test clones that database whole. Nothing is
renamed or copied by hand, and a test's cost is one clone whatever N and the history (measured: 3
tenants of the shipped 4-revision history, 110-250 ms per test against 155-470 ms migrating afresh;
10 tenants, 96 against 395 ms; 3 tenants of a 40-revision history, 490-550 against 990-1060 ms).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

from ..exceptions import TenantctlError
from .errors import PluginSettingsInvalid, TemplateMigrationFailed
from .migrate import upgrade_to_heads
from .server import DatabaseServer
from .spec import INI_ENV, INI_OPTION, Layout, Settings, Tenant, TenantsSpec, template_name, tenant_ids


class SessionDatabases:
    """Templates built on first use and cached for the session; clones recorded in the caller's list
    *before* each ``CREATE``, so a setup that fails half-way still drops what it made."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        self.ini = settings.alembic_config
        self.server = DatabaseServer(settings.server_url, prefix)
        self._templates: dict[tuple[Layout, int], str] = {}
        self._failed: dict[Layout, TemplateMigrationFailed] = {}
        self._serial = itertools.count(1)
        self.closed = False

    def tenants(self, spec: TenantsSpec, created: list[str]) -> list[Tenant]:
        ids = tenant_ids(spec.tenants)
        if spec.layout is Layout.SCHEMA:
            url = self._clone(self._schema_template(spec.tenants), created)
            return [Tenant(id=tenant, url=url, schema=tenant) for tenant in ids]
        template = self._database_template()
        return [Tenant(id=tenant, url=self._clone(template, created), schema=None) for tenant in ids]

    def database(self, created: list[str]) -> str:
        return self._clone(self._database_template(), created)

    def drop(self, names: list[str]) -> None:
        self.server.drop(names)

    def close(self) -> list[str]:
        """Drop every database of the run (templates included); returns their names."""
        try:
            swept = self.server.sweep()
        finally:
            self.server.close()
        self.closed = True
        return swept

    def summary(self) -> str:
        n = self.server.created
        made = f"{n} test database{'' if n == 1 else 's'} on {self.server.where} ({self.server.prefix}*)"
        return f"tenantctl: {made}, " + (
            "all dropped" if self.closed else "NOT all dropped: see the errors above"
        )

    def _clone(self, template: str, created: list[str]) -> str:
        name = f"{self.server.prefix}{next(self._serial)}"
        created.append(name)
        self.server.create(name, template=template)
        return self.server.url_of(name)

    def _database_template(self) -> str:
        def build(url: str) -> None:
            upgrade_to_heads(self.ini, url, tenant_id="template", schema=None)

        return self._template(Layout.DATABASE, 1, build, source=None)

    def _schema_template(self, count: int) -> str:
        base = max((n for layout, n in self._templates if layout is Layout.SCHEMA and n < count), default=0)

        def build(url: str) -> None:
            for tenant in tenant_ids(count)[base:]:
                upgrade_to_heads(self.ini, url, tenant_id=tenant, schema=tenant)

        return self._template(Layout.SCHEMA, count, build, source=self._templates.get((Layout.SCHEMA, base)))

    def _template(self, layout: Layout, count: int, build: Callable[[str], None], source: str | None) -> str:
        key = (layout, count)
        if key in self._templates:
            return self._templates[key]
        if layout in self._failed:  # the history does not migrate: say so again, don't run it again
            raise self._failed[layout]
        if not self.ini.is_file():
            raise PluginSettingsInvalid(
                f"tenantctl: {INI_ENV} / {INI_OPTION}: {str(self.ini)!r} is not a file"
            )
        name = template_name(self.server.prefix, layout, count)
        try:
            self.server.create(name, template=source)
            build(self.server.url_of(name))
            self.server.close_sessions(name)
        except TenantctlError as exc:
            if isinstance(exc, TemplateMigrationFailed):
                self._failed[layout] = exc
            with contextlib.suppress(TenantctlError):  # the first error is the one to tell; the sweep retries
                self.server.drop([name])
            raise
        self._templates[key] = name
        return name
