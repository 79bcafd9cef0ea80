"""Drift audits and the schema checks workers hand back."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..audit import AuditKind, AuditRecord, Finding
from ..exceptions import ConstraintViolation, UnknownAudit
from .engine import StoreBase, _aware, utcnow
from .schema import audit_findings, audits, schema_checks


class AuditStore(StoreBase):
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
        except ConstraintViolation:
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
