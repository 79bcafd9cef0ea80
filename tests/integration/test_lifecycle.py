"""One run lifecycle on both executors, under faults: the coordinator killed or interrupted, the control
DB stopped, rollouts and retries racing. Real PostgreSQL, real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg

from orchestrator.controldb.store import Store
from orchestrator.models import RunStatus, TenantRun
from tests.conftest import FIXTURE_ENVS
from tests.support.harness import Harness, tenant_revision
from tests.support.workers import wait_for

SLOW = FIXTURE_ENVS / "slow" / "alembic.ini"
FAILING = FIXTURE_ENVS / "failing" / "alembic.ini"


def _register(h: Harness, urls: list[str]) -> None:
    for i, url in enumerate(urls):
        h.register(f"t{i}", url)


def _children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _runs(h: Harness, rollout_id: int) -> list[TenantRun]:
    return h.with_store(lambda s: s.rollout_runs(rollout_id))


def _attempts(h: Harness, rollout_id: int) -> list[TenantRun]:
    async def every(store: Store) -> list[TenantRun]:
        return (await store.rollout_rows(rollout_id, attempts=True))[0]

    return h.with_store(every)


def _start(h: Harness, *args: str, **env: str) -> subprocess.Popen[str]:
    """The CLI in its own process group, as a shell starts a foreground job: a signal to the group
    reaches the coordinator and its pool's children alike (Ctrl-C, a cancelled CI job)."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=h.workdir,
        env=h.env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _latest_rollout(h: Harness) -> int:
    def find() -> int | None:
        try:
            return h.with_store(lambda s: s.get_rollout()).id
        except Exception:
            return None

    return int(wait_for(find, 60, "the rollout to be created"))  # type: ignore[arg-type]


def _records_agree(h: Harness, rollout_id: int, urls: list[str]) -> None:
    """Every latest attempt is at rest and says where its tenant really is (a tenant skipped because
    another rollout held it says nothing of where it ended: that rollout does)."""
    for run in _runs(h, rollout_id):
        assert run.status.terminal, f"{run.tenant_id} still {run.status}"
        if run.blocked_by is not None:
            continue
        real = tenant_revision(urls[int(run.tenant_id[1:])])
        assert run.to_revision == real, f"{run.tenant_id}: recorded {run.to_revision}, really at {real}"


