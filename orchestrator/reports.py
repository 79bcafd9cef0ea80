"""The JSON shapes users' scripts read, one builder each, used by the CLI's ``--json`` and by the API, so
the two never drift apart. (``status`` and ``rollouts`` live with their verbs in :mod:`coordinator`.)

Every builder masks: a tenant's URL shows its stored password as ``***``, never in clear.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from . import registry
from .audit import AuditRecord
from .controldb.store import ImportCounts
from .models import Command, Tenant, TenantRun
from .preview import PreviewRow, group
from .reaper import Reaped
from .revisions import RevisionRead


def tenant(t: Tenant) -> dict[str, Any]:
    """``tenants list --json``/``show --json``: one tenant, its password masked."""
    return {
        "id": t.id,
        "url": registry.display_url(t),
        "schema": t.schema,
        "tags": list(t.tags),
        "group": t.group,
        "enabled": t.enabled,
    }


def current(reads: Iterable[RevisionRead]) -> list[dict[str, Any]]:
    """``current --json``: each tenant's live revision, or why it could not be read."""
    return [{"tenant": r.tenant_id, "revision": ",".join(r.heads) or None, "error": r.error} for r in reads]


def reaped(rows: Iterable[Reaped]) -> list[dict[str, Any]]:
    """``reap --json``: the runs one reaper pass settled."""
    return [
        {
            "tenant_id": r.tenant_id,
            "rollout_id": r.rollout_id,
            "run_id": r.run_id,
            "status": r.status.value,
            "message": r.message,
        }
        for r in rows
    ]


def imported(counts: ImportCounts) -> dict[str, int]:
    """``tenants import --json``."""
    return {"created": counts.created, "updated": counts.updated, "unchanged": counts.unchanged}


def plan(command: Command, revision: str, rows: Sequence[PreviewRow], refused: str | None) -> dict[str, Any]:
    """``--dry-run --json``: every selected tenant's path, grouped, and the refusal the rollout would meet."""
    return {
        "command": command.value,
        "target": revision,
        "refused": refused,
        "groups": group(rows),
        "tenants": [
            {
                "tenant": r.tenant,
                "from_revision": r.step.from_revision,
                "to_revision": r.step.to_revision,
                "steps": r.step.steps,
                "error": r.error,
            }
            for r in rows
        ],
    }


def tenant_run(r: TenantRun) -> dict[str, Any]:
    """One attempt in a tenant's history across rollouts, with its stored (scrubbed) traceback."""
    return {
        "rollout_id": r.rollout_id,
        "run_id": r.id,
        "attempt": r.attempt,
        "status": r.status.value,
        "from_revision": r.from_revision,
        "to_revision": r.to_revision,
        "applied": list(r.applied),
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        "duration_ms": r.duration_ms,
        "worker": r.worker,
        "error_class": r.error_class.value if r.error_class else None,
        "error": r.error_message,
        "traceback": r.traceback,
    }


def audit_summary(a: AuditRecord) -> dict[str, Any]:
    """One stored audit without its findings (``GET /api/v1/audits``)."""
    return {
        "id": a.id,
        "kind": a.kind.value,
        "created_at": a.created_at.isoformat(),
        "created_by": a.created_by,
        "head": a.head,
        "counts": dict(a.counts),
        "drift": a.drift,
    }
