"""Reading tenants' current revisions fast and read-only: many tenants at once over asyncpg (bounded
concurrency, connect and statement timeouts), never creating a version table or taking a write lock.

This is what makes a no-op rollout cheap: tenants already at the target are found here and never get a
task. Schema-per-tenant tenants that share a database are read together over one connection: a catalog
query finds which of their version tables exist, then ``UNION ALL`` queries read them in batches, so ten
thousand schemas cost a few hundred queries on ten connections, not ten thousand backends started.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from .exceptions import ConfigurationError
from .locking import lock_key
from .models import ErrorClass
from .secrets import mask_text


@dataclass(frozen=True, kw_only=True)
class Probe:
    """Where to read one tenant's revision; ``url`` holds its password."""

    tenant_id: str
    url: str
    schema: str | None


@dataclass(frozen=True, kw_only=True)
class RevisionRead:
    """A tenant's version-table rows, or why they could not be read."""

    tenant_id: str
    heads: tuple[str, ...] = ()
    version_table: bool = False
    error_class: ErrorClass | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        return ",".join(self.heads) if self.heads else "base"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# libpq URL options that asyncpg reads from a DSN's query exactly as libpq does (certificate files too)
DSN_OPTIONS = frozenset(
    {
        "host",
        "port",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslpassword",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "passfile",
        "service",
    }
)
# libpq sends these to the server at startup; asyncpg sends its server_settings the same way
STARTUP_OPTIONS = frozenset({"options", "application_name"})
# libpq's tuning of the socket and of host selection: a read of one row does without it
IGNORED_OPTIONS = frozenset(
    {
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "sslcompression",
        "sslsni",
        "load_balance_hosts",
    }
)


def url_seconds(value: str) -> float | None:
    """A URL's ``connect_timeout``: None for 0 (libpq's "no limit": tenantctl's own timeout applies)."""
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigurationError(f"tenant URL option connect_timeout={value!r} is not a number") from None
    return seconds if seconds > 0 else None


def asyncpg_params(url: str) -> dict[str, Any]:
    """``asyncpg.connect`` arguments for a tenant URL, honouring its libpq query options as psycopg (the
    migration's driver) does: ``sslmode`` and the certificate files through a DSN asyncpg parses as libpq
    would, ``options`` and ``application_name`` as startup settings, ``connect_timeout`` as ``timeout``.

    An option asyncpg cannot honour raises ConfigurationError rather than being dropped: a silently
    ignored ``channel_binding=require`` or ``hostaddr`` would read from somewhere else, or less safely,
    than the migration connects."""
    parsed = make_url(url)
    params: dict[str, Any] = {
        "user": parsed.username,
        "password": parsed.password,
        "host": parsed.host,
        "port": parsed.port,
        "database": parsed.database,
    }
    dsn: dict[str, str] = {}
    settings: dict[str, str] = {}
    for key, raw in parsed.query.items():
        value = raw if isinstance(raw, str) else raw[-1]
        if key == "ssl" and "sslmode" not in parsed.query:  # as SQLAlchemy's asyncpg dialect spells it
            key = "sslmode"
        if key in DSN_OPTIONS:
            dsn[key] = value
        elif key in STARTUP_OPTIONS:
            settings[key] = value
        elif key == "fallback_application_name":
            settings.setdefault("application_name", value)
        elif key == "connect_timeout":
            seconds = url_seconds(value)
            if seconds:  # libpq: 0 waits forever; the read keeps its own timeout then
                params["timeout"] = max(2.0, seconds)
        elif key == "client_encoding" and value.replace("-", "").upper() in ("UTF8", "UNICODE"):
            continue  # asyncpg speaks UTF-8 only
        elif key not in IGNORED_OPTIONS:
            raise ConfigurationError(
                f"tenant URL option {key!r} cannot be honoured by tenantctl's revision reads (asyncpg): "
                f"use {', '.join(sorted(DSN_OPTIONS | STARTUP_OPTIONS | {'connect_timeout'}))}"
            )
    if dsn:
        params["dsn"] = "postgresql://?" + urlencode(dsn)
    if settings:
        params["server_settings"] = settings
    return {k: v for k, v in params.items() if v is not None}


def _connect_args(url: str, timeout: float, server_settings: dict[str, str]) -> dict[str, Any]:
    """The URL's arguments with tenantctl's timeouts and settings: ``application_name`` is tenantctl's
    unless the URL names one; ``server_settings`` given here win over the URL's."""
    params = asyncpg_params(url)
    settings = {"application_name": "tenantctl", **params.pop("server_settings", {}), **server_settings}
    return {"timeout": timeout, "command_timeout": timeout, **params, "server_settings": settings}


READ_ONLY = {"default_transaction_read_only": "on"}


