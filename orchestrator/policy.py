"""Canary, waves and failure budgets: pure decisions over a rollout's runs.

A rollout's runs carry a wave number: wave 0 is the canary (if any), then waves 1, 2, … of
``batch_size``. A wave opens only when every earlier wave is at rest; the canary must succeed whole;
the failure budget halts the rollout as soon as it is crossed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .exceptions import UserError
from .models import Policy, RunStatus, Tenant

CANARY_WAVE = 0


def parse_rate(raw: str) -> float:
    """``5%``, ``5`` (percent) or ``0.05`` (fraction) → 0.05."""
    text = raw.strip()
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise UserError(
            f"invalid --max-failure-rate {raw!r}: give a percentage like 5% or a fraction like 0.05"
        ) from None
    fraction = value / 100 if text.endswith("%") or value > 1 else value
    if not 0 <= fraction <= 1:
        raise UserError(f"invalid --max-failure-rate {raw!r}: must be between 0% and 100%")
    return fraction


def assign_waves(tenants: Sequence[Tenant], policy: Policy) -> dict[str, int]:
    """Wave of every tenant: the canary set first (``canary`` first ids, or ``canary_tag``), then
    batches of ``batch_size`` in id order."""
    ordered = sorted(tenants, key=lambda t: t.id)
    if policy.canary_tag:
        canary = [t.id for t in ordered if policy.canary_tag in t.tags]
        if not canary:
            raise UserError(f"--canary-tag {policy.canary_tag}: no selected tenant has this tag")
    else:
        canary = [t.id for t in ordered[: policy.canary]]
    waves = dict.fromkeys(canary, CANARY_WAVE)
    rest = [t.id for t in ordered if t.id not in waves]
    size = policy.batch_size or max(len(rest), 1)
    for i, tenant_id in enumerate(rest):
        waves[tenant_id] = 1 + i // size
    return waves


@dataclass(frozen=True, kw_only=True)
class Decision:
    """``halt``: why the rollout must stop now (None to go on); ``open_wave``: the wave whose queued runs
    may start (None when none may)."""

    halt: str | None = None
    open_wave: int | None = None


def gated(policy: Policy) -> bool:
    """Whether the policy has anything to decide (waves, a canary, a budget): a plain rollout is one wave."""
    return bool(
        policy.canary
        or policy.canary_tag
        or policy.batch_size
        or policy.max_failures is not None
        or policy.max_failure_rate is not None
    )


def _tenants(n: int) -> str:
    return f"{n} tenant{'' if n == 1 else 's'}"


def decide(policy: Policy, runs: Sequence[tuple[int, RunStatus]], total: int) -> Decision:
    """Decide from (wave, status) of each tenant's latest attempt."""
    failed = sum(1 for _, status in runs if status is RunStatus.FAILED)
    if policy.max_failures is not None and failed >= policy.max_failures:
        return Decision(
            halt=f"failure budget crossed: {failed} tenants failed (--max-failures {policy.max_failures})"
        )
    if policy.max_failure_rate is not None and total and failed / total > policy.max_failure_rate:
        return Decision(
            halt=f"failure budget crossed: {failed} of {_tenants(total)} failed "
            f"({failed / total:.1%} > --max-failure-rate {policy.max_failure_rate:.1%})"
        )
    canary = [status for wave, status in runs if wave == CANARY_WAVE]
    canary_failed = sum(1 for s in canary if s is RunStatus.FAILED)
    if canary_failed:
        return Decision(halt=f"canary failed: {canary_failed} of {len(canary)} canary tenants failed")
    by_wave: dict[int, list[RunStatus]] = {}
    for wave, status in runs:
        by_wave.setdefault(wave, []).append(status)
    for wave in sorted(by_wave):
        statuses = by_wave[wave]
        if any(s is RunStatus.QUEUED for s in statuses):
            return Decision(open_wave=wave)
        if any(s is RunStatus.RUNNING for s in statuses):
            return Decision()  # this wave is still running: the next one waits
    return Decision()
