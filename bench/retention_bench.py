"""Benchmark of the control DB's growth per tenant run, and of ``tenantctl prune``, on a local PostgreSQL:

    python -m bench.retention_bench [--tenants 1000] [--rollouts 100] [--keep-last 10] [--audits 30]

(a) **growth**: ``--rollouts`` finished rollouts of ``--tenants`` tenants each, written into a throwaway
    control DB: each rollout through the store (``create_rollout``, then ``finish_if_done`` closes it),
    its runs as finished rows by ``COPY`` (realistic values: revisions, timings, worker, host; 1% failed
    with a 1.5 KB scrubbed traceback), then ``--audits`` revision audits of every tenant through
    ``save_audit``. ``pg_total_relation_size`` (heap, TOAST and indexes) of each table at checkpoints;
(b) **the lifecycle's dead rows**: one more rollout whose runs go as a real one does, inserted ``queued``
    by the store, then claimed and settled (two bulk ``UPDATE``s): its size before and after ``VACUUM``;
(c) **prune**: ``tenantctl prune --older-than 0 --keep-last K --json`` end to end (CLI subprocess), after
    its ``--dry-run``; sizes right after, after a plain ``VACUUM``, after 10 more rollouts written into the
    space it freed, and after ``VACUUM FULL``.

Every database is named ``tctl_bench_…`` and dropped at the end, on failure and on Ctrl-C or SIGTERM.
Figures in ``bench/results/retention.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from bench.common import (
    ALEMBIC_INI,
    Databases,
    git_state,
    interrupts_unwind,
    loadavg,
    log,
    machine,
    write_results,
)
from orchestrator.audit import AuditKind, Finding, State
from orchestrator.controldb.engine import utcnow
from orchestrator.controldb.store import Store
from orchestrator.models import Command
from orchestrator.planning import Plan

TABLES = ("rollouts", "tenant_runs", "audits", "audit_findings", "api_idempotency", "schema_checks")
TRACEBACK = (
    "".join(
        f'  File "/srv/app/migrations/versions/0004_add_invoices.py", line {40 + i}, in upgrade\n'
        f"    op.execute(sa.text('UPDATE invoices SET total = amount * rate WHERE id > :n'))\n"
        for i in range(10)
    )
    + "psycopg.errors.LockNotAvailable: canceling statement due to lock timeout\n"
)
RUN_COLUMNS = (
    "rollout_id, tenant_id, attempt, status, from_revision, to_revision, applied, started_at, "
    "finished_at, duration_ms, worker, error_class, error_message, traceback, db_host, dispatched_at, "
    "lease_expires_at, wave, retries, blocked_by"
)


def _copy_runs(conn: psycopg.Connection[Any], rollout_id: int, tenants: list[str]) -> None:
    """A finished rollout's runs, one COPY: 99% succeeded 0003→0004, 1% failed with a traceback."""
    now = utcnow()
    buffer = io.StringIO()
    for i, tenant in enumerate(tenants):
        started = now + timedelta(milliseconds=25 * i)
        finished = started + timedelta(milliseconds=48)
        failed = i % 100 == 99
        row = [
            str(rollout_id),
            tenant,
            "1",
            "failed" if failed else "succeeded",
            "0003",
            "0003" if failed else "0004",
            "" if failed else "0004",
            started.isoformat(),
            finished.isoformat(),
            "48",
            f"celery@worker-{i % 4}-7d9f8b6c5-x2kq{i % 10}",
            "lock_timeout" if failed else r"\N",
            "canceling statement due to lock timeout" if failed else r"\N",
            TRACEBACK.replace("\n", "\\n") if failed else r"\N",
            f"db{i % 3}.internal:5432",
            started.isoformat(),
            r"\N",
            "1",
            "0",
            r"\N",
        ]
        buffer.write("\t".join(row) + "\n")
    with conn.cursor() as cur, cur.copy(f"COPY tenant_runs ({RUN_COLUMNS}) FROM STDIN") as copy:
        copy.write(buffer.getvalue())


async def _rollout(store: Store, tenants: list[str], queued: bool = False) -> int:
    plan = Plan(queued=[(t, "0003") for t in tenants] if queued else [])
    return await store.create_rollout(
        command=Command.UPGRADE,
        target="head",
        selection={"tags": ["eu"]},
        created_by="bench@host",
        parallel=8,
        plan=plan,
        hosts={t: f"db{i % 3}.internal:5432" for i, t in enumerate(tenants)},
    )