async def _read_pg(probe: Probe, version_table: str, timeout: float) -> RevisionRead:
    """One tenant over a connection of its own: database-per-tenant tenants, and a schema alone on its
    database."""
    try:
        args = _connect_args(probe.url, timeout, READ_ONLY)
    except ConfigurationError as exc:
        return RevisionRead(
            tenant_id=probe.tenant_id, error_class=ErrorClass.INVALID_CONFIG, error=exc.message
        )
    try:
        conn = await asyncpg.connect(**args)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return _unreachable(probe, exc)
    try:
        # one query, no existence check first: half the round trips of a no-op rollout's reads
        return await _select_versions(conn, probe, version_table)
    finally:
        await conn.close(timeout=timeout)


def _table(schema: str | None, version_table: str) -> str:
    return (quote_ident(schema) + "." if schema else "") + quote_ident(version_table)


async def _select_versions(conn: Any, probe: Probe, version_table: str) -> RevisionRead:
    try:
        rows = await conn.fetch(f"SELECT version_num FROM {_table(probe.schema, version_table)}")
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return RevisionRead(tenant_id=probe.tenant_id)  # no version table (or no schema): at base
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return _unreachable(probe, exc)
    heads = tuple(sorted(r[0] for r in rows))
    return RevisionRead(tenant_id=probe.tenant_id, heads=heads, version_table=True)


# version tables named in one UNION ALL query. 25 to 200 measured alike: about 0.1 ms of backend CPU per
# table, mostly opening it and its index in a fresh backend; 1,000 cost three times as much (planning)
BATCH = 100
# the schemas of a group (of those asked for) that hold a relation named like the version table; the
# catalog needs no privilege on the schemas, unlike to_regclass, so one unusable schema fails only its
# own tenant (in its batch's fallback), not the whole database
_EXISTING = """
SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = $1 AND n.nspname = ANY($2::text[])
"""


async def _read_group(probes: Sequence[Probe], version_table: str, timeout: float) -> list[RevisionRead]:
    """Schema tenants of one database over one connection. Each gets what ``_read_pg`` would give it: a
    schema or version table that does not exist reads as base; when the database cannot be reached (or
    the connection fails part-way), every tenant not yet read gets that error, masked.

    Each statement has the per-tenant read's timeout. A lock wait ends at half of it (``lock_timeout``),
    so that one version table held by someone's DDL fails its batch as a statement, not by the timeout
    that would end the session: the batch is then read table by table and only that tenant fails."""
    settings = {**READ_ONLY, "lock_timeout": f"{max(1, int(timeout * 500))}ms"}
    args = _connect_args(probes[0].url, timeout, settings)  # the grouping checked that it can be built
    args["statement_cache_size"] = 0  # every batch's query is new: a cached plan would only hold memory
    batches = [probes[i : i + BATCH] for i in range(0, len(probes), BATCH)]
    reads: list[RevisionRead] = []  # in the probes' order, as far as read
    try:
        # a scope, as read_one's, over the connect; then each statement has its command_timeout
        async with asyncio.timeout(max(float(args["timeout"]), timeout) + timeout):
            conn = await asyncpg.connect(**args)
        try:
            found = await conn.fetch(_EXISTING, version_table, list({p.schema for p in probes}))
            existing = {r[0] for r in found}
            for batch in batches:
                reads.extend(await _read_batch(conn, batch, existing, version_table))
        finally:
            await conn.close(timeout=timeout)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        failed = _unreachable(probes[0], exc)
        return reads + [replace(failed, tenant_id=p.tenant_id) for p in probes[len(reads) :]]
    return reads


async def _read_batch(
    conn: Any, batch: Sequence[Probe], existing: set[str | None], version_table: str
) -> list[RevisionRead]:
    """One ``UNION ALL`` over the batch's version tables that exist. Should it fail as a statement (a
    table without privilege or without ``version_num``, one dropped since the catalog query), each table
    is read alone on the same connection, so only its tenant gets the error ``_read_pg`` would give."""
    named = [i for i, p in enumerate(batch) if p.schema in existing]
    heads: dict[int, list[str]] = {i: [] for i in named}
    if named:
        query = " UNION ALL ".join(
            f"SELECT {i} AS i, version_num FROM {_table(batch[i].schema, version_table)}" for i in named
        )
        try:
            rows = await conn.fetch(query)
        except asyncpg.PostgresError:
            if conn.is_closed():
                raise
            return [await _select_versions(conn, p, version_table) for p in batch]
        for i, version in rows:
            heads[i].append(version)
    return [
        RevisionRead(tenant_id=p.tenant_id, heads=tuple(sorted(heads[i])), version_table=True)
        if i in heads
        else RevisionRead(tenant_id=p.tenant_id)
        for i, p in enumerate(batch)
    ]


def _read_sqlite(probe: Probe, version_table: str, timeout: float) -> RevisionRead:
    path = make_url(probe.url).database or ""
    if not Path(path).exists():
        return RevisionRead(tenant_id=probe.tenant_id)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (version_table,)
            ).fetchone()
            if not found:
                return RevisionRead(tenant_id=probe.tenant_id)
            rows = conn.execute(f"SELECT version_num FROM {quote_ident(version_table)}").fetchall()
    except sqlite3.Error as exc:
        return _unreachable(probe, exc)
    return RevisionRead(
        tenant_id=probe.tenant_id, heads=tuple(sorted(r[0] for r in rows)), version_table=True
    )


