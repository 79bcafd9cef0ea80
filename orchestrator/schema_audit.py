"""The schema audit of one tenant: Alembic's autogenerate comparison of its live schema with the models'
``MetaData``, rendered as stable sentences so identical drift on many tenants groups into one line.

:func:`audit_tenant` is the unit: a plain function of plain data (:class:`SchemaJob`), run in a child
process of :class:`PoolSchemaRunner` (reflection is CPU-heavy and blocking) and, later, by a Celery task
that resolves the tenant's URL in the worker. It is read-only: a transaction declared ``READ ONLY`` on a
session whose default is read-only, always rolled back; SQLite files are opened ``mode=ro``.

Which metadata: ``TENANTCTL_SCHEMA_METADATA`` (``package.module:attribute``, imported), else the
``metadata`` attribute of ``models.py`` in the tenants' script_location, loaded from its file exactly as
the shipped ``env.py`` loads it to hand Alembic its ``target_metadata`` (``env.py`` itself cannot be
imported: it runs migrations when loaded).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import importlib.util
import multiprocessing
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from .exceptions import ConfigurationError
from .revisions import quote_ident
from .secrets import mask_text


@dataclass(frozen=True, kw_only=True)
class SchemaJob:
    """One tenant to compare. ``url`` holds its password: it crosses a process boundary, never a broker.
    ``metadata`` is a :func:`load_metadata` reference, loaded once per process."""

    tenant_id: str
    url: str = field(repr=False)
    schema: str | None
    metadata: str
    version_table: str = "alembic_version"
    connect_timeout_s: float = 5.0
    statement_timeout_ms: int = 60_000
    lock_timeout_ms: int = 10_000


@dataclass(frozen=True, kw_only=True)
class SchemaResult:
    """The differences found (sorted sentences), whether the schema holds no table at all, or why it
    could not be compared (password-free)."""

    tenant_id: str
    differences: tuple[str, ...] = ()
    empty: bool = False
    error: str | None = None


# -- the models' metadata --------------------------------------------------------------------------


def default_reference(script_dir: str) -> str | None:
    """``<script_location>/models.py:metadata`` when that file exists: what the shipped env.py uses."""
    models = Path(script_dir) / "models.py"
    return f"{models.resolve()}:metadata" if models.is_file() else None


@functools.lru_cache(maxsize=8)
def load_metadata(reference: str) -> sa.MetaData:
    """``package.module:attribute`` (imported) or ``/path/to/models.py:attribute`` (loaded from the file,
    outside any package, as env.py loads it)."""
    module_name, sep, attribute = reference.rpartition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"invalid TENANTCTL_SCHEMA_METADATA {reference!r}: expected module:attribute"
        )
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            digest = hashlib.blake2b(str(path).encode(), digest_size=6).hexdigest()
            spec = importlib.util.spec_from_file_location(f"_tenantctl_models_{digest}", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        found = getattr(module, attribute)
    except Exception as exc:  # the user's module: any error in it is a configuration error here
        raise ConfigurationError(
            f"cannot load the models' metadata {reference!r}: {exc.__class__.__name__}: {exc}"
        ) from exc
    if not isinstance(found, sa.MetaData):
        raise ConfigurationError(f"{reference!r} is a {type(found).__name__}, not a sqlalchemy MetaData")
    return found


# -- rendering differences ---------------------------------------------------------------------------


def _qualified(table: str, schema: str | None = None) -> str:
    return f"{schema}.{table}" if schema else table


def _columns(constraint: Any) -> str:
    return ", ".join(str(c.name) for c in getattr(constraint, "columns", ()))


def _type(value: Any, dialect: sa.Dialect) -> str:
    try:
        return str(value.compile(dialect=dialect))
    except Exception:  # a type the dialect cannot compile: its repr is still stable
        return repr(value)


def _constraint(c: Any) -> str:
    table = getattr(c.table, "name", "?")
    if isinstance(c, sa.ForeignKeyConstraint):
        target = c.referred_table.name if c.elements else "?"
        return f"foreign key {c.name or '(unnamed)'} on {table} ({_columns(c)}) to {target}"
    kind = "unique constraint" if isinstance(c, sa.UniqueConstraint) else type(c).__name__
    return f"{kind} {c.name or '(unnamed)'} on {table} ({_columns(c)})"


def _modification(diff: tuple[Any, ...], dialect: sa.Dialect) -> str:
    op, schema, table, column, _kw, live, models = diff
    where = f"{_qualified(table, schema)}.{column}"
    if op == "modify_type":
        return f"has column {where} of type {_type(live, dialect)} (models: {_type(models, dialect)})"
    if op == "modify_nullable":
        state = {True: "nullable", False: "NOT NULL"}
        return f"has column {where} {state[bool(live)]} (models: {state[bool(models)]})"
    if op == "modify_default":
        return f"has column {where} with default {_default(live)} (models: {_default(models)})"
    if op == "modify_comment":
        return f"has column {where} with comment {live!r} (models: {models!r})"
    return f"has column {where} differing: {op}"


def _default(value: Any) -> str:
    arg = getattr(value, "arg", value)
    return str(getattr(arg, "text", arg)) if value is not None else "none"


def render(diff: Any, dialect: sa.Dialect) -> list[str]:
    """One sentence per difference, written for one tenant: "lacks …" (in the models, not the database)
    or "has …" (in the database, not as the models say)."""
    if isinstance(diff, list):  # a column's modifications come as a list
        return [_modification(d, dialect) for d in diff]
    op = diff[0]
    if op in ("add_table", "remove_table"):
        t = diff[1]
        return [("lacks table " if op == "add_table" else "has extra table ") + _qualified(t.name, t.schema)]
    if op in ("add_column", "remove_column"):
        _, schema, table, column = diff
        where = f"{_qualified(table, schema)}.{column.name}"
        return [("lacks column " if op == "add_column" else "has extra column ") + where]
    if op in ("add_index", "remove_index"):
        ix = diff[1]
        columns = ", ".join(str(getattr(e, "name", None) or e) for e in ix.expressions)
        kind = "unique index" if ix.unique else "index"
        text = f"{kind} {ix.name} on {ix.table.name} ({columns})"
        return [("lacks " if op == "add_index" else "has extra ") + text]
    if op in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        return [("lacks " if op.startswith("add") else "has extra ") + _constraint(diff[1])]
    if op in ("add_table_comment", "remove_table_comment"):
        return [f"has a different comment on table {diff[1].name}"]
    return [f"has a difference Alembic calls {op}"]


# -- comparing one tenant ------------------------------------------------------------------------------


def _pg_engine(job: SchemaJob, url: URL) -> sa.Engine:
    """psycopg, read-only by default, timeouts on; ``search_path`` set at connect so that SQLAlchemy's
    default schema, which reflection of unqualified tables uses, is the tenant's schema."""
    options = (
        "-c default_transaction_read_only=on "
        f"-c statement_timeout={job.statement_timeout_ms} -c lock_timeout={job.lock_timeout_ms} "
        "-c application_name=tenantctl-audit"
    )
    if job.schema:
        options += f" -c search_path={quote_ident(job.schema)}"
    return sa.create_engine(
        url.set(drivername="postgresql+psycopg"),
        poolclass=NullPool,
        connect_args={"connect_timeout": max(2, round(job.connect_timeout_s)), "options": options},
    )


