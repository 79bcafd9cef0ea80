"""Benchmark of the revision audit, in one run on a local PostgreSQL:

(a) the floor: read ``alembic_version`` from every tenant database over asyncpg, ``--concurrency`` at a
    time (connect, one SELECT, close: nothing else);
(b) the revision audit itself (``auditor.run_audit``: registry read and password decryption, the same
    concurrent reads, classification, the report stored in a PostgreSQL control DB), alternated with (a)
    over ``--rounds`` rounds; then once end to end through the CLI (``python -m orchestrator audit --json``
    in a subprocess, interpreter start included);
(c) a shell loop of ``alembic -c migrations/alembic.ini -x url=… current`` over ``--sample`` tenants,
    whose rate is extrapolated to all N.

    python -m bench.audit_bench --tenants 500

It creates N tenant databases by cloning one at head (``CREATE DATABASE … TEMPLATE … STRATEGY
FILE_COPY``; six then get other version rows), a control DB and a template, all named ``tctl_bench_…``,
and drops every one of them at the end, on failure and on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg
from alembic import command
from alembic.config import Config
from pydantic import SecretStr

from bench.common import Databases, interrupts_unwind
from orchestrator import auditor, registry
from orchestrator.audit import AuditKind
from orchestrator.controldb.store import Store
from orchestrator.models import Selector, TenantSpec
from orchestrator.secrets import SecretBox
from orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = ROOT / "migrations" / "alembic.ini"
SECRET_KEY = "bench-secret-key"
PASSWORD = "bench-pw"  # trust auth ignores it; stored encrypted so the audit pays for decryption


def build_fleet(dbs: Databases, n: int) -> list[str]:
    """N tenant databases cloned from one at head; six with other version rows. Returns their names."""
    template = dbs.create(dbs.name("tpl"))
    cfg = Config(str(ALEMBIC_INI), cmd_opts=argparse.Namespace(x=[f"url={dbs.url(template)}"]))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    names = [dbs.name(f"{i:05d}") for i in range(n)]
    started = time.perf_counter()

    def clone(chunk: list[str]) -> None:
        with dbs.admin() as conn:
            for name in chunk:
                dbs.create(name, template=template, conn=conn)

    workers = 4
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(clone, [names[i::workers] for i in range(workers)]))
    for name, version in [*((names[i], "0002") for i in range(5)), (names[5], "deadbeef")]:
        with psycopg.connect(dbs.url(name), autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", [version])
    print(f"created {n} tenant databases in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return names


async def register(settings: Settings, dbs: Databases, names: list[str]) -> None:
    box = SecretBox(SECRET_KEY)
    tenants = [
        registry.to_tenant(TenantSpec(id=f"t{i:05d}", url=dbs.url(name, password=PASSWORD)), box)
        for i, name in enumerate(names)
    ]
    async with Store(settings.database_url.get_secret_value()) as store:
        await store.migrate()
        await store.write_tenants(tenants, [])


async def floor(urls: list[str], concurrency: int, timeout: float) -> float:
    """Seconds to read every tenant's alembic_version over asyncpg, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str) -> None:
        async with gate:
            conn = await asyncpg.connect(url, timeout=timeout)
            try:
                await conn.fetch("SELECT version_num FROM alembic_version")
            finally:
                await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(u) for u in urls))
    return time.perf_counter() - started


async def audit(settings: Settings) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    async with Store(settings.database_url.get_secret_value()) as store:
        report = await auditor.run_audit(
            settings, store, kind=AuditKind.REVISION, selector=Selector(), created_by="bench", environ={}
        )
    return time.perf_counter() - started, report


