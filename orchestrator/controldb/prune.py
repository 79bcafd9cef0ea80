"""Deleting old history (``tenantctl prune``): the reads ``retention`` chooses from, and guarded deletes.

``retention`` picks the rollouts and audits that may go; every delete here checks again, in its own
``WHERE``, what must never go, so the database decides and a command running meanwhile is safe:

- a run goes only if its rollout is still closed (a ``retry`` reopens it in the transaction that adds
  its attempts), it is not queued or running, a newer run of its tenant exists (never a tenant's latest
  attempt) and, if it ``succeeded`` or was ``skipped``, a newer such run of its tenant exists too;
- a rollout goes only once closed and without runs, with the ``api_idempotency`` rows naming it (they
  have no foreign key, and would answer a repeated request with a rollout that is gone);
- an audit goes only once a newer one of its kind exists, its findings first, in batches: the
  ``ON DELETE CASCADE`` of ``audit_findings`` would delete 10,000 rows in one statement per audit;
- runs are deleted before their rollout for the same reason (``tenant_runs`` cascades too).

Each method is one transaction of at most ``limit`` rows (``DELETE … WHERE key IN (SELECT … LIMIT n)``,
which PostgreSQL and SQLite both run).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import NamedFromClause

from ..audit import AuditKind
from ..models import RolloutState, RunStatus
from ..retention import AuditAge, RolloutAge
from .engine import StoreBase, _aware
from .schema import api_idempotency, audit_findings, audits, rollouts, schema_checks, tenant_runs

_ACTIVE = [RunStatus.QUEUED.value, RunStatus.RUNNING.value]
_SEEN_AT = [RunStatus.SUCCEEDED.value, RunStatus.SKIPPED.value]  # what ``known_revisions`` reads


def _closed(rollout: NamedFromClause) -> list[sa.ColumnElement[bool]]:
    return [rollout.c.finished_at.is_not(None), rollout.c.state != RolloutState.RUNNING.value]


def _run_may_go(run: NamedFromClause) -> list[sa.ColumnElement[bool]]:
    """A run that is neither active, nor its tenant's latest attempt, nor its latest succeeded/skipped
    run, in a closed rollout. Probes ``ix_tenant_runs_tenant_id_id`` for newer runs of the tenant."""
    newer = tenant_runs.alias("newer")
    newer_seen = tenant_runs.alias("newer_seen")
    closed = rollouts.alias("closed")
    return [
        run.c.status.not_in(_ACTIVE),
        sa.or_(  # one index probe per run: a newer run of the tenant, or a newer succeeded/skipped one
            sa.and_(
                run.c.status.not_in(_SEEN_AT),
                sa.exists().where(newer.c.tenant_id == run.c.tenant_id, newer.c.id > run.c.id),
            ),
            sa.and_(
                run.c.status.in_(_SEEN_AT),
                sa.exists().where(
                    newer_seen.c.tenant_id == run.c.tenant_id,
                    newer_seen.c.id > run.c.id,
                    newer_seen.c.status.in_(_SEEN_AT),
                ),
            ),
        ),
        run.c.rollout_id.in_(sa.select(closed.c.id).where(*_closed(closed))),
    ]


def _superseded_audits(ids: Sequence[int]) -> sa.Select[Any]:
    """Those of ``ids`` with a newer audit of their kind: never the latest one."""
    audit = audits.alias("audit")
    newer = audits.alias("newer_audit")
    return sa.select(audit.c.id).where(
        audit.c.id.in_(ids), sa.exists().where(newer.c.kind == audit.c.kind, newer.c.id > audit.c.id)
    )


async def _delete_keys(
    conn: AsyncConnection, first: sa.Column[Any], second: sa.Column[Any], batch: sa.Select[Any]
) -> int:
    """Delete the rows whose two-column primary key ``batch`` reads, one statement per first column:
    each a probe of the primary key, whatever the size of the table."""
    by_first: dict[Any, list[Any]] = {}
    for a, b in (await conn.execute(batch)).all():
        by_first.setdefault(a, []).append(b)
    deleted = 0
    for a, bs in by_first.items():
        table = first.table
        assert isinstance(table, sa.Table)
        result = await conn.execute(table.delete().where(first == a, second.in_(bs)))
        deleted += int(result.rowcount)
    return deleted


def _chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[at : at + size]) for at in range(0, len(ids), size)]


class PruneStore(StoreBase):
    async def retention_rollouts(self) -> list[RolloutAge]:
        """Every rollout's state and end, and whether it has a queued or running run."""
        async with self._tx() as conn:
            rows = (
                await conn.execute(sa.select(rollouts.c.id, rollouts.c.state, rollouts.c.finished_at))
            ).all()
            busy = set(
                (
                    await conn.execute(
                        sa.select(tenant_runs.c.rollout_id)
                        .where(tenant_runs.c.status.in_(_ACTIVE))
                        .distinct()
                    )
                ).scalars()
            )
        return [
            RolloutAge(
                id=int(r.id),
                state=RolloutState(r.state),
                finished_at=_aware(r.finished_at),
                active_runs=r.id in busy,
            )
            for r in rows
        ]

    async def retention_audits(self) -> list[AuditAge]:
        async with self._tx() as conn:
            rows = (await conn.execute(sa.select(audits.c.id, audits.c.kind, audits.c.created_at))).all()
        return [
            AuditAge(id=int(r.id), kind=AuditKind(r.kind), created_at=_aware(r.created_at) or r.created_at)
            for r in rows
        ]

    # -- deletes, one transaction each ----------------------------------------------------------------
    async def delete_runs(self, rollout_ids: Sequence[int], limit: int) -> int:
        """Delete up to ``limit`` runs of these rollouts that may go; returns how many went."""
        run = tenant_runs.alias("run")
        batch = sa.select(run.c.id).where(run.c.rollout_id.in_(rollout_ids), *_run_may_go(run)).limit(limit)
        closed = rollouts.alias("closed")
        async with self._tx() as conn:
            ids = list((await conn.execute(batch)).scalars())
            if not ids:
                return 0
            deleted = await conn.execute(
                tenant_runs.delete().where(
                    tenant_runs.c.id.in_(ids),
                    tenant_runs.c.status.not_in(_ACTIVE),
                    tenant_runs.c.rollout_id.in_(sa.select(closed.c.id).where(*_closed(closed))),
                )
            )
        return int(deleted.rowcount)

    async def delete_empty_rollouts(self, rollout_ids: Sequence[int]) -> tuple[int, int]:
        """Delete those of these rollouts that are closed and have no run left, and the idempotency keys
        naming them; returns (rollouts, keys)."""
        async with self._tx() as conn:
            gone = await self._empty_rollouts(conn, rollout_ids)
            if not gone:
                return 0, 0
            keys = await conn.execute(api_idempotency.delete().where(api_idempotency.c.rollout_id.in_(gone)))
            deleted = await conn.execute(
                rollouts.delete().where(
                    rollouts.c.id.in_(gone),
                    *_closed(rollouts),
                    ~sa.exists().where(tenant_runs.c.rollout_id == rollouts.c.id),
                )
            )
        return int(deleted.rowcount), int(keys.rowcount)

    @staticmethod
    async def _empty_rollouts(conn: AsyncConnection, rollout_ids: Sequence[int]) -> list[int]:
        ro = rollouts.alias("ro")
        query = sa.select(ro.c.id).where(
            ro.c.id.in_(rollout_ids),
            *_closed(ro),
            ~sa.exists().where(tenant_runs.c.rollout_id == ro.c.id),
        )
        return [int(i) for i in (await conn.execute(query)).scalars()]

    async def delete_findings(self, audit_ids: Sequence[int], limit: int) -> int:
        """Delete up to ``limit`` findings of those of these audits that may go."""
        batch = (
            sa.select(audit_findings.c.audit_id, audit_findings.c.tenant_id)
            .where(audit_findings.c.audit_id.in_(_superseded_audits(audit_ids)))
            .limit(limit)
        )
        async with self._tx() as conn:
            return await _delete_keys(conn, audit_findings.c.audit_id, audit_findings.c.tenant_id, batch)

    async def delete_audits(self, audit_ids: Sequence[int]) -> int:
        """Delete those of these audits that may go and have no finding left."""
        async with self._tx() as conn:
            deleted = await conn.execute(
                audits.delete().where(
                    audits.c.id.in_(_superseded_audits(audit_ids)),
                    ~sa.exists().where(audit_findings.c.audit_id == audits.c.id),
                )
            )
        return int(deleted.rowcount)

    async def delete_schema_checks(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` schema-check rows older than ``before`` (left by audits that died)."""
        batch = (
            sa.select(schema_checks.c.token, schema_checks.c.tenant_id)
            .where(schema_checks.c.created_at < before)
            .limit(limit)
        )
        async with self._tx() as conn:
            return await _delete_keys(conn, schema_checks.c.token, schema_checks.c.tenant_id, batch)

    # -- the dry run --------------------------------------------------------------------------------
    async def count_prunable(
        self, rollout_ids: Sequence[int], audit_ids: Sequence[int], checks_before: datetime, chunk: int
    ) -> dict[str, int]:
        """What the deletes above would remove now, in one read-only transaction."""
        kinds = ("rollouts", "runs", "idempotency_keys", "audits", "findings", "schema_checks")
        counts = dict.fromkeys(kinds, 0)
        run = tenant_runs.alias("run")
        count = sa.func.count()
        going = sa.func.sum(sa.case((sa.and_(*_run_may_go(run)), 1), else_=0))
        async with self._tx() as conn:
            for ids in _chunks(rollout_ids, chunk):
                per_rollout = (
                    await conn.execute(
                        sa.select(run.c.rollout_id, count, going)
                        .where(run.c.rollout_id.in_(ids))
                        .group_by(run.c.rollout_id)
                    )
                ).all()
                counts["runs"] += sum(int(n) for _, _, n in per_rollout)
                emptied = set(ids) - {int(rid) for rid, total, n in per_rollout if n != total}
                counts["rollouts"] += len(emptied)
                counts["idempotency_keys"] += (
                    await conn.execute(
                        sa.select(count).where(api_idempotency.c.rollout_id.in_(sorted(emptied)))
                    )
                ).scalar_one()
            for ids in _chunks(audit_ids, chunk):
                superseded = _superseded_audits(ids)
                counts["audits"] += (
                    await conn.execute(sa.select(count).select_from(superseded.subquery()))
                ).scalar_one()
                counts["findings"] += (
                    await conn.execute(sa.select(count).where(audit_findings.c.audit_id.in_(superseded)))
                ).scalar_one()
            counts["schema_checks"] = (
                await conn.execute(sa.select(count).where(schema_checks.c.created_at < checks_before))
            ).scalar_one()
        return {k: int(v) for k, v in counts.items()}
