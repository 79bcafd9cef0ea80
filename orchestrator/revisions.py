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

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

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


def asyncpg_params(url: str) -> dict[str, object]:
    parsed = make_url(url)
    params: dict[str, object] = {
        "user": parsed.username,
        "password": parsed.password,
        "host": parsed.host or parsed.query.get("host"),
        "port": parsed.port,
        "database": parsed.database,
    }
    if "sslmode" in parsed.query:
        params["ssl"] = parsed.query["sslmode"]
    return {k: v for k, v in params.items() if v is not None}


async def _read_pg(probe: Probe, version_table: str, timeout: float) -> RevisionRead:
    table = (quote_ident(probe.schema) + "." if probe.schema else "") + quote_ident(version_table)
    try:
        conn = await asyncpg.connect(
            **asyncpg_params(probe.url),
            timeout=timeout,
            command_timeout=timeout,
            server_settings={"application_name": "tenantctl", "default_transaction_read_only": "on"},
        )
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
        # a timeout scope, not wait_for: no extra task per tenant (a no-op rollout reads thousands)
        async with asyncio.timeout(timeout * 2):
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
        conn = await asyncpg.connect(**asyncpg_params(url), timeout=timeout, command_timeout=timeout)
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
