"""``tenantctl prune`` on both control-DB backends: what it deletes, what it must never delete, batches,
the dry run and bad input. The history is written through the store (no tenant is migrated), aged by
moving its timestamps back, and pruned through the CLI in a subprocess, as a user runs it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.audit import AuditKind, Finding, State
from orchestrator.controldb.engine import utcnow
from orchestrator.controldb.schema import (
    api_idempotency,
    audit_findings,
    audits,
    rollouts,
    schema_checks,
    tenant_runs,
)
from orchestrator.controldb.store import Store
from orchestrator.models import Command, ErrorClass, RunStatus
from orchestrator.planning import Plan
from orchestrator.retention import PruneCounts, Retention, prune
from tests.conftest import MIGRATIONS_INI
from tests.support.harness import Harness

TABLES = (rollouts, tenant_runs, audits, audit_findings, api_idempotency, schema_checks)


@pytest.fixture(params=["postgresql", "sqlite"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if request.param == "postgresql":
        return Harness(request.getfixturevalue("control_url"), MIGRATIONS_INI, tmp_path)
    harness = Harness(f"sqlite:///{tmp_path / 'control.db'}", MIGRATIONS_INI, tmp_path)
    harness.with_store(lambda s: s.migrate())
    return harness


# -- writing history (each helper within one `h.with_store`) ----------------------------------------------
async def _rollout(
    s: Store,
    seen: Sequence[str] = (),
    failed: Sequence[str] = (),
    queued: Sequence[str] = (),
    days_ago: float = 0,
) -> int:
    """A rollout whose tenants ended ``skipped`` at 0004 (``seen``), ``failed``, or are still ``queued``;
    closed (unless some are queued) ``days_ago`` days ago."""
    plan = Plan(
        queued=[(t, "0003") for t in queued],
        skipped=[(t, "0004", "already at 0004") for t in seen],
        failed=[(t, ErrorClass.MIGRATION_ERROR, "boom") for t in failed],
    )
    rid = await s.create_rollout(
        command=Command.UPGRADE,
        target="head",
        selection={},
        created_by="tests",
        parallel=1,
        plan=plan,
        hosts={},
    )
    await s.finish_if_done(rid)
    await _backdate(s, rid, days_ago)
    return rid


async def _backdate(s: Store, rollout_id: int, days: float) -> None:
    when = utcnow() - timedelta(days=days)
    async with s._tx() as conn:
        await conn.execute(
            rollouts.update()
            .where(rollouts.c.id == rollout_id)
            .values(
                created_at=when,
                finished_at=sa.case((rollouts.c.finished_at.is_(None), None), else_=when),
            )
        )


async def _retry(s: Store, rollout_id: int, failed: Sequence[str], days_ago: float) -> None:
    """Another failed attempt at these tenants within the rollout (what `retry` records)."""
    plan = Plan(failed=[(t, ErrorClass.MIGRATION_ERROR, "boom again") for t in failed])
    await s.add_attempts(rollout_id, plan, {})
    await s.finish_if_done(rollout_id)
    await _backdate(s, rollout_id, days_ago)


async def _audit(s: Store, kind: AuditKind, tenants: Sequence[str], days_ago: float) -> int:
    aid = await s.save_audit(
        kind=kind,
        created_by="tests",
        selection={},
        head="0004",
        counts={"at_head": len(tenants)},
        drift=0,
        findings=[Finding(tenant_id=t, state=State.AT_HEAD, revision="0004") for t in tenants],
    )
    async with s._tx() as conn:
        when = utcnow() - timedelta(days=days_ago)
        await conn.execute(audits.update().where(audits.c.id == aid).values(created_at=when))
    return aid


async def _idempotency_key(s: Store, key: str, rollout_id: int) -> None:
    await s.claim_idempotency("api", key, "0" * 64)
    await s.settle_idempotency("api", key, rollout_id)


async def _schema_check(s: Store, token: str, days_ago: float) -> None:
    await s.put_schema_check(token, "a", "{}")
    async with s._tx() as conn:
        when = utcnow() - timedelta(days=days_ago)
        await conn.execute(
            schema_checks.update().where(schema_checks.c.token == token).values(created_at=when)
        )


# -- reading it back ------------------------------------------------------------------------------------
def _rows(h: Harness) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every history table, for "nothing changed" and "what is left"."""

    async def go(s: Store) -> dict[str, list[tuple[Any, ...]]]:
        async with s._tx() as conn:
            return {
                t.name: sorted(tuple(r) for r in (await conn.execute(sa.select(t))).all()) for t in TABLES
            }

    return h.with_store(go)


def _runs(h: Harness) -> set[tuple[int, str, int]]:
    """(rollout, tenant, attempt) of every run left."""
    return {(r[1], r[2], r[3]) for r in _rows(h)["tenant_runs"]}


