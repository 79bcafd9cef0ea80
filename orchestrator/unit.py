"""The unit of work: one Alembic command for one tenant, in this process.

Both executors call :func:`run_unit`: the in-process pool in its child processes and (later) the Celery
task. Alembic's ``context`` and ``op`` are process-global, so a process runs one unit at a time.

The tenant reaches ``env.py`` three ways at once, so every common kind of ``env.py`` finds it:
``-x url=… schema=… tenant=…`` (``cmd_opts``, exactly as ``alembic -x`` passes them), ``sqlalchemy.url``
(escaped for ConfigParser) and ``config.attributes["connection"]`` (a sync connection that also holds the
tenant's migration lock; an ``env.py`` that opens its own from ``connection.engine``, as Alembic's
cookbook does, reaches the same tenant). The revision recorded after the command, success or failure, is
read back from the tenant, never assumed.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
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
from .controldb.watch import RolloutWatch
from .exceptions import EnvIntegrationError, TenantctlError, TenantUnreachable
from .failures import Stopped, UnitTimeout, backoff, classify, is_transient, timeout_in
from .locking import file_lock, lock_key, pg_lock
from .models import Command, ErrorClass, RunStatus, UnitJob, UnitResult
from .planning import ALREADY_AT_TARGET
from .revisions import quote_ident, url_seconds
from .secrets import mask_text

log = logging.getLogger("tenantctl.unit")


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


class _Tenancy:
    """Which tenant this process's shared Engines connect to, for as long as a unit runs.

    Process-wide, not a ContextVar: an ``env.py`` may open its own connection from
    ``config.attributes["connection"].engine`` (an Alembic cookbook recipe), from a thread it starts or
    an event loop it runs, and each of those must reach the unit's tenant. A process runs one unit at a
    time (Alembic's ``context`` is process-global), so one slot is enough; a second tenant claiming it
    meanwhile is refused rather than handed the first one's database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: tuple[str, str, dict[str, Any]] | None = None  # (server, tenant, connect params)
        self._depth = 0
        self._backends: list[int] = []

    @contextmanager
    def serving(self, server: str, tenant: str, params: dict[str, Any]) -> Iterator[None]:
        with self._lock:
            if self._current is not None and self._current[:2] != (server, tenant):
                raise EnvIntegrationError(
                    f"tenant {tenant}: this process is already migrating tenant {self._current[1]} "
                    "(one unit at a time per process)"
                )
            self._current = (server, tenant, params)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if not self._depth:
                    self._current = None
                    self._backends = []

    def params(self, server: str) -> dict[str, Any]:
        current = self._current
        if current is None:
            raise EnvIntegrationError(
                "a connection was opened from tenantctl's shared Engine outside a tenant's unit of work: "
                "env.py (or a thread it started) must open its connections while its migration runs"
            )
        if current[0] != server:
            raise EnvIntegrationError(
                f"tenant {current[1]}: a connection was opened from the Engine of another database server "
                "than the tenant's"
            )
        return dict(current[2])

    def opened(self, backend_pid: int | None) -> None:
        if backend_pid is not None:
            with self._lock:
                self._backends.append(backend_pid)

    def backends(self) -> tuple[int, ...]:
        """The server sessions opened for the current unit, tenantctl's and env.py's own."""
        with self._lock:
            return tuple(self._backends)


_TENANCY = _Tenancy()
_SERVER_ENGINES: dict[str, sa.Engine] = {}


def _server_key(url: URL) -> tuple[URL, str]:
    tenant = sync_url(url)
    query = {k: v for k, v in tenant.query.items() if k not in ("password", "sslpassword")}
    server = URL.create(tenant.drivername, host=tenant.host, port=tenant.port, query=query)
    return server, server.render_as_string(hide_password=False)


def _server_engine(url: URL) -> sa.Engine:
    """This process's Engine for one PostgreSQL server, shared by the tenants on it.

    An Engine per tenant cost 7.9 ms per connection against 3.1 ms reused (measured): a new Engine
    runs SQLAlchemy's first-connect initialisation (server version, default schema, isolation level
    queries) on every tenant. The Engine keeps no connection (NullPool); each one is opened with the
    parameters of the tenant being migrated (``_TENANCY``: database, user, password, timeouts), so only
    what is the same for every database of a server (its version, its dialect settings) is shared.
    Its own URL names the server only (no database, user or password): an ``env.py`` that looks at
    ``connection.engine.url`` finds no other tenant there; the tenant is in ``-x url=`` and ``-x tenant=``.
    A connection an ``env.py`` opens from it during a unit reaches that unit's tenant, with the same
    timeouts; one opened outside any unit raises EnvIntegrationError."""
    server, key = _server_key(url)
    engine = _SERVER_ENGINES.get(key)
    if engine is None:
        engine = sa.create_engine(server, poolclass=NullPool)

        @event.listens_for(engine, "do_connect")
        def _tenant(_dialect: Any, _record: Any, _cargs: list[Any], cparams: dict[str, Any]) -> None:
            params = _TENANCY.params(key)
            cparams.clear()
            cparams.update(params)

        @event.listens_for(engine, "connect")
        def _opened(dbapi_connection: Any, _record: Any) -> None:
            _TENANCY.opened(getattr(getattr(dbapi_connection, "info", None), "backend_pid", None))

        _SERVER_ENGINES[key] = engine
    return engine


def connect_params(job: UnitJob, url: URL) -> dict[str, Any]:
    """psycopg's connect arguments for the tenant: the URL's own (``sslmode``, ``application_name``…),
    ``connect_timeout`` from the URL or else the job, and ``options`` with the job's ``lock_timeout`` and
    ``statement_timeout`` first, the URL's ``options`` after them, so a tenant's URL (``-c search_path=``,
    or a timeout of its own) is honoured as ``alembic -x url=`` would honour it."""
    _, params = _server_engine(url).dialect.create_connect_args(sync_url(url))
    ours = (
        f"-c lock_timeout={job.lock_timeout_ms} -c statement_timeout={job.statement_timeout_ms} "
        "-c application_name=tenantctl"
    )
    url_timeout = url_seconds(str(params.get("connect_timeout", 0)))
    return {
        **params,
        "connect_timeout": max(1, round(url_timeout or job.connect_timeout_s)),
        "options": " ".join(o for o in (ours, params.get("options")) if o),
    }


@contextmanager
def _connect(job: UnitJob, url: URL) -> Iterator[Connection]:
    """A connection to the tenant as tenantctl's own session, ``lock_timeout`` and ``statement_timeout``
    set at connect time; an unreachable tenant raises TenantUnreachable (its message scrubbed). While it
    is open, any connection opened from the server's shared Engine reaches this tenant too."""
    serving: AbstractContextManager[None]
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            sync_url(url), poolclass=NullPool, connect_args={"timeout": job.lock_wait_s}
        )
        _sqlite_transactional_ddl(engine)
        serving = nullcontext()
    else:
        engine = _server_engine(url)
        serving = _TENANCY.serving(_server_key(url)[1], job.tenant_id, connect_params(job, url))
    with serving:
        try:
            conn = engine.connect()
        except OperationalError as exc:
            secrets = [s for s in (*job.secrets, url.password) if s]
            raise TenantUnreachable(job.tenant_id, mask_text(str(exc).splitlines()[0], secrets)) from exc
        try:
            yield conn
        finally:
            conn.close()
            if url.get_backend_name() == "sqlite":
                engine.dispose()


