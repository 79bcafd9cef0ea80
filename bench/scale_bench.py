"""Benchmark of tenantctl at 10,000 tenants (issue 14), one function per phase, on the local PostgreSQL.

``reads``: schema-per-tenant revision reads grouped by database. ``--databases`` (10) databases of
``--schemas`` (1,000) schemas each, every schema with a version table at head, registered as schema
tenants in a fresh PostgreSQL control DB through ``tenantctl tenants import`` (timed). Then, over
``--rounds`` (3) rounds, end to end through the CLI (interpreter start included): a no-op
``tenantctl upgrade head``, ``tenantctl current --json`` and the revision audit ``tenantctl audit``; and
in process, ``revisions.read_all`` (one connection per database) against the per-tenant path it replaced
for schema tenants (``revisions.read_one`` for each tenant: a connection each), alternated, both at
``--read-concurrency`` (32) at a time.

    python -m bench.scale_bench --phase reads [--databases 10 --schemas 1000]

Every database it creates is named ``tctl_bench_<run>_…`` and dropped at the end, on failure, Ctrl-C or
SIGTERM. The table goes to stdout, progress to stderr, the figures to ``bench/results/scale_<phase>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql
from pydantic import SecretStr

from bench.common import (
    ALEMBIC_INI,
    CpuMeter,
    Databases,
    interrupts_unwind,
    loadavg,
    log,
    machine,
    write_results,
)
from orchestrator import coordinator
from orchestrator.controldb.store import Store
from orchestrator.models import Selector
from orchestrator.revisions import Probe, RevisionRead, read_all, read_one
from orchestrator.settings import Settings

SECRET_KEY = "bench-secret-key"
PASSWORD = "bench-pw"  # trust auth ignores it; stored encrypted, so every read pays for decryption
TABLE = "alembic_version"
CHUNK = 100  # schemas created per statement: a few hundred locks per transaction, not thousands


def head_revision() -> str:
    (head,) = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_heads()
    return str(head)


class Control:
    """A fresh control DB, the registry filled through the CLI, and the CLI run in subprocesses."""

    def __init__(self, dbs: Databases, workdir: Path, read_concurrency: int) -> None:
        self.workdir = workdir
        self.url = dbs.url(dbs.create(dbs.name("ctl")), driver="postgresql+asyncpg")
        self.read_concurrency = read_concurrency

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTCTL_")}
        env.update(
            TENANTCTL_DATABASE_URL=self.url,
            TENANTCTL_ALEMBIC_CONFIG=str(ALEMBIC_INI),
            TENANTCTL_SECRET_KEY=SECRET_KEY,
            TENANTCTL_READ_CONCURRENCY=str(self.read_concurrency),
            COLUMNS="200",
        )
        return env

    def cli(self, *args: str, ok: Sequence[int] = (0,)) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=self.env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        seconds = time.perf_counter() - started
        if result.returncode not in ok:
            raise RuntimeError(
                f"tenantctl {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}"
            )
        return seconds, result


# ---------------------------------------------------------------------------------------------------
# the schema fleet


def create_schema_fleet(dbs: Databases, databases: int, schemas: int, head: str) -> list[str]:
    """``databases`` databases of ``schemas`` schemas, each with a version table at ``head``: a template
    filled by DO blocks of CHUNK schemas, then cloned. Returns the database names."""
    template = dbs.create(dbs.name("schematpl"))
    started = time.perf_counter()
    block = """
        DO $$ BEGIN
        FOR i IN {lo}..{hi} LOOP
            EXECUTE format('CREATE SCHEMA %I', 'tenant_' || lpad(i::text, 5, '0'));
            EXECUTE format('CREATE TABLE %I.alembic_version (version_num varchar(32) NOT NULL, '
                           'CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))',
                           'tenant_' || lpad(i::text, 5, '0'));
            EXECUTE format('INSERT INTO %I.alembic_version VALUES (%L)',
                           'tenant_' || lpad(i::text, 5, '0'), {head});
        END LOOP;
        END $$"""
    with psycopg.connect(dbs.url(template), autocommit=True) as conn:
        for lo in range(0, schemas, CHUNK):
            hi = min(lo + CHUNK, schemas) - 1
            conn.execute(sql.SQL(block).format(lo=lo, hi=hi, head=sql.Literal(head)).as_string(conn))
    filled = time.perf_counter() - started
    names = [dbs.name(f"schemas{i:02d}") for i in range(databases)]
    cloned = dbs.clone_many(names, template)
    log(f"{schemas} schemas created in {filled:.1f}s, cloned into {databases} databases in {cloned:.1f}s")
    return names


def schema_rows(dbs: Databases, names: Sequence[str], schemas: int) -> list[tuple[str, str, str]]:
    """(tenant id, URL, schema) of every schema tenant."""
    return [
        (f"d{d:02d}-{i:05d}", dbs.url(name, password=PASSWORD), f"tenant_{i:05d}")
        for d, name in enumerate(names)
        for i in range(schemas)
    ]


def import_file(workdir: Path, rows: Sequence[tuple[str, str, str]]) -> Path:
    path = workdir / "tenants.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "url", "schema"])
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------------------------------------------
# in-process reads: grouped against the per-tenant path


async def per_tenant(probes: Sequence[Probe], concurrency: int, timeout: float) -> dict[str, RevisionRead]:
    """The read before grouping: ``read_one`` for every tenant, a connection each, ``concurrency`` at a
    time (exactly what ``read_all`` did for schema tenants)."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded(probe: Probe) -> RevisionRead:
        async with gate:
            return await read_one(probe, TABLE, timeout)

    return {r.tenant_id: r for r in await asyncio.gather(*(bounded(p) for p in probes))}


