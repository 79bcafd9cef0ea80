"""The unit of work: one Alembic command for one tenant, in this process.

Both executors call :func:`run_unit`: the in-process pool in its child processes and (later) the Celery
task. Alembic's ``context`` and ``op`` are process-global, so a process runs one unit at a time.

The tenant reaches ``env.py`` three ways at once, so every common kind of ``env.py`` finds it:
``-x url=… schema=… tenant=…`` (``cmd_opts``, exactly as ``alembic -x`` passes them), ``sqlalchemy.url``
(escaped for ConfigParser) and ``config.attributes["connection"]`` (a sync connection that also holds the
tenant's migration lock). The revision recorded after the command, success or failure, is read back from
the tenant, never assumed.
"""

from __future__ import annotations

import argparse
import os
import socket
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from . import scripts
from .exceptions import ConfigurationError, TenantctlError, TenantError, TenantLockTimeout
from .locking import file_lock, lock_key, pg_lock
from .models import Command, ErrorClass, RunStatus, UnitJob, UnitResult
from .revisions import quote_ident
from .secrets import mask_text


def worker_id() -> str:
    """host:pid of this process, computed per call: a prefork child must not inherit its parent's."""
    return f"{socket.gethostname()}:{os.getpid()}"


def sync_url(url: URL) -> URL:
    """tenantctl's own connection to a tenant: psycopg for PostgreSQL, pysqlite for SQLite."""
    return url.set(drivername="postgresql+psycopg" if url.get_backend_name() == "postgresql" else "sqlite")


