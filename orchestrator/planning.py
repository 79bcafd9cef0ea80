"""Planning a rollout: which selected tenants get a task, which are skipped as already at the target,
and which cannot be reached. Pure: the revisions were read before, nothing is written here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .models import ErrorClass, Tenant
from .revisions import RevisionRead
from .scripts import Target

ALREADY_AT_TARGET = "already at target"


@dataclass(frozen=True, kw_only=True)
class Plan:
    queued: list[tuple[str, str | None]] = field(default_factory=list)
    skipped: list[tuple[str, str | None, str]] = field(default_factory=list)
    failed: list[tuple[str, ErrorClass, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.queued) + len(self.skipped) + len(self.failed)


def plan(
    tenants: Sequence[Tenant],
    reads: Mapping[str, RevisionRead],
    target: Target,
    unusable: Mapping[str, tuple[ErrorClass, str]] | None = None,
) -> Plan:
    """Queue every tenant that is reachable and not already at an absolute target."""
    result = Plan()
    unusable = unusable or {}
    for tenant in tenants:
        if tenant.id in unusable:
            cls, message = unusable[tenant.id]
            result.failed.append((tenant.id, cls, message))
            continue
        read = reads[tenant.id]
        current = ",".join(read.heads) or None
        if not read.ok:
            result.failed.append((tenant.id, read.error_class or ErrorClass.UNREACHABLE, read.error or ""))
        elif target.reached_by(read.heads):
            result.skipped.append((tenant.id, current, ALREADY_AT_TARGET))
        else:
            result.queued.append((tenant.id, current))
    return result