def timed_reads(
    fn: Callable[[], Coroutine[Any, Any, dict[str, RevisionRead]]], head: str, n: int
) -> tuple[float, dict[str, float]]:
    meter = CpuMeter()
    started = time.perf_counter()
    reads = asyncio.run(fn())
    seconds = time.perf_counter() - started
    cpu = meter.read()
    wrong = [r for r in reads.values() if r.heads != (head,)]
    if len(reads) != n or wrong:
        raise RuntimeError(f"{len(reads)} reads, {len(wrong)} not at {head}: {wrong[:3]}")
    return seconds, cpu


async def split_current(control: Control) -> dict[str, float]:
    """``coordinator.current`` in process, in its two parts: the selection (registry read, passwords
    decrypted, URLs built) and the reads. Where the CLI's time goes, less its start and its output."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=SecretStr(control.url),
        alembic_config=ALEMBIC_INI,
        secret_key=SecretStr(SECRET_KEY),
        read_concurrency=control.read_concurrency,
    )
    async with Store(control.url) as store:
        started = time.perf_counter()
        resolved = await coordinator.resolve_selection(settings, store, Selector(), dict(os.environ))
        selected = time.perf_counter()
        await coordinator.read_current(settings, resolved)
        done = time.perf_counter()
    return {"selection": selected - started, "reads": done - selected}


# ---------------------------------------------------------------------------------------------------
# phases


def phase_reads(args: argparse.Namespace, dbs: Databases, workdir: Path) -> dict[str, Any]:
    head = head_revision()
    n = args.databases * args.schemas
    names = create_schema_fleet(dbs, args.databases, args.schemas, head)
    rows = schema_rows(dbs, names, args.schemas)
    control = Control(dbs, workdir, args.read_concurrency)
    control.cli("db", "upgrade")
    imported, _ = control.cli("tenants", "import", str(import_file(workdir, rows)), "--json")
    log(f"tenants import of {n} rows: {imported:.2f}s")

    probes = [Probe(tenant_id=t, url=u, schema=s) for t, u, s in rows]
    conc, timeout = args.read_concurrency, 5.0
    keys = ("upgrade", "current", "audit", "selection", "reads", "grouped", "per_tenant")
    out: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[dict[str, float]]] = {"grouped": [], "per_tenant": []}
    for round_ in range(args.rounds):
        seconds, result = control.cli("upgrade", "head", "--json")
        report = json.loads(result.stdout)
        if report["counts"].get("skipped") != n:
            raise RuntimeError(f"the no-op rollout did not skip all {n}: {report['counts']}")
        out["upgrade"].append(seconds)
        seconds, result = control.cli("current", "--json")
        if sum(r["revision"] == head for r in json.loads(result.stdout)) != n:
            raise RuntimeError("current --json: not every tenant at head")
        out["current"].append(seconds)
        seconds, result = control.cli("audit", "--json")
        out["audit"].append(seconds)
        for part, seconds in asyncio.run(split_current(control)).items():
            out[part].append(seconds)
        seconds, used = timed_reads(
            lambda: read_all(probes, version_table=TABLE, concurrency=conc, timeout=timeout), head, n
        )
        out["grouped"].append(seconds)
        cpu["grouped"].append(used)
        if round_ < args.baseline_rounds:
            seconds, used = timed_reads(lambda: per_tenant(probes, conc, timeout), head, n)
            out["per_tenant"].append(seconds)
            cpu["per_tenant"].append(used)
        log(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in out.items() if v))
    medians = {k: round(statistics.median(v), 3) for k, v in out.items() if v}
    return {
        "tenants": n,
        "databases": args.databases,
        "read_concurrency": conc,
        "import_s": round(imported, 3),
        "seconds": {k: [round(x, 3) for x in v] for k, v in out.items()},
        "median_s": medians,
        "cpu_s": cpu,
        "per_tenant_over_grouped": round(medians["per_tenant"] / medians["grouped"], 1)
        if "per_tenant" in medians
        else None,
        "loadavg_after": loadavg(),
    }


def report_reads(r: dict[str, Any]) -> str:
    m = r["median_s"]
    lines = [
        f"schema-per-tenant reads: {r['tenants']} tenants in {r['databases']} databases, "
        f"read concurrency {r['read_concurrency']}; median of {len(r['seconds']['grouped'])} rounds",
        "",
        "| what | seconds | tenants/s |",
        "| --- | ---: | ---: |",
        f"| `tenants import` ({r['tenants']} rows, once) | {r['import_s']:.2f} | "
        f"{r['tenants'] / r['import_s']:,.0f} |",
    ]
    labels = {
        "upgrade": "`tenantctl upgrade head` (no-op), end to end",
        "current": "`tenantctl current --json`, end to end",
        "audit": "`tenantctl audit --json`, end to end",
        "selection": "in process: `resolve_selection` (registry, passwords, URLs)",
        "reads": "in process: `read_current` after it (grouped reads)",
        "grouped": "`read_all` in process (grouped by database)",
        "per_tenant": "per-tenant path in process (a connection each)",
    }
    for key, label in labels.items():
        if key in m:
            lines.append(f"| {label} | {m[key]:.2f} | {r['tenants'] / m[key]:,.0f} |")
    if r["per_tenant_over_grouped"]:
        lines.append(f"\nper-tenant / grouped: {r['per_tenant_over_grouped']} times")
    return "\n".join(lines)


Phase = Callable[[argparse.Namespace, Databases, Path], dict[str, Any]]
# a phase: (measure, report its figures as a table); another phase is one more entry
PHASES: dict[str, tuple[Phase, Callable[[dict[str, Any]], str]]] = {
    "reads": (phase_reads, report_reads),
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scale_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--phase", choices=sorted(PHASES), action="append", help="repeatable; default: all")
    p.add_argument("--databases", type=int, default=10, help="databases of schema tenants (10)")
    p.add_argument("--schemas", type=int, default=1000, help="schemas per database (1000)")
    p.add_argument("--read-concurrency", type=int, default=32, help="TENANTCTL_READ_CONCURRENCY (32)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds of each measurement (3)")
    p.add_argument("--baseline-rounds", type=int, default=1, help="rounds of the slow per-tenant path (1)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    results: dict[str, Any] = {"machine": machine()}
    for phase in args.phase or sorted(PHASES):
        run, report = PHASES[phase]
        dbs = Databases()
        try:
            with interrupts_unwind(), tempfile.TemporaryDirectory(prefix="tctl-scale-") as tmp:
                results[phase] = run(args, dbs, Path(tmp))
        finally:
            dbs.drop_all()
            left = dbs.leftovers()
            if left:
                log(f"left behind: {left}")
        path = write_results(f"scale_{phase}", {"machine": results["machine"], phase: results[phase]})
        print(report(results[phase]))
        log(f"figures in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
