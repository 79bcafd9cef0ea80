"""Rollouts over real PostgreSQL tenants: databases per tenant and schemas per tenant."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from orchestrator.models import Command, Selector
from tests.conftest import DatabaseFactory
from tests.support.harness import Harness, alembic, tenant_revision

HEAD = "0004"


def _agree(harness: Harness, report: dict[str, object], where: dict[str, tuple[str, str | None]]) -> None:
    """Every tenant's recorded to_revision is what its own version table says."""
    for row in report["tenants"]:  # type: ignore[attr-defined]
        url, schema = where[row["tenant"]]
        assert row["to_revision"] == tenant_revision(url, schema), row["tenant"]


def test_database_per_tenant_upgrade_downgrade_stamp(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    urls = tenant_dbs(22)
    where = {}
    for i, url in enumerate(urls):
        tid = f"db-{i:02d}"
        harness.register(tid, url, tags=("even",) if i % 2 == 0 else ("odd",))
        where[tid] = (url, None)

    up = harness.rollout(Command.UPGRADE, "head")
    assert up["state"] == "succeeded"
    assert up["counts"]["succeeded"] == 22
    assert all(t["applied"] == ["0001", "0002", "0003", HEAD] for t in up["tenants"])
    _agree(harness, up, where)

    down = harness.rollout(Command.DOWNGRADE, "-1", Selector(tags=("even",)))
    assert down["counts"]["succeeded"] == 11 and len(down["tenants"]) == 11
    assert {t["to_revision"] for t in down["tenants"]} == {"0003"}
    _agree(harness, down, where)

    stamp = harness.rollout(Command.STAMP, "0002", Selector(tags=("odd",)))
    assert stamp["state"] == "succeeded"
    _agree(harness, stamp, where)
    assert {tenant_revision(u) for u, _ in where.values()} == {"0003", "0002"}

    # stamping back and upgrading: 0002-stamped tenants re-run 0003 on a schema that has its index
    again = harness.rollout(Command.STAMP, "head", Selector(tags=("odd",)))
    assert again["counts"]["succeeded"] == 11
    final = harness.rollout(Command.UPGRADE, "head")
    assert final["counts"] == {
        "queued": 0,
        "running": 0,
        "succeeded": 11,
        "failed": 0,
        "skipped": 11,
        "halted": 0,
        "cancelled": 0,
    }
    skipped = [t for t in final["tenants"] if t["status"] == "skipped"]
    assert {(t["error"], t["note"]) for t in skipped} == {(None, "already at target")}
    _agree(harness, final, where)
    assert {tenant_revision(u) for u, _ in where.values()} == {HEAD}


def test_schema_per_tenant(harness: Harness, dbs: DatabaseFactory) -> None:
    url = dbs.url(dbs.create())
    where = {}
    for i in range(21):
        schema = f"tenant_{i:02d}" if i % 3 else f"Tenant-{i:02d}"  # mixed case and '-' need quoting
        harness.register(f"s-{i:02d}", url, schema=schema)
        where[f"s-{i:02d}"] = (url, schema)

    up = harness.rollout(Command.UPGRADE, "head")
    assert up["counts"]["succeeded"] == 21, up
    _agree(harness, up, where)
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'invoices'"
        ).fetchone()
        public = conn.execute("SELECT to_regclass('public.accounts')").fetchone()
    assert tables == (21,)
    assert public == (None,), "no tenant's tables may land in public"

    down = harness.rollout(Command.DOWNGRADE, "0002")
    assert {t["to_revision"] for t in down["tenants"]} == {"0002"}
    _agree(harness, down, where)
    stamp = harness.rollout(Command.STAMP, "0003", Selector(tenants=("s-00", "s-01")))
    _agree(harness, stamp, where)
    up = harness.rollout(Command.UPGRADE, "head")
    assert up["state"] == "succeeded"
    assert {tenant_revision(u, s) for u, s in where.values()} == {HEAD}


def test_noop_rollout_skips_without_dispatch(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    for i, url in enumerate(tenant_dbs(5)):
        harness.register(f"t{i}", url)
    harness.rollout(Command.UPGRADE, "head")
    noop = harness.rollout(Command.UPGRADE, "head")
    assert noop["counts"]["skipped"] == 5
    assert all(t["worker"] is None and t["duration_ms"] == 0 for t in noop["tenants"])


def test_tenants_seen_behind_are_not_read_before_planning(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    """Where tenantctl itself last left a tenant short of the target, the plan queues it without a
    preflight read; its unit reads the revision under the lock and, finding the tenant moved to the
    target behind tenantctl's back, records it skipped (by a worker, not by the plan). A tenant never
    seen, or seen at the target, is still read, and skipped by the plan."""
    urls = tenant_dbs(4)
    for i, url in enumerate(urls[:3]):
        harness.register(f"k{i}", url)
    first = harness.rollout(Command.UPGRADE, "0002")
    assert first["counts"]["succeeded"] == 3
    alembic(urls[1], "upgrade", "head")  # k1 moved behind tenantctl's back
    harness.rollout(Command.UPGRADE, "head", Selector(tenants=("k2",)))  # k2 seen at head
    alembic(urls[3], "upgrade", "head")
    harness.register("new", urls[3])  # never seen, already at head

    report = harness.rollout(Command.UPGRADE, "head")
    by = {t["tenant"]: t for t in report["tenants"]}
    assert report["state"] == "succeeded"
    assert by["k0"]["status"] == "succeeded" and by["k0"]["applied"] == ["0003", HEAD]
    assert by["k0"]["from_revision"] == "0002"
    # planned unread: a unit found it at head, under its lock
    assert by["k1"]["status"] == "skipped" and by["k1"]["note"] == "already at target"
    assert by["k1"]["worker"] is not None and by["k1"]["from_revision"] == HEAD
    # read before planning: skipped by the plan, no unit ran
    for tid in ("k2", "new"):
        assert by[tid]["status"] == "skipped" and by[tid]["worker"] is None, tid
    assert {tenant_revision(u) for u in urls} == {HEAD}