def cli_audit(env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "audit", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode not in (0, 1):
        raise RuntimeError(f"tenantctl audit failed ({result.returncode}): {result.stderr}")
    return elapsed, json.loads(result.stdout)


def shell_loop(urls: list[str]) -> float:
    """Seconds for `alembic current` over ``urls``, one after the other, as a shell script would."""
    lines = [f'alembic -c "{ALEMBIC_INI}" -x url="{u}" current >/dev/null 2>&1 || exit 1' for u in urls]
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as script:
        script.write("set -e\n" + "\n".join(lines) + "\n")
    try:
        started = time.perf_counter()
        subprocess.run(["bash", script.name], check=True, timeout=1200)
        return time.perf_counter() - started
    finally:
        os.unlink(script.name)


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def measure(args: argparse.Namespace, dbs: Databases) -> dict[str, Any]:
    names = build_fleet(dbs, args.tenants)
    control = dbs.create(dbs.name("ctl"))
    control_url = dbs.url(control, driver="postgresql+asyncpg")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=SecretStr(control_url),
        alembic_config=ALEMBIC_INI,
        secret_key=SecretStr(SECRET_KEY),
        read_concurrency=args.concurrency,
        connect_timeout=10.0,
    )
    asyncio.run(register(settings, dbs, names))
    urls = [dbs.url(name, password=PASSWORD) for name in names]
    n = len(urls)

    asyncio.run(floor(urls, args.concurrency, 10.0))  # warm-up: first connection to a fresh database
    floors: list[float] = []
    audits: list[float] = []
    report: dict[str, Any] = {}
    for _ in range(args.rounds):
        floors.append(asyncio.run(floor(urls, args.concurrency, 10.0)))
        seconds, report = asyncio.run(audit(settings))
        audits.append(seconds)
    assert len(report["tenants"]) == n and report["drift"] == 6, report["counts"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTCTL_")}
    env |= {
        "TENANTCTL_DATABASE_URL": control_url,
        "TENANTCTL_ALEMBIC_CONFIG": str(ALEMBIC_INI),
        "TENANTCTL_SECRET_KEY": SECRET_KEY,
        "TENANTCTL_READ_CONCURRENCY": str(args.concurrency),
    }
    cli_seconds, cli_report = cli_audit(env)
    assert len(cli_report["tenants"]) == n

    sample = urls[:: max(1, n // args.sample)][: args.sample]
    shell_seconds = shell_loop(sample)
    return {
        "tenants": n,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "floor_s": floors,
        "audit_s": audits,
        "cli_s": cli_seconds,
        "shell_sample": len(sample),
        "shell_s": shell_seconds,
    }


def summarise(m: dict[str, Any], out: Callable[[str], None] = print) -> None:
    n = m["tenants"]
    floor_s = statistics.median(m["floor_s"])
    audit_s = statistics.median(m["audit_s"])
    shell_rate = rate(m["shell_sample"], m["shell_s"])
    rows = [
        ("floor: asyncpg read of alembic_version", n, floor_s, rate(n, floor_s)),
        ("revision audit (auditor.run_audit)", n, audit_s, rate(n, audit_s)),
        ("tenantctl audit --json (CLI subprocess)", n, m["cli_s"], rate(n, m["cli_s"])),
        (
            f"alembic current shell loop ({m['shell_sample']} tenants, extrapolated)",
            n,
            n / shell_rate,
            shell_rate,
        ),
    ]
    out(
        f"{n} tenant databases, concurrency {m['concurrency']}, median of {m['rounds']} alternated rounds "
        f"(floor {', '.join(f'{s:.3f}' for s in m['floor_s'])} s; "
        f"audit {', '.join(f'{s:.3f}' for s in m['audit_s'])} s)"
    )
    out(f"{'method':<62} {'seconds':>9} {'tenants/s':>10}")
    for label, _n, seconds, per_s in rows:
        out(f"{label:<62} {seconds:>9.2f} {per_s:>10.1f}")
    out(f"audit / floor: {rate(n, audit_s) / rate(n, floor_s):.0%} (target ≥ 70%)")
    out(f"audit / alembic shell loop: {rate(n, audit_s) / shell_rate:.0f}x (target ≥ 50x)")
    out(f"CLI end to end / alembic shell loop: {rate(n, m['cli_s']) / shell_rate:.0f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=500, help="tenant databases to create (default 500)")
    parser.add_argument(
        "--sample", type=int, default=20, help="tenants in the alembic shell loop (default 20)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=Settings.model_fields["read_concurrency"].default,
        help="reads at once, for the floor and the audit (default: TENANTCTL_READ_CONCURRENCY's default)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternated floor/audit rounds (default 3)")
    parser.add_argument(
        "--server",
        default=os.environ.get("TENANTCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432"),
        help="PostgreSQL server URL without a database (default: TENANTCTL_TEST_PG or local 5432)",
    )
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = parser.parse_args(argv)
    dbs = Databases(args.server)
    with interrupts_unwind():
        try:
            figures = measure(args, dbs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            dbs.drop_all()
    summarise(figures)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
