"""Benchmark of the HTTP service on a large rollout, against a real ``tenantctl serve`` process:

(a) with a finished 10,000-tenant rollout in a PostgreSQL control DB: ``GET /api/v1/rollouts/{id}``
    (first page, ``?limit=100``, and, as the baseline it replaces, the whole report) and ``/metrics``
    (cached as served, and with the cache off), median and p99 over ``--requests`` sequential requests;
(b) the dashboard's rollout page in Debian's Chromium (Playwright, ``executable_path``): time from
    navigation until the grid has drawn every tenant, over ``--renders`` page loads;
(c) a running 10,000-tenant rollout whose runs finish ``--step`` at a time every half second (written
    straight into the control DB, as workers would), watched for ``--watch`` seconds by 0, 1 and
    ``--clients`` SSE clients in turn: the control DB's work over each window (transactions and rows
    read, from ``pg_stat_database``) and the server's CPU, so the extra load of 50 clients over 1 shows.

    python -m bench.api_bench                      # 10,000 tenants, 50 SSE clients
    python -m bench.api_bench --tenants 2000 --clients 20 --skip-browser

Every database it makes is named ``tctl_bench_…`` and dropped at the end, on failure and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg

from bench.common import (
    ALEMBIC_INI,
    ROOT,
    CpuMeter,
    Databases,
    git_state,
    interrupts_unwind,
    loadavg,
    log,
    machine,
    write_results,
)
from orchestrator.controldb.store import Store
from orchestrator.models import Command, Tenant
from orchestrator.planning import Plan
from tests.support.serve import CHROMIUM, CHROMIUM_ARGS, ServeProcess

TOKEN = "bench-viewer-token"
TOKENS = (
    f'[{{"name": "bench", "role": "operator", "sha256": "{hashlib.sha256(TOKEN.encode()).hexdigest()}"}}]'
)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def _seed(control: str, tenants: int, running: bool) -> int:
    """A rollout over ``tenants`` registered tenants: finished (1% failed) or running (all queued)."""
    async with Store(control) as store:
        await store.migrate()
        rows = [
            Tenant(id=f"t{i:05d}", url=f"postgresql://app@db{i % 10}.internal/t{i:05d}")
            for i in range(tenants)
        ]
        await store.write_tenants(rows, [])
        plan = Plan(queued=[(t.id, None) for t in rows])
        rollout_id = await store.create_rollout(
            command=Command.UPGRADE,
            target="head",
            selection={"tenants": [], "tags": [], "group": None, "exclude": []},
            created_by="bench",
            parallel=8,
            plan=plan,
            hosts={t.id: t.url.split("@")[1].split("/")[0] for t in rows},
        )
    if not running:
        with psycopg.connect(control.replace("+asyncpg", "")) as conn:
            conn.execute(
                """UPDATE tenant_runs SET status = CASE WHEN id %% 100 = 0 THEN 'failed' ELSE 'succeeded' END,
                       started_at = now() - interval '1 minute', finished_at = now(),
                       duration_ms = 40 + id %% 70, to_revision = '0004', applied = '0001,0002,0003,0004',
                       worker = 'bench:1',
                       error_class = CASE WHEN id %% 100 = 0 THEN 'migration_error' END,
                       error_message = CASE WHEN id %% 100 = 0 THEN 'relation "users" already exists' END
                   WHERE rollout_id = %s""",
                [rollout_id],
            )
            conn.execute(
                "UPDATE rollouts SET state = 'failed', finished_at = now() WHERE id = %s", [rollout_id]
            )
    return rollout_id


def start_server(control: str, **env: str) -> ServeProcess:
    """``tenantctl serve`` on the control DB ``control`` with the bench's token, ready to answer."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TENANTCTL_")}
    environ.update(
        TENANTCTL_DATABASE_URL=control,
        TENANTCTL_ALEMBIC_CONFIG=str(ALEMBIC_INI),
        TENANTCTL_SECRET_KEY="bench-secret-key-bench-secret-key",
        TENANTCTL_API_TOKENS=TOKENS,
        TENANTCTL_POLL_INTERVAL="0.5",
        TENANTCTL_REAP_INTERVAL="3600",
        **env,
    )
    server = ServeProcess(environ, ROOT, Path(tempfile.mkstemp(prefix="tctl-bench-serve-", suffix=".log")[1]))
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def _latencies(client: httpx.Client, path: str, n: int) -> dict[str, float]:
    client.get(path, headers=HEADERS).raise_for_status()  # warm
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path, headers=HEADERS)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
        "bytes": len(response.content),
    }