def test_sigkill_of_an_in_process_upgrade_is_reaped_then_retried(
    harness: Harness, tenant_dbs: Callable[[int], list[str]], webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    hook, received = webhook
    h = harness
    h.alembic_ini = SLOW
    h.extra_env = {"TENANTCTL_LEASE_SECONDS": "2", "TENANTCTL_WEBHOOK_URL": hook}
    urls = tenant_dbs(3)
    _register(h, urls)
    proc = _start(h, "upgrade", "head", "--parallel", "3", TENANTCTL_TEST_SLOW_SECONDS="6")
    rollout_id = _latest_rollout(h)
    # each unit commits s001, then sleeps inside s002's transaction: kill everyone there
    wait_for(lambda: all(tenant_revision(u) == "s001" for u in urls), 60, "every tenant in s002")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert [r.status for r in _runs(h, rollout_id)] == [RunStatus.RUNNING] * 3, "killed mid-migration"

    def reaped() -> bool:
        result = h.cli("reap", "--json")
        assert result.returncode == 0, result.stderr
        return all(r.status.terminal for r in _runs(h, rollout_id))

    # the backends end their pg_sleep, find their client gone and roll back: then the locks are free
    wait_for(reaped, 90, "the reaper to settle every run of the killed coordinator", interval=1)
    rollout = h.with_store(lambda s: s.get_rollout(rollout_id))
    assert rollout.finished_at is not None and rollout.state.value == "failed", rollout
    for run in _runs(h, rollout_id):
        assert run.status is RunStatus.FAILED and run.error_class and run.error_class.value == "lost"
    _records_agree(h, rollout_id, urls)
    assert all(tenant_revision(u) == "s001" for u in urls), "s002 rolled back whole"
    assert [m["rollout"] for m in received] == [rollout_id], "the reaper's close notifies, once"

    retried = h.cli("retry", str(rollout_id), "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["counts"]["succeeded"] == 3
    assert [tenant_revision(u) for u in urls] == ["s003"] * 3
    assert [m["rollout"] for m in received] == [rollout_id] * 2


def test_sigint_halts_records_everything_and_exits_130(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = harness
    h.alembic_ini = SLOW
    urls = tenant_dbs(4)
    _register(h, urls)
    proc = _start(h, "upgrade", "head", "--parallel", "2", "--json", TENANTCTL_TEST_SLOW_SECONDS="2")
    rollout_id = _latest_rollout(h)
    wait_for(lambda: sum(tenant_revision(u) == "s001" for u in urls) == 2, 60, "two tenants in s002")
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole foreground group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and f"tenantctl resume {rollout_id}" in err and "Traceback" not in err
    report = json.loads(out)  # where things stand, printed before leaving
    assert report["state"] == "halted" and report["id"] == rollout_id
    statuses = {t["tenant"]: t["status"] for t in report["tenants"]}
    assert sorted(statuses.values()) == ["halted"] * 4, statuses
    _records_agree(h, rollout_id, urls)
    started = [r for r in _runs(h, rollout_id) if r.started_at is not None]
    assert len(started) == 2 and all(r.to_revision == "s002" for r in started), "ended s002, went no further"

    resumed = h.cli("resume", str(rollout_id), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert [tenant_revision(u) for u in urls] == ["s003"] * 4


def test_control_db_stopped_for_ten_seconds_mid_rollout_loses_nothing(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    from orchestrator.controldb.store import Store
    from tests.support.servers import ThrowawayPostgres

    server = ThrowawayPostgres().start()
    try:
        with psycopg.connect(f"{server.url}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE control")
        control = f"{server.url.replace('postgresql://', 'postgresql+asyncpg://')}/control"

        async def migrate() -> None:
            async with Store(control) as store:
                await store.migrate()

        import asyncio

        asyncio.run(migrate())
        h = harness
        h.control_url = control
        h.alembic_ini = SLOW
        urls = tenant_dbs(8)
        _register(h, urls)
        proc = _start(h, "upgrade", "head", "--parallel", "2", "--json", TENANTCTL_TEST_SLOW_SECONDS="1.5")
        rollout_id = _latest_rollout(h)
        wait_for(lambda: sum(tenant_revision(u) == "s003" for u in urls) >= 2, 60, "two tenants done")
        server.stop()
        stopped = time.monotonic()
        time.sleep(10)  # the fault itself: ten seconds without a control DB
        server.start()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert time.monotonic() - stopped < 60, "the coordinator went on soon after the control DB was back"
        report = json.loads(out)
        assert report["state"] == "succeeded" and report["counts"]["succeeded"] == 8, report["counts"]
        assert [tenant_revision(u) for u in urls] == ["s003"] * 8
        _records_agree(h, rollout_id, urls)
        for run in _attempts(h, rollout_id):
            assert run.attempt == 1 and run.status is RunStatus.SUCCEEDED, run
            assert run.applied == ("s001", "s002", "s003"), f"{run.tenant_id} recorded {run.applied}"
    finally:
        server.destroy()


def _two_retries(h: Harness, urls: list[str]) -> None:
    """A failed rollout, its cause fixed, then two `retry` of it at the same moment: one runs every
    tenant once, the other says so in one line, exit 2, and changes nothing."""
    for url in urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE poison (id int)")
    failed = h.cli("upgrade", "head", "--json")
    assert failed.returncode == 1, failed.stderr
    rollout_id = json.loads(failed.stdout)["id"]
    for url in urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE poison")

    procs = [_start(h, "retry", str(rollout_id), "--json") for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outputs
    loser = next(err for p, (_out, err) in zip(procs, outputs, strict=True) if p.returncode == 2)
    lines = loser.strip().splitlines()
    assert len(lines) == 1 and f"rollout {rollout_id}" in lines[0] and "Traceback" not in loser, loser
    assert [tenant_revision(u) for u in urls] == ["f003"] * len(urls)
    attempts = _attempts(h, rollout_id)
    n = len(urls)
    assert sorted((r.tenant_id, r.attempt, r.status.value) for r in attempts) == sorted(
        [(f"t{i}", 1, "failed") for i in range(n)] + [(f"t{i}", 2, "succeeded") for i in range(n)]
    ), "each tenant retried exactly once"


def test_two_retries_at_once_one_wins_the_other_says_so(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    harness.alembic_ini = FAILING
    urls = tenant_dbs(4)
    _register(harness, urls)
    _two_retries(harness, urls)


def test_two_celery_retries_at_once(celery_harness: Harness, tenant_dbs: Callable[[int], list[str]]) -> None:
    h = celery_harness
    h.alembic_ini = FAILING
    urls = tenant_dbs(4)
    _register(h, urls)
    h.start_worker(concurrency=2)  # type: ignore[attr-defined]
    _two_retries(h, urls)


def test_a_busy_tenant_is_skipped_naming_the_rollout_that_holds_it(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = harness
    h.alembic_ini = SLOW
    urls = tenant_dbs(3)
    _register(h, urls)
    first = _start(h, "upgrade", "head", "--tenant", "t0", "--json", TENANTCTL_TEST_SLOW_SECONDS="3")
    holder = _latest_rollout(h)
    wait_for(lambda: tenant_revision(urls[0]) == "s001", 60, "t0 in s002")
    second = h.cli("upgrade", "head", "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    by_tenant = {t["tenant"]: t for t in report["tenants"]}
    assert by_tenant["t0"]["status"] == "skipped" and by_tenant["t0"]["blocked_by"] == holder
    assert f"rollout {holder}" in by_tenant["t0"]["note"]
    assert by_tenant["t1"]["status"] == by_tenant["t2"]["status"] == "succeeded"
    _out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert [tenant_revision(u) for u in urls] == ["s003"] * 3
    applied = [
        a for r in _attempts(h, holder) + _attempts(h, report["id"]) if r.tenant_id == "t0" for a in r.applied
    ]
    assert applied == ["s001", "s002", "s003"], "t0 migrated by its holder only"


def test_retry_and_resume_keep_the_rollouts_own_parallel_and_timeouts(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = harness
    h.alembic_ini = FAILING
    urls = tenant_dbs(3)
    _register(h, urls)
    with psycopg.connect(urls[1], autocommit=True) as conn:
        conn.execute("CREATE TABLE poison (id int)")
    first = h.cli("upgrade", "head", "--parallel", "3", "--lock-timeout", "7", "--json")
    assert first.returncode == 1
    rollout_id = json.loads(first.stdout)["id"]
    with psycopg.connect(urls[1], autocommit=True) as conn:
        conn.execute("DROP TABLE poison")
    retried = h.cli("retry", str(rollout_id), "--json", TENANTCTL_PARALLELISM="1", TENANTCTL_LOCK_TIMEOUT="1")
    assert retried.returncode == 0, retried.stderr
    rollout = h.with_store(lambda s: s.get_rollout(rollout_id))
    assert rollout.parallel == 3 and rollout.policy.lock_timeout == 7, "the rollout's own, not the settings'"
    again = h.cli("retry", str(rollout_id), "--parallel", "2")
    assert again.returncode == 2 and "no failed tenants" in again.stderr
    rollout = h.with_store(lambda s: s.get_rollout(rollout_id))
    assert rollout.parallel == 3, "a refused retry changes nothing"


def _race(h: Harness, urls: list[str], *args: str) -> None:
    """Two `upgrade head` at the same moment over the same tenants: both end, no tenant is migrated by
    both, and what each recorded agrees with the tenants."""
    procs = [
        _start(h, "upgrade", "head", "--json", *args, TENANTCTL_TEST_SLOW_SECONDS="0.3") for _ in range(2)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    reports = [json.loads(out) for out, _ in outputs]
    assert all(r["state"] == "succeeded" for r in reports)
    ids = [r["id"] for r in reports]
    for i, url in enumerate(urls):
        assert tenant_revision(url) == "s003"
        rows = [t for r in reports for t in r["tenants"] if t["tenant"] == f"t{i}"]
        migrated = [t for t in rows if t["applied"]]
        assert len(migrated) == 1 and migrated[0]["applied"] == ["s001", "s002", "s003"], rows
        other = next(t for t in rows if not t["applied"])
        assert other["status"] == "skipped", other
        assert other["blocked_by"] in (*ids, None), other
        assert other["blocked_by"] is not None or other["note"] == "already at target", other
    for rollout_id in ids:
        _records_agree(h, rollout_id, urls)


def test_two_in_process_rollouts_at_the_same_moment(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    harness.alembic_ini = SLOW
    urls = tenant_dbs(8)
    _register(harness, urls)
    _race(harness, urls, "--parallel", "4")


def test_two_celery_rollouts_at_the_same_moment(
    celery_harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = celery_harness
    h.alembic_ini = SLOW
    urls = tenant_dbs(8)
    _register(h, urls)
    h.start_worker(concurrency=2, TENANTCTL_TEST_SLOW_SECONDS="0.3")  # type: ignore[attr-defined]
    _race(h, urls)


def test_cancel_of_an_in_process_rollout_notifies_once_when_it_closes(
    harness: Harness, tenant_dbs: Callable[[int], list[str]], webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    hook, received = webhook
    h = harness
    h.alembic_ini = SLOW
    h.extra_env = {"TENANTCTL_WEBHOOK_URL": hook}
    urls = tenant_dbs(3)
    _register(h, urls)
    proc = _start(h, "upgrade", "head", "--parallel", "1", "--json", TENANTCTL_TEST_SLOW_SECONDS="2")
    rollout_id = _latest_rollout(h)
    wait_for(lambda: any(tenant_revision(u) == "s001" for u in urls), 60, "one tenant in s002")
    cancelled = h.cli("cancel", str(rollout_id))
    assert cancelled.returncode == 0, cancelled.stderr
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert json.loads(out)["state"] == "cancelled"
    _records_agree(h, rollout_id, urls)
    followed = h.cli("status", str(rollout_id), "--follow")
    assert followed.returncode == 1
    assert [(m["rollout"], m["state"]) for m in received] == [(rollout_id, "cancelled")]
    assert received[0]["halt_reason"].startswith("cancelled by ")


def test_children_of_a_killed_coordinator_finish_and_record_their_tenants(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = harness
    h.alembic_ini = SLOW
    h.extra_env = {"TENANTCTL_LEASE_SECONDS": "2"}
    urls = tenant_dbs(3)
    _register(h, urls)
    proc = _start(h, "upgrade", "head", "--parallel", "2", TENANTCTL_TEST_SLOW_SECONDS="3")
    rollout_id = _latest_rollout(h)
    wait_for(lambda: sum(tenant_revision(u) == "s001" for u in urls) == 2, 60, "two tenants in s002")
    children = _children(proc.pid)
    assert len(children) >= 2, children  # the pool's two (and Python's resource tracker)
    os.kill(proc.pid, signal.SIGKILL)  # the coordinator alone: its pool's children live on
    proc.wait(timeout=30)  # not communicate(): its pipes stay open in the children
    for pipe in (proc.stdout, proc.stderr):
        assert pipe is not None
        pipe.close()
    started = [r.tenant_id for r in _runs(h, rollout_id) if r.status is RunStatus.RUNNING]
    assert len(started) == 2

    def settled() -> bool:
        assert h.cli("reap").returncode == 0
        return all(r.status.terminal for r in _runs(h, rollout_id))

    wait_for(settled, 60, "the children to record their tenants and the reaper to halt the rest", interval=1)
    runs = {r.tenant_id: r for r in _runs(h, rollout_id)}
    for tenant in started:  # recorded by the children themselves, not judged lost by the reaper
        run = runs[tenant]
        assert run.status in (RunStatus.SUCCEEDED, RunStatus.HALTED) and run.error_class is None, run
        assert run.applied[:2] == ("s001", "s002"), "s002 ended, then the halt stopped it (or it finished)"
    (waiting,) = set(runs) - set(started)
    assert runs[waiting].status is RunStatus.HALTED and "coordinator" in (runs[waiting].error_message or "")
    rollout = h.with_store(lambda s: s.get_rollout(rollout_id))
    assert rollout.state.value == "halted" and rollout.finished_at is not None
    _records_agree(h, rollout_id, urls)
    # then they end: a child waiting for work would wait forever (its sibling holds the queue's pipe)
    wait_for(lambda: not any(_alive(p) for p in children), 30, "the orphaned children to exit")
    resumed = h.cli("resume", str(rollout_id))
    assert resumed.returncode == 0, resumed.stderr
    assert [tenant_revision(u) for u in urls] == ["s003"] * 3
