"""What the HTTP service alone needs of the control database: idempotent rollout creation and the pages
of its lists."""

from __future__ import annotations

import enum

import sqlalchemy as sa

from ..audit import AuditRecord
from ..exceptions import ConstraintViolation
from ..models import RunStatus, TenantRun
from .audits import AuditStore
from .engine import StoreBase, utcnow
from .runs import RunStore
from .schema import api_idempotency, audits, rollouts, tenant_runs


class Seen(enum.Enum):
    """What an ``Idempotency-Key`` was already used for."""

    NEW = "new"  # first use: the caller goes on and creates the rollout
    SAME = "same"  # the same body: answer with the rollout it created (None: still being created)
    OTHER = "other"  # another body: refused


class ServiceStore(RunStore, AuditStore, StoreBase):
    async def claim_idempotency(self, principal: str, key: str, body_sha256: str) -> tuple[Seen, int | None]:
        """Record the key before the rollout is created; the primary key decides between two requests
        sent at once, so only one of them creates a rollout."""
        try:
            async with self._tx() as conn:
                await conn.execute(
                    api_idempotency.insert().values(
                        principal=principal, key=key, body_sha256=body_sha256, created_at=utcnow()
                    )
                )
            return Seen.NEW, None
        except ConstraintViolation:
            pass
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    sa.select(api_idempotency).where(
                        api_idempotency.c.principal == principal, api_idempotency.c.key == key
                    )
                )
            ).first()
        if row is None:  # released by a failed first request in between: try once more
            return await self.claim_idempotency(principal, key, body_sha256)
        if row.body_sha256 != body_sha256:
            return Seen.OTHER, None
        return Seen.SAME, row.rollout_id

    async def settle_idempotency(self, principal: str, key: str, rollout_id: int | None) -> None:
        """Tie the key to the rollout it created, or release it when creation failed (the same request
        may then be sent again)."""
        where = (api_idempotency.c.principal == principal, api_idempotency.c.key == key)
        async with self._tx() as conn:
            if rollout_id is None:
                await conn.execute(api_idempotency.delete().where(*where))
            else:
                await conn.execute(api_idempotency.update().where(*where).values(rollout_id=rollout_id))

    async def count_rollouts(self) -> int:
        async with self._tx() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(rollouts))).scalar_one())

    async def list_audits(self, limit: int, offset: int = 0) -> tuple[list[AuditRecord], int]:
        """A page of audits, newest first, and how many there are."""
        async with self._tx() as conn:
            rows = (
                await conn.execute(sa.select(audits).order_by(audits.c.id.desc()).limit(limit).offset(offset))
            ).all()
            total = int((await conn.execute(sa.select(sa.func.count()).select_from(audits))).scalar_one())
        return [self._audit(r) for r in rows], total

    async def running_runs(self, rollout_id: int) -> list[TenantRun]:
        """The runs of a rollout being carried now (at most its parallelism): the live part of a feed."""
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(tenant_runs).where(
                        tenant_runs.c.rollout_id == rollout_id,
                        tenant_runs.c.status == RunStatus.RUNNING.value,
                    )
                )
            ).all()
        return [self._run(r) for r in rows]