def sizes(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Bytes of each history table (heap + TOAST + indexes), its live and dead rows, and the database's."""
    found: dict[str, Any] = {"tables": {}}
    for table in TABLES:
        query = sql.SQL(
            "SELECT pg_total_relation_size(%s::regclass), pg_relation_size(%s::regclass), "
            "pg_indexes_size(%s::regclass), (SELECT count(*) FROM {}), "
            "coalesce((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s), 0)"
        ).format(sql.Identifier(table))
        row = conn.execute(query, [table, table, table, table]).fetchone()
        assert row is not None
        found["tables"][table] = {
            "bytes": int(row[0]),
            "heap": int(row[1]),
            "indexes": int(row[2]),
            "rows": int(row[3]),
            "dead": int(row[4]),
        }
    db = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    found["database_bytes"] = int(db[0]) if db else 0
    found["history_bytes"] = sum(t["bytes"] for t in found["tables"].values())
    return found


def _cli(url: str, *args: str) -> tuple[float, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTCTL_")}
    env.update(TENANTCTL_DATABASE_URL=url, TENANTCTL_ALEMBIC_CONFIG=str(ALEMBIC_INI))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "prune", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"prune failed: {done.stderr.strip()}")
    report: dict[str, Any] = json.loads(done.stdout)
    return elapsed, report


async def _fill(store: Store, conn: psycopg.Connection[Any], tenants: list[str], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        rid = await _rollout(store, tenants)
        _copy_runs(conn, rid, tenants)
        conn.commit()
        await store.finish_if_done(rid)
    return time.perf_counter() - started


async def _audits(store: Store, tenants: list[str], n: int) -> None:
    findings = [Finding(tenant_id=t, state=State.AT_HEAD, revision="0004") for t in tenants]
    for _ in range(n):
        await store.save_audit(
            kind=AuditKind.REVISION,
            created_by="beat",
            selection={},
            head="0004",
            counts={"at_head": len(tenants)},
            drift=0,
            findings=findings,
        )


async def _lifecycle(store: Store, conn: psycopg.Connection[Any], tenants: list[str]) -> dict[str, Any]:
    """One rollout written as a real one is: queued rows, then claim and settle as bulk updates."""
    before = sizes(conn)["tables"]["tenant_runs"]["bytes"]
    rid = await _rollout(store, tenants, queued=True)
    conn.execute(
        "UPDATE tenant_runs SET status = 'running', started_at = now(), worker = 'celery@worker-0', "
        "dispatched_at = now(), lease_expires_at = now() + interval '30 s' WHERE rollout_id = %s",
        [rid],
    )
    conn.execute(
        "UPDATE tenant_runs SET status = 'succeeded', finished_at = now(), to_revision = '0004', "
        "applied = '0004', duration_ms = 48, lease_expires_at = NULL WHERE rollout_id = %s",
        [rid],
    )
    conn.commit()
    await store.finish_if_done(rid)
    grown = sizes(conn)["tables"]["tenant_runs"]["bytes"] - before
    conn.execute("VACUUM tenant_runs")
    return {"rollout": rid, "bytes_before_vacuum": grown, "runs": len(tenants)}


async def measure(args: argparse.Namespace, dbs: Databases) -> dict[str, Any]:
    name = dbs.create(dbs.name("control"))
    url = dbs.url(name)
    tenants = [f"tenant-{i:05d}" for i in range(args.tenants)]
    figures: dict[str, Any] = {"args": vars(args), "machine": machine(), "git": git_state()}
    async with Store(url, pooled=True, pre_ping=False) as store:
        await store.migrate()
        conn = psycopg.connect(url)
        conn.autocommit = False
        try:
            with psycopg.connect(url, autocommit=True) as admin:
                figures["empty"] = sizes(admin)
                checkpoints = sorted({1, 10, args.rollouts // 2, args.rollouts} - {0})
                growth, done = [], 0
                for point in checkpoints:
                    took = await _fill(store, conn, tenants, point - done)
                    done = point
                    growth.append({"rollouts": point, "fill_s": round(took, 2), **sizes(admin)})
                    runs = growth[-1]["tables"]["tenant_runs"]
                    log(f"{point} rollouts: tenant_runs {runs['bytes'] / 2**20:.1f} MiB, {runs['rows']} rows")
                figures["growth"] = growth
                await _audits(store, tenants, args.audits)
                figures["with_audits"] = sizes(admin)
                conn.autocommit = True
                lifecycle = await _lifecycle(store, conn, tenants)
                conn.autocommit = False
                lifecycle["after_vacuum"] = sizes(admin)
                figures["lifecycle"] = lifecycle
                admin.execute("VACUUM ANALYZE")
                figures["before_prune"] = sizes(admin)
                keep = ["--older-than", "0", "--keep-last", str(args.keep_last)]
                dry_s, dry = _cli(url, *keep, "--dry-run")
                prune_s, report = _cli(url, *keep)
                figures["prune"] = {"dry_run_s": round(dry_s, 2), "dry_run": dry, "s": round(prune_s, 2)}
                figures["prune"]["report"] = report
                figures["after_prune"] = sizes(admin)
                admin.execute("VACUUM")
                figures["after_vacuum"] = sizes(admin)
                await _fill(store, conn, tenants, 10)
                figures["after_10_more"] = sizes(admin)
                admin.execute("VACUUM FULL")
                figures["after_vacuum_full"] = sizes(admin)
                figures["loadavg"] = loadavg()
        finally:
            conn.close()
    return figures


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def summarise(f: dict[str, Any]) -> None:
    def out(line: str) -> None:
        print(line, flush=True)

    last = f["growth"][-1]
    runs = last["tables"]["tenant_runs"]
    empty = f["empty"]["tables"]["tenant_runs"]["bytes"]
    out(f"tenants {f['args']['tenants']}, rollouts {f['args']['rollouts']}, audits {f['args']['audits']}")
    out("rollouts | tenant_runs rows | tenant_runs | bytes/run | history tables | database")
    for g in f["growth"]:
        t = g["tables"]["tenant_runs"]
        per = (t["bytes"] - empty) / max(t["rows"], 1)
        out(
            f"{g['rollouts']:>8} | {t['rows']:>16,} | {_mib(t['bytes']):>11} | {per:>9,.0f} | "
            f"{_mib(g['history_bytes']):>14} | {_mib(g['database_bytes'])}"
        )
    findings = f["with_audits"]["tables"]["audit_findings"]
    out(
        f"audits: {f['args']['audits']} x {f['args']['tenants']} findings = {_mib(findings['bytes'])} "
        f"({findings['bytes'] / max(findings['rows'], 1):,.0f} bytes/finding)"
    )
    life = f["lifecycle"]
    out(
        "one rollout through queued → running → succeeded: tenant_runs grew "
        f"{_mib(life['bytes_before_vacuum'])}"
        f" ({life['bytes_before_vacuum'] / life['runs']:,.0f} bytes/run before VACUUM); COPY'd runs: "
        f"{(runs['bytes'] - empty) / max(runs['rows'], 1):,.0f} bytes/run"
    )
    p = f["prune"]
    rep = p["report"]
    out(
        f"prune --older-than 0 --keep-last {f['args']['keep_last']}: {p['s']} s end to end (dry run "
        f"{p['dry_run_s']} s): {rep['rollouts']} rollouts, {rep['runs']:,} runs, {rep['audits']} audits "
        f"({rep['findings']:,} findings) in {rep['batches']} batches"
    )
    for label, key in (
        ("before prune (after VACUUM ANALYZE)", "before_prune"),
        ("right after prune", "after_prune"),
        ("after VACUUM", "after_vacuum"),
        ("after 10 more rollouts", "after_10_more"),
        ("after VACUUM FULL", "after_vacuum_full"),
    ):
        s = f[key]
        t = s["tables"]["tenant_runs"]
        out(
            f"{label:>36}: history {_mib(s['history_bytes'])}, tenant_runs {_mib(t['bytes'])} (heap "
            f"{_mib(t['heap'])}, indexes {_mib(t['indexes'])}; {t['rows']:,} live, {t['dead']:,} dead), "
            f"database {_mib(s['database_bytes'])}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.retention_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tenants", type=int, default=1000, help="tenants per rollout (default 1000)")
    parser.add_argument("--rollouts", type=int, default=100, help="finished rollouts written (default 100)")
    parser.add_argument("--keep-last", type=int, default=10, help="prune's --keep-last (default 10)")
    parser.add_argument("--audits", type=int, default=30, help="revision audits of every tenant (default 30)")
    parser.add_argument(
        "--server",
        default=os.environ.get("TENANTCTL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432"),
        help="PostgreSQL server URL without a database (default: TENANTCTL_BENCH_PG or local 5432)",
    )
    args = parser.parse_args(argv)
    dbs = Databases(args.server)
    with interrupts_unwind():
        try:
            figures = asyncio.run(measure(args, dbs))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            dbs.drop_all()
    summarise(figures)
    log(f"figures in {write_results('retention', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