def _sqlite_engine(path: Path) -> sa.Engine:
    uri = path.resolve().as_uri() + "?mode=ro"
    return sa.create_engine("sqlite://", poolclass=NullPool, creator=lambda: sqlite3.connect(uri, uri=True))


def compare(conn: Connection, metadata: sa.MetaData, version_table: str) -> tuple[tuple[str, ...], bool]:
    """(differences, empty) of the schema ``conn`` reflects by default, inside a transaction it rolls
    back: nothing the comparison might do can stay."""

    def include_name(name: str | None, type_: str, _parents: Any) -> bool:
        return not (type_ == "table" and name == version_table)

    with conn.begin() as tx:
        try:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            context = MigrationContext.configure(
                conn, opts={"include_name": include_name, "compare_type": True}
            )
            diffs = compare_metadata(context, metadata)
            tables = [t for t in sa.inspect(conn).get_table_names() if t != version_table]
        finally:
            tx.rollback()
    rendered = sorted({line for d in _without_implied(diffs) for line in render(d, conn.dialect)})
    return tuple(rendered), not tables


def _without_implied(diffs: Sequence[Any]) -> list[Any]:
    """Drop the indexes of a table that is lacking or extra as a whole: the table says it all."""
    whole = {
        (d[1].schema, d[1].name)
        for d in diffs
        if isinstance(d, tuple) and d[0] in ("add_table", "remove_table")
    }

    def implied(d: Any) -> bool:
        if not isinstance(d, tuple) or d[0] not in ("add_index", "remove_index"):
            return False
        table = d[1].table
        return (table.schema, table.name) in whole

    return [d for d in diffs if not implied(d)]


