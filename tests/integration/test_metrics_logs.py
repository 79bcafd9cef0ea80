"""Prometheus metrics (the control plane's, a worker's) and JSON logs, on real PostgreSQL, Redis and
Celery workers."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from orchestrator import auditor
from orchestrator.controldb.store import Store
from orchestrator.metrics import ControlMetrics
from orchestrator.models import Command
from tests.conftest import FIXTURE_ENVS
from tests.support.harness import Harness
from tests.support.servers import free_port
from tests.support.workers import WorkerProcess, wait_for

FAILING = FIXTURE_ENVS / "failing" / "alembic.ini"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


def _register(h: Harness, urls: list[str], password: str | None = None) -> None:
    for i, url in enumerate(urls):
        if password:
            url = url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)
        h.register(f"t{i}", url)


def _poison(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE poison (id int)")  # the failing env's f002 raises; its error names the URL


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_control_metrics_after_a_rollout_with_a_failure_and_an_audit(
    harness: Harness, tenant_dbs: Callable[[int], list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    harness.alembic_ini = FAILING
    urls = tenant_dbs(3)
    _register(harness, urls)
    _poison(urls[2])
    report = harness.rollout(Command.UPGRADE, "head")
    counts = {k: n for k, n in report["counts"].items() if n}
    assert report["state"] == "failed" and counts == {"succeeded": 2, "failed": 1}, report
    auditor.nightly(harness.settings(), dict(os.environ))

    clock = Clock()
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens: the queue gauge is left out
    metrics = ControlMetrics(
        harness.settings(metrics_cache_seconds=5.0, broker_url=SecretStr(dead_broker)), clock=clock
    )
    calls: list[int] = []

    async def scrape(store: Store, times: int = 1) -> list[Samples]:
        figures = store.control_figures

        async def counted(**kwargs: Any) -> Any:
            calls.append(1)
            return await figures(**kwargs)

        store.control_figures = counted  # type: ignore[method-assign]
        pages = await asyncio.gather(*(metrics.render(store) for _ in range(times)))
        return [samples(p.decode()) for p in pages]

    first = harness.with_store(lambda store: scrape(store, times=4))
    assert len(calls) == 1, "four scrapes at once share one refresh"
    assert all(page == first[0] for page in first)
    found = first[0]
    assert value(found, "tenantctl_rollouts", state="failed") == 1
    assert value(found, "tenantctl_rollouts", state="running") == 0
    assert value(found, "tenantctl_tenants", enabled="true") == 3
    assert value(found, "tenantctl_current_rollouts") == 1
    assert value(found, "tenantctl_tenant_runs", status="succeeded", error_class="") == 2
    assert value(found, "tenantctl_tenant_runs", status="failed", error_class="migration_error") == 1
    assert value(found, "tenantctl_tenant_runs", status="failed", error_class="timeout") == 0
    assert total(found, "tenantctl_tenant_runs") == 3
    assert value(found, "tenantctl_migration_duration_seconds_count") == 3
    assert value(found, "tenantctl_migration_duration_seconds_bucket", le="+Inf") == 3
    assert value(found, "tenantctl_audit_tenants", state="at_head") == 2
    assert value(found, "tenantctl_audit_tenants", state="behind") == 1
    assert value(found, "tenantctl_audit_drift_tenants") == 1
    assert (value(found, "tenantctl_worker_processes") or 0) >= 1  # the pool's children, within the lease
    assert value(found, "tenantctl_queue_messages") is None
    warned = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(warned) == 1 and dead_broker in warned[0], warned

    harness.register("t9", urls[0].replace("/tctl_", "/other_", 1), enabled=False)
    clock.now += 4.9  # within the cache: the same figures, the control DB not read
    cached = harness.with_store(scrape)[0]
    assert value(cached, "tenantctl_tenants", enabled="false") == 0 and len(calls) == 1
    clock.now += 0.2
    fresh = harness.with_store(scrape)[0]
    assert value(fresh, "tenantctl_tenants", enabled="false") == 1 and len(calls) == 2
    assert sum("does not answer" in r.getMessage() for r in caplog.records) == 1, "once, until it answers"


@pytest.fixture
def worker_process(celery_harness: Any, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """A `tenantctl worker` with extra command-line options (the harness's start_worker takes none)."""
    started: list[WorkerProcess] = []

    def start(*args: str, **env: str) -> WorkerProcess:
        w = WorkerProcess(celery_harness.env(**env), tmp_path / f"w{len(started)}.log", 1, tmp_path, args)
        started.append(w)
        w.wait_ready()
        return w

    yield start
    for w in started:
        w.stop()


def test_worker_metrics_count_the_units_it_carried(
    celery_harness: Any, tenant_dbs: Callable[[int], list[str]], worker_process: Any
) -> None:
    h = celery_harness
    _register(h, tenant_dbs(3))
    port = free_port()
    worker = worker_process("--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    result = h.cli("upgrade", "head", "--json")
    assert result.returncode == 0, result.stderr + worker.text()[-2000:]

    # each unit is counted before its result is recorded: all are in once the CLI saw the rollout end
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        found = samples(response.read().decode())
    assert total(found, "tenantctl_worker_units_total") == 3
    labels = {"command": "upgrade", "status": "succeeded", "error_class": ""}
    assert value(found, "tenantctl_worker_units_total", **labels) == 3
    assert value(found, "tenantctl_worker_unit_duration_seconds_count", command="upgrade") == 3

    page: bytes = h.with_store(lambda store: ControlMetrics(h.settings()).render(store))
    control = samples(page.decode())
    assert value(control, "tenantctl_queue_messages") == 0  # the real broker answers: nothing waits
    assert value(control, "tenantctl_worker_processes") == 1  # one pool process carried all three


def test_json_logs_of_the_cli_and_a_worker_carry_the_run_and_no_password(
    celery_harness: Any, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = celery_harness
    h.alembic_ini = FAILING
    password = "Js0n-Secret-Pw"
    urls = tenant_dbs(2)
    _register(h, urls, password)
    _poison(urls[1])
    worker = h.start_worker(concurrency=1, TENANTCTL_LOG_FORMAT="json")
    result = h.cli("upgrade", "head", "--json", TENANTCTL_LOG_FORMAT="json")
    assert result.returncode == 1, result.stderr + worker.text()[-2000:]
    rollout_id = json.loads(result.stdout)["id"]
    wait_for(lambda: worker.text().count(" succeeded in ") == 2, 10, "both tasks' last log lines")

    lines = [line for line in worker.text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line of the worker is a JSON log line
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    migrations = [r for r in records if r["logger"].startswith("alembic.runtime.migration")]
    assert {r["tenant"] for r in migrations} == {"t0", "t1"}
    assert all(r["rollout_id"] == rollout_id and r["attempt"] == 1 for r in migrations)
    assert len({(r["tenant"], r["run_id"]) for r in migrations}) == 2, "one run id per tenant"
    # the CLI's stderr: its log lines, and its own report of each failure and its progress bar
    logged, shown = [], []
    for line in result.stderr.splitlines():
        (logged if line.startswith("{") else shown).append(line)
    assert logged and all({"time", "level", "logger", "message"} <= json.loads(r).keys() for r in logged)
    assert all(line.startswith(("✗ t1: ", f"rollout {rollout_id} ")) for line in shown), shown
    assert password not in worker.text() + result.stderr + result.stdout
    failed = next(t for t in json.loads(result.stdout)["tenants"] if t["status"] == "failed")
    assert "postgres:***@" in failed["error"]  # the password was there to leak, and was masked
