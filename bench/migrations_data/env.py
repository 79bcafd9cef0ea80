"""Alembic environment of the benchmark's data-heavy migration set: the shipped ``migrations/env.py``
(the contract tenantctl drives: ``config.attributes["connection"]`` or ``-x url=``, ``-x schema=``,
``-x version_table=``, one transaction per revision) without its ``models.py``, so that the methods
of ``bench/rollout_bench.py`` compare on it as they do on the shipped set."""

from __future__ import annotations

import asyncio
import re
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import event, pool, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import create_async_engine

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$")
_ASYNCPG_FROM = frozenset({"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"})
_AIOSQLITE_FROM = frozenset({"sqlite", "sqlite+pysqlite"})

config = context.config
x_args = context.get_x_argument(as_dictionary=True)
# tenantctl passes -x version_table= when its TENANTCTL_VERSION_TABLE is not the default
VERSION_TABLE = x_args.get("version_table") or "alembic_version"

# A caller that shares its connection runs in-process: reconfiguring its logging would be rude.
if config.config_file_name is not None and config.attributes.get(
    "configure_logger", "connection" not in config.attributes
):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


target_metadata = None  # a data set: no models, nothing to autogenerate


def quote_ident(name: str) -> str:
    """Quote a PostgreSQL identifier; validation already forbids ``"`` but never trust that alone."""
    return '"' + name.replace('"', '""') + '"'


def tenant_schema() -> str | None:
    """The ``-x schema=`` value, validated because it is spliced into DDL."""
    schema = x_args.get("schema") or None
    if schema is None:
        return None
    if len(schema) > 63 or not _SCHEMA_RE.fullmatch(schema):
        raise ValueError(
            f"invalid schema name {schema!r}: 1-63 characters, a letter or _ first, "
            "then letters, digits, _, $ or -"
        )
    return schema


def _async_url(url: URL) -> tuple[URL, dict[str, Any]]:
    """Swap a sync driver for its asyncio counterpart; libpq-only query keys are translated
    because asyncpg rejects unknown connect() keywords."""
    if url.drivername in _ASYNCPG_FROM:
        query = dict(url.query)
        connect_args: dict[str, Any] = {}
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        if "connect_timeout" in query:
            connect_args["timeout"] = float(str(query.pop("connect_timeout")))
        return url.set(drivername="postgresql+asyncpg", query=query), connect_args
    if url.drivername in _AIOSQLITE_FROM:
        return url.set(drivername="sqlite+aiosqlite"), {}
    return url, {}


def tenant_url() -> tuple[URL, dict[str, Any]]:
    """The tenant URL (``-x url=`` first, then ``sqlalchemy.url``); never echoed, it holds secrets."""
    raw = x_args.get("url") or config.get_main_option("sqlalchemy.url")
    if not raw:
        raise RuntimeError(
            "no tenant database: pass -x url=..., set sqlalchemy.url, "
            "or share a connection in config.attributes['connection']"
        )
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError("the tenant database URL could not be parsed") from None
    return _async_url(url)


def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Hide the version table from autogenerate: with ``version_table_schema`` set, Alembic only
    skips it in that named schema, yet reflection sees it through search_path as unqualified."""
    return not (type_ == "table" and name == VERSION_TABLE)


def _options(dialect_name: str, schema: str | None) -> dict[str, Any]:
    """context.configure() options shared by the online and offline paths."""
    if schema is not None and dialect_name != "postgresql":
        raise ValueError(f"-x schema= is only supported on PostgreSQL, not {dialect_name}")
    return {
        "target_metadata": target_metadata,
        "transaction_per_migration": True,
        "compare_type": True,
        "render_as_batch": dialect_name == "sqlite",
        "version_table": VERSION_TABLE,
        "version_table_schema": schema,
        "include_name": _include_name,
    }


def run_migrations_offline() -> None:
    """Emit SQL (``--sql``) for the tenant's dialect without connecting."""
    shared = config.attributes.get("connection")
    url = shared.engine.url if isinstance(shared, Connection) else tenant_url()[0]
    schema = tenant_schema()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(url.get_backend_name(), schema),
    )
    if schema is not None:
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        context.execute(f"SET search_path TO {quote_ident(schema)}")
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection, schema: str | None) -> None:
    """Run the migrations on ``connection`` and leave it with nothing uncommitted."""
    options = _options(connection.dialect.name, schema)
    if schema is not None:
        exists = connection.scalar(
            text("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :name"), {"name": schema}
        )
        if not exists:  # checked first: CREATE SCHEMA needs CREATE on the database even if it exists
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"))
        connection.execute(text(f"SET search_path TO {quote_ident(schema)}"))
    # Alembic treats a connection already inside a transaction as "external" and then never opens
    # per-migration transactions, so end any autobegun one (ours, or the caller's) first.
    if connection.in_transaction():
        connection.commit()
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()
    # Reading the current heads autobegins a transaction that nothing else would close.
    if connection.in_transaction():
        connection.commit()


def sqlite_transactional_ddl(engine: Engine) -> None:
    """Make pysqlite/aiosqlite emit BEGIN before DDL too; otherwise each CREATE/ALTER autocommits
    and a failing revision would leave half its DDL behind."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


async def run_async_migrations(schema: str | None) -> None:
    """Open our own asyncio engine (CLI use); NullPool, as it lives for one command only."""
    url, connect_args = tenant_url()
    engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    if url.get_backend_name() == "sqlite":
        sqlite_transactional_ddl(engine.sync_engine)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations, schema)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Use the caller's connection when given (no event loop, no engine), else connect."""
    schema = tenant_schema()
    shared = config.attributes.get("connection")
    if shared is None:
        asyncio.run(run_async_migrations(schema))
    elif isinstance(shared, Connection):
        do_run_migrations(shared, schema)
    else:
        raise TypeError(
            "config.attributes['connection'] must be a sync sqlalchemy Connection, "
            f"not {type(shared).__name__}"
        )


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
