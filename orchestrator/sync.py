"""Keeping the registry in step with a live source of tenants: the application's customers table (a query)
or a tenant file. The source is the truth: tenants it adds are created, changed ones updated, vanished
ones disabled (never deleted: their run history stays, and they come back if the source does).

The diff (``plan``) and the safety valve (``check``) are pure; the readers are the only I/O besides the
store. The source query runs read-only (a ``READ ONLY`` transaction, through a server-side cursor, which
PostgreSQL only accepts for one ``SELECT`` or ``VALUES``), under a statement timeout, and the source URL's
password never leaves this module: every message about the source is masked.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from . import tenantfile
from .controldb.store import Store
from .exceptions import (
    ConfigurationError,
    ImportFileError,
    InvalidTenant,
    SyncRefused,
    SyncRowError,
    SyncSourceError,
    UserError,
)
from .models import Tenant, TenantSpec
from .registry import changed_fields, to_tenant
from .secrets import SecretBox, env_references, mask_text
from .settings import Settings
from .tenantfile import FIELDS, ExtraColumns

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("tenantctl.sync")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
_CURSOR = "tenantctl_sync"
_FETCH = 2000


# -- the source ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where tenants come from: a ``query`` run on ``url``, or a tenant ``file``.

    ``url`` is kept as given (a clear password, ``${ENV}`` references): it is resolved only to connect.
    """

    query: str | None = None
    url: str | None = None
    file: Path | None = None
    extra: ExtraColumns = tenantfile.NO_EXTRA
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if (self.query is None) == (self.file is None):
            raise UserError(
                "a sync reads one source: --from-sql QUERY (and --source-url) or --from-file FILE"
            )
        if self.query is not None and not self.url:
            raise UserError("--from-sql needs --source-url (or TENANTCTL_SYNC_SOURCE_URL) to run on")
        if self.query is not None and not self.query.strip():
            raise UserError("--from-sql: the query is empty")

    def describe(self) -> str:
        """The source for people and logs: a file's path, or the URL with its password masked."""
        return str(self.file) if self.file is not None else f"source {_shown(self.url or '')}"


def _shown(raw: str) -> str:
    """A source URL with its password, in the user part or a ``password=`` option, shown as ``***``. A URL
    that does not parse is not shown at all: where its password sits cannot be told."""
    url = _parse(raw)
    if url is None:
        return "(URL not shown)"
    if "password" in url.query:
        url = url.difference_update_query(["password"])._replace(password=url.password or "x")
    return mask_text(unquote(url.render_as_string(hide_password=True)))


