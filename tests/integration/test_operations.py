"""Rollout operations on real PostgreSQL: budgets, canary, retry/resume, transient retries, cancel,
dry run, offline SQL, history and the webhook."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import FIXTURE_ENVS
from tests.support.harness import Harness, tenant_revision
from tests.support.workers import wait_for


def _fleet(h: Harness, tenant_dbs: Callable[[int], list[str]], n: int, **fields: Any) -> list[str]:
    urls = tenant_dbs(n)
    for i, url in enumerate(urls):
        h.register(f"t{i}", url, **fields)
    return urls


def _poison(url: str, on: bool = True) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE poison (id int)" if on else "DROP TABLE poison")


def test_failure_budget_halts_then_retry_and_resume_finish(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    harness.alembic_ini = FIXTURE_ENVS / "failing" / "alembic.ini"
    urls = _fleet(harness, tenant_dbs, 8)
    _poison(urls[1])
    _poison(urls[2])
    result = harness.cli("upgrade", "head", "--parallel", "1", "--max-failures", "2", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "halted"
    assert "--max-failures 2" in report["halt_reason"] and "2 tenants failed" in report["halt_reason"]
    by = {t["tenant"]: t for t in report["tenants"]}
    assert [by[f"t{i}"]["status"] for i in range(8)] == ["succeeded", "failed", "failed"] + ["halted"] * 5
    assert all(tenant_revision(u) is None for u in urls[3:]), "halted tenants must be untouched"
    assert "halted" in result.stdout or "max-failures" in json.dumps(report)

    _poison(urls[1], on=False)
    _poison(urls[2], on=False)
    retried = json.loads(harness.cli("retry", str(report["id"]), "--json").stdout)
    assert retried["state"] == "halted"  # the untouched tenants wait for resume
    assert {t["tenant"]: t["attempt"] for t in retried["tenants"] if t["status"] == "succeeded"} == {
        "t0": 1,
        "t1": 2,
        "t2": 2,
    }
    resumed = harness.cli("resume", str(report["id"]), "--json")
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout)
    assert final["state"] == "succeeded" and final["counts"]["succeeded"] == 8
    assert [tenant_revision(u) for u in urls] == ["f003"] * 8
    history = json.loads(harness.cli("status", str(report["id"]), "--attempts", "--json").stdout)
    t1 = [(t["attempt"], t["status"]) for t in history["tenants"] if t["tenant"] == "t1"]
    assert t1 == [(1, "failed"), (2, "succeeded")]
    listed = json.loads(harness.cli("rollouts", "--json").stdout)
    assert listed[0]["id"] == report["id"] and listed[0]["state"] == "succeeded"


def test_canary_failure_stops_before_any_other_tenant(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    harness.alembic_ini = FIXTURE_ENVS / "failing" / "alembic.ini"
    urls = _fleet(harness, tenant_dbs, 6)
    _poison(urls[0])
    result = harness.cli("upgrade", "head", "--canary", "2", "--batch-size", "2", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["state"] == "halted" and report["halt_reason"].startswith("canary failed: 1 of 2")
    by = {t["tenant"]: t for t in report["tenants"]}
    assert by["t0"]["status"] == "failed"
    # the other canary ran beside t0: it finished, or the halt stopped it between two migrations; either
    # way its record is where it really rests
    assert by["t1"]["status"] in ("succeeded", "halted")
    assert by["t1"]["to_revision"] == tenant_revision(urls[1])
    assert {by[f"t{i}"]["status"] for i in range(2, 6)} == {"halted"}
    assert [tenant_revision(u) for u in urls[2:]] == [None] * 4
    assert {by[f"t{i}"]["wave"] for i in range(2, 6)} == {1, 2}


def test_waves_run_in_order(harness: Harness, tenant_dbs: Callable[[int], list[str]]) -> None:
    _fleet(harness, tenant_dbs, 5, tags=("beta",))
    report = harness.cli("upgrade", "head", "--canary-tag", "beta", "--json")
    assert report.returncode == 0
    assert {t["wave"] for t in json.loads(report.stdout)["tenants"]} == {0}
    report2 = json.loads(harness.cli("downgrade", "-1", "--batch-size", "2", "--json").stdout)
    runs = harness.with_store(lambda s: s.rollout_runs(report2["id"]))
    waves: dict[int, list[Any]] = {}
    for r in runs:
        waves.setdefault(r.wave, []).append(r)
    assert sorted(waves) == [1, 2, 3]
    for earlier, later in zip(sorted(waves), sorted(waves)[1:], strict=False):
        assert max(r.finished_at for r in waves[earlier]) <= min(r.started_at for r in waves[later])


def test_lock_timeout_is_retried_with_backoff_without_blocking_traffic(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    (url,) = _fleet(harness, tenant_dbs, 1)
    assert harness.cli("upgrade", "0003").returncode == 0
    holder = psycopg.connect(url)
    holder.execute("SELECT count(*) FROM accounts")  # an open transaction holding ACCESS SHARE on accounts
    latencies: list[float] = []
    stop = threading.Event()

    def traffic() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                t0 = time.monotonic()
                conn.execute("SELECT count(*) FROM accounts")
                latencies.append(time.monotonic() - t0)
                time.sleep(0.05)

    def release_once_blocked() -> None:
        """Let go once the migration's ALTER has been seen (it waits on the lock, then times out), not
        after a fixed delay: on a loaded machine the CLI may reach the migration only after it."""
        with psycopg.connect(url, autocommit=True) as watcher:
            deadline = time.monotonic() + 120
            while (
                time.monotonic() < deadline
                and not watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query ILIKE 'ALTER TABLE accounts ADD COLUMN email%'"
                ).fetchone()
            ):
                time.sleep(0.02)
        time.sleep(1.0)  # past the 0.3 s lock timeout: the first try has failed
        holder.rollback()

    reader = threading.Thread(target=traffic)
    reader.start()
    releaser = threading.Thread(target=release_once_blocked)
    releaser.start()
    try:
        result = harness.cli(
            "upgrade",
            "head",
            "--lock-timeout",
            "0.3",
            "--json",
            TENANTCTL_RETRY_BACKOFF="0.4",
            TENANTCTL_TRANSIENT_RETRIES="8",
        )
    finally:
        stop.set()
        reader.join()
        releaser.join()
        holder.close()
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)["tenants"][0]
    assert run["status"] == "succeeded" and run["retries"] >= 1, run
    assert tenant_revision(url) == "0004"
    assert max(latencies) < 1.5, f"other traffic waited {max(latencies):.2f}s behind the migration"


def test_lock_timeout_exhausted_is_a_transient_failure(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    (url,) = _fleet(harness, tenant_dbs, 1)
    assert harness.cli("upgrade", "0003").returncode == 0
    with psycopg.connect(url) as holder:
        holder.execute("SELECT count(*) FROM accounts")
        result = harness.cli(
            "upgrade",
            "head",
            "--lock-timeout",
            "0.2",
            "--json",
            TENANTCTL_RETRY_BACKOFF="0.1",
            TENANTCTL_TRANSIENT_RETRIES="2",
        )
    assert result.returncode == 1
    run = json.loads(result.stdout)["tenants"][0]
    assert run["error_class"] == "transient" and run["retries"] == 2 and run["to_revision"] == "0003"
    failed = json.loads(harness.cli("status", "--failed", "--error-class", "transient", "--json").stdout)
    assert [t["tenant"] for t in failed["tenants"]] == ["t0"]
    none = json.loads(harness.cli("status", "--failed", "--error-class", "unreachable", "--json").stdout)
    assert none["tenants"] == []


def test_migration_error_is_not_retried(harness: Harness, tenant_dbs: Callable[[int], list[str]]) -> None:
    harness.alembic_ini = FIXTURE_ENVS / "failing" / "alembic.ini"
    (url,) = _fleet(harness, tenant_dbs, 1)
    _poison(url)
    report = json.loads(harness.cli("upgrade", "head", "--json").stdout)
    assert report["tenants"][0]["error_class"] == "migration_error"
    assert report["tenants"][0]["retries"] == 0


def test_cancel_leaves_every_tenant_at_rest_and_resume_finishes(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    harness.alembic_ini = FIXTURE_ENVS / "slow" / "alembic.ini"
    urls = _fleet(harness, tenant_dbs, 6)
    env = harness.env(TENANTCTL_TEST_SLOW_SECONDS="1.5")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "upgrade", "head", "--parallel", "2", "--json"],
        cwd=harness.workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def running() -> Any:
        try:
            ro = harness.with_store(lambda s: s.get_rollout())
        except Exception:
            return None
        runs = harness.with_store(lambda s: s.rollout_runs(ro.id))
        return ro.id if any(r.status.value == "running" for r in runs) else None

    rollout_id = wait_for(running, 60, "a tenant to be running")
    cancelled = harness.cli("cancel", str(rollout_id))
    assert cancelled.returncode == 0, cancelled.stderr
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    report = json.loads(out)
    assert report["state"] == "cancelled"
    assert report["counts"]["queued"] == report["counts"]["running"] == 0
    assert report["counts"]["cancelled"] >= 1
    for i, url in enumerate(urls):
        row = next(t for t in report["tenants"] if t["tenant"] == f"t{i}")
        assert row["to_revision"] == tenant_revision(url), row  # the record is the truth, nothing half-done
        if row["status"] == "cancelled" and row["to_revision"] is not None:
            assert row["to_revision"] in ("s001", "s002")  # stopped between two migrations
    resumed = harness.cli("resume", str(rollout_id), "--json", TENANTCTL_TEST_SLOW_SECONDS="0")
    assert resumed.returncode == 0, resumed.stderr
    assert [tenant_revision(u) for u in urls] == ["s003"] * 6


def _control_snapshot(h: Harness) -> tuple[int, int]:
    async def counts(store: Any) -> tuple[int, int]:
        rows = await store.list_rollouts(1000)
        return len(rows), sum(sum(c.values()) for _, c in rows)

    return h.with_store(counts)


def test_dry_run_changes_nothing(harness: Harness, tenant_dbs: Callable[[int], list[str]]) -> None:
    urls = _fleet(harness, tenant_dbs, 5)
    assert harness.cli("upgrade", "0002", "--tenant", "t0", "--tenant", "t1").returncode == 0
    harness.register("gone", "postgresql://postgres@127.0.0.1:1/nowhere")
    before = ([tenant_revision(u) for u in urls], _control_snapshot(harness))
    result = harness.cli("upgrade", "head", "--dry-run")
    after = ([tenant_revision(u) for u in urls], _control_snapshot(harness))
    assert before == after
    assert result.returncode == 1  # one tenant cannot be planned
    assert "3 tenants base→0004 (4 steps)" in result.stdout
    assert "2 tenants 0002→0004 (2 steps)" in result.stdout
    assert "1 tenant not plannable" in result.stdout
    down = harness.cli("downgrade", "-1", "--dry-run", "--json", "--exclude", "gone")
    plan = json.loads(down.stdout)
    assert {g["summary"] for g in plan["groups"]} >= {"2 tenants 0002→0001 (1 step)"}
    # three tenants are at base: the rollout would be refused, and the dry run says so (exit 3)
    assert down.returncode == 3 and plan["refused"].startswith("revision '-1'"), down.stderr
    assert "3 tenants not plannable (cannot reach -1)" in {g["summary"] for g in plan["groups"]}
    assert down.stderr.strip() == f"tenantctl: error: {plan['refused']}"


def _schema(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        cols = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
        ).fetchall()
        idx = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    return [*cols, *idx]


def test_offline_sql_reaches_the_same_schema_as_online(
    harness: Harness, tenant_dbs: Callable[[int], list[str]], tmp_path: Path
) -> None:
    urls = _fleet(harness, tenant_dbs, 4)
    assert harness.cli("upgrade", "0002", "--tenant", "t2", "--tenant", "t3").returncode == 0
    out = tmp_path / "sql"
    result = harness.cli("upgrade", "head", "--sql", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    index = json.loads(result.stdout)
    assert index["files"] == {
        "upgrade-base-to-0004.sql": ["t0", "t1"],
        "upgrade-0002-to-0004.sql": ["t2", "t3"],
    }
    assert [tenant_revision(u) for u in urls] == [None, None, "0002", "0002"]  # nothing ran
    for name, tenants in index["files"].items():
        for tenant in tenants:
            url = urls[int(tenant[1:])]
            subprocess.run(
                ["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(out / name)],
                check=True,
                capture_output=True,
            )
    online = tenant_dbs(1)[0]
    harness.register("online", online)
    assert harness.cli("upgrade", "head", "--tenant", "online").returncode == 0
    expected = _schema(online)
    for url in urls:
        assert tenant_revision(url) == "0004"
        assert _schema(url) == expected


def test_webhook_on_finish_and_on_halt(
    harness: Harness, tenant_dbs: Callable[[int], list[str]], webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    harness.alembic_ini = FIXTURE_ENVS / "failing" / "alembic.ini"
    urls = _fleet(harness, tenant_dbs, 3)
    assert harness.cli("upgrade", "f001", TENANTCTL_WEBHOOK_URL=url).returncode == 0
    assert len(received) == 1
    assert received[0]["state"] == "succeeded" and received[0]["counts"]["succeeded"] == 3
    assert "rollout" in received[0]["text"]
    _poison(urls[0])
    assert (
        harness.cli(
            "upgrade", "head", "--max-failures", "1", "--parallel", "1", TENANTCTL_WEBHOOK_URL=url
        ).returncode
        == 1
    )
    halt = received[-1]
    assert halt["halt_reason"].startswith("failure budget crossed")
    assert (
        halt["first_failures"][0]["tenant"] == "t0"
        and "poisoned tenant" in halt["first_failures"][0]["error"]
    )


def test_task_timeout_interrupts_a_slow_migration(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    harness.alembic_ini = FIXTURE_ENVS / "slow" / "alembic.ini"
    (url,) = _fleet(harness, tenant_dbs, 1)
    started = time.monotonic()
    result = harness.cli(
        "upgrade", "head", "--task-timeout", "1.5", "--json", TENANTCTL_TEST_SLOW_SECONDS="30"
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    run = json.loads(result.stdout)["tenants"][0]
    assert run["error_class"] == "timeout" and "task timeout" in run["error"], run["error"]
    assert run["to_revision"] == "s001" == tenant_revision(url)  # s002 interrupted and rolled back
    assert elapsed < 25, f"the timeout did not interrupt the migration ({elapsed:.0f}s)"
