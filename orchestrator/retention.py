"""How much history the control DB keeps: which rollouts and audits ``tenantctl prune`` may delete (pure),
and the verb that deletes them in batches.

The rules, each one a test in ``tests/integration/test_prune.py``:

- a rollout in progress is never touched: one not closed yet (``running``, or halted/cancelled with runs
  still ending), or with any queued or running run;
- ``--keep-last N`` keeps the N newest closed rollouts whole, whatever their age; the others closed more
  than DAYS ago lose their runs;
- except each tenant's **latest attempt** across all rollouts (what ``status``, ``retry`` and the API's
  tenant page read) and its latest ``succeeded``/``skipped`` run (where planning last saw it: it spares a
  read). A rollout is deleted once none of its runs is left, with the API idempotency keys that name it;
- audits created more than DAYS ago go with their findings, except the latest audit of each kind (what
  ``audit show`` compares with).

Which rollouts and audits qualify is decided here, over plain records; which of their runs may go is
decided by the database at each delete (``controldb/prune.py``), so a rollout retried or a run added
meanwhile is never deleted from under its command. Each batch is its own transaction, so a prune of
millions of rows never holds a lock for long.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .audit import AuditKind
from .exceptions import UserError
from .models import RolloutState

if TYPE_CHECKING:
    from .controldb.prune import PruneStore

BATCH = 5_000
"""Rows deleted per transaction by default."""
MAX_BATCH = 10_000
"""A batch's keys are bound as parameters of one statement (SQLite and asyncpg cap those at 32,766)."""
MAX_DAYS = 36_500
ROLLOUTS_PER_CHUNK = 500
"""Rollout ids bound into one statement at most (SQLite caps the parameters of a statement)."""
SCHEMA_CHECK_GRACE = timedelta(days=1)
"""Workers' schema-check rows are dropped by the audit that asked for them; one left older than this
belongs to an audit that died (none lasts a day), so even ``--older-than 0`` spares those younger."""


@dataclass(frozen=True, kw_only=True)
class Retention:
    """What to keep: history younger than ``older_than_days`` and the ``keep_last`` newest closed
    rollouts. Raises :class:`UserError` for a negative number of days or rollouts."""

    older_than_days: int
    keep_last: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.older_than_days <= MAX_DAYS:
            raise UserError(f"--older-than must be between 0 and {MAX_DAYS} days, not {self.older_than_days}")
        if self.keep_last < 0:
            raise UserError(f"--keep-last must be 0 or more rollouts, not {self.keep_last}")

    def cutoff(self, now: datetime) -> datetime:
        return now - timedelta(days=self.older_than_days)


@dataclass(frozen=True, kw_only=True)
class RolloutAge:
    id: int
    state: RolloutState
    finished_at: datetime | None
    active_runs: bool
    """Whether any of its runs is queued or running."""

    @property
    def at_rest(self) -> bool:
        closed = self.state is not RolloutState.RUNNING and self.finished_at is not None
        return closed and not self.active_runs


@dataclass(frozen=True, kw_only=True)
class AuditAge:
    id: int
    kind: AuditKind
    created_at: datetime


def prunable_rollouts(rollouts: Iterable[RolloutAge], rule: Retention, now: datetime) -> list[int]:
    """Ids of the rollouts whose runs may go (all but each tenant's latest attempt), oldest first."""
    at_rest = sorted((r for r in rollouts if r.at_rest), key=lambda r: r.id, reverse=True)
    cutoff = rule.cutoff(now)
    return sorted(
        r.id for r in at_rest[rule.keep_last :] if r.finished_at is not None and r.finished_at < cutoff
    )


def prunable_audits(audits: Iterable[AuditAge], rule: Retention, now: datetime) -> list[int]:
    """Ids of the audits that may go with their findings: older than the cutoff, not the latest of
    their kind. Oldest first."""
    records = list(audits)
    latest = {kind: max(a.id for a in records if a.kind is kind) for kind in {a.kind for a in records}}
    cutoff = rule.cutoff(now)
    return sorted(a.id for a in records if a.created_at < cutoff and a.id != latest[a.kind])


@dataclass(frozen=True, kw_only=True)
class PruneCounts:
    """What a prune deleted (or, ``dry_run``, would delete); ``batches``: transactions that deleted."""

    rollouts: int = 0
    runs: int = 0
    audits: int = 0
    findings: int = 0
    idempotency_keys: int = 0
    schema_checks: int = 0
    batches: int = 0
    dry_run: bool = False

    def to_json(self, rule: Retention, now: datetime) -> dict[str, Any]:
        return {
            **asdict(self),
            "older_than_days": rule.older_than_days,
            "keep_last": rule.keep_last,
            "cutoff": rule.cutoff(now).isoformat(),
        }

    def describe(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        line = (
            f"{verb} {self.rollouts:,} rollout(s), {self.runs:,} run(s), {self.audits:,} audit(s) "
            f"({self.findings:,} finding(s))"
        )
        extra = [
            f"{n:,} {what}"
            for n, what in (
                (self.idempotency_keys, "idempotency key(s)"),
                (self.schema_checks, "stale schema check(s)"),
            )
            if n
        ]
        batches = "" if self.dry_run else f" in {self.batches:,} batch(es)"
        return line + (", " + ", ".join(extra) if extra else "") + batches


def _chunks(ids: Sequence[int], size: int) -> Iterable[list[int]]:
    for at in range(0, len(ids), size):
        yield list(ids[at : at + size])


async def prune(
    store: PruneStore,
    rule: Retention,
    *,
    now: datetime | None = None,
    batch_size: int = BATCH,
    dry_run: bool = False,
) -> PruneCounts:
    """Delete the history ``rule`` lets go, ``batch_size`` rows per transaction (``dry_run``: count it,
    write nothing)."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise UserError(f"--batch-size must be between 1 and {MAX_BATCH} rows, not {batch_size}")
    now = now or datetime.now(UTC)
    rollout_ids = prunable_rollouts(await store.retention_rollouts(), rule, now)
    audit_ids = prunable_audits(await store.retention_audits(), rule, now)
    checks_before = min(rule.cutoff(now), now - SCHEMA_CHECK_GRACE)
    chunk = min(batch_size, ROLLOUTS_PER_CHUNK)
    if dry_run:
        counts = await store.count_prunable(rollout_ids, audit_ids, checks_before, chunk)
        return PruneCounts(dry_run=True, **counts)
    runs = rollouts = keys = findings = audits = checks = batches = 0
    for ids in _chunks(rollout_ids, chunk):
        while n := await store.delete_runs(ids, batch_size):
            runs, batches = runs + n, batches + 1
            if n < batch_size:
                break
        deleted, dropped_keys = await store.delete_empty_rollouts(ids)
        rollouts, keys, batches = rollouts + deleted, keys + dropped_keys, batches + bool(deleted)
    for ids in _chunks(audit_ids, chunk):
        while n := await store.delete_findings(ids, batch_size):
            findings, batches = findings + n, batches + 1
            if n < batch_size:
                break
        deleted = await store.delete_audits(ids)
        audits, batches = audits + deleted, batches + bool(deleted)
    while n := await store.delete_schema_checks(checks_before, batch_size):
        checks, batches = checks + n, batches + 1
        if n < batch_size:
            break
    return PruneCounts(
        rollouts=rollouts,
        runs=runs,
        audits=audits,
        findings=findings,
        idempotency_keys=keys,
        schema_checks=checks,
        batches=batches,
    )