def _parse(raw: str) -> URL | None:
    """The URL, or None if it does not parse. An ``@`` in the host means an unencoded ``@`` in the
    password (``u:p@ss@h``): part of the password would be taken for the host, and shown."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        return None
    return None if url.host and "@" in url.host else url


def configured_source(
    settings: Settings,
    *,
    query: str | None = None,
    file: Path | None = None,
    url: str | None = None,
    tag_columns: Sequence[str] | None = None,
    group_column: str | None = None,
    timeout: float | None = None,
) -> Source:
    """The source to sync from: each argument (a command-line option) wins over its setting
    (``TENANTCTL_SYNC_…``); a query or a file given replaces the configured source of either kind."""
    if query is None and file is None:
        query, file = settings.sync_from_sql or None, settings.sync_from_file
    if query is None and file is None:
        raise ConfigurationError(
            "no sync source: pass --from-sql QUERY --source-url URL or --from-file FILE, or set "
            "TENANTCTL_SYNC_FROM_SQL and TENANTCTL_SYNC_SOURCE_URL (or TENANTCTL_SYNC_FROM_FILE)"
        )
    if tag_columns is None:
        tag_columns = [c.strip() for c in (settings.sync_tag_columns or "").split(",") if c.strip()]
    return Source(
        query=query,
        url=url or (settings.sync_source_url.get_secret_value() if settings.sync_source_url else None),
        file=file,
        extra=ExtraColumns(tags=tuple(tag_columns), group=group_column or settings.sync_group_column or None),
        timeout=timeout if timeout is not None else settings.sync_timeout,
    )


def read(source: Source, environ: Mapping[str, str], *, connect_timeout: float) -> list[TenantSpec]:
    """Every tenant of the source, validated as an import row is; raises SyncSourceError (a SyncRowError
    naming the row) before anything is written."""
    if source.file is not None:
        try:
            return tenantfile.read(source.file, source.extra)
        except ImportFileError as exc:
            where = f"{exc.path}:{exc.line}" if exc.line is not None else exc.path
            raise SyncSourceError(where, exc.reason) from exc
    assert source.query is not None and source.url is not None  # checked by Source
    url, secrets = _source_url(source, environ)
    columns, rows = _query(source, url, secrets, connect_timeout)
    return specs_from_rows(columns, rows, source.extra, where=source.describe())


def _source_url(source: Source, environ: Mapping[str, str]) -> tuple[URL, list[str]]:
    """The URL to connect with and the secrets to mask. ``${VAR}`` is resolved as in tenant URLs, but in
    each part (user, password, host, database, query values) on its own, after parsing: a password from
    the environment may hold ``@``, ``/`` or ``:`` and is still the whole password."""
    raw = source.url or ""
    where = source.describe()
    missing = [name for name in env_references(raw) if name not in environ]
    if missing:
        reason = f"environment variable {missing[0]} referenced by the source URL is not set"
        raise SyncSourceError(where, reason)
    parsed = _parse(raw)
    if parsed is None:
        reason = "not a database URL (e.g. postgresql://user@host/db; write '@' in a password as %40)"
        raise SyncSourceError(where, reason)
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise SyncSourceError(where, "only postgresql:// and sqlite:/// sources are supported")

    def env(part: str | None) -> str | None:
        for name in env_references(part or ""):
            part = (part or "").replace(f"${{{name}}}", environ[name])
        return part

    query = {k: env(v) if isinstance(v, str) else tuple(map(env, v)) for k, v in parsed.query.items()}
    url = URL.create(
        parsed.drivername,
        username=env(parsed.username),
        password=env(parsed.password),
        host=env(parsed.host),
        port=parsed.port,
        database=env(parsed.database),
        query=query,  # type: ignore[arg-type]
    )
    hidden = [str(url.password or ""), str(url.query.get("password") or "")]
    secrets = [
        form for secret in hidden if secret for form in (secret, quote(secret, safe=""), quote(secret))
    ]
    return url, secrets


def _query(
    source: Source, url: URL, secrets: list[str], connect_timeout: float
) -> tuple[list[str], list[tuple[Any, ...]]]:
    where = source.describe()
    assert source.query is not None
    query = source.query.strip().rstrip(";").strip()
    if url.get_backend_name() == "sqlite":
        return _query_sqlite(where, url, query, source.timeout)
    import psycopg  # only a PostgreSQL source needs it

    try:
        conn = _connect(url, connect_timeout)
    except psycopg.Error as exc:
        reason = _first_line(exc, secrets)
        reason = reason if reason.startswith("connection") else f"cannot connect: {reason}"
        raise SyncSourceError(where, reason) from exc
    try:
        with conn:
            return _run(conn, query, source.timeout)
    except psycopg.errors.QueryCanceled as exc:
        reason = f"the query ran past its statement timeout ({source.timeout:g}s)"
        raise SyncSourceError(where, reason) from exc
    except psycopg.Error as exc:
        raise SyncSourceError(where, f"the query failed: {_first_line(exc, secrets)}") from exc


def _connect(url: URL, connect_timeout: float) -> psycopg.Connection[tuple[Any, ...]]:
    """libpq's own URL options (sslmode, options …) apply; the URL's connect_timeout and application_name
    win over ours."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    given = conninfo_to_dict(libpq)
    ours: dict[str, str | int] = {"connect_timeout": max(2, math.ceil(connect_timeout))}
    ours |= {"application_name": "tenantctl-sync"}
    return psycopg.connect(make_conninfo(libpq, **{k: v for k, v in ours.items() if k not in given}))


