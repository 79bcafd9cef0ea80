"""Which rollouts and audits ``prune`` may touch: the pure rules of ``orchestrator/retention.py``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.audit import AuditKind
from orchestrator.exceptions import UserError
from orchestrator.models import RolloutState
from orchestrator.retention import (
    AuditAge,
    PruneCounts,
    Retention,
    RolloutAge,
    prunable_audits,
    prunable_rollouts,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def _closed(rid: int, days: float, state: RolloutState = RolloutState.SUCCEEDED) -> RolloutAge:
    return RolloutAge(id=rid, state=state, finished_at=_ago(days), active_runs=False)


def test_only_closed_rollouts_older_than_the_cutoff() -> None:
    rollouts = [
        _closed(1, 40),
        _closed(2, 40, RolloutState.HALTED),  # at rest, waiting for a resume that never came
        RolloutAge(id=3, state=RolloutState.RUNNING, finished_at=None, active_runs=True),
        RolloutAge(id=4, state=RolloutState.HALTED, finished_at=None, active_runs=True),  # runs ending
        RolloutAge(id=5, state=RolloutState.FAILED, finished_at=_ago(40), active_runs=True),  # a retry
        _closed(6, 5),
    ]
    assert prunable_rollouts(rollouts, Retention(older_than_days=30), NOW) == [1, 2]
    assert prunable_rollouts(rollouts, Retention(older_than_days=0), NOW) == [1, 2, 6]


def test_keep_last_keeps_the_newest_closed_rollouts_whatever_their_age() -> None:
    rollouts = [_closed(i, 100 - i) for i in range(1, 6)]
    rollouts.append(RolloutAge(id=9, state=RolloutState.RUNNING, finished_at=None, active_runs=True))
    assert prunable_rollouts(rollouts, Retention(older_than_days=0, keep_last=2), NOW) == [1, 2, 3]
    assert prunable_rollouts(rollouts, Retention(older_than_days=0, keep_last=10), NOW) == []


def test_the_latest_audit_of_each_kind_stays() -> None:
    audits = [
        AuditAge(id=1, kind=AuditKind.REVISION, created_at=_ago(50)),
        AuditAge(id=2, kind=AuditKind.SCHEMA, created_at=_ago(50)),
        AuditAge(id=3, kind=AuditKind.REVISION, created_at=_ago(40)),
        AuditAge(id=4, kind=AuditKind.REVISION, created_at=_ago(1)),
    ]
    assert prunable_audits(audits, Retention(older_than_days=30), NOW) == [1, 3]
    assert prunable_audits(audits[:3], Retention(older_than_days=0), NOW) == [1]
    assert prunable_audits([], Retention(older_than_days=0), NOW) == []


@pytest.mark.parametrize(
    ("days", "keep", "needle"),
    [(-1, 0, "--older-than must be between 0 and 36500 days, not -1"), (1, -2, "--keep-last must be 0")],
)
def test_bad_numbers_are_user_errors(days: int, keep: int, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        Retention(older_than_days=days, keep_last=keep)


def test_the_json_report() -> None:
    rule = Retention(older_than_days=7, keep_last=3)
    report = PruneCounts(rollouts=1, runs=5, audits=2, findings=9, batches=4).to_json(rule, NOW)
    assert report == {
        "rollouts": 1,
        "runs": 5,
        "audits": 2,
        "findings": 9,
        "idempotency_keys": 0,
        "schema_checks": 0,
        "batches": 4,
        "dry_run": False,
        "older_than_days": 7,
        "keep_last": 3,
        "cutoff": "2026-05-25T00:00:00+00:00",
    }
    assert PruneCounts(runs=1, dry_run=True).describe().startswith("would delete 0 rollout(s), 1 run(s)")
