"""The control database's engine and transactions: the one place driver errors become ours.

Every store module (tenants, runs, audits) is a mixin over :class:`StoreBase`; ``store.Store`` joins
them behind one facade. The store runs on PostgreSQL (asyncpg) and on SQLite (aiosqlite), the embedded
default.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ..exceptions import ConstraintViolation, ControlDBError
from ..secrets import mask_text
from .schema import metadata

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "tenantctl_version"


def async_url(raw: str) -> str:
    """The control-DB URL with an async driver: ``sqlite://`` → aiosqlite, ``postgresql://`` → asyncpg."""
    url = make_url(raw)
    backend = url.get_backend_name()
    if backend == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql":
        url = url.set(drivername="postgresql+asyncpg")
    else:
        raise ControlDBError(f"unsupported control database {url.drivername!r}: use sqlite or postgresql")
    return url.render_as_string(hide_password=False)


def _unique_columns() -> dict[str, str]:
    """SQLite names the columns of a broken unique constraint, not the constraint: ``"t.a, t.b"`` → name."""
    found: dict[str, str] = {}
    for table in metadata.tables.values():
        uniques = [table.primary_key, *(c for c in table.constraints if isinstance(c, sa.UniqueConstraint))]
        for constraint in uniques:
            found[", ".join(f"{table.name}.{c.name}" for c in constraint.columns)] = str(constraint.name)
        for index in table.indexes:
            if index.unique:
                found[", ".join(f"{table.name}.{c.name}" for c in index.columns)] = str(index.name)
    return found


_SQLITE_UNIQUE = _unique_columns()


def constraint_of(exc: IntegrityError) -> str:
    """The name of the constraint an IntegrityError broke (PostgreSQL reports it; for SQLite it is found
    from the columns named in the message), or ``"unknown"``."""
    current: BaseException | None = exc
    while current is not None:
        name = getattr(current, "constraint_name", None)
        if isinstance(name, str) and name:
            return name
        current = current.__cause__ or current.__context__
    message = str(exc.orig)
    for prefix in ("UNIQUE constraint failed: ", "PRIMARY KEY constraint failed: "):
        if message.startswith(prefix):
            return _SQLITE_UNIQUE.get(message.removeprefix(prefix).strip(), "unknown")
    return "unknown"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """SQLAlchemy's pre-ping, only for connections that sat idle in the pool longer than ``idle_s``:
    a failed ping makes the pool discard the connection and open another (DisconnectionError)."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since <= idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"control database connection lost while idle: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class ImportCounts:
    created: int
    updated: int
    unchanged: int


class StoreBase:
    """The engine, its transactions and the control database's own schema."""

    def __init__(
        self, url: str, *, pooled: bool = False, pre_ping: bool = True, idle_ping: float = 5.0
    ) -> None:
        """``pooled``: keep connections between calls, within one event loop (a CLI command, a worker
        process); else one connection per call. Connecting costs more than the query (SQLAlchemy sets
        asyncpg's type codecs on every new connection): a no-op rollout spent a tenth of a second
        connecting five times at its end. ``pre_ping`` (pooled only): a pooled connection
        idle for more than ``idle_ping`` seconds is checked before use, and replaced if the server
        dropped it (long-lived workers want that; a CLI command that lives seconds does not). One left
        idle for less is used as is: pinging before every transaction was two round trips per task."""
        self._display = mask_text(url)
        try:
            options: dict[str, Any] = {} if pooled else {"poolclass": NullPool}
            self._engine: AsyncEngine = create_async_engine(async_url(url), **options)
        except (SQLAlchemyError, ValueError) as exc:
            raise ControlDBError(f"invalid control database URL {self._display}") from exc
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
        if pooled and pre_ping:
            _ping_when_idle(self._engine.sync_engine, idle_ping)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._engine.dispose()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except IntegrityError as exc:
            raise ConstraintViolation(constraint_of(exc)) from exc
        except (SQLAlchemyError, OSError) as exc:
            raise ControlDBError(
                f"control database {self._display}: {mask_text(str(exc).splitlines()[0])}"
            ) from exc

    # -- schema -----------------------------------------------------------------------------------
    @staticmethod
    def _alembic_config() -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    async def migrate(self) -> tuple[str | None, str | None]:
        """Create or upgrade the control database to the head of its own history; returns (before, after)."""

        def run(sync: Connection) -> tuple[str | None, str | None]:
            before = MigrationContext.configure(
                sync, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()
            cfg = self._alembic_config()
            cfg.attributes["connection"] = sync
            command.upgrade(cfg, "head")
            after = MigrationContext.configure(
                sync, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()
            return before, after

        async with self._tx() as conn:
            return await conn.run_sync(run)

    async def ensure_ready(self) -> None:
        """Refuse to work on a control database that is missing or behind this version of tenantctl."""
        script = ScriptDirectory.from_config(self._alembic_config())
        head = script.get_current_head()

        def current(sync: Connection) -> str | None:
            return MigrationContext.configure(
                sync, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()

        database = self._engine.url.database or ""
        on_disk = database and database != ":memory:" and not database.startswith("file:")
        if self._engine.dialect.name == "sqlite" and on_disk and not Path(database).exists():
            rev = None  # connecting would leave an empty file behind a command that only reads
        else:
            async with self._tx() as conn:
                rev = await conn.run_sync(current)
        if rev is not None and rev != head and rev not in {s.revision for s in script.walk_revisions()}:
            raise ControlDBError(
                f"control database {self._display} is at {rev}, newer than this tenantctl (its newest is "
                f"{head}): run the tenantctl release that upgraded it"
            )
        if rev != head:
            raise ControlDBError(
                f"control database {self._display} is not initialised or out of date "
                f"(at {rev or 'nothing'}, needs {head}): run `tenantctl db upgrade`"
            )