def _run(
    conn: psycopg.Connection[tuple[Any, ...]], query: str, timeout: float
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """One read-only transaction: ``BEGIN READ ONLY``, a statement timeout, the query through a
    server-side cursor (PostgreSQL declares one for a single ``SELECT`` or ``VALUES`` only: no second
    statement, no ``COMMIT`` escaping the transaction, no ``DELETE … RETURNING``), then rollback."""
    from psycopg import sql

    conn.read_only = True
    limit = sql.Literal(f"{math.ceil(timeout * 1000)}ms")
    conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(limit))
    with conn.cursor(name=_CURSOR) as cursor:
        cursor.itersize = _FETCH
        cursor.execute(query)
        columns = [d.name for d in cursor.description or ()]
        rows = cursor.fetchall()
    conn.rollback()
    return columns, rows


def _query_sqlite(
    where: str, url: URL, query: str, timeout: float
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """A SQLite file opened read-only (``mode=ro``, ``query_only``), interrupted past the timeout."""
    path = url.database
    if not path or path == ":memory:":
        raise SyncSourceError(where, "a SQLite source needs a file path (sqlite:///path/to/app.db)")
    if not Path(path).is_file():
        raise SyncSourceError(where, f"no such file: {path}")
    deadline = time.monotonic() + timeout
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=timeout)
    except sqlite3.Error as exc:
        raise SyncSourceError(where, f"cannot open: {exc}") from exc
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        cursor = conn.execute(query)
        columns = [d[0] for d in cursor.description or ()]
        rows = cursor.fetchall()
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise SyncSourceError(where, f"the query ran past its timeout ({timeout:g}s)") from exc
        raise SyncSourceError(where, f"the query failed: {exc}") from exc
    except sqlite3.Error as exc:  # a second statement is refused here too (ProgrammingError)
        raise SyncSourceError(where, f"the query failed: {exc}") from exc
    finally:
        conn.close()
    return columns, rows


def _first_line(exc: Exception, secrets: Iterable[str]) -> str:
    text = str(exc).strip().splitlines()
    return mask_text(text[0] if text else exc.__class__.__name__, secrets)


# -- rows into specs (pure) -------------------------------------------------------------------------


def specs_from_rows(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], extra: ExtraColumns, *, where: str = "source"
) -> list[TenantSpec]:
    """A query's result as validated specs. Its columns must be tenant fields or named extra columns: a
    column nobody asked for is refused, because a misspelt alias (``schema_nme``) would otherwise quietly
    clear every tenant's schema."""
    problem = _column_problem(list(columns), extra)
    if problem:
        raise SyncSourceError(where, problem)
    specs: list[TenantSpec] = []
    seen: dict[str, int] = {}
    for number, values in enumerate(rows, 1):
        row = {column: _value(v) for column, v in zip(columns, values, strict=True)}
        shown = row.get("id") if isinstance(row.get("id"), str) else None
        try:
            spec = tenantfile.spec_from_row(row, extra)
        except (InvalidTenant, ValueError) as exc:
            raise SyncRowError(number, shown or None, mask_text(str(exc))) from exc
        if spec.id in seen:
            reason = f"id {spec.id!r} appears twice (first in row {seen[spec.id]})"
            raise SyncRowError(number, spec.id, reason)
        seen[spec.id] = number
        specs.append(spec)
    return specs