def _sqlite_transactional_ddl(engine: sa.Engine) -> None:
    """pysqlite commits DDL implicitly; emitting BEGIN ourselves makes a failed revision roll back whole."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def _engine(job: UnitJob, url: URL) -> sa.Engine:
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            sync_url(url), poolclass=NullPool, connect_args={"timeout": job.lock_wait_s}
        )
        _sqlite_transactional_ddl(engine)
        return engine
    options = (
        f"-c lock_timeout={job.lock_timeout_ms} -c statement_timeout={job.statement_timeout_ms} "
        "-c application_name=tenantctl"
    )
    return sa.create_engine(
        sync_url(url),
        poolclass=NullPool,
        connect_args={"connect_timeout": max(1, round(job.connect_timeout_s)), "options": options},
    )


def read_heads(conn: Connection, schema: str | None, version_table: str) -> tuple[str, ...]:
    """The tenant's version rows, read in a fresh transaction on tenantctl's own connection."""
    if conn.in_transaction():
        conn.rollback()
    if not sa.inspect(conn).has_table(version_table, schema=schema):
        conn.rollback()
        return ()
    table = (quote_ident(schema) + "." if schema else "") + quote_ident(version_table)
    rows = conn.execute(sa.text(f"SELECT version_num FROM {table}")).scalars().all()
    conn.rollback()
    return tuple(sorted(rows))


def alembic_config(job: UnitJob, conn: Connection | None) -> Config:
    x = [f"url={job.url}", f"tenant={job.tenant_id}"] + ([f"schema={job.schema}"] if job.schema else [])
    if job.version_table != "alembic_version":
        x.append(f"version_table={job.version_table}")
    cfg = Config(job.alembic_config, cmd_opts=argparse.Namespace(x=x))
    cfg.set_main_option("sqlalchemy.url", job.url.replace("%", "%%"))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def run_alembic(cfg: Config, script: ScriptDirectory, command: Command, target: str) -> None:
    """What ``alembic.command.upgrade/downgrade/stamp`` do, over an already loaded script directory
    (``command.*`` would re-read every revision file for every tenant)."""
    fn: Callable[[Any, Any], Any]
    if command is Command.UPGRADE:
        fn = lambda rev, _ctx: script._upgrade_revs(target, rev)  # noqa: E731
    elif command is Command.DOWNGRADE:
        fn = lambda rev, _ctx: script._downgrade_revs(target, rev)  # noqa: E731
    else:
        fn = lambda rev, _ctx: script._stamp_revs((target,), rev)  # noqa: E731
    destination: str | tuple[str, ...] = (target,) if command is Command.STAMP else target
    with EnvironmentContext(cfg, script, fn=fn, as_sql=False, starting_rev=None, destination_rev=destination):
        script.run_env()


def _classify(exc: BaseException) -> ErrorClass:
    if isinstance(exc, TenantLockTimeout):
        return ErrorClass.LOCK_TIMEOUT
    if isinstance(exc, ConfigurationError):
        return ErrorClass.INVALID_CONFIG
    if exc.__class__.__name__ == "SoftTimeLimitExceeded":  # Celery's soft time limit, raised in the task
        return ErrorClass.TIMEOUT
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None)
        if code == "57014":
            return ErrorClass.TIMEOUT
        if code == "55P03":
            return ErrorClass.LOCK_TIMEOUT
    return ErrorClass.MIGRATION_ERROR


def run_unit(job: UnitJob) -> UnitResult:
    """Run ``job`` and describe what happened; never raises for a tenant's failure."""
    started = datetime.now(UTC)
    secrets = [s for s in (*job.secrets, make_url(job.url).password) if s]
    before: tuple[str, ...] | None = None
    after: tuple[str, ...] | None = None
    applied: tuple[str, ...] = ()

    def result(
        status: RunStatus, exc: BaseException | None = None, cls: ErrorClass | None = None
    ) -> UnitResult:
        message = tb = None
        if exc is not None:
            message = mask_text(f"{exc.__class__.__name__}: {exc}".strip(), secrets)
            tb = mask_text("".join(traceback.format_exception(exc)), secrets)
        return UnitResult(
            run_id=job.run_id,
            status=status,
            from_revision=",".join(before) if before else None,
            to_revision=",".join(after) if after else None,
            applied=applied,
            started_at=started,
            finished_at=datetime.now(UTC),
            worker=worker_id(),
            error_class=cls,
            error_message=message,
            traceback=tb,
        )

    try:
        script = scripts.load(str(Path(job.alembic_config)))
        url = make_url(job.url)
        engine = _engine(job, url)
        try:
            conn = engine.connect()
        except OperationalError as exc:
            return result(RunStatus.FAILED, exc, ErrorClass.UNREACHABLE)
        try:
            with conn, _lock(conn, job, url):
                before = read_heads(conn, job.schema, job.version_table)
                failure: BaseException | None = None
                try:
                    run_alembic(alembic_config(job, conn), script, job.command, job.target)
                    if conn.in_transaction():  # an env.py that left its work open: it succeeded, keep it
                        conn.commit()
                except Exception as exc:  # the migration's own error: record it, read where it stopped
                    failure = exc
                    if conn.in_transaction():
                        conn.rollback()
                after = read_heads(conn, job.schema, job.version_table)
                applied = scripts.applied_between(script, before, after)
                if failure is not None:
                    return result(RunStatus.FAILED, failure, _classify(failure))
                return result(RunStatus.SUCCEEDED)
        finally:
            engine.dispose()
    except TenantError as exc:
        return result(RunStatus.FAILED, exc, _classify(exc))
    except (TenantctlError, CommandError) as exc:
        return result(RunStatus.FAILED, exc, ErrorClass.INVALID_CONFIG)
    except OperationalError as exc:
        return result(RunStatus.FAILED, exc, ErrorClass.UNREACHABLE)
    except Exception as exc:
        return result(RunStatus.FAILED, exc, _classify(exc))


def _lock(conn: Connection, job: UnitJob, url: URL) -> AbstractContextManager[None]:
    if url.get_backend_name() == "sqlite":
        return file_lock(f"{url.database}.tenantctl-lock", job.tenant_id, job.lock_wait_s)
    return pg_lock(
        conn, job.tenant_id, lock_key(url.database or "", job.schema, job.version_table), job.lock_wait_s
    )
