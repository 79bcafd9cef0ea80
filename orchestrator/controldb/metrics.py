"""The control-plane figures behind ``/metrics``: a few bounded, index-backed reads in one transaction.

What is read, and why it stays cheap with 10,000 tenants and years of history:

- rollouts by state: ``GROUP BY state`` on ``ix_rollouts_state`` (one row per rollout, not per tenant);
- tenants by enabled: the registry itself, one row per tenant;
- tenant runs by status and error class, and the duration histogram: only the runs of the *current*
  rollouts (those not closed yet, found on ``ix_rollouts_state``, plus the newest one), read on
  ``ix_tenant_runs_rollout_id_status``. A ``GROUP BY`` over the whole ``tenant_runs`` table grows with
  every rollout ever run; the current rollouts are what an operator watches and alerts on, and a
  failure stays visible until the next rollout starts. The statuses count each tenant's latest attempt
  (as ``status`` does); the histogram counts every finished attempt carried by a worker, so it only
  grows while those rollouts run and starts again with the next one (a counter reset to Prometheus);
- the newest audit's findings by state, on ``ix_audit_findings_audit_id_state``;
- worker processes seen within the lease: running runs whose lease is alive (``ix_tenant_runs_status_
  lease_expires_at``) and runs of the current rollouts finished within the lease.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..models import RolloutState, RunStatus
from .engine import StoreBase, _aware, utcnow
from .schema import audit_findings, audits, rollouts, tenant_runs, tenants

_MAY_BE_OPEN = [RolloutState.RUNNING.value, RolloutState.HALTED.value, RolloutState.CANCELLED.value]
"""States of a rollout not closed yet (``finished_at`` unset): on the state index, unlike finished_at."""
_MIGRATED = [RunStatus.SUCCEEDED.value, RunStatus.FAILED.value]


@dataclass(frozen=True, kw_only=True)
class Durations:
    """Finished attempts of the current rollouts by duration: ``cumulative[i]`` took at most
    ``bounds_s[i]`` seconds (Prometheus buckets)."""

    bounds_s: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    sum_s: float


@dataclass(frozen=True, kw_only=True)
class AuditFigures:
    """The newest audit: when, its kind, how many tenants drifted and its tenants by state."""

    id: int
    kind: str
    created_at: datetime
    drift: int
    states: Mapping[str, int]


@dataclass(frozen=True, kw_only=True)
class ControlFigures:
    """One consistent read of the control DB for ``/metrics``. ``runs`` is keyed by (status, error class,
    "" when none); ``current`` the rollouts the run figures cover; ``workers`` host:pid of the processes
    that held or finished a run within the lease."""

    rollouts: Mapping[str, int]
    tenants: Mapping[bool, int]
    current: tuple[int, ...]
    runs: Mapping[tuple[str, str], int]
    durations: Durations
    audit: AuditFigures | None
    workers: tuple[str, ...]


class MetricsStore(StoreBase):
    # -- figures for /metrics -----------------------------------------------------------------------
    async def control_figures(self, *, lease_s: float, bounds_s: Sequence[float]) -> ControlFigures:
        """The figures of the module docstring, read in one transaction (one snapshot on PostgreSQL)."""
        async with self._tx() as conn:
            current = await self._current_rollouts(conn)
            return ControlFigures(
                rollouts={str(k): n for k, n in (await self._counts(conn, rollouts.c.state)).items()},
                tenants={bool(k): n for k, n in (await self._counts(conn, tenants.c.enabled)).items()},
                current=current,
                runs=await self._latest_statuses(conn, current),
                durations=await self._durations(conn, current, tuple(bounds_s)),
                audit=await self._newest_audit(conn),
                workers=await self._workers(conn, current, utcnow() - timedelta(seconds=lease_s)),
            )

    @staticmethod
    async def _counts(conn: AsyncConnection, column: sa.Column[object]) -> dict[object, int]:
        rows = await conn.execute(sa.select(column, sa.func.count()).group_by(column))
        return {key: int(n) for key, n in rows}

    @staticmethod
    async def _current_rollouts(conn: AsyncConnection) -> tuple[int, ...]:
        open_ = sa.select(rollouts.c.id).where(
            rollouts.c.state.in_(_MAY_BE_OPEN), rollouts.c.finished_at.is_(None)
        )
        newest = sa.select(sa.func.max(rollouts.c.id))
        ids = (await conn.execute(sa.union(open_, newest))).scalars()
        return tuple(sorted(int(i) for i in ids if i is not None))

    @staticmethod
    async def _latest_statuses(conn: AsyncConnection, current: tuple[int, ...]) -> dict[tuple[str, str], int]:
        """Each tenant's latest attempt per current rollout, counted by (status, error class); a window
        over those rollouts' runs only, as ``RunStore._latest_runs`` does for one."""
        if not current:
            return {}
        rank = sa.func.row_number().over(
            partition_by=(tenant_runs.c.rollout_id, tenant_runs.c.tenant_id),
            order_by=tenant_runs.c.id.desc(),
        )
        ranked = (
            sa.select(tenant_runs.c.status, tenant_runs.c.error_class, rank.label("attempt_rank"))
            .where(tenant_runs.c.rollout_id.in_(current))
            .subquery("ranked")
        )
        query = (
            sa.select(ranked.c.status, ranked.c.error_class, sa.func.count())
            .where(ranked.c.attempt_rank == 1)
            .group_by(ranked.c.status, ranked.c.error_class)
        )
        return {(str(s), str(e or "")): int(n) for s, e, n in await conn.execute(query)}

    @staticmethod
    async def _durations(
        conn: AsyncConnection, current: tuple[int, ...], bounds_s: tuple[float, ...]
    ) -> Durations:
        """Bucketed in SQL: one row comes back, whatever the number of runs."""
        if not current:
            return Durations(bounds_s=bounds_s, cumulative=(0,) * len(bounds_s), count=0, sum_s=0.0)
        ms = tenant_runs.c.duration_ms
        buckets = [sa.func.coalesce(sa.func.sum(sa.case((ms <= b * 1000, 1), else_=0)), 0) for b in bounds_s]
        query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(ms), 0), *buckets).where(
            tenant_runs.c.rollout_id.in_(current),
            tenant_runs.c.status.in_(_MIGRATED),
            tenant_runs.c.worker.is_not(None),
            ms.is_not(None),
        )
        count, total_ms, *cumulative = (await conn.execute(query)).one()
        return Durations(
            bounds_s=bounds_s,
            cumulative=tuple(int(c) for c in cumulative),
            count=int(count),
            sum_s=int(total_ms) / 1000,
        )

    @staticmethod
    async def _newest_audit(conn: AsyncConnection) -> AuditFigures | None:
        row = (
            await conn.execute(
                sa.select(audits.c.id, audits.c.kind, audits.c.created_at, audits.c.drift)
                .order_by(audits.c.id.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        states = await conn.execute(
            sa.select(audit_findings.c.state, sa.func.count())
            .where(audit_findings.c.audit_id == row.id)
            .group_by(audit_findings.c.state)
        )
        return AuditFigures(
            id=int(row.id),
            kind=str(row.kind),
            created_at=_aware(row.created_at) or utcnow(),
            drift=int(row.drift),
            states={str(s): int(n) for s, n in states},
        )

    @staticmethod
    async def _workers(conn: AsyncConnection, current: tuple[int, ...], since: datetime) -> tuple[str, ...]:
        holding = sa.select(tenant_runs.c.worker).where(
            tenant_runs.c.status == RunStatus.RUNNING.value,
            tenant_runs.c.lease_expires_at > utcnow(),
            tenant_runs.c.worker.is_not(None),
        )
        queries: list[sa.Select[tuple[str | None]]] = [holding]
        if current:
            queries.append(
                sa.select(tenant_runs.c.worker).where(
                    tenant_runs.c.rollout_id.in_(current),
                    tenant_runs.c.status.in_([s.value for s in RunStatus if s.terminal]),
                    tenant_runs.c.finished_at > since,
                    tenant_runs.c.worker.is_not(None),
                )
            )
        query = sa.union(*queries) if len(queries) > 1 else holding.distinct()
        found = (await conn.execute(query)).scalars()
        return tuple(sorted(str(w) for w in found if w))
