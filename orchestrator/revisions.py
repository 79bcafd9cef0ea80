"""Reading tenants' current revisions fast and read-only: many tenants at once over asyncpg (bounded
concurrency, connect and statement timeouts), never creating a version table or taking a write lock.

This is what makes a no-op rollout cheap: tenants already at the target are found here and never get a
task.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
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


async def _read_pg(probe: Probe, version_table: str, timeout: float) -> RevisionRead:
    table = (quote_ident(probe.schema) + "." if probe.schema else "") + quote_ident(version_table)
    try:
        args = _connect_args(probe.url, timeout, {"default_transaction_read_only": "on"})
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
        rows = await conn.fetch(f"SELECT version_num FROM {table}")
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return RevisionRead(tenant_id=probe.tenant_id)  # no version table (or no schema): at base
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return _unreachable(probe, exc)
    finally:
        await conn.close(timeout=timeout)
    heads = tuple(sorted(r[0] for r in rows))
    return RevisionRead(tenant_id=probe.tenant_id, heads=heads, version_table=True)


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


async def read_all(
    probes: Sequence[Probe], *, version_table: str, concurrency: int, timeout: float
) -> dict[str, RevisionRead]:
    """Every probe's revision, ``concurrency`` connections at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded(probe: Probe) -> RevisionRead:
        async with gate:
            return await read_one(probe, version_table, timeout)

    results = await asyncio.gather(*(bounded(p) for p in probes))
    return {r.tenant_id: r for r in results}


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