def _column_problem(columns: list[str], extra: ExtraColumns) -> str | None:
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        return f"column {twice[0]!r} appears twice"
    unknown = [c for c in columns if c not in FIELDS and c not in extra.names()]
    if unknown:
        return (
            f"column {unknown[0]!r} is not a tenant field ({', '.join(FIELDS)}): rename it with AS, "
            "make it a --tag-column or the --group-column, or leave it out of the query"
        )
    missing = [c for c in ("id", "url") if c not in columns]
    if missing:
        return f"no column {missing[0]!r}: the query must return id and url (e.g. SELECT db_url AS url …)"
    return extra.problem(columns)


def _value(value: Any) -> Any:
    """A column's value as an import row holds it: text stripped (``char(n)`` pads), integer, UUID and
    integral numeric ids as text, arrays as lists (``text[]`` tags). Anything else is left for the
    validation to refuse by its type."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | uuid.UUID):
        return str(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(value.to_integral_value())
    if isinstance(value, list | tuple):
        return [_value(v) for v in value]
    return value


# -- the diff and the safety valve (pure) ---------------------------------------------------------


class ChangeKind(enum.StrEnum):
    """What a sync does to one tenant. ``disabled`` and ``reenabled`` win over ``updated`` when the
    tenant's other fields change too (its ``fields`` say which)."""

    CREATED = "created"
    UPDATED = "updated"
    DISABLED = "disabled"
    REENABLED = "reenabled"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, kw_only=True)
class Change:
    """One tenant in the diff. ``absent``: disabled because the source no longer has it (otherwise the
    source itself says ``enabled: false``)."""

    tenant: str
    kind: ChangeKind
    fields: tuple[str, ...] = ()
    absent: bool = False