_NO_TABLE = ("42P01", "3F000")  # PostgreSQL's undefined_table, invalid_schema_name


def read_heads(conn: Connection, schema: str | None, version_table: str) -> tuple[str, ...]:
    """The tenant's version rows, read in a fresh transaction on tenantctl's own connection.

    On PostgreSQL one SELECT, whose "no such table (or schema)" error means no version table: checking
    with reflection first cost two more round trips and a query compiled anew for every tenant."""
    if conn.in_transaction():
        conn.rollback()
    table = (quote_ident(schema) + "." if schema else "") + quote_ident(version_table)
    if conn.dialect.name != "postgresql" and not sa.inspect(conn).has_table(version_table, schema=schema):
        conn.rollback()
        return ()
    try:
        rows = conn.execute(sa.text(f"SELECT version_num FROM {table}")).scalars().all()
    except DBAPIError as exc:
        if conn.dialect.name != "postgresql" or getattr(exc.orig, "sqlstate", None) not in _NO_TABLE:
            raise
        conn.rollback()
        return ()
    conn.rollback()
    return tuple(sorted(rows))


def alembic_config_for(
    ini: str, url: str, tenant_id: str, schema: str | None, version_table: str, conn: Connection | None
) -> Config:
    """A Config that hands the tenant to env.py every common way: ``-x`` (exactly as ``alembic -x``
    passes it), ``sqlalchemy.url`` (``%`` escaped for ConfigParser) and ``attributes["connection"]``."""
    x = [f"url={url}", f"tenant={tenant_id}"] + ([f"schema={schema}"] if schema else [])
    if version_table != "alembic_version":
        x.append(f"version_table={version_table}")
    cfg = Config(ini, cmd_opts=argparse.Namespace(x=x))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def alembic_config(job: UnitJob, conn: Connection | None) -> Config:
    return alembic_config_for(job.alembic_config, job.url, job.tenant_id, job.schema, job.version_table, conn)