def _prune(h: Harness, *args: str) -> dict[str, Any]:
    done = h.cli("prune", *args, "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _verb(h: Harness, days: int, keep_last: int = 0, dry_run: bool = False) -> PruneCounts:
    """``retention.prune`` in this process, as the CLI calls it."""
    rule = Retention(older_than_days=days, keep_last=keep_last)
    return h.with_store(lambda s: prune(s, rule, dry_run=dry_run))


def test_prune_keeps_what_must_stay_and_the_dry_run_writes_nothing(h: Harness) -> None:
    async def history(s: Store) -> tuple[int, ...]:
        r1 = await _rollout(s, seen=["a", "b", "c"], days_ago=30)
        r2 = await _rollout(s, seen=["b"], failed=["a"], days_ago=20)
        await _retry(s, r2, ["a"], days_ago=20)
        r3 = await _rollout(s, failed=["c"], days_ago=10)
        r4 = await _rollout(s, queued=["d"], days_ago=40)  # in progress, created long ago
        r5 = await _rollout(s, seen=["a", "b"], days_ago=1)
        for key, rid in (("k2", r2), ("k5", r5)):
            await _idempotency_key(s, key, rid)
        await _schema_check(s, "left-by-a-dead-audit", days_ago=10)
        await _schema_check(s, "an-audit-running-now", days_ago=0)
        audit_ids = [
            await _audit(s, AuditKind.REVISION, ["a", "b", "c"], days_ago=30),
            await _audit(s, AuditKind.REVISION, ["a", "b"], days_ago=40),
            await _audit(s, AuditKind.SCHEMA, ["a"], days_ago=30),  # old, but the only one of its kind
            await _audit(s, AuditKind.REVISION, ["a"], days_ago=1),
        ]
        return r1, r2, r3, r4, r5, *audit_ids

    r1, r2, r3, r4, r5, old_revision, older_revision, only_schema, latest_revision = h.with_store(history)
    before = _rows(h)

    planned = _prune(h, "--older-than", "5", "--dry-run")
    assert _rows(h) == before
    expected = {
        "rollouts": 1,
        "runs": 5,
        "audits": 2,
        "findings": 5,
        "idempotency_keys": 1,
        "schema_checks": 1,
        "dry_run": True,
    }
    assert {k: planned[k] for k in expected} == expected

    done = _prune(h, "--older-than", "5")
    assert {k: done[k] for k in expected} == {**expected, "dry_run": False}
    assert _runs(h) == {
        (r1, "c", 1),  # c's latest skipped run: where planning last saw it
        (r3, "c", 1),  # c's latest attempt
        (r4, "d", 1),  # in progress: untouched
        (r5, "a", 1),
        (r5, "b", 1),
    }
    left = _rows(h)
    assert [r[0] for r in left["rollouts"]] == [r1, r3, r4, r5]
    assert r2 not in {r[1] for r in left["tenant_runs"]}  # r2 had nothing left: gone
    assert [(r[0], r[1]) for r in left["api_idempotency"]] == [("api", "k5")]
    assert [r[0] for r in left["audits"]] == [only_schema, latest_revision]
    assert {r[0] for r in left["audit_findings"]} == {only_schema, latest_revision}
    assert not {old_revision, older_revision} & {r[0] for r in left["audit_findings"]}
    assert [r[0] for r in left["schema_checks"]] == ["an-audit-running-now"]

    assert _verb(h, 5) == PruneCounts()  # nothing more to do

    latest = h.with_store(lambda s: s.rollout_runs(r3))  # what `status r3` shows and `retry r3` retries
    assert [(r.tenant_id, r.status) for r in latest] == [("c", RunStatus.FAILED)]


def test_keep_last_and_age(h: Harness) -> None:
    async def history(s: Store) -> list[int]:
        return [
            *[await _rollout(s, seen=["a"], failed=["b"], days_ago=d) for d in (30, 20, 10)],
            await _rollout(s, seen=["a"], days_ago=1),
        ]

    r1, r2, r3, r4 = h.with_store(history)

    assert _verb(h, 0, keep_last=4, dry_run=True) == PruneCounts(dry_run=True)
    done = _verb(h, 0, keep_last=3)
    assert (done.rollouts, done.runs) == (1, 2)  # r1 only: r2 and r3 are among the 3 newest
    assert _runs(h) == {(r2, "a", 1), (r2, "b", 1), (r3, "a", 1), (r3, "b", 1), (r4, "a", 1)}

    done = _verb(h, 15)
    assert (done.rollouts, done.runs) == (1, 2)
    assert _runs(h) == {(r3, "a", 1), (r3, "b", 1), (r4, "a", 1)}  # b's latest attempt stays in r3
    assert [r[0] for r in _rows(h)["rollouts"]] == [r3, r4] and r1 < r2


def test_small_batches_still_delete_everything(h: Harness) -> None:
    tenants = [f"t{i}" for i in range(7)]

    async def history(s: Store) -> int:
        for _ in range(3):
            await _rollout(s, seen=tenants, days_ago=10)
        for _ in range(2):
            await _audit(s, AuditKind.REVISION, tenants, days_ago=10)
        return await _rollout(s, seen=tenants, days_ago=10)

    newest = h.with_store(history)

    done = _prune(h, "--older-than", "0", "--batch-size", "2")
    assert (done["rollouts"], done["runs"], done["audits"], done["findings"]) == (3, 21, 1, 7)
    # 21 runs two at a time, 3 rollouts two at a time, 7 findings two at a time, then the audit
    assert done["batches"] == 11 + 2 + 4 + 1
    assert {r[0] for r in _rows(h)["rollouts"]} == {newest}
    assert _runs(h) == {(newest, t, 1) for t in tenants}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ("--older-than", "-1"),
            "'--older-than': Input should be greater than or equal to 0",
        ),
        (("--older-than", "7", "--keep-last", "-1"), "Invalid value for '--keep-last'"),
        ((), "Missing option '--older-than'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    h = Harness(f"sqlite:///{tmp_path / 'control.db'}", MIGRATIONS_INI, tmp_path)
    done = h.cli("prune", *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr
    assert not (tmp_path / "control.db").exists()  # refused before the control DB is opened