def _lacking_everything(metadata: sa.MetaData) -> tuple[str, ...]:
    return tuple(sorted(f"lacks table {_qualified(t.name, t.schema)}" for t in metadata.sorted_tables))


def _schema_exists(conn: Connection, schema: str) -> bool:
    with conn.begin() as tx:
        try:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            found = conn.scalar(
                sa.text("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :name"), {"name": schema}
            )
        finally:
            tx.rollback()
    return found is not None


def audit_tenant(job: SchemaJob) -> SchemaResult:
    """Compare one tenant's live schema with the models; never raises for the tenant's own failure."""
    url = make_url(job.url)
    secrets = [str(url.password)] if url.password else []
    try:
        metadata = load_metadata(job.metadata)
        if url.get_backend_name() == "sqlite":
            path = Path(url.database or "")
            if not url.database or not path.is_file():
                lacking = _lacking_everything(metadata)
                return SchemaResult(tenant_id=job.tenant_id, differences=lacking, empty=True)
            engine = _sqlite_engine(path)
        else:
            engine = _pg_engine(job, url)
        try:
            with engine.connect() as conn:
                if job.schema and not _schema_exists(conn, job.schema):
                    return SchemaResult(
                        tenant_id=job.tenant_id, differences=_lacking_everything(metadata), empty=True
                    )
                differences, empty = compare(conn, metadata, job.version_table)
        finally:
            engine.dispose()
    except (SQLAlchemyError, OSError, sqlite3.Error, ConfigurationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        return SchemaResult(
            tenant_id=job.tenant_id, error=mask_text(f"schema not compared: {first}", secrets)
        )
    return SchemaResult(tenant_id=job.tenant_id, differences=differences, empty=empty)


# -- running many -----------------------------------------------------------------------------------------


class SchemaRunner(Protocol):
    """Runs schema jobs somewhere (the in-process pool here; Celery workers later)."""

    async def run(self, jobs: Sequence[SchemaJob]) -> list[SchemaResult]: ...


class PoolSchemaRunner:
    """``parallel`` child processes started fresh (spawn): reflection holds the GIL and blocks."""

    def __init__(self, parallel: int) -> None:
        self.parallel = parallel

    async def run(self, jobs: Sequence[SchemaJob]) -> list[SchemaResult]:
        if not jobs:
            return []
        loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(self.parallel, len(jobs)), mp_context=context) as pool:

            async def one(job: SchemaJob) -> SchemaResult:
                try:
                    return await loop.run_in_executor(pool, audit_tenant, job)
                except Exception as exc:  # the child died: say so on the tenant, never lose it
                    return SchemaResult(
                        tenant_id=job.tenant_id,
                        error=f"schema not compared: worker process failed ({exc.__class__.__name__})",
                    )

            return list(await asyncio.gather(*(one(job) for job in jobs)))