@dataclass(frozen=True, kw_only=True)
class SyncPlan:
    """What a sync does: the changes for people, and the rows for the store. Tenants already disabled and
    absent from the source are left alone, and are not in ``changes``."""

    changes: tuple[Change, ...]
    create: tuple[Tenant, ...] = ()
    update: tuple[Tenant, ...] = ()
    disable: tuple[str, ...] = ()
    enabled: int = 0

    def of(self, kind: ChangeKind) -> list[Change]:
        return [c for c in self.changes if c.kind is kind]

    def counts(self) -> dict[str, int]:
        return {kind.value: len(self.of(kind)) for kind in ChangeKind}

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` report: counts, and the tenants of every kind but ``unchanged``."""

        def entry(c: Change) -> dict[str, Any]:
            item: dict[str, Any] = {"id": c.tenant, "fields": list(c.fields)}
            if c.kind is ChangeKind.DISABLED:
                item["reason"] = "absent" if c.absent else "disabled in the source"
            return item

        lists: dict[str, Any] = {"created": [c.tenant for c in self.of(ChangeKind.CREATED)]}
        for kind in (ChangeKind.UPDATED, ChangeKind.DISABLED, ChangeKind.REENABLED):
            lists[kind.value] = [entry(c) for c in self.of(kind)]
        return {"counts": self.counts(), **lists}


def plan(current: Sequence[Tenant], specs: Sequence[TenantSpec], box: SecretBox) -> SyncPlan:
    """The diff between the registry and the source: every source tenant created, updated, re-enabled or
    unchanged; every enabled registry tenant missing from the source disabled."""
    existing = {t.id: t for t in current}
    changes: list[Change] = []
    create: list[Tenant] = []
    update: list[Tenant] = []
    for spec in specs:
        stored = existing.get(spec.id)
        if stored is None:
            create.append(to_tenant(spec, box))
            changes.append(Change(tenant=spec.id, kind=ChangeKind.CREATED))
            continue
        fields = changed_fields(spec, stored, box)
        if fields:
            update.append(to_tenant(spec, box))
        changes.append(Change(tenant=spec.id, kind=_kind(fields, enabled=spec.enabled), fields=fields))
    wanted = {spec.id for spec in specs}
    disable = [t.id for t in current if t.enabled and t.id not in wanted]
    changes += [Change(tenant=t, kind=ChangeKind.DISABLED, fields=("enabled",), absent=True) for t in disable]
    return SyncPlan(
        changes=tuple(sorted(changes, key=lambda c: c.tenant)),
        create=tuple(create),
        update=tuple(update),
        disable=tuple(disable),
        enabled=sum(t.enabled for t in current),
    )


def _kind(fields: tuple[str, ...], *, enabled: bool) -> ChangeKind:
    if not fields:
        return ChangeKind.UNCHANGED
    if "enabled" in fields:
        return ChangeKind.REENABLED if enabled else ChangeKind.DISABLED
    return ChangeKind.UPDATED


@dataclass(frozen=True, kw_only=True)
class DisableLimit:
    """How many tenants one sync may disable: ``percent`` of the enabled ones (rounded down, but at least
    one unless it is 0%), or a ``count``."""

    text: str
    percent: Decimal | None = None
    count: int | None = None

    @classmethod
    def parse(cls, text: str, origin: str = "--max-disable") -> DisableLimit:
        value = text.strip()
        share = _PERCENT.fullmatch(value)
        if share and Decimal(share[1]) <= 100:
            return cls(text=value, percent=Decimal(share[1]))
        if value.isdigit():
            return cls(text=value, count=int(value))
        raise ConfigurationError(
            f"invalid {origin} {text!r}: a share of the enabled tenants (10%) or a number of tenants (3)"
        )

    def allowed(self, enabled: int) -> int:
        if self.count is not None:
            return self.count
        assert self.percent is not None
        share = int(self.percent * enabled / 100)
        return share if self.percent == 0 else max(1, share)


def check(sync: SyncPlan, limit: DisableLimit, *, force: bool = False) -> None:
    """Refuse a plan that disables more than ``limit`` allows, or every enabled tenant: an empty result
    from a broken source must not switch the fleet off. ``force`` is for a person who has looked."""
    disabling = len(sync.of(ChangeKind.DISABLED))
    if force or not disabling:
        return
    allowed = limit.allowed(sync.enabled)
    if disabling > allowed or disabling >= sync.enabled:
        raise SyncRefused(
            disabling=disabling, enabled=sync.enabled, allowed=allowed, limit=limit.text, plan=sync
        )


# -- the verb --------------------------------------------------------------------------------------


async def apply(
    store: Store,
    specs: Sequence[TenantSpec],
    box: SecretBox,
    *,
    limit: DisableLimit,
    force: bool = False,
    dry_run: bool = False,
) -> SyncPlan:
    """Diff the registry against the source's specs and write the whole diff in one transaction (nothing
    on ``dry_run``, or when the safety valve refuses)."""
    sync = plan(await store.list_tenants(), specs, box)
    check(sync, limit, force=force)
    if not dry_run:
        await store.write_tenants(sync.create, sync.update, sync.disable)
    return sync


def scheduled(settings: Settings, environ: Mapping[str, str]) -> dict[str, Any]:
    """The beat-driven sync: the configured source, ``TENANTCTL_SYNC_MAX_DISABLE``, never forced. The
    same functions as ``tenantctl tenants sync``; returns its ``--json`` report."""
    source = configured_source(settings)
    limit = DisableLimit.parse(settings.sync_max_disable, "TENANTCTL_SYNC_MAX_DISABLE")
    box = SecretBox(settings.secret_key.get_secret_value() if settings.secret_key else None)
    specs = read(source, environ, connect_timeout=settings.connect_timeout)

    async def main() -> SyncPlan:
        async with Store(settings.database_url.get_secret_value()) as store:
            await store.ensure_ready()
            return await apply(store, specs, box, limit=limit)

    sync = asyncio.run(main())
    counts = ", ".join(f"{kind} {n}" for kind, n in sync.counts().items())
    log.info("tenant sync from %s: %s", source.describe(), counts)
    return {"source": source.describe(), **sync.as_dict()}
