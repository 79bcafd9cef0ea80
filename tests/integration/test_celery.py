"""Distributed execution on real Redis, real `celery worker` processes and real PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import redis

from orchestrator.models import RunStatus
from tests.conftest import FIXTURE_ENVS
from tests.support.harness import alembic, tenant_revision
from tests.support.workers import wait_for

Harness = Any  # the celery_harness fixture: Harness plus start_worker/broker/queue


def _register(h: Harness, urls: list[str], password: str | None = None) -> None:
    for i, url in enumerate(urls):
        if password:
            url = url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)
        h.register(f"t{i:02d}", url)


def _runs(h: Harness, rollout_id: int) -> list[Any]:
    return h.with_store(lambda s: s.rollout_runs(rollout_id))  # type: ignore[no-any-return]


def test_fifty_tenants_through_two_prefork_processes(
    celery_harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = celery_harness
    urls = tenant_dbs(50)
    _register(h, urls)
    worker = h.start_worker(concurrency=2)
    result = h.cli("upgrade", "head", "--json", "--parallel", "8")
    assert result.returncode == 0, result.stderr + worker.text()[-2000:]
    report = json.loads(result.stdout)
    assert report["counts"]["succeeded"] == 50
    by = {t["tenant"]: t for t in report["tenants"]}
    for i, url in enumerate(urls):
        assert by[f"t{i:02d}"]["to_revision"] == tenant_revision(url) == "0004"
    assert len({t["worker"] for t in report["tenants"]}) == 2, "both prefork children must have worked"
    assert "rollout" in result.stderr  # the same progress bar as in-process


def test_a_worker_skips_a_tenant_planned_unread_that_is_already_there(
    celery_harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    """Tenants tenantctl last saw behind get no preflight read: their task reads the revision under the
    lock, and one found at the target is recorded skipped by the worker, the rollout still succeeding."""
    h = celery_harness
    urls = tenant_dbs(3)
    _register(h, urls)
    worker = h.start_worker(concurrency=2)
    first = h.cli("upgrade", "0002", "--json")
    assert first.returncode == 0, first.stderr + worker.text()[-2000:]
    alembic(urls[1], "upgrade", "head")  # behind tenantctl's back
    result = h.cli("upgrade", "head", "--json")
    assert result.returncode == 0, result.stderr + worker.text()[-2000:]
    by = {t["tenant"]: t for t in json.loads(result.stdout)["tenants"]}
    assert by["t01"]["status"] == "skipped" and by["t01"]["note"] == "already at target"
    assert by["t01"]["worker"] is not None
    assert [by[t]["applied"] for t in ("t00", "t02")] == [["0003", "0004"]] * 2
    assert {tenant_revision(u) for u in urls} == {"0004"}


def test_duplicate_message_runs_the_migration_once(
    celery_harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = celery_harness
    urls = tenant_dbs(4)
    _register(h, urls)
    started = h.cli("upgrade", "head", "--no-wait", "--json")  # no worker yet: messages wait in Redis
    assert started.returncode == 0, started.stderr
    rollout_id = json.loads(started.stdout)["id"]
    client = redis.Redis.from_url(h.broker)
    messages = client.lrange(h.queue, 0, -1)
    assert len(messages) == 4
    client.rpush(h.queue, *messages)  # every message delivered twice
    worker = h.start_worker(concurrency=2)
    wait_for(lambda: all(r.status.terminal for r in _runs(h, rollout_id)), 60, "the rollout to finish")
    runs = _runs(h, rollout_id)
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 4
    assert all(r.applied == ("0001", "0002", "0003", "0004") and r.attempt == 1 for r in runs)
    wait_for(lambda: worker.text().count("'duplicate'") == 4, 30, "four duplicates to be ignored")
    assert worker.text().count("Running upgrade  -> 0001") == 4


def test_rollout_closed_by_a_worker_sends_its_webhook_once(
    celery_harness: Harness, tenant_dbs: Callable[[int], list[str]], webhook: Any
) -> None:
    """With --no-wait nobody follows the rollout: the worker that settles its last run closes it, and
    the finish webhook must come from there, once."""
    h = celery_harness
    hook_url, received = webhook
    h.extra_env["TENANTCTL_WEBHOOK_URL"] = hook_url
    urls = tenant_dbs(3)
    _register(h, urls)
    h.start_worker(concurrency=2)
    started = h.cli("upgrade", "head", "--no-wait", "--json")
    assert started.returncode == 0, started.stderr
    rollout_id = json.loads(started.stdout)["id"]
    mine = lambda: [r for r in received if r.get("rollout") == rollout_id]  # noqa: E731
    hooks: Any = wait_for(mine, 60, "the finish webhook")
    assert hooks[0]["state"] == "succeeded" and hooks[0]["counts"]["succeeded"] == 3, hooks
    assert h.cli("status", str(rollout_id), "--json").returncode == 0
    assert len(mine()) == 1


def test_no_password_on_the_broker_or_in_worker_logs(
    celery_harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = celery_harness
    h.alembic_ini = FIXTURE_ENVS / "failing" / "alembic.ini"
    password = "Br0ker-Secret-Pw"
    urls = tenant_dbs(3)
    _register(h, urls, password)
    import psycopg

    with psycopg.connect(urls[2], autocommit=True) as conn:
        conn.execute("CREATE TABLE poison (id int)")  # its error message carries the full URL
    started = h.cli("upgrade", "head", "--no-wait", "--json")
    assert started.returncode == 0, started.stderr
    raw = redis.Redis.from_url(h.broker).lrange(h.queue, 0, -1)
    assert len(raw) == 3
    for message in raw:
        envelope = json.loads(message)
        body = json.loads(base64.b64decode(envelope["body"]))
        assert body[0] == [json.loads(started.stdout)["id"], body[0][1], 1]  # (rollout, run, attempt) only
        assert password.encode() not in message and b"postgresql" not in message
        assert password not in json.dumps(envelope["headers"])
    worker = h.start_worker(concurrency=1)
    follow = h.cli("status", "--follow", "--json")
    assert follow.returncode == 1  # the poisoned tenant failed
    report = json.loads(follow.stdout)
    assert report["counts"]["succeeded"] == 2 and report["counts"]["failed"] == 1
    assert "postgres:***@" in next(t["error"] for t in report["tenants"] if t["status"] == "failed")
    assert password not in worker.text() + follow.stdout + follow.stderr


def test_worker_killed_mid_migration_is_reaped_and_retried(
    celery_harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = celery_harness
    h.alembic_ini = FIXTURE_ENVS / "slow" / "alembic.ini"
    (url,) = tenant_dbs(1)
    _register(h, [url])
    worker = h.start_worker(concurrency=1, TENANTCTL_TEST_SLOW_SECONDS="4")
    started = h.cli("upgrade", "head", "--no-wait", "--json")
    rollout_id = json.loads(started.stdout)["id"]
    running = wait_for(
        lambda: [r for r in _runs(h, rollout_id) if r.status is RunStatus.RUNNING and r.worker],
        30,
        "a running run",
    )
    # the run is claimed before the tenant is touched: wait for s001, then s002 sleeps in its transaction
    wait_for(lambda: tenant_revision(url) == "s001", 30, "s001 committed")
    pid = int(running[0].worker.rsplit(":", 1)[1])  # type: ignore[index]
    assert pid in worker.children()
    os.kill(pid, signal.SIGKILL)

    def reaped() -> Any:
        result = h.cli("reap", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    verdict = wait_for(reaped, 60, "the reaper to settle the lost run", interval=0.5)
    assert verdict[0]["status"] == "failed" and "s001" in verdict[0]["message"]
    run = _runs(h, rollout_id)[0]
    assert run.status is RunStatus.FAILED and run.error_class.value == "lost"  # type: ignore[union-attr]
    assert run.to_revision == "s001" == tenant_revision(url), "consistent: s002 rolled back whole"
    assert h.cli("status", str(rollout_id)).returncode == 1

    retried = h.cli("retry", str(rollout_id), "--json")
    assert retried.returncode == 0, retried.stderr + worker.text()[-3000:]
    report = json.loads(retried.stdout)
    assert report["tenants"][0]["attempt"] == 2 and report["tenants"][0]["status"] == "succeeded"
    assert tenant_revision(url) == "s003"
    history = h.with_store(lambda s: s.tenant_history("t00"))
    assert [(r.attempt, r.status.value) for r in history] == [(1, "failed"), (2, "succeeded")]


def test_redis_restart_mid_rollout_loses_nothing(
    celery_harness: Harness, tenant_dbs: Callable[[int], list[str]], tmp_path: Any
) -> None:
    from tests.support.servers import free_port

    h = celery_harness
    port = free_port()
    server = [_redis(port)]
    h.extra_env["TENANTCTL_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
    h.alembic_ini = FIXTURE_ENVS / "slow" / "alembic.ini"
    try:
        urls = tenant_dbs(10)
        _register(h, urls)
        h.start_worker(concurrency=2, TENANTCTL_TEST_SLOW_SECONDS="0.4")
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "upgrade", "head", "--json", "--parallel", "4"],
            env=h.env(),
            cwd=h.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: _latest_done(h) >= 2, 60, "a few tenants to finish")
        server[0].kill()
        server[0].wait()
        server[0] = _redis(port)
        out, err = coordinator.communicate(timeout=180)
        assert coordinator.returncode == 0, err
        report = json.loads(out)
        assert report["counts"]["succeeded"] == 10
        assert [tenant_revision(u) for u in urls] == ["s003"] * 10
    finally:
        server[0].kill()
        server[0].wait()


def _redis(port: int) -> subprocess.Popen[bytes]:
    from tests.support.servers import _wait

    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait("127.0.0.1", port, "Redis")
    return proc


def _latest_done(h: Harness) -> int:
    try:
        rollout = h.with_store(lambda s: s.get_rollout())
    except Exception:
        return 0
    return sum(1 for r in _runs(h, rollout.id) if r.status.terminal)


def test_two_coordinators_at_once(celery_harness: Harness, tenant_dbs: Callable[[int], list[str]]) -> None:
    h = celery_harness
    h.alembic_ini = FIXTURE_ENVS / "slow" / "alembic.ini"
    urls = tenant_dbs(8)
    _register(h, urls)
    h.start_worker(concurrency=2, TENANTCTL_TEST_SLOW_SECONDS="0.2")
    args = [sys.executable, "-m", "orchestrator", "upgrade", "head", "--json"]
    procs = [
        subprocess.Popen(
            args, env=h.env(), cwd=h.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    reports = [json.loads(o) for o, _ in outputs]
    for i, url in enumerate(urls):
        assert tenant_revision(url) == "s003"
        applied = [
            r for rep in reports for t in rep["tenants"] if t["tenant"] == f"t{i:02d}" for r in t["applied"]
        ]
        assert sorted(applied) == ["s001", "s002", "s003"], f"t{i:02d} migrated more than once"


def test_schema_audit_on_workers_and_nightly_drift_webhook(
    celery_harness: Harness, tenant_dbs: Callable[[int], list[str]], webhook: Any
) -> None:
    import psycopg

    from orchestrator.models import Command
    from workers.app import make_app

    h = celery_harness
    hook_url, received = webhook
    h.extra_env["TENANTCTL_WEBHOOK_URL"] = hook_url
    urls = tenant_dbs(3)
    _register(h, urls)
    assert h.rollout(Command.UPGRADE, "head")["state"] == "succeeded"
    with psycopg.connect(urls[1], autocommit=True) as conn:
        conn.execute("DROP INDEX ix_invoices_status")
    worker = h.start_worker(concurrency=2)

    result = h.cli("audit", "--schema", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert any("ix_invoices_status" in g["summary"] for g in report["groups"]), report["groups"]
    wait_for(lambda: worker.text().count("tenantctl.schema_check") >= 3, 30, "schema checks on the worker")

    before = h.with_store(lambda s: s.get_audit(None))
    make_app(h.settings()).send_task("tenantctl.nightly_audit", queue=h.queue)
    wait_for(lambda: h.with_store(lambda s: s.get_audit(None)).id != before.id, 60, "the nightly audit")
    with psycopg.connect(urls[2], autocommit=True) as conn:
        conn.execute("DELETE FROM alembic_version")
    make_app(h.settings()).send_task("tenantctl.nightly_audit", queue=h.queue)
    hook = wait_for(lambda: [r for r in received if "audit" in r], 60, "the drift webhook")
    assert hook[-1]["new_drift"] == ["t02"] and hook[-1]["kind"] == "revision"  # type: ignore[index]


def test_failure_budget_retry_and_resume_through_workers(
    celery_harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    import psycopg

    h = celery_harness
    h.alembic_ini = FIXTURE_ENVS / "failing" / "alembic.ini"
    urls = tenant_dbs(6)
    _register(h, urls)
    for url in urls[:2]:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE poison (id int)")
    h.start_worker(concurrency=1)
    halted = h.cli("upgrade", "head", "--parallel", "1", "--max-failures", "2", "--json")
    assert halted.returncode == 1, halted.stderr
    report = json.loads(halted.stdout)
    assert report["state"] == "halted" and report["counts"]["halted"] == 4, report["counts"]
    assert [tenant_revision(u) for u in urls[2:]] == [None] * 4
    for url in urls[:2]:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE poison")
    assert h.cli("retry", str(report["id"])).returncode == 1  # still halted: the rest waits for resume
    resumed = h.cli("resume", str(report["id"]), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["counts"]["succeeded"] == 6
    assert [tenant_revision(u) for u in urls] == ["f003"] * 6