def _unreachable(probe: Probe, exc: BaseException) -> RevisionRead:
    password = make_url(probe.url).password
    detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    if isinstance(exc, TimeoutError):
        detail = "connection timed out"
    return RevisionRead(
        tenant_id=probe.tenant_id,
        error_class=ErrorClass.UNREACHABLE,
        error=mask_text(f"cannot read revision: {detail}", [str(password)] if password else []),
    )


async def read_one(probe: Probe, version_table: str, timeout: float) -> RevisionRead:
    if probe.url.startswith("sqlite"):
        return await asyncio.to_thread(_read_sqlite, probe, version_table, timeout)
    try:
        connect = float(asyncpg_params(probe.url).get("timeout", timeout))
    except ConfigurationError:
        connect = timeout  # _read_pg reports it
    try:
        # a timeout scope, not wait_for: no extra task per tenant (a no-op rollout reads thousands)
        async with asyncio.timeout(max(connect, timeout) + timeout):
            return await _read_pg(probe, version_table, timeout)
    except TimeoutError as exc:
        return _unreachable(probe, exc)


def _group(probes: Sequence[Probe]) -> tuple[list[list[Probe]], list[Probe]]:
    """Schema tenants by the database they share (the same connection arguments: server, database,
    credentials, options), and the probes read one by one: database-per-tenant, SQLite, a URL whose
    options cannot be honoured (``_read_pg`` reports it), and a schema alone on its database."""
    keys: dict[str, str | None] = {}  # per distinct URL: most tenants of a database share the string
    groups: dict[str, list[Probe]] = {}
    singles: list[Probe] = []
    for probe in probes:
        if probe.schema is None or probe.url.startswith("sqlite"):
            singles.append(probe)
            continue
        if probe.url not in keys:
            try:
                keys[probe.url] = json.dumps(asyncpg_params(probe.url), sort_keys=True, default=str)
            except ConfigurationError:
                keys[probe.url] = None
        key = keys[probe.url]
        if key is None:
            singles.append(probe)
        else:
            groups.setdefault(key, []).append(probe)
    for key, members in list(groups.items()):
        if len(members) == 1:  # one round trip alone, two in a group
            singles.extend(groups.pop(key))
    return sorted(groups.values(), key=len, reverse=True), singles


async def read_all(
    probes: Sequence[Probe], *, version_table: str, concurrency: int, timeout: float
) -> dict[str, RevisionRead]:
    """Every probe's revision, over at most ``concurrency`` connections at a time: one per database for
    the schema tenants sharing it, one per tenant otherwise. The largest groups start first."""
    gate = asyncio.Semaphore(concurrency)
    groups, singles = _group(probes)

    async def group(members: Sequence[Probe]) -> list[RevisionRead]:
        async with gate:
            return await _read_group(members, version_table, timeout)

    async def single(probe: Probe) -> list[RevisionRead]:
        async with gate:
            return [await read_one(probe, version_table, timeout)]

    results = await asyncio.gather(*(group(g) for g in groups), *(single(p) for p in singles))
    by_id = {r.tenant_id: r for reads in results for r in reads}
    return {p.tenant_id: by_id[p.tenant_id] for p in probes}


@dataclass(frozen=True, kw_only=True)
class LockProbe:
    """Whether a tenant's migration lock is free, and its revision when it is."""

    lock_free: bool = False
    heads: tuple[str, ...] = ()
    error: str | None = None


async def probe_lock(url: str, schema: str | None, version_table: str, timeout: float) -> LockProbe:
    """Try the tenant's migration lock without waiting; if free, read the revision under it, then let go."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return await asyncio.to_thread(_probe_sqlite, parsed.database or "", version_table, timeout)
    key = lock_key(parsed.database or "", schema, version_table)
    table = (quote_ident(schema) + "." if schema else "") + quote_ident(version_table)
    try:
        conn = await asyncpg.connect(**_connect_args(url, timeout, {}))
    except ConfigurationError as exc:
        return LockProbe(error=exc.message)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return LockProbe(error=mask_text(str(exc) or exc.__class__.__name__, [parsed.password or ""]))
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            return LockProbe(lock_free=False)
        try:
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                return LockProbe(lock_free=True)
            rows = await conn.fetch(f"SELECT version_num FROM {table}")
            return LockProbe(lock_free=True, heads=tuple(sorted(r[0] for r in rows)))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return LockProbe(error=mask_text(str(exc) or exc.__class__.__name__, [parsed.password or ""]))
    finally:
        await conn.close(timeout=timeout)


def _probe_sqlite(path: str, version_table: str, timeout: float) -> LockProbe:
    import fcntl
    import os

    fd = os.open(f"{path}.tenantctl-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return LockProbe(lock_free=False)
        read = _read_sqlite(Probe(tenant_id="", url=f"sqlite:///{path}", schema=None), version_table, timeout)
        return LockProbe(lock_free=True, heads=read.heads, error=read.error)
    finally:
        os.close(fd)