def run_alembic(
    cfg: Config,
    script: ScriptDirectory,
    command: Command,
    target: str,
    *,
    as_sql: bool = False,
    starting_rev: str | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> None:
    """What ``alembic.command.upgrade/downgrade/stamp`` do, over an already loaded script directory
    (``command.*`` would re-read every revision file for every tenant).

    The steps are handed to Alembic one at a time: before each step after the first, ``keep_going`` is
    asked, so a cancelled rollout stops between two migrations (each in its own transaction) and the
    tenant rests at a revision it really reached.
    """

    def steps(rev: Any, _ctx: Any) -> Iterator[Any]:
        planned: list[Any]
        if command is Command.UPGRADE:
            planned = script._upgrade_revs(target, rev)
        elif command is Command.DOWNGRADE:
            planned = script._downgrade_revs(target, rev)
        else:
            planned = script._stamp_revs((target,), rev)
        for i, step in enumerate(planned):
            if i and keep_going is not None and not keep_going():
                raise Stopped(f"stopped before {step.short_log}")
            yield step

    destination: str | tuple[str, ...] = (target,) if command is Command.STAMP else target
    with EnvironmentContext(
        cfg, script, fn=steps, as_sql=as_sql, starting_rev=starting_rev, destination_rev=destination
    ):
        scripts.run_env(script)


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise UnitTimeout in this (main) thread after ``seconds``; psycopg's waits are interruptible."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise UnitTimeout(f"migration ran past its task timeout of {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _ProcessWatch:
    """A unit's window on its rollout, over one ``RolloutWatch`` per process kept across units: opening
    its control-DB connection per tenant (connect and SQLAlchemy's first-connect queries) cost about a
    tenth of a Celery task (py-spy, bench/rollout_bench.py). A failed read (None) drops that connection,
    so the next read opens a fresh one, as a new watch per unit would.

    Between two steps the state read is reused for up to ``MAX_AGE`` seconds: a cancel still stops every
    unit within that much plus one migration, and fast units no longer pay a control-DB query per step
    (about 5% of a worker's CPU, py-spy)."""

    MAX_AGE = 0.5
    _current: tuple[tuple[str, int], RolloutWatch] | None = None

    def __init__(self, control_url: str, rollout_id: int) -> None:
        self.key = (control_url, rollout_id)

    def state(self, max_age: float = 0.0) -> str | None:
        current = _ProcessWatch._current
        if current is None or current[0] != self.key:
            if current is not None:
                current[1].close()
            current = _ProcessWatch._current = (self.key, RolloutWatch(*self.key))
        state = current[1].state(max_age)
        if state is None:
            current[1].close()
            _ProcessWatch._current = None
        return state

    def running(self) -> bool:
        return self.state(self.MAX_AGE) in (None, "running")

    def close(self) -> None:
        """Nothing: the connection stays for this process's next unit of the same rollout."""


class _Outcome:
    """What one unit observed so far; turned into a UnitResult at the end."""

    def __init__(self, job: UnitJob) -> None:
        self.job = job
        self.started = datetime.now(UTC)
        self.before: tuple[str, ...] | None = None
        self.after: tuple[str, ...] | None = None
        self.retries = 0
        self.secrets = [s for s in (*job.secrets, make_url(job.url).password) if s]

    def result(
        self,
        status: RunStatus,
        exc: BaseException | None = None,
        cls: ErrorClass | None = None,
        note: str | None = None,
    ) -> UnitResult:
        message, tb = note, None
        if exc is not None:
            message = mask_text(f"{exc.__class__.__name__}: {exc}".strip(), self.secrets)
            if not isinstance(exc, Stopped):
                tb = mask_text("".join(traceback.format_exception(exc)), self.secrets)
        applied: tuple[str, ...] = ()
        if self.before is not None and self.after is not None:
            applied = scripts.applied_between(scripts.load(self.job.alembic_config), self.before, self.after)
        return UnitResult(
            run_id=self.job.run_id,
            status=status,
            from_revision=",".join(self.before) if self.before else None,
            to_revision=",".join(self.after) if self.after else None,
            applied=applied,
            started_at=self.started,
            finished_at=datetime.now(UTC),
            worker=worker_id(),
            error_class=cls,
            error_message=message,
            traceback=tb,
            retries=self.retries,
        )


def run_unit(job: UnitJob) -> UnitResult:
    """Run ``job`` and describe what happened; never raises for a tenant's failure.

    Transient failures (lock timeout, deadlock, serialization failure, a connection lost before the
    migration started) are retried within the attempt with capped, jittered backoff; each retry starts
    again from the revision read back from the tenant.
    """
    outcome = _Outcome(job)
    watch = _ProcessWatch(job.control_url, job.rollout_id) if job.control_url and job.rollout_id else None
    try:
        with _deadline(job.task_timeout_s):
            while True:
                try:
                    return _attempt(job, outcome, watch)
                except Exception as exc:
                    cls = classify(exc)
                    if not is_transient(cls) or outcome.retries >= job.transient_retries:
                        raise
                    outcome.retries += 1
                    log.warning(
                        "tenant %s: %s, retry %d of %d",
                        job.tenant_id,
                        mask_text(str(exc).splitlines()[0] if str(exc) else cls.value, outcome.secrets),
                        outcome.retries,
                        job.transient_retries,
                    )
                    time.sleep(backoff(outcome.retries, job.retry_backoff_s, job.retry_backoff_max_s))
    except Stopped as exc:
        state = watch.state() if watch else None
        status = RunStatus.CANCELLED if state == "cancelled" else RunStatus.HALTED
        return outcome.result(status, exc, None)
    except (TenantctlError, CommandError) as exc:
        cls = classify(exc)
        return outcome.result(
            RunStatus.FAILED, exc, cls if cls is not ErrorClass.MIGRATION_ERROR else ErrorClass.INVALID_CONFIG
        )
    except Exception as exc:
        return outcome.result(RunStatus.FAILED, timeout_in(exc) or exc, classify(exc))
    finally:
        if watch is not None:
            watch.close()


def _attempt(job: UnitJob, outcome: _Outcome, watch: _ProcessWatch | None) -> UnitResult:
    script = scripts.load(job.alembic_config)
    url = make_url(job.url)
    with _connect(job, url) as conn:
        with _lock(conn, job, url):
            heads = read_heads(conn, job.schema, job.version_table)
            if outcome.before is None:
                outcome.before = heads
                if _target(job).reached_by(heads):  # planned unread (or moved meanwhile): nothing to run
                    outcome.after = heads
                    return outcome.result(RunStatus.SKIPPED, note=ALREADY_AT_TARGET)
            outcome.after = heads
            try:
                run_alembic(
                    alembic_config(job, conn),
                    script,
                    job.command,
                    job.target,
                    keep_going=watch.running if watch is not None else None,
                )
                if conn.in_transaction():  # an env.py that left its work open: it succeeded, keep it
                    conn.commit()
            except BaseException as exc:
                try:
                    if conn.in_transaction():
                        conn.rollback()
                    if timeout_in(exc) is not None:
                        _end_sessions(conn, _TENANCY.backends())
                    outcome.after = read_heads(conn, job.schema, job.version_table)  # where it really stopped
                except DBAPIError:
                    # interrupted mid-statement (task timeout): the session is unusable; end it from a
                    # fresh one (its transaction rolls back, its lock goes) and read the revision there
                    conn.invalidate()
                    outcome.after = _read_after_abort(job, url, _TENANCY.backends())
                raise
            outcome.after = read_heads(conn, job.schema, job.version_table)
            return outcome.result(RunStatus.SUCCEEDED)


@functools.lru_cache(maxsize=32)
def _resolved(config: str, command: Command, spec: str) -> scripts.Target:
    return scripts.resolve(scripts.load(config), command, spec)


def _target(job: UnitJob) -> scripts.Target:
    """The job's target as the coordinator resolved it, once per process."""
    return _resolved(job.alembic_config, job.command, job.target)


def _read_after_abort(job: UnitJob, url: URL, backends: tuple[int, ...]) -> tuple[str, ...]:
    with _connect(job, url) as fresh:
        _end_sessions(fresh, backends)
        return read_heads(fresh, job.schema, job.version_table)


def _end_sessions(conn: Connection, backends: tuple[int, ...]) -> None:
    """End the unit's other server sessions, tenantctl's and those env.py opened itself: interrupted by
    the task timeout, a statement may still run there, holding its locks (its transaction rolls back)."""
    if backends and conn.dialect.name == "postgresql":
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) AS pid "
                "WHERE pid <> pg_backend_pid()"
            ),
            {"pids": list(backends)},
        )
        conn.commit()


def _lock(conn: Connection, job: UnitJob, url: URL) -> AbstractContextManager[None]:
    if url.get_backend_name() == "sqlite":
        return file_lock(f"{url.database}.tenantctl-lock", job.tenant_id, job.lock_wait_s)
    return pg_lock(
        conn, job.tenant_id, lock_key(url.database or "", job.schema, job.version_table), job.lock_wait_s
    )
