"""Rollouts and their tenant runs: creation, claims, leases, results, dispatch and progress reads."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import states
from ..dispatch import Dispatch, choose
from ..exceptions import ConcurrentChange, ConstraintViolation, UnknownRollout, UnknownTenant
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
from .engine import StoreBase, _aware, utcnow
from .schema import ACTIVE, rollouts, tenant_runs, tenants
from .tenants import tenant_from_row

DISPATCH_LOCK = 0x7E7A_C7_1D  # pg_advisory_xact_lock key serialising dispatchers
KNOWN_RUNS = 200_000  # how far back planning looks for where tenantctl last saw a tenant
TERMINAL = [s.value for s in RunStatus if s.terminal]


class RunEnding(NamedTuple):
    """A run that came to rest: what following a rollout reports."""

    id: int
    tenant_id: str
    status: RunStatus
    error_message: str | None
    finished_at: datetime


ATTEMPT_UNIQUE = "uq_tenant_runs_rollout_id_tenant_id_attempt"
RACED = "another retry or resume of it started at the same moment; nothing was done here"


def _sources(target: RunStatus) -> list[str]:
    return [s.value for s in states.run_sources(target)]


class RunStore(StoreBase):
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
        owner: str | None = None,
        lease_s: float = 0.0,
    ) -> int:
        """Create a rollout and the first attempt at every planned tenant, in one transaction.

        ``owner``: the in-process coordinator that will carry it, holding its lease from the start (a
        coordinator killed right after this commit leaves a rollout the reaper can halt). A planned tenant
        that another rollout holds (a queued or running run) is recorded ``skipped``, ``blocked_by`` that
        rollout: the partial unique index ``uq_tenant_runs_active`` decides, not a prior read."""
        now = utcnow()
        async with self._tx() as conn:
            rollout_id = (
                await conn.execute(
                    rollouts.insert()
                    .values(
                        command=command.value,
                        target=target,
                        selection=json.dumps(selection, sort_keys=True),
                        created_by=created_by,
                        created_at=now,
                        state=RolloutState.RUNNING.value,
                        parallel=parallel,
                        policy=json.dumps(asdict(policy or Policy())),
                        owner=owner,
                        owner_lease_expires_at=now + timedelta(seconds=lease_s) if owner else None,
                    )
                    .returning(rollouts.c.id)
                )
            ).scalar_one()
            await self._insert_runs(conn, int(rollout_id), plan, hosts, {}, waves or {})
        return int(rollout_id)

    async def add_attempts(
        self,
        rollout_id: int,
        plan: Plan,
        hosts: Mapping[str, str],
        owner: str | None = None,
        lease_s: float = 0,
    ) -> None:
        """New attempts at some tenants of a rollout (retry): history keeps every earlier attempt.

        Two retries of one rollout at once both compute the same next attempt numbers: the unique
        (rollout, tenant, attempt) constraint lets one commit and the other gets ConcurrentChange."""
        tenant_ids = [t for t, *_ in (*plan.queued, *plan.skipped, *plan.failed)]
        try:
            async with self._tx() as conn:
                rows = (
                    await conn.execute(
                        sa.select(
                            tenant_runs.c.tenant_id,
                            sa.func.max(tenant_runs.c.attempt),
                            sa.func.min(tenant_runs.c.wave),
                        )
                        .where(
                            tenant_runs.c.rollout_id == rollout_id, tenant_runs.c.tenant_id.in_(tenant_ids)
                        )
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
                    .values(self._owner_values(owner, lease_s))
                )
        except ConstraintViolation as exc:
            if exc.constraint != ATTEMPT_UNIQUE:
                raise
            raise ConcurrentChange(rollout_id, RACED) from exc

    @staticmethod
    def _owner_values(owner: str | None, lease_s: float) -> dict[str, Any]:
        return {
            "owner": owner,
            "owner_lease_expires_at": utcnow() + timedelta(seconds=lease_s) if owner else None,
        }

    @classmethod
    async def _insert_runs(
        cls,
        conn: AsyncConnection,
        rollout_id: int,
        plan: Plan,
        hosts: Mapping[str, str],
        attempts: Mapping[str, int],
        waves: Mapping[str, int],
    ) -> None:
        now = utcnow()
        done = {"started_at": now, "finished_at": now, "duration_ms": 0}
        queued: list[dict[str, Any]] = [
            {"tenant_id": t, "status": RunStatus.QUEUED.value, "from_revision": rev} for t, rev in plan.queued
        ]
        rows: list[dict[str, Any]] = [
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
                "error_class": cls_.value,
                "error_message": message,
                **done,
            }
            for t, cls_, message in plan.failed
        ]
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
            "blocked_by": None,
        }

        def full(r: dict[str, Any]) -> dict[str, Any]:
            return {
                **defaults,
                **r,
                "attempt": attempts.get(r["tenant_id"], 1),
                "wave": waves.get(r["tenant_id"], 1),
                "db_host": hosts.get(r["tenant_id"], ""),
            }

        for _ in range(3):  # a holder that ends between our insert and our read frees its tenant: try again
            if not queued:
                break
            busy = await cls._insert_unless_busy(conn, [full(r) for r in queued])
            holders = await cls._holders(conn, busy)
            if rollout_id in holders.values():  # held by this very rollout: another retry got there first
                raise ConcurrentChange(rollout_id, RACED)
            rows += [
                {
                    **r,
                    "status": RunStatus.SKIPPED.value,
                    "error_message": f"busy: rollout {holders[r['tenant_id']]} holds this tenant",
                    "blocked_by": holders[r["tenant_id"]],
                    **done,
                }
                for r in queued
                if r["tenant_id"] in holders
            ]
            queued = [r for r in queued if r["tenant_id"] in busy and r["tenant_id"] not in holders]
        if rows:
            await conn.execute(tenant_runs.insert(), [full(r) for r in rows])

    @staticmethod
    async def _insert_unless_busy(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
        """Insert queued runs, except for tenants that already have an active run; returns those."""
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        stmt = (
            insert(tenant_runs)
            .on_conflict_do_nothing(index_elements=["tenant_id"], index_where=sa.text(ACTIVE))
            .returning(tenant_runs.c.tenant_id)
        )
        inserted = {str(t) for t in (await conn.execute(stmt, rows)).scalars()}
        return {r["tenant_id"] for r in rows} - inserted

    @staticmethod
    async def _holders(conn: AsyncConnection, tenant_ids: set[str]) -> dict[str, int]:
        """The rollout holding each of these tenants now (an active run), where one does."""
        if not tenant_ids:
            return {}
        rows = await conn.execute(
            sa.select(tenant_runs.c.tenant_id, tenant_runs.c.rollout_id).where(
                tenant_runs.c.tenant_id.in_(sorted(tenant_ids)),
                tenant_runs.c.status.in_([s.value for s in states.ACTIVE]),
            )
        )
        return {str(t): int(r) for t, r in rows}

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
                        tenant_runs.c.status.in_(_sources(RunStatus.RUNNING)),
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
        return await cls._read_rollout(conn, rollout_id), tenant_from_row(
            tenant
        ) if tenant is not None else None

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
        state = states.closing_state(await self.rollout_counts(rollout_id))
        if state is None:
            return None
        async with self._tx() as conn:
            closed = await conn.execute(
                rollouts.update()
                .where(
                    rollouts.c.id == rollout_id,
                    rollouts.c.finished_at.is_(None),
                    rollouts.c.state.in_([s.value for s in states.closing_sources(state)]),
                )
                .values(state=state.value, finished_at=utcnow(), owner=None, owner_lease_expires_at=None)
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

    async def open_rollouts(self) -> list[int]:
        """Rollouts not closed yet: running, or halted/cancelled with runs still ending."""
        async with self._tx() as conn:
            rows = (
                await conn.execute(sa.select(rollouts.c.id).where(rollouts.c.finished_at.is_(None)))
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

    async def terminal_run_ids(self, rollout_id: int) -> set[int]:
        """The ids of a rollout's attempts at rest: what a follow has nothing left to report about."""
        query = sa.select(tenant_runs.c.id).where(
            tenant_runs.c.rollout_id == rollout_id, tenant_runs.c.status.in_(TERMINAL)
        )
        async with self._tx() as conn:
            return {int(i) for i in (await conn.execute(query)).scalars()}

    async def endings_since(self, rollout_id: int, since: datetime) -> list[RunEnding]:
        """What ``runs_finished_since`` finds, in the five columns a progress display reads: a follow
        reads it every poll, and building whole runs of a 10,000-tenant no-op cost a third of a second."""
        query = (
            sa.select(
                tenant_runs.c.id,
                tenant_runs.c.tenant_id,
                tenant_runs.c.status,
                tenant_runs.c.error_message,
                tenant_runs.c.finished_at,
            )
            .where(
                tenant_runs.c.rollout_id == rollout_id,
                tenant_runs.c.finished_at >= since,
                tenant_runs.c.status.in_(TERMINAL),
            )
            .order_by(tenant_runs.c.finished_at)
        )
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return [
            RunEnding(int(i), str(t), RunStatus(st), message, _aware(at) or utcnow())
            for i, t, st, message, at in rows
        ]

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
            owner=row.owner,
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

    async def rollout_rows(
        self,
        rollout_id: int,
        *,
        attempts: bool = False,
        failed: bool = False,
        error_class: ErrorClass | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[list[TenantRun], int]:
        """A page of a rollout's runs by tenant (then attempt) and how many match: each tenant's latest
        attempt, or every attempt; ``failed``/``error_class`` keep the failed ones (of that class). Paged
        in SQL, so the first page of a 10,000-tenant rollout reads 50 rows, not 10,000. Without ``limit``
        every matching row is read and ``offset`` is not allowed."""
        if limit is None and offset:
            raise ValueError("offset without limit")
        source = tenant_runs if attempts else self._latest_runs(rollout_id)
        where: list[sa.ColumnElement[bool]] = [source.c.rollout_id == rollout_id]
        if failed or error_class is not None:
            where.append(source.c.status == RunStatus.FAILED.value)
        if error_class is not None:
            where.append(source.c.error_class == error_class.value)
        query = sa.select(source).where(*where).order_by(source.c.tenant_id, source.c.attempt)
        async with self._tx() as conn:
            if limit is None:  # every matching row: no count needed
                rows = (await conn.execute(query)).all()
                return [self._run(r) for r in rows], len(rows)
            count = sa.select(sa.func.count()).select_from(source).where(*where)
            total = (await conn.execute(count)).scalar()
            rows = (await conn.execute(query.limit(limit).offset(offset))).all()
        return [self._run(r) for r in rows], int(total or 0)

    async def wave_statuses(self, rollout_id: int) -> list[tuple[int, RunStatus]]:
        """(wave, status) of each tenant's latest attempt: what the policy decides on."""
        latest = self._latest_runs(rollout_id)
        async with self._tx() as conn:
            rows = (await conn.execute(sa.select(latest.c.wave, latest.c.status))).all()
        return [(int(w), RunStatus(st)) for w, st in rows]

    async def halt(self, rollout_id: int, reason: str, state: RolloutState = RolloutState.HALTED) -> bool:
        """Stop a rollout: every run not yet started becomes ``halted`` (or ``cancelled``); runs already
        running finish their current migration. The reason is kept with the rollout."""
        run_status = states.halted_run_status(state)
        async with self._tx() as conn:
            changed = await conn.execute(
                rollouts.update()
                .where(
                    rollouts.c.id == rollout_id,
                    rollouts.c.state.in_([s.value for s in states.rollout_sources(state)]),
                )
                .values(state=state.value, halt_reason=reason)
            )
            if changed.rowcount != 1:
                return False
            await conn.execute(
                tenant_runs.update()
                .where(
                    tenant_runs.c.rollout_id == rollout_id,
                    tenant_runs.c.status.in_(_sources(run_status)),
                    tenant_runs.c.status != RunStatus.RUNNING.value,
                )
                .values(status=run_status.value, error_message=reason, dispatched_at=None)
            )
        return True

    async def resume(self, rollout_id: int, owner: str | None = None, lease_s: float = 0) -> int:
        """Re-queue a halted or cancelled rollout's runs that never started; returns how many (-1 when
        the rollout was not resumable: someone else resumed it first). A run whose tenant another
        rollout holds meanwhile is recorded ``skipped``, ``blocked_by`` that rollout."""
        waiting = [s.value for s in states.run_sources(RunStatus.QUEUED)]
        async with self._tx() as conn:
            changed = await conn.execute(
                rollouts.update()
                .where(
                    rollouts.c.id == rollout_id,
                    rollouts.c.state.in_([s.value for s in states.RESUMABLE]),
                )
                .values(state=RolloutState.RUNNING.value, halt_reason=None, finished_at=None)
                .values(self._owner_values(owner, lease_s))
            )
            if changed.rowcount != 1:
                return -1
            runs = (
                await conn.execute(
                    sa.select(tenant_runs.c.id, tenant_runs.c.tenant_id).where(
                        tenant_runs.c.rollout_id == rollout_id,
                        tenant_runs.c.status.in_(waiting),
                        tenant_runs.c.started_at.is_(None),
                    )
                )
            ).all()
            holders = await self._holders(conn, {str(r.tenant_id) for r in runs})
            free = [int(r.id) for r in runs if r.tenant_id not in holders]
            if free:
                await conn.execute(
                    tenant_runs.update()
                    .where(tenant_runs.c.id.in_(free))
                    .values(status=RunStatus.QUEUED.value, error_message=None, dispatched_at=None)
                )
            now = utcnow()
            for r in runs:
                if r.tenant_id in holders:
                    await conn.execute(
                        tenant_runs.update()
                        .where(tenant_runs.c.id == r.id)
                        .values(
                            status=RunStatus.SKIPPED.value,
                            error_message=f"busy: rollout {holders[r.tenant_id]} holds this tenant",
                            blocked_by=holders[r.tenant_id],
                            started_at=now,
                            finished_at=now,
                            duration_ms=0,
                        )
                    )
        return len(free)

    # -- the coordinator's lease on a rollout (in-process executor) ---------------------------------
    async def take_rollout(self, rollout_id: int, owner: str, lease_s: float) -> str | None:
        """Become the coordinator carrying a rollout: a compare-and-set that succeeds when nobody holds
        it, we do, or its holder stopped renewing. Returns None on success, else the live holder."""
        now = utcnow()
        async with self._tx() as conn:
            taken = await conn.execute(
                rollouts.update()
                .where(
                    rollouts.c.id == rollout_id,
                    sa.or_(
                        rollouts.c.owner.is_(None),
                        rollouts.c.owner == owner,
                        rollouts.c.owner_lease_expires_at < now,
                    ),
                )
                .values(owner=owner, owner_lease_expires_at=now + timedelta(seconds=lease_s))
            )
            if taken.rowcount == 1:
                return None
            holder = (
                await conn.execute(sa.select(rollouts.c.owner).where(rollouts.c.id == rollout_id))
            ).scalar()
        return str(holder)

    async def renew_rollout(self, rollout_id: int, owner: str, lease_s: float) -> bool:
        """Extend the coordinator's lease; False when it was lost (another coordinator took it over after
        it expired). A rollout that closed meanwhile (its last run settled) needs no lease: True."""
        async with self._tx() as conn:
            renewed = await conn.execute(
                rollouts.update()
                .where(rollouts.c.id == rollout_id, rollouts.c.owner == owner)
                .values(owner_lease_expires_at=utcnow() + timedelta(seconds=lease_s))
            )
            if renewed.rowcount == 1:
                return True
            query = sa.select(rollouts.c.finished_at).where(rollouts.c.id == rollout_id)
            return (await conn.execute(query)).scalar() is not None

    async def release_rollout(self, rollout_id: int, owner: str) -> None:
        async with self._tx() as conn:
            await conn.execute(
                rollouts.update()
                .where(rollouts.c.id == rollout_id, rollouts.c.owner == owner)
                .values(owner=None, owner_lease_expires_at=None)
            )

    async def orphaned_rollouts(self) -> list[tuple[int, str]]:
        """Running rollouts whose in-process coordinator stopped renewing its lease: (id, owner)."""
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(rollouts.c.id, rollouts.c.owner).where(
                        rollouts.c.state == RolloutState.RUNNING.value,
                        rollouts.c.owner.is_not(None),
                        rollouts.c.owner_lease_expires_at < utcnow(),
                    )
                )
            ).all()
        return [(int(r.id), str(r.owner)) for r in rows]

    async def set_options(self, rollout_id: int, *, parallel: int | None, policy: Policy | None) -> None:
        """Change how a rollout goes on (``retry``/``resume`` told otherwise): its parallelism, policy."""
        values: dict[str, Any] = {}
        if parallel is not None:
            values["parallel"] = parallel
        if policy is not None:
            values["policy"] = json.dumps(asdict(policy))
        if values:
            async with self._tx() as conn:
                await conn.execute(rollouts.update().where(rollouts.c.id == rollout_id).values(**values))

    async def stopped_midway(self, rollout_id: int) -> list[TenantRun]:
        """Latest attempts cancelled or halted after they had started (stopped between migrations)."""
        return [
            r
            for r in await self.rollout_runs(rollout_id)
            if r.status in (RunStatus.CANCELLED, RunStatus.HALTED) and r.started_at is not None
        ]

    async def list_rollouts(self, limit: int, offset: int = 0) -> list[tuple[Rollout, dict[RunStatus, int]]]:
        """A page of the rollouts, newest first, with their counts by status (latest attempts)."""
        query = sa.select(rollouts).order_by(rollouts.c.id.desc()).limit(limit).offset(offset)
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return [(self._rollout(r), await self.rollout_counts(int(r.id))) for r in rows]

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
            blocked_by=r.blocked_by,
        )