def phase_reads(control: str, rollout_id: int, requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, env in (("cached", {}), ("uncached", {"TENANTCTL_METRICS_CACHE_SECONDS": "0"})):
        server = start_server(control, **env)
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                if label == "cached":
                    out["rollout_first_page"] = _latencies(
                        client, f"/api/v1/rollouts/{rollout_id}?limit=100", requests
                    )
                    out["rollout_whole"] = _latencies(
                        client, f"/api/v1/rollouts/{rollout_id}", max(5, requests // 5)
                    )
                out[f"metrics_{label}"] = _latencies(client, "/metrics", requests)
        finally:
            server.stop()
    return out


def phase_browser(control: str, rollout_id: int, renders: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    server = start_server(control)
    times = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"{server.url}/login")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{server.url}/")
            for _ in range(renders):
                started = time.perf_counter()
                page.goto(f"{server.url}/rollouts/{rollout_id}")
                page.wait_for_function(
                    "n => window.tenantctlGrid && window.tenantctlGrid.count() >= n",
                    arg=_tenants_of(control, rollout_id),
                    timeout=60_000,
                )
                times.append((time.perf_counter() - started) * 1000)
            browser.close()
    finally:
        server.stop()
    return {"first_render_ms": [round(t) for t in times], "median_ms": round(statistics.median(times))}


def _tenants_of(control: str, rollout_id: int) -> int:
    with psycopg.connect(control.replace("+asyncpg", "")) as conn:
        row = conn.execute("SELECT count(*) FROM tenant_runs WHERE rollout_id = %s", [rollout_id]).fetchone()
    return int(row[0]) if row else 0


def _db_work(control: str) -> tuple[int, int]:
    name = control.rsplit("/", 1)[1]
    with psycopg.connect(control.replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres") as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, tup_returned + tup_fetched"
            " FROM pg_stat_database WHERE datname = %s",
            [name],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


class Progress(threading.Thread):
    """Finishes ``step`` queued runs of the rollout every half second, as workers would."""

    def __init__(self, control: str, rollout_id: int, step: int) -> None:
        super().__init__(daemon=True)
        self.control, self.rollout_id, self.step = control.replace("+asyncpg", ""), rollout_id, step
        self.halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.control, autocommit=True) as conn:
            while not self.halt.wait(0.5):
                conn.execute(
                    """UPDATE tenant_runs SET status = 'succeeded', started_at = now(), finished_at = now(),
                           duration_ms = 50, to_revision = '0004'
                       WHERE id IN (SELECT id FROM tenant_runs WHERE rollout_id = %s AND status = 'queued'
                                    ORDER BY id LIMIT %s)""",
                    [self.rollout_id, self.step],
                )


async def _watch(url: str, rollout_id: int, clients: int, seconds: float) -> int:
    """``clients`` SSE clients on the rollout for ``seconds``; returns the events they received."""
    received = 0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal received
        async with client.stream("GET", f"/api/v1/rollouts/{rollout_id}/events", headers=HEADERS) as response:
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    received += 1

    async with httpx.AsyncClient(
        base_url=url, timeout=None, limits=httpx.Limits(max_connections=clients + 5)
    ) as client:
        tasks = [asyncio.create_task(one(client)) for _ in range(clients)]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return received


def phase_sse(control: str, rollout_id: int, clients: int, seconds: float, step: int) -> dict[str, Any]:
    server = start_server(control)
    progress = Progress(control, rollout_id, step)
    progress.start()
    out: dict[str, Any] = {}
    try:
        for n in (0, 1, clients):
            meter = CpuMeter([server.proc.pid])
            before = _db_work(control)
            events = (
                asyncio.run(_watch(server.url, rollout_id, n, seconds)) if n else time.sleep(seconds) or 0
            )
            after = _db_work(control)
            cpu = meter.read()
            out[f"{n}_clients"] = {
                "events_received": events,
                "control_db_transactions": after[0] - before[0],
                "control_db_rows_read": after[1] - before[1],
                "server_cpu_s": cpu["watched"],
                "postgresql_cpu_s": cpu["postgresql"],
            }
            log(f"  {n} SSE client(s): {out[f'{n}_clients']}")
    finally:
        progress.halt.set()
        progress.join()
        server.stop()
    one, many = out["1_clients"], out[f"{clients}_clients"]
    out["extra_transactions_for_all_over_one"] = (
        many["control_db_transactions"] - one["control_db_transactions"]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--renders", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--watch", type=float, default=10.0, help="seconds each SSE window lasts")
    parser.add_argument("--step", type=int, default=50, help="runs finished every half second (c)")
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args()
    dbs = Databases()
    results: dict[str, Any] = {
        "tenants": args.tenants,
        "machine": machine(),
        "git": git_state(),
        "load_before": loadavg(),
    }
    with interrupts_unwind():
        try:
            control = dbs.url(dbs.create(dbs.name("ctl")), driver="postgresql+asyncpg")
            finished = asyncio.run(_seed(control, args.tenants, running=False))
            log(f"(a) reads of a finished {args.tenants}-tenant rollout")
            results["reads"] = phase_reads(control, finished, args.requests)
            log(f"    {results['reads']}")
            if not args.skip_browser:
                log("(b) the dashboard's rollout page in Chromium")
                results["browser"] = phase_browser(control, finished, args.renders)
                log(f"    {results['browser']}")
            live = dbs.url(dbs.create(dbs.name("live")), driver="postgresql+asyncpg")
            running = asyncio.run(_seed(live, args.tenants, running=True))
            log(f"(c) SSE clients on a running {args.tenants}-tenant rollout")
            results["sse"] = phase_sse(live, running, args.clients, args.watch, args.step)
        finally:
            dbs.drop_all()
    results["load_after"] = loadavg()
    path = write_results("api_bench", results)
    log(f"results: {path}")


if __name__ == "__main__":
    main()
