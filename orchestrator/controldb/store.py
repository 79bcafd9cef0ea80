"""Every SQL statement against the control database, as named methods of one class.

Driver errors are translated into ``ControlDBError`` here and nowhere else. The store runs on
PostgreSQL (asyncpg) and on SQLite (aiosqlite), the embedded default.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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

from ..audit import AuditKind, AuditRecord, Finding
from ..dispatch import Dispatch, choose
from ..exceptions import ControlDBError, DuplicateTenant, UnknownAudit, UnknownRollout, UnknownTenant
from ..models import (
    Command,
    ErrorClass,
    Policy,
    Rollout,
    RolloutState,
    RunStatus,
    Tenant,
    TenantRun,
    UnitResult,
)
from ..planning import Plan
from ..secrets import mask_text
from .schema import audit_findings, audits, rollouts, schema_checks, tenant_runs, tenants

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "tenantctl_version"
DISPATCH_LOCK = 0x7E7A_C7_1D  # pg_advisory_xact_lock key serialising dispatchers
KNOWN_RUNS = 200_000  # how far back planning looks for where tenantctl last saw a tenant
TERMINAL = [RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.SKIPPED.value]


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


class Store:
    """The control database. Use as ``async with Store(url) as store``."""

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

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._engine.dispose()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
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
        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()

        def current(sync: Connection) -> str | None:
            return MigrationContext.configure(
                sync, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()

        async with self._tx() as conn:
            rev = await conn.run_sync(current)
        if rev != head:
            raise ControlDBError(
                f"control database {self._display} is not initialised or out of date "
                f"(at {rev or 'nothing'}, needs {head}): run `tenantctl db upgrade`"
            )

    # -- tenants ----------------------------------------------------------------------------------
    @staticmethod
    def _tenant(row: sa.Row[Any]) -> Tenant:
        return Tenant(
            id=row.id,
            url=row.url,
            password_token=row.password_token,
            schema=row.schema,
            tags=tuple(t for t in row.tags.split(",") if t),
            group=row.group,
            enabled=bool(row.enabled),
        )

    @staticmethod
    def _tenant_values(t: Tenant) -> dict[str, Any]:
        return {
            "id": t.id,
            "url": t.url,
            "password_token": t.password_token,
            "schema": t.schema,
            "tags": ",".join(t.tags),
            "group": t.group,
            "enabled": t.enabled,
        }

    async def list_tenants(self) -> list[Tenant]:
        async with self._tx() as conn:
            rows = (await conn.execute(sa.select(tenants).order_by(tenants.c.id))).all()
        return [self._tenant(r) for r in rows]

    async def get_tenant(self, tenant_id: str) -> Tenant:
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).first()
        if row is None:
            raise UnknownTenant(tenant_id)
        return self._tenant(row)

    async def add_tenant(self, tenant: Tenant) -> None:
        """Insert a tenant; the primary key, not a prior read, decides a duplicate."""
        now = utcnow()
        try:
            async with self._tx() as conn:
                await conn.execute(
                    tenants.insert().values(**self._tenant_values(tenant), created_at=now, updated_at=now)
                )
        except IntegrityError as exc:
            raise DuplicateTenant(tenant.id) from exc

    async def remove_tenant(self, tenant_id: str) -> None:
        async with self._tx() as conn:
            result = await conn.execute(tenants.delete().where(tenants.c.id == tenant_id))
        if result.rowcount == 0:
            raise UnknownTenant(tenant_id)

    async def set_enabled(self, tenant_id: str, enabled: bool) -> None:
        async with self._tx() as conn:
            result = await conn.execute(
                tenants.update().where(tenants.c.id == tenant_id).values(enabled=enabled, updated_at=utcnow())
            )
        if result.rowcount == 0:
            raise UnknownTenant(tenant_id)

    async def write_tenants(self, created: Sequence[Tenant], updated: Sequence[Tenant]) -> None:
        """Insert and update many tenants in one transaction: all or nothing."""
        now = utcnow()
        async with self._tx() as conn:
            if created:
                await conn.execute(
                    tenants.insert(),
                    [{**self._tenant_values(t), "created_at": now, "updated_at": now} for t in created],
                )
            if updated:
                stmt = (
                    tenants.update()
                    .where(tenants.c.id == sa.bindparam("b_id"))
                    .values(
                        url=sa.bindparam("url"),
                        password_token=sa.bindparam("password_token"),
                        schema=sa.bindparam("schema"),
                        tags=sa.bindparam("tags"),
                        group=sa.bindparam("group"),
                        enabled=sa.bindparam("enabled"),
                        updated_at=sa.bindparam("updated_at"),
                    )
                )
                rows = []
                for t in updated:
                    values = self._tenant_values(t)
                    values["b_id"] = values.pop("id")
                    rows.append({**values, "updated_at": now})
                await conn.execute(stmt, rows)

    # -- rollouts ---------------------------------------------------------------------------------
    async def create_rollout(
        self,
        *,
        command: Command,
        target: str,
        selection: Mapping[str, Any],
        created_by: str,
        parallel: int,
        plan: Plan,
        hosts: Mapping[str, str],
        policy: Policy | None = None,
        waves: Mapping[str, int] | None = None,
    ) -> int:
        """Create a rollout and the first attempt at every planned tenant, in one transaction."""
        async with self._tx() as conn:
            rollout_id = (
                await conn.execute(
                    rollouts.insert()
                    .values(
                        command=command.value,
                        target=target,
                        selection=json.dumps(selection, sort_keys=True),
                        created_by=created_by,
                        created_at=utcnow(),
                        state=RolloutState.RUNNING.value,
                        parallel=parallel,
                        policy=json.dumps(asdict(policy or Policy())),
                    )
                    .returning(rollouts.c.id)
                )
            ).scalar_one()
            await self._insert_runs(conn, int(rollout_id), plan, hosts, {}, waves or {})
        return int(rollout_id)

    async def add_attempts(self, rollout_id: int, plan: Plan, hosts: Mapping[str, str]) -> None:
        """New attempts at some tenants of a rollout (retry): history keeps every earlier attempt."""
        tenant_ids = [t for t, *_ in (*plan.queued, *plan.skipped, *plan.failed)]
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        tenant_runs.c.tenant_id,
                        sa.func.max(tenant_runs.c.attempt),
                        sa.func.min(tenant_runs.c.wave),
                    )
                    .where(tenant_runs.c.rollout_id == rollout_id, tenant_runs.c.tenant_id.in_(tenant_ids))
                    .group_by(tenant_runs.c.tenant_id)
                )
            ).all()
            await self._insert_runs(
                conn,
                rollout_id,
                plan,
                hosts,
                {t: int(n) + 1 for t, n, _ in rows},
                {t: int(w) for t, _, w in rows},
            )
            await conn.execute(
                rollouts.update()
                .where(rollouts.c.id == rollout_id)
                .values(state=RolloutState.RUNNING.value, finished_at=None, halt_reason=None)
            )

    @staticmethod
    async def _insert_runs(
        conn: AsyncConnection,
        rollout_id: int,
        plan: Plan,
        hosts: Mapping[str, str],
        attempts: Mapping[str, int],
        waves: Mapping[str, int],
    ) -> None:
        now = utcnow()
        done = {"started_at": now, "finished_at": now, "duration_ms": 0}
        rows: list[dict[str, Any]] = [
            {"tenant_id": t, "status": RunStatus.QUEUED.value, "from_revision": rev} for t, rev in plan.queued
        ]
        rows += [
            {
                "tenant_id": t,
                "status": RunStatus.SKIPPED.value,
                "from_revision": rev,
                "to_revision": rev,
                "error_message": why,
                **done,
            }
            for t, rev, why in plan.skipped
        ]
        rows += [
            {
                "tenant_id": t,
                "status": RunStatus.FAILED.value,
                "error_class": cls.value,
                "error_message": message,
                **done,
            }
            for t, cls, message in plan.failed
        ]
        if not rows:
            return
        defaults: dict[str, Any] = {
            "rollout_id": rollout_id,
            "from_revision": None,
            "to_revision": None,
            "applied": "",
            "started_at": None,
            "finished_at": None,
            "duration_ms": None,
            "error_class": None,
            "error_message": None,
        }
        await conn.execute(
            tenant_runs.insert(),
            [
                {
                    **defaults,
                    **r,
                    "attempt": attempts.get(r["tenant_id"], 1),
                    "wave": waves.get(r["tenant_id"], 1),
                    "db_host": hosts.get(r["tenant_id"], ""),
                }
                for r in rows
            ],
        )

    async def queued_runs(self, rollout_id: int, wave: int | None = None) -> list[tuple[int, str]]:
        """(run id, tenant id) of every queued run of a rollout (of one wave)."""
        where = [tenant_runs.c.rollout_id == rollout_id, tenant_runs.c.status == RunStatus.QUEUED.value]
        if wave is not None:
            where.append(tenant_runs.c.wave == wave)
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(tenant_runs.c.id, tenant_runs.c.tenant_id)
                    .where(*where)
                    .order_by(tenant_runs.c.tenant_id)
                )
            ).all()
        return [(int(r.id), str(r.tenant_id)) for r in rows]

    async def claim_context(
        self, run_id: int, attempt: int, worker: str, lease_s: float
    ) -> tuple[TenantRun, Rollout, Tenant | None] | None:
        """Claim a queued run for a worker and read what its job needs (the run, its rollout and tenant),
        in one transaction: what a worker does first for every task.

        The claim is a compare-and-set, run id and attempt as the fencing token: a duplicated or
        redelivered message finds the run claimed or finished and gets None. The tenant is None when it
        was removed from the registry meanwhile."""
        now = utcnow()
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    tenant_runs.update()
                    .where(
                        tenant_runs.c.id == run_id,
                        tenant_runs.c.attempt == attempt,
                        tenant_runs.c.status == RunStatus.QUEUED.value,
                    )
                    .values(
                        status=RunStatus.RUNNING.value,
                        started_at=now,
                        worker=worker,
                        lease_expires_at=now + timedelta(seconds=lease_s),
                    )
                    .returning(*tenant_runs.c)
                )
            ).first()
            if row is None:
                return None
            return (self._run(row), *await self._rollout_and_tenant(conn, row.rollout_id, row.tenant_id))

    @classmethod
    async def _read_rollout(cls, conn: AsyncConnection, rollout_id: int) -> Rollout:
        row = (await conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id))).one()
        return cls._rollout(row)

    @classmethod
    async def _rollout_and_tenant(
        cls, conn: AsyncConnection, rollout_id: int, tenant_id: str
    ) -> tuple[Rollout, Tenant | None]:
        """A run's rollout and tenant (None when removed from the registry), read on ``conn``."""
        tenant = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).first()
        return await cls._read_rollout(conn, rollout_id), cls._tenant(tenant) if tenant is not None else None

    async def mark_running(self, run_id: int, worker: str) -> bool:
        """Claim a queued run for the in-process executor (no lease: the coordinator is its owner)."""
        async with self._tx() as conn:
            result = await conn.execute(
                tenant_runs.update()
                .where(tenant_runs.c.id == run_id, tenant_runs.c.status == RunStatus.QUEUED.value)
                .values(status=RunStatus.RUNNING.value, started_at=utcnow(), worker=worker)
            )
        return result.rowcount == 1

    async def extend_lease(self, run_id: int, worker: str, lease_s: float) -> bool:
        async with self._tx() as conn:
            result = await conn.execute(
                tenant_runs.update()
                .where(
                    tenant_runs.c.id == run_id,
                    tenant_runs.c.worker == worker,
                    tenant_runs.c.status == RunStatus.RUNNING.value,
                )
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
            )
        return result.rowcount == 1

    async def record_result(self, result: UnitResult, *, fenced: bool = False) -> bool:
        """Write a unit's outcome. ``fenced``: only if this worker still holds the running run (a reaper
        may have resolved it after the lease expired); returns whether it was written."""
        async with self._tx() as conn:
            return await self._record(conn, result, fenced)

    @staticmethod
    async def _record(conn: AsyncConnection, result: UnitResult, fenced: bool) -> bool:
        where = [tenant_runs.c.id == result.run_id]
        if fenced:
            where += [tenant_runs.c.status == RunStatus.RUNNING.value, tenant_runs.c.worker == result.worker]
        written = await conn.execute(
            tenant_runs.update()
            .where(*where)
            .values(
                status=result.status.value,
                from_revision=result.from_revision,
                to_revision=result.to_revision,
                applied=",".join(result.applied),
                started_at=result.started_at,
                finished_at=result.finished_at,
                duration_ms=result.duration_ms,
                worker=result.worker,
                error_class=result.error_class.value if result.error_class else None,
                error_message=result.error_message,
                traceback=result.traceback,
                lease_expires_at=None,
                retries=result.retries,
            )
        )
        return written.rowcount == 1

    async def record_and_reserve(
        self,
        result: UnitResult,
        rollout_id: int,
        per_host: int,
        redispatch_after: float,
        wave_of: Callable[[Rollout], int | None],
    ) -> tuple[bool, Rollout, list[Dispatch] | None]:
        """A worker's last transaction for a task: record its (fenced) result, read the rollout and, when
        ``wave_of(rollout)`` names a wave, reserve that wave's next runs as :meth:`reserve_dispatch` does.
        Returns (written, rollout, chosen), chosen None when nothing was reserved here (the caller decides
        with the whole policy); one transaction instead of four per task."""
        async with self._tx() as conn:
            written = await self._record(conn, result, fenced=True)
            rollout = await self._read_rollout(conn, rollout_id)
            wave = wave_of(rollout)
            chosen = (
                None
                if wave is None
                else await self._reserve(conn, rollout_id, rollout.parallel, per_host, redispatch_after, wave)
            )
        return written, rollout, chosen

    async def finish_if_done(self, rollout_id: int) -> RolloutState | None:
        """Close the rollout if none of its runs is queued or running.

        Returns the final state when this call closed it (so exactly one caller notifies), else None.
        The state: cancelled or halted if any run waits for ``resume``, failed if any failed, else succeeded.
        """
        # cheap check first, on the (rollout_id, status) index: a queued or running run is always its
        # tenant's latest attempt (new attempts are only made for runs at rest)
        if await self.has_runs(rollout_id, RunStatus.QUEUED, RunStatus.RUNNING):
            return None
        counts = await self.rollout_counts(rollout_id)
        if counts.get(RunStatus.CANCELLED, 0):
            state = RolloutState.CANCELLED
        elif counts.get(RunStatus.HALTED, 0):
            state = RolloutState.HALTED
        elif counts.get(RunStatus.FAILED, 0):
            state = RolloutState.FAILED
        else:
            state = RolloutState.SUCCEEDED
        async with self._tx() as conn:
            closed = await conn.execute(
                rollouts.update()
                .where(
                    rollouts.c.id == rollout_id,
                    rollouts.c.finished_at.is_(None),
                    rollouts.c.state.in_(
                        [RolloutState.RUNNING.value, RolloutState.HALTED.value, RolloutState.CANCELLED.value]
                    ),
                )
                .values(state=state.value, finished_at=utcnow())
            )
        return state if closed.rowcount == 1 else None

    async def has_runs(self, rollout_id: int, *statuses: RunStatus) -> bool:
        """Whether any run of the rollout has one of ``statuses`` (one index probe)."""
        async with self._tx() as conn:
            found = (
                await conn.execute(
                    sa.select(tenant_runs.c.id)
                    .where(
                        tenant_runs.c.rollout_id == rollout_id,
                        tenant_runs.c.status.in_([s.value for s in statuses]),
                    )
                    .limit(1)
                )
            ).first()
        return found is not None

    async def running_rollouts(self) -> list[int]:
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(rollouts.c.id).where(rollouts.c.state == RolloutState.RUNNING.value)
                )
            ).all()
        return [int(r.id) for r in rows]

    # -- dispatch (Celery) ------------------------------------------------------------------------
    async def reserve_dispatch(
        self, rollout_id: int, parallel: int, per_host: int, redispatch_after: float, wave: int | None = None
    ) -> list[Dispatch]:
        """Choose the runs to send now and stamp them dispatched, in one serialised transaction.

        In flight = running, or queued and dispatched. Runs dispatched longer than ``redispatch_after``
        ago and still queued lost their message (broker restart): they are chosen again.
        """
        async with self._tx() as conn:
            return await self._reserve(conn, rollout_id, parallel, per_host, redispatch_after, wave)

    @staticmethod
    async def _reserve(
        conn: AsyncConnection,
        rollout_id: int,
        parallel: int,
        per_host: int,
        redispatch_after: float,
        wave: int | None,
    ) -> list[Dispatch]:
        now = utcnow()
        stale = now - timedelta(seconds=redispatch_after)
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": DISPATCH_LOCK})
        inflight_rows = (
            await conn.execute(
                sa.select(tenant_runs.c.rollout_id, tenant_runs.c.db_host, sa.func.count())
                .where(
                    sa.or_(
                        tenant_runs.c.status == RunStatus.RUNNING.value,
                        sa.and_(
                            tenant_runs.c.status == RunStatus.QUEUED.value,
                            tenant_runs.c.dispatched_at > stale,
                        ),
                    )
                )
                .group_by(tenant_runs.c.rollout_id, tenant_runs.c.db_host)
            )
        ).all()
        by_host: dict[str, int] = {}
        mine = 0
        for rid, host, n in inflight_rows:
            by_host[host] = by_host.get(host, 0) + int(n)
            mine += int(n) if rid == rollout_id else 0
        room = parallel - mine
        if room <= 0:
            return []
        # without a per-host cap the first ``room`` runs are the answer: fetching a hundred candidates per
        # task to send one cost a measurable share of a worker's CPU; with the cap, hosts already at it
        # are left out and more rows are read, so runs on other hosts further down are still found
        full = [host for host, n in by_host.items() if per_host and n >= per_host]
        candidates = (
            await conn.execute(
                sa.select(
                    tenant_runs.c.id,
                    tenant_runs.c.tenant_id,
                    tenant_runs.c.attempt,
                    tenant_runs.c.db_host,
                )
                .where(
                    tenant_runs.c.rollout_id == rollout_id,
                    tenant_runs.c.status == RunStatus.QUEUED.value,
                    sa.or_(tenant_runs.c.dispatched_at.is_(None), tenant_runs.c.dispatched_at <= stale),
                    *([tenant_runs.c.wave == wave] if wave is not None else []),
                    *([tenant_runs.c.db_host.not_in(full)] if full else []),
                )
                .order_by(tenant_runs.c.id)
                .limit(room + 100 if per_host else room)
            )
        ).all()
        chosen = choose(
            [
                Dispatch(
                    rollout_id=rollout_id,
                    run_id=int(r.id),
                    tenant_id=r.tenant_id,
                    attempt=int(r.attempt),
                    db_host=r.db_host,
                )
                for r in candidates
            ],
            room=room,
            inflight_by_host=by_host,
            per_host=per_host,
        )
        if chosen:
            await conn.execute(
                tenant_runs.update()
                .where(tenant_runs.c.id.in_([d.run_id for d in chosen]))
                .values(dispatched_at=now)
            )
        return chosen

    async def run_context(self, run_id: int) -> tuple[TenantRun, Rollout, Tenant]:
        """A run with its rollout and tenant: what a worker needs to build the unit job."""
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(tenant_runs).where(tenant_runs.c.id == run_id))).first()
            if row is None:
                raise UnknownRollout(f"run {run_id}")
            rollout, tenant = await self._rollout_and_tenant(conn, row.rollout_id, row.tenant_id)
        if tenant is None:
            raise UnknownTenant(row.tenant_id)
        return self._run(row), rollout, tenant

    async def expired_leases(self) -> list[TenantRun]:
        """Running runs whose worker stopped renewing its lease."""
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(tenant_runs).where(
                        tenant_runs.c.status == RunStatus.RUNNING.value,
                        tenant_runs.c.lease_expires_at < utcnow(),
                    )
                )
            ).all()
        return [self._run(r) for r in rows]

    async def resolve_lost(
        self,
        run: TenantRun,
        *,
        status: RunStatus,
        to_revision: str | None,
        error_class: ErrorClass | None,
        message: str,
    ) -> bool:
        """The reaper's verdict on a run whose lease expired; a CAS, so a late worker or a second reaper
        cannot overwrite each other."""
        now = utcnow()
        started = run.started_at or now
        async with self._tx() as conn:
            result = await conn.execute(
                tenant_runs.update()
                .where(
                    tenant_runs.c.id == run.id,
                    tenant_runs.c.status == RunStatus.RUNNING.value,
                    tenant_runs.c.lease_expires_at < now,
                )
                .values(
                    status=status.value,
                    to_revision=to_revision,
                    finished_at=now,
                    duration_ms=int((now - started).total_seconds() * 1000),
                    error_class=error_class.value if error_class else None,
                    error_message=message,
                    lease_expires_at=None,
                )
            )
        return result.rowcount == 1

    async def runs_finished_since(self, rollout_id: int, since: datetime) -> list[TenantRun]:
        """Runs of a rollout that became terminal since ``since`` (for following progress cheaply)."""
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(tenant_runs)
                    .where(
                        tenant_runs.c.rollout_id == rollout_id,
                        tenant_runs.c.finished_at >= since,
                        tenant_runs.c.status.in_(TERMINAL),
                    )
                    .order_by(tenant_runs.c.finished_at)
                )
            ).all()
        return [self._run(r) for r in rows]

    @staticmethod
    def _rollout(row: sa.Row[Any]) -> Rollout:
        return Rollout(
            id=int(row.id),
            command=Command(row.command),
            target=row.target,
            selection=row.selection,
            created_by=row.created_by,
            created_at=_aware(row.created_at) or utcnow(),
            finished_at=_aware(row.finished_at),
            state=RolloutState(row.state),
            parallel=int(row.parallel),
            policy=Policy(**json.loads(row.policy or "{}")),
            halt_reason=row.halt_reason,
        )

    async def get_rollout(self, rollout_id: int | None = None) -> Rollout:
        """A rollout by id, or the latest one."""
        query = sa.select(rollouts)
        query = (
            query.where(rollouts.c.id == rollout_id)
            if rollout_id is not None
            else query.order_by(rollouts.c.id.desc()).limit(1)
        )
        async with self._tx() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise UnknownRollout("" if rollout_id is None else str(rollout_id))
        return self._rollout(row)

    async def rollout_counts(self, rollout_id: int) -> dict[RunStatus, int]:
        """Runs by status, counting each tenant's latest attempt only."""
        latest = self._latest_runs(rollout_id)
        async with self._tx() as conn:
            rows = (
                await conn.execute(sa.select(latest.c.status, sa.func.count()).group_by(latest.c.status))
            ).all()
        return {RunStatus(status): int(n) for status, n in rows}

    @staticmethod
    def _latest_runs(rollout_id: int) -> sa.Subquery:
        """Each tenant's latest attempt in the rollout, as a subquery with tenant_runs' columns.

        A window, not ``id IN (SELECT max(id) … GROUP BY tenant_id)``: on a table not analyzed since the
        rollout's runs were inserted, PostgreSQL planned that as a nested loop quadratic in the runs (99 ms
        for 1,000 runs, and it is read at every progress poll); the window is one sort whatever the
        statistics say."""
        rank = sa.func.row_number().over(
            partition_by=tenant_runs.c.tenant_id, order_by=tenant_runs.c.id.desc()
        )
        ranked = (
            sa.select(tenant_runs, rank.label("attempt_rank"))
            .where(tenant_runs.c.rollout_id == rollout_id)
            .subquery("ranked")
        )
        return (
            sa.select(*(ranked.c[c.name] for c in tenant_runs.c))
            .where(ranked.c.attempt_rank == 1)
            .subquery("latest")
        )

    async def known_revisions(self) -> dict[str, tuple[str, ...]]:
        """Where tenantctl last saw each tenant: the revision its latest succeeded or skipped run left it
        at (both read from the tenant). Planning trusts it only to spare a read, never to skip a tenant.

        Only the newest ``KNOWN_RUNS`` runs are looked at (a range of the primary key): over a million
        runs the whole history took 0.6 s to sort; a tenant not in that window is simply read."""
        rank = sa.func.row_number().over(
            partition_by=tenant_runs.c.tenant_id, order_by=tenant_runs.c.id.desc()
        )
        newest = sa.select(sa.func.max(tenant_runs.c.id)).scalar_subquery()
        ranked = (
            sa.select(tenant_runs.c.tenant_id, tenant_runs.c.to_revision, rank.label("run_rank"))
            .where(
                tenant_runs.c.id > newest - KNOWN_RUNS,
                tenant_runs.c.status.in_([RunStatus.SUCCEEDED.value, RunStatus.SKIPPED.value]),
            )
            .subquery("ranked")
        )
        query = sa.select(ranked.c.tenant_id, ranked.c.to_revision).where(ranked.c.run_rank == 1)
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return {t: tuple(sorted(rev.split(","))) if rev else () for t, rev in rows}

    async def rollout_runs(self, rollout_id: int) -> list[TenantRun]:
        """The latest attempt of every tenant of a rollout, by tenant id."""
        latest = self._latest_runs(rollout_id)
        query = sa.select(latest).order_by(latest.c.tenant_id)
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return [self._run(r) for r in rows]

    async def wave_statuses(self, rollout_id: int) -> list[tuple[int, RunStatus]]:
        """(wave, status) of each tenant's latest attempt: what the policy decides on."""
        latest = self._latest_runs(rollout_id)
        async with self._tx() as conn:
            rows = (await conn.execute(sa.select(latest.c.wave, latest.c.status))).all()
        return [(int(w), RunStatus(st)) for w, st in rows]

    async def halt(self, rollout_id: int, reason: str, state: RolloutState = RolloutState.HALTED) -> bool:
        """Stop a rollout: every run not yet started becomes ``halted`` (or ``cancelled``); runs already
        running finish their current migration. The reason is kept with the rollout."""
        run_status = RunStatus.CANCELLED if state is RolloutState.CANCELLED else RunStatus.HALTED
        from_states = [RolloutState.RUNNING.value] + (
            [RolloutState.HALTED.value] if state is RolloutState.CANCELLED else []
        )
        async with self._tx() as conn:
            changed = await conn.execute(
                rollouts.update()
                .where(rollouts.c.id == rollout_id, rollouts.c.state.in_(from_states))
                .values(state=state.value, halt_reason=reason)
            )
            if changed.rowcount != 1:
                return False
            await conn.execute(
                tenant_runs.update()
                .where(
                    tenant_runs.c.rollout_id == rollout_id,
                    tenant_runs.c.status.in_([RunStatus.QUEUED.value, RunStatus.HALTED.value]),
                )
                .values(status=run_status.value, error_message=reason, dispatched_at=None)
            )
        return True

    async def resume(self, rollout_id: int) -> int:
        """Re-queue a halted or cancelled rollout's runs that never started; returns how many."""
        async with self._tx() as conn:
            changed = await conn.execute(
                rollouts.update()
                .where(
                    rollouts.c.id == rollout_id,
                    rollouts.c.state.in_([RolloutState.HALTED.value, RolloutState.CANCELLED.value]),
                )
                .values(state=RolloutState.RUNNING.value, halt_reason=None, finished_at=None)
            )
            if changed.rowcount != 1:
                return -1
            result = await conn.execute(
                tenant_runs.update()
                .where(
                    tenant_runs.c.rollout_id == rollout_id,
                    tenant_runs.c.status.in_([RunStatus.HALTED.value, RunStatus.CANCELLED.value]),
                    tenant_runs.c.started_at.is_(None),
                )
                .values(status=RunStatus.QUEUED.value, error_message=None, dispatched_at=None)
            )
        return int(result.rowcount)

    async def stopped_midway(self, rollout_id: int) -> list[TenantRun]:
        """Latest attempts cancelled or halted after they had started (stopped between migrations)."""
        return [
            r
            for r in await self.rollout_runs(rollout_id)
            if r.status in (RunStatus.CANCELLED, RunStatus.HALTED) and r.started_at is not None
        ]

    async def list_rollouts(self, limit: int) -> list[tuple[Rollout, dict[RunStatus, int]]]:
        """The newest rollouts with their counts by status (latest attempts)."""
        async with self._tx() as conn:
            rows = (await conn.execute(sa.select(rollouts).order_by(rollouts.c.id.desc()).limit(limit))).all()
        return [(self._rollout(r), await self.rollout_counts(int(r.id))) for r in rows]

    async def rollout_attempts(self, rollout_id: int) -> list[TenantRun]:
        """Every attempt at every tenant of a rollout, by tenant then attempt."""
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(tenant_runs)
                    .where(tenant_runs.c.rollout_id == rollout_id)
                    .order_by(tenant_runs.c.tenant_id, tenant_runs.c.attempt)
                )
            ).all()
        return [self._run(r) for r in rows]

    async def tenant_history(self, tenant_id: str) -> list[TenantRun]:
        """Every attempt at a tenant, oldest first."""
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(tenant_runs)
                    .where(tenant_runs.c.tenant_id == tenant_id)
                    .order_by(tenant_runs.c.id)
                )
            ).all()
        return [self._run(r) for r in rows]

    @staticmethod
    def _run(r: sa.Row[Any]) -> TenantRun:
        return TenantRun(
            id=int(r.id),
            rollout_id=int(r.rollout_id),
            tenant_id=r.tenant_id,
            attempt=int(r.attempt),
            status=RunStatus(r.status),
            from_revision=r.from_revision,
            to_revision=r.to_revision,
            applied=tuple(a for a in r.applied.split(",") if a),
            started_at=_aware(r.started_at),
            finished_at=_aware(r.finished_at),
            duration_ms=r.duration_ms,
            worker=r.worker,
            error_class=ErrorClass(r.error_class) if r.error_class else None,
            error_message=r.error_message,
            traceback=r.traceback,
            db_host=r.db_host,
            dispatched_at=_aware(r.dispatched_at),
            lease_expires_at=_aware(r.lease_expires_at),
            wave=int(r.wave),
            retries=int(r.retries),
        )

    # -- audits (issue 5) --
    async def save_audit(
        self,
        *,
        kind: AuditKind,
        created_by: str,
        selection: Mapping[str, Any],
        head: str,
        counts: Mapping[str, int],
        drift: int,
        findings: Sequence[Finding],
    ) -> int:
        """Store an audit and every tenant's finding in one transaction; returns the audit id."""
        async with self._tx() as conn:
            audit_id = (
                await conn.execute(
                    audits.insert()
                    .values(
                        kind=kind.value,
                        created_at=utcnow(),
                        created_by=created_by,
                        selection=json.dumps(selection, sort_keys=True),
                        head=head,
                        counts=json.dumps(dict(counts), sort_keys=True),
                        drift=drift,
                    )
                    .returning(audits.c.id)
                )
            ).scalar_one()
            if findings:
                await conn.execute(
                    audit_findings.insert(),
                    [
                        {
                            "audit_id": audit_id,
                            "tenant_id": f.tenant_id,
                            "state": f.state.value,
                            "revision": f.revision,
                            "behind_by": f.behind_by,
                            "details": json.dumps(f.details(), sort_keys=True),
                            "hint": f.hint,
                        }
                        for f in findings
                    ],
                )
        return int(audit_id)

    @staticmethod
    def _audit(row: sa.Row[Any]) -> AuditRecord:
        return AuditRecord(
            id=int(row.id),
            kind=AuditKind(row.kind),
            created_at=_aware(row.created_at) or utcnow(),
            created_by=row.created_by,
            selection=json.loads(row.selection),
            head=row.head,
            counts=json.loads(row.counts),
            drift=int(row.drift),
        )

    async def get_audit(self, audit_id: int | None = None) -> AuditRecord:
        """An audit by id, or the latest one."""
        query = sa.select(audits)
        query = (
            query.where(audits.c.id == audit_id)
            if audit_id is not None
            else query.order_by(audits.c.id.desc()).limit(1)
        )
        async with self._tx() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise UnknownAudit("" if audit_id is None else str(audit_id))
        return self._audit(row)

    async def previous_audit(self, audit_id: int | None, kind: AuditKind) -> AuditRecord | None:
        """The latest audit of ``kind`` before ``audit_id`` (before any new one when None)."""
        query = sa.select(audits).where(audits.c.kind == kind.value)
        if audit_id is not None:
            query = query.where(audits.c.id < audit_id)
        async with self._tx() as conn:
            row = (await conn.execute(query.order_by(audits.c.id.desc()).limit(1))).first()
        return None if row is None else self._audit(row)

    async def audit_findings(self, audit_id: int) -> list[Finding]:
        """Every tenant's finding of an audit, by tenant id."""
        query = (
            sa.select(audit_findings)
            .where(audit_findings.c.audit_id == audit_id)
            .order_by(audit_findings.c.tenant_id)
        )
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Finding.from_stored(
                tenant_id=r.tenant_id,
                state=r.state,
                revision=r.revision,
                behind_by=r.behind_by,
                details=r.details,
                hint=r.hint,
            )
            for r in rows
        ]

    # -- schema checks handed back by workers --------------------------------------------------------
    async def put_schema_check(self, token: str, tenant_id: str, result: str) -> None:
        """A worker's schema comparison of one tenant; a redelivered task's second answer is ignored."""
        try:
            async with self._tx() as conn:
                await conn.execute(
                    schema_checks.insert().values(
                        token=token, tenant_id=tenant_id, result=result, created_at=utcnow()
                    )
                )
        except IntegrityError:
            pass

    async def schema_checks(self, token: str) -> dict[str, str]:
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(schema_checks.c.tenant_id, schema_checks.c.result).where(
                        schema_checks.c.token == token
                    )
                )
            ).all()
        return {str(t): str(r) for t, r in rows}

    async def drop_schema_checks(self, token: str) -> None:
        async with self._tx() as conn:
            await conn.execute(schema_checks.delete().where(schema_checks.c.token == token))
