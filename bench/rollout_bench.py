"""Benchmark of a rollout (issues 3 and 14), in one run on the local PostgreSQL:

(a) ``shell``: the shell loop ``alembic -c …/alembic.ini -x url=… upgrade head``, one process per tenant,
    over ``--shell-sample`` tenants (its rate is measured on that sample);
(b) ``api``: ``alembic.command.upgrade(Config(ini, cmd_opts=…), "head")`` per tenant, sequentially, in one
    (spawned) process; the loop alone is timed;
(c) ``raw``: the floor, the offline SQL of the same upgrade (``upgrade head --sql``, generated once) sent
    to each tenant over asyncpg, 4 tenants at a time (connect, one ``execute`` of the script with its
    BEGIN/COMMIT per revision, close);
(d) ``celery``: ``tenantctl upgrade head --parallel 4`` through Celery (Redis DB 14, a queue of its own)
    and one ``tenantctl worker -c 2`` (prefork), CLI end to end, interpreter start included; the control
    DB has not seen the tenants at base, so every one is read before planning;
``steady``: (d) again in steady use: before it (not timed) a no-op ``tenantctl downgrade base`` has seen
    every tenant at base, so the plan queues them without a preflight read;
(e) ``inprocess``: ``tenantctl upgrade head --parallel 2`` with the in-process executor, end to end;
``inprocess1``: the same with ``--parallel 1``, against (b);
(f) ``units``: a ceiling, tenantctl's unit of work alone (``run_unit``: lock, reads, Alembic over the
    cached script directory and the shared Engine) per tenant in ``--ceiling-processes`` (2) spawned
    processes, each over its share of the tenants, with no control DB, broker or coordinator;
(g) ``alembic``: a lower ceiling still, the same processes running only Alembic (``run_alembic`` on a
    connection of the shared Engine): what any orchestrator that runs Alembic per tenant could reach;
(h) ``pool``: what a user writes instead of a tool (:data:`POOL_SCRIPT`, run as its own script): a plain
    ``concurrent.futures.ProcessPoolExecutor(--pool-processes)`` mapping ``command.upgrade`` over the
    tenants, timed from before the pool starts until it has shut down (its interpreter start is
    reported beside it, not counted);
``noop``: ``tenantctl upgrade head`` over ``--noop-tenants`` tenants already at head (every one skipped)
    against reading ``alembic_version`` from each over asyncpg at the same concurrency (32);
``memory``: ``--memory-tasks`` Celery tasks (rollouts over ``--memory-tenants`` tenants: ``stamp 0003`` and
    ``stamp head`` alternately, or with ``--memory-workload migrate`` ``downgrade base`` and ``upgrade
    head``) through one worker child (``-c 1``), its RSS read from /proc at 0, 100, 1k, 5k and all tasks.

Every migration phase takes the same N tenants from base to head (tables dropped between phases, not
timed), for each migration set of ``--migrations``: ``shipped`` (``migrations/``, four revisions on
empty tables) and ``data`` (``bench/migrations_data/``, five revisions: two tables, 2,000 rows seeded, an
index, a column, a backfill UPDATE), each set on tenants of its own. ``--layout schema`` puts each set's
tenants in schemas of one database instead of a database each. ``--rounds R`` runs every migrating phase
R times, the order of the phases (and of the sets) reversed every other round, so that the ratios of one
round compare methods measured minutes apart on the same machine. The noop and memory phases use the
shipped set on databases of their own, whatever the options.

Run: ``python -m bench.rollout_bench [--tenants 200] [--migrations data] [--skip shell] …``; the tables go
to stdout, progress to stderr, the figures to ``bench/results/rollout.json``.

Tenant databases are clones of a template (``bench.common.Databases``). Every database it creates is
named ``tctl_bench_<run>_…`` and dropped at the end, on failure, Ctrl-C or SIGTERM; the Redis keys of
its own queues (and kombu's bookkeeping keys its workers created) are deleted. ``--report FILE`` prints
the tables of a saved run again.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import functools
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg
from psycopg import sql as pgsql

from .common import (
    ALEMBIC_INI,
    DATA_ALEMBIC_INI,
    CpuMeter,
    Databases,
    git_state,
    interrupts_unwind,
    loadavg,
    log,
    machine,
    rss_kib,
    write_results,
)

# migrating phases, in the order of the odd rounds (the even ones run them backwards): the methods
# compared with each other sit next to each other
MIGRATING = ("shell", "api", "inprocess1", "pool", "inprocess", "celery", "steady", "units", "alembic", "raw")
PHASES = (*MIGRATING, "noop", "memory")
SECRET_KEY = "bench-secret-key"
PASSWORD = "bench-pw"  # trust auth ignores it; stored encrypted, so workers pay for decryption
REDIS_DB = 14
HEAD = "0004"  # of the shipped set: the noop and memory phases
SCHEMA_STANDIN = "zzbenchschemazz"  # the schema the offline SQL of a schema layout is generated for


@dataclass(frozen=True, kw_only=True)
class MigrationSet:
    """A migration history every migrating method takes the tenants through, from base to ``head``.
    ``tables``: what a reset drops (CASCADE); ``prefix``: of its tenants' ids and databases."""

    name: str
    ini: Path
    head: str
    revisions: int
    tables: tuple[str, ...]
    prefix: str
    about: str

    @property
    def tag(self) -> str:
        return f"rollout-{self.name}"


SETS = {
    "shipped": MigrationSet(
        name="shipped",
        ini=ALEMBIC_INI,
        head="0004",
        revisions=4,
        tables=("alembic_version", "invoices", "accounts"),
        prefix="r",
        about="migrations/: two tables, an index, a column, on empty tables",
    ),
    "data": MigrationSet(
        name="data",
        ini=DATA_ALEMBIC_INI,
        head="d0005",
        revisions=5,
        tables=("alembic_version", "orders", "customers"),
        prefix="d",
        about="bench/migrations_data/: two tables, 2,000 rows seeded, an index, a column, a backfill UPDATE",
    ),
}


@dataclass(frozen=True, kw_only=True)
class Tenant:
    """One tenant as the methods see it: its database, and its schema in a schema layout."""

    id: str
    url: str
    schema: str | None = None

    @property
    def x(self) -> list[str]:
        """Its ``-x`` arguments, as a user hands them to Alembic."""
        return [f"url={self.url}", *([f"schema={self.schema}"] if self.schema else [])]

    def table(self, name: str) -> str:
        return (f'"{self.schema}".' if self.schema else "") + f'"{name}"'


# -- tenants ---------------------------------------------------------------------------------------
async def _each(items: Sequence[tuple[str, str]], concurrency: int, fetch: bool = False) -> list[list[Any]]:
    """For each (url, sql): connect, run ``sql`` (``execute``: a whole script, simple protocol; or
    ``fetch``: one query), close; ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str, sql: str) -> list[Any]:
        async with gate:
            conn = await asyncpg.connect(url, timeout=10)
            try:
                return list(await conn.fetch(sql)) if fetch else [await conn.execute(sql)]
            finally:
                await conn.close()

    return list(await asyncio.gather(*(one(u, s) for u, s in items)))


def _per_database(
    tenants: Sequence[Tenant],
    concurrency: int,
    work: Callable[[Any, Sequence[Tenant]], Awaitable[list[Any]]],
) -> dict[str, Any]:
    """``work(connection, tenants of that database)`` over one connection per database (schema tenants
    share theirs), ``concurrency`` databases at a time; its answers by tenant id."""
    groups: dict[str, list[Tenant]] = {}
    for tenant in tenants:
        groups.setdefault(tenant.url, []).append(tenant)
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str, group: Sequence[Tenant]) -> list[tuple[str, Any]]:
        async with gate:
            conn = await asyncpg.connect(url, timeout=10)
            try:
                return list(zip([t.id for t in group], await work(conn, group), strict=True))
            finally:
                await conn.close()

    async def go() -> dict[str, Any]:
        answers = await asyncio.gather(*(one(u, g) for u, g in groups.items()))
        return dict(pair for pairs in answers for pair in pairs)

    return asyncio.run(go())


def reset(tenants: Sequence[Tenant], ms: MigrationSet) -> None:
    """Back to base, as a fresh clone of the empty template: the set's tables (and their sequences and
    indexes) dropped; a schema tenant keeps its (empty) schema."""

    async def drop(conn: Any, group: Sequence[Tenant]) -> list[None]:
        for t in group:
            await conn.execute(f"DROP TABLE IF EXISTS {', '.join(t.table(n) for n in ms.tables)} CASCADE")
        return [None] * len(group)

    _per_database(tenants, 8, drop)


def revisions(tenants: Sequence[Tenant]) -> list[str | None]:
    """Each tenant's version rows (None: no version table), read directly as a witness."""

    async def read(conn: Any, group: Sequence[Tenant]) -> list[str | None]:
        found: list[str | None] = []
        for t in group:
            table = t.table("alembic_version")
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                found.append(None)
                continue
            rows = await conn.fetch(f"SELECT version_num FROM {table}")
            found.append(",".join(sorted(r[0] for r in rows)))
        return found

    by_id = _per_database(tenants, 16, read)
    return [by_id[t.id] for t in tenants]


def check_at(tenants: Sequence[Tenant], revision: str | None, what: str) -> None:
    found = revisions(tenants)
    wrong = [(t.id, r) for t, r in zip(tenants, found, strict=True) if r != revision]
    if wrong:
        raise RuntimeError(f"{what}: {len(wrong)} tenant(s) not at {revision}: {wrong[:3]}")


# -- the methods without tenantctl ----------------------------------------------------------------
def alembic_binary() -> str:
    """The ``alembic`` console script of this interpreter (not a version manager's shim, which would add
    its own start-up to every tenant)."""
    candidate = Path(sys.executable).parent / "alembic"
    return str(candidate) if candidate.exists() else "alembic"


def shell_loop(tenants: Sequence[Tenant], ini: Path, workdir: Path, env: dict[str, str]) -> float:
    binary = alembic_binary()
    out = workdir / "shell.log"
    lines = [
        f'"{binary}" -c "{ini}" {" ".join(f"-x {x}" for x in t.x)} upgrade head >>"{out}" 2>&1 || exit 1'
        for t in tenants
    ]
    script = workdir / "shell_loop.sh"
    script.write_text("set -e\n" + "\n".join(lines) + "\n")
    started = time.perf_counter()
    result = subprocess.run(["bash", str(script)], env=env, cwd=workdir, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"shell loop failed ({result.returncode}), see {out}")
    return elapsed


def _api_loop(xs: Sequence[list[str]], ini: str, log_path: str) -> float:
    """In a spawned child: Alembic's API per tenant, one after the other. Its INFO lines go to a file."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    from alembic import command
    from alembic.config import Config

    started = time.perf_counter()
    for x in xs:
        command.upgrade(Config(ini, cmd_opts=argparse.Namespace(x=x)), "head")
    return time.perf_counter() - started


def api_loop(tenants: Sequence[Tenant], ini: Path, workdir: Path) -> float:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        xs = [t.x for t in tenants]
        return pool.submit(_api_loop, xs, str(ini), str(workdir / "api.log")).result()


POOL_SCRIPT = """\
import json, sys, time
from argparse import Namespace
from concurrent.futures import ProcessPoolExecutor

from alembic import command
from alembic.config import Config


def upgrade(ini, x):
    command.upgrade(Config(ini, cmd_opts=Namespace(x=x)), "head")


if __name__ == "__main__":
    ini, processes, xs = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3]))
    started = time.perf_counter()
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(upgrade, [ini] * len(xs), xs))
    print(time.perf_counter() - started)
"""
"""(h): the loop a team writes instead of adopting a tool, as it would write it (the default start method,
``pool.map``, Alembic's logging to stderr); ``xs`` holds each tenant's ``-x`` arguments. The benchmark
reads the seconds it prints: from before the pool starts until it has shut down."""


def pool_loop(
    tenants: Sequence[Tenant], ini: Path, processes: int, workdir: Path, env: dict[str, str]
) -> tuple[float, float]:
    """Run :data:`POOL_SCRIPT` as its own process; (its seconds, the process's seconds end to end)."""
    script, xs = workdir / "pool_upgrade.py", workdir / "pool_tenants.json"
    script.write_text(POOL_SCRIPT)
    xs.write_text(json.dumps([t.x for t in tenants]))
    with (workdir / "pool.log").open("ab") as err:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(script), str(ini), str(processes), str(xs)],
            env=env,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=err,
            check=False,
        )
        process_s = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"the pool script failed ({result.returncode}), see {workdir / 'pool.log'}")
    return float(result.stdout.decode().split()[-1]), process_s


def _ceiling_warm(ini: str) -> None:
    """In a spawned child, before the clock starts: the imports and the script directory."""
    from orchestrator import scripts
    from orchestrator.unit import run_unit  # noqa: F401

    scripts.load(ini)
    time.sleep(1.0)  # busy, so the other warm-up goes to the other child


def _ceiling_loop(tenants: Sequence[Tenant], ini: str, mode: str) -> None:
    """In a spawned child: ``mode`` "unit" runs tenantctl's unit of work (lock, reads, Alembic) per
    tenant with no control DB; "alembic" runs only Alembic over the cached script directory and the
    shared Engine."""
    from sqlalchemy.engine import make_url

    from orchestrator import scripts
    from orchestrator.models import Command, RunStatus, UnitJob
    from orchestrator.unit import _connect, alembic_config, run_alembic, run_unit

    for tenant in tenants:
        job = UnitJob(
            run_id=0,
            tenant_id=tenant.id,
            command=Command.UPGRADE,
            target="head",
            url=tenant.url,
            schema=tenant.schema,
            alembic_config=ini,
        )
        if mode == "unit":
            result = run_unit(job)
            if result.status is not RunStatus.SUCCEEDED:
                raise RuntimeError(f"unit failed: {result.error_message}")
        else:
            with _connect(job, make_url(tenant.url)) as conn:
                run_alembic(alembic_config(job, conn), scripts.load(ini), Command.UPGRADE, "head")


def ceiling(tenants: Sequence[Tenant], ini: Path, processes: int, mode: str) -> float:
    """``processes`` spawned children share the tenants (each its own slice); the wall time of the
    slowest loop after every child has warmed up."""
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        for warm in [pool.submit(_ceiling_warm, str(ini)) for _ in range(processes)]:
            warm.result()
        started = time.perf_counter()
        loops = [
            pool.submit(_ceiling_loop, list(tenants[i::processes]), str(ini), mode) for i in range(processes)
        ]
        for loop in loops:
            loop.result()
        return time.perf_counter() - started


def offline_sql(tenant: Tenant, ini: Path) -> str:
    """``alembic upgrade head --sql`` for the tenants' dialect, as Alembic generates it (for a schema
    tenant, for the schema :data:`SCHEMA_STANDIN`, replaced per tenant)."""
    from alembic import command
    from alembic.config import Config

    x = [f"url={tenant.url}", *([f"schema={SCHEMA_STANDIN}"] if tenant.schema else [])]
    buffer = io.StringIO()
    cfg = Config(str(ini), cmd_opts=argparse.Namespace(x=x), output_buffer=buffer)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head", sql=True)
    return buffer.getvalue()


def raw_floor(items: Sequence[tuple[str, str]], concurrency: int, fetch: bool = False) -> float:
    async def go() -> float:
        started = time.perf_counter()
        await _each(items, concurrency, fetch)
        return time.perf_counter() - started

    return asyncio.run(go())


# -- tenantctl -------------------------------------------------------------------------------------
class Worker:
    """``tenantctl worker`` in its own session, log kept; stopped by its own pid."""

    def __init__(
        self, env: dict[str, str], workdir: Path, label: str, concurrency: int, pool: str = "prefork"
    ) -> None:
        self.log = workdir / f"worker-{label}.log"
        self.node = f"bench-{label}-{uuid.uuid4().hex[:6]}"
        self._fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "worker",
                "-c",
                str(concurrency),
                "-n",
                f"{self.node}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--pool",
                pool,
            ],
            env=env,
            cwd=workdir,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early, see {self.log}")
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s, see {self.log}")

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return sorted(int(p) for p in out.split())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._fh.close()


class Tenantctl:
    """The control plane of the run: a control DB, the registry, the CLI in subprocesses, queues."""

    def __init__(self, dbs: Databases, workdir: Path, redis_url: str) -> None:
        self.dbs = dbs
        self.workdir = workdir
        self.control_url = dbs.url(dbs.create(dbs.name("ctl")), driver="postgresql+asyncpg")
        self.broker = f"{redis_url.rstrip('/')}/{REDIS_DB}"
        self.queues: list[str] = []
        self.nodes: list[str] = []
        self.workers: list[Worker] = []
        self._keys_before: set[bytes] = set()

    def env(self, broker: str | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTCTL_")}
        env.update(
            TENANTCTL_DATABASE_URL=self.control_url,
            TENANTCTL_ALEMBIC_CONFIG=str(ALEMBIC_INI),
            TENANTCTL_SECRET_KEY=SECRET_KEY,
            COLUMNS="200",
        )
        if broker is not None:
            env.update(TENANTCTL_BROKER_URL=self.broker, TENANTCTL_QUEUE=broker)
        env.update(extra)
        return env

    def settings(self, **values: Any) -> Any:
        """tenantctl's Settings for calls made in this process (no .env, no environment)."""
        from pydantic import SecretStr

        from orchestrator.settings import Settings

        return Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=SecretStr(self.control_url),
            alembic_config=ALEMBIC_INI,
            secret_key=SecretStr(SECRET_KEY),
            **values,
        )

    def new_queue(self) -> str:
        queue = f"tctl-bench-{self.dbs.run}-{len(self.queues)}"
        self.queues.append(queue)
        return queue

    def cli(self, *args: str, env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"tenantctl {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}"
            )
        return result

    def register(self, rows: Sequence[tuple[str, ...]]) -> None:
        """Import the tenants: rows of (id, url, tags), with a schema fourth for a schema tenant."""
        path = self.workdir / "tenants.csv"
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "url", "tags", "schema"])
            writer.writerows((*row, "")[:4] for row in rows)
        env = self.env()
        self.cli("db", "upgrade", env=env)
        self.cli("tenants", "import", str(path), env=env)

    def start_worker(
        self,
        queue: str,
        concurrency: int,
        label: str,
        pool: str = "prefork",
        env: dict[str, str] | None = None,
    ) -> Worker:
        """``env``: the worker's (default: :meth:`env` of ``queue``)."""
        if not self.workers:
            self.snapshot_keys()
        worker = Worker(env or self.env(queue), self.workdir, label, concurrency, pool)
        self.workers.append(worker)
        self.nodes.append(worker.node)
        worker.wait_ready()
        return worker

    def rollout(self, *args: str, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
        """Run a rollout through the CLI; the report gets ``cli_launched_at``/``cli_exited_at`` (this
        machine's clock, as the control DB's timestamps) to split the CLI's time around the rollout."""
        launched = datetime.now().astimezone()
        started = time.perf_counter()
        result = self.cli(*args, "--json", env=env)
        seconds = time.perf_counter() - started
        report = json.loads(result.stdout)
        report["cli_launched_at"] = launched.isoformat()
        report["cli_exited_at"] = datetime.now().astimezone().isoformat()
        return seconds, report

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
        if self.queues:
            self._delete_keys()

    def snapshot_keys(self) -> None:
        """Remember the keys of the Redis database before this run's first worker starts."""
        import redis

        client = redis.Redis.from_url(self.broker)
        try:
            self._keys_before = {k if isinstance(k, bytes) else k.encode() for k in client.keys("*")}
        finally:
            client.close()

    def _delete_keys(self) -> None:
        """Only this run's keys: its queues and their bindings, and the kombu bookkeeping keys (pidbox
        bindings and deadlines) that did not exist before this run's workers started."""
        import redis

        client = redis.Redis.from_url(self.broker)
        try:
            mine = set()
            for queue in self.queues:
                mine |= {queue.encode(), *client.keys(f"_kombu.binding*.{queue}*")}
            mine |= {k for k in client.keys("_kombu.*") if k not in self._keys_before}
            if mine:
                client.delete(*mine)
        finally:
            client.close()


def cpu_per_tenant(
    during: dict[str, float], after: dict[str, float], tenants: int, **names: str
) -> dict[str, float]:
    """CPU milliseconds per tenant: machine, PostgreSQL (read after the phase's connections closed), the
    coordinator CLI (a reaped subprocess) and the watched processes, renamed by ``names``."""
    ms = {
        "machine": during["machine"],
        "postgresql": after["postgresql"],
        "coordinator_cli": during["reaped_subprocesses"],
        **{label: during[key] for label, key in names.items()},
    }
    return {k: round(v * 1000 / tenants, 1) for k, v in ms.items()}


def cli_split(report: dict[str, Any]) -> dict[str, float]:
    """The CLI's seconds before the rollout was created (start, imports, preflight reads, planning) and
    after it finished (noticing it, the final report)."""
    if not report.get("finished_at") or "cli_launched_at" not in report:
        return {}
    at = {k: datetime.fromisoformat(report[k]) for k in ("cli_launched_at", "created_at", "finished_at")}
    exited = datetime.fromisoformat(report["cli_exited_at"])
    return {
        "cli_before_rollout_s": round((at["created_at"] - at["cli_launched_at"]).total_seconds(), 3),
        "cli_after_rollout_s": round((exited - at["finished_at"]).total_seconds(), 3),
    }


def rollout_figures(report: dict[str, Any], tenants: int) -> dict[str, Any]:
    """What both executors' phases say of their rollout: created→finished, the CLI's time around it, and
    the unit times."""
    span = span_s(report)
    return {
        "rollout_span_s": span,
        "rollout_span_tenants_per_s": round(tenants / span, 2) if span else None,
        **cli_split(report),
        **durations(report),
    }


def span_s(report: dict[str, Any]) -> float | None:
    if not report.get("finished_at"):
        return None
    created = datetime.fromisoformat(report["created_at"])
    finished = datetime.fromisoformat(report["finished_at"])
    return (finished - created).total_seconds()


def durations(report: dict[str, Any]) -> dict[str, float]:
    ms = [t["duration_ms"] for t in report["tenants"] if t["duration_ms"] is not None]
    return (
        {"unit_ms_mean": round(statistics.fmean(ms), 1), "unit_ms_median": statistics.median(ms)}
        if ms
        else {}
    )


def expect(report: dict[str, Any], status: str, n: int, what: str) -> None:
    if report["counts"].get(status) != n:
        raise RuntimeError(f"{what}: expected {n} {status}, got {report['counts']}")


async def _noop_in_process(tctl: Tenantctl, concurrency: int, n: int) -> float:
    """Seconds of ``coordinator.rollout(upgrade head)`` over the no-op tenants, called in this process
    (what the CLI does, without its interpreter start and imports)."""
    from orchestrator import coordinator
    from orchestrator.controldb.store import Store
    from orchestrator.models import Command, Selector

    settings = tctl.settings(read_concurrency=concurrency)
    async with Store(tctl.control_url, pooled=True, pre_ping=False) as store:
        started = time.perf_counter()
        rid = await coordinator.rollout(
            settings,
            store,
            command=Command.UPGRADE,
            revision="head",
            selector=Selector(tags=("noop",)),
            created_by="bench",
            environ={},
        )
        elapsed = time.perf_counter() - started
        expect(await coordinator.status(store, rid), "skipped", n, "in-process no-op rollout")
    return elapsed


# -- memory ----------------------------------------------------------------------------------------
async def _memory_rollouts(
    tctl: Tenantctl, queue: str, rollouts: int, worker: Worker, samples_at: Sequence[int], workload: str
) -> list[dict[str, Any]]:
    from pydantic import SecretStr

    from orchestrator import coordinator
    from orchestrator.controldb.store import Store
    from orchestrator.models import Command, RunStatus, Selector
    from workers.executor import CeleryExecutor

    settings = tctl.settings(broker_url=SecretStr(tctl.broker), queue=queue, poll_interval=0.1)
    executor = CeleryExecutor(settings, {})
    (child,) = worker.children()
    samples: list[dict[str, Any]] = [{"tasks": 0, "pid": child, "rss_kib": rss_kib(child), "elapsed_s": 0.0}]
    done = 0
    started = time.perf_counter()
    async with Store(tctl.control_url) as store:
        for i in range(rollouts):
            rid = await coordinator.rollout(
                settings,
                store,
                command=(Command.DOWNGRADE if i % 2 == 0 else Command.UPGRADE)
                if workload == "migrate"
                else Command.STAMP,
                revision=("base" if workload == "migrate" else "0003") if i % 2 == 0 else "head",
                selector=Selector(tags=("mem",)),
                parallel=4,
                created_by="bench",
                environ={},
                executor=executor,
            )
            runs = await store.rollout_runs(rid)
            if any(r.status is not RunStatus.SUCCEEDED for r in runs):
                raise RuntimeError(f"memory rollout {rid} did not succeed everywhere")
            done += len(runs)
            if any(done - len(runs) < at <= done for at in samples_at):
                pids = worker.children()
                samples.append(
                    {
                        "tasks": done,
                        "pid": pids[0] if pids else None,
                        "rss_kib": rss_kib(pids[0]) if pids else None,
                        "elapsed_s": round(time.perf_counter() - started, 1),
                    }
                )
                log(f"  memory: {done} tasks, child RSS {samples[-1]['rss_kib']} KiB")
    return samples


# -- the run ---------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, dbs: Databases, workdir: Path) -> None:
        self.args = args
        self.dbs = dbs
        self.workdir = workdir
        self.phases = [p for p in PHASES if p not in args.skip]
        names = ("shipped", "data") if args.migrations == "both" else (args.migrations,)
        self.sets = [SETS[name] for name in names]
        self.tenants: dict[str, list[Tenant]] = {}
        self.noop_urls: list[str] = []
        self.tctl: Tenantctl | None = None

    def run(self) -> dict[str, Any]:
        """Every migrating phase on every set, ``--rounds`` times (backwards every other round), then the
        noop and memory phases: ``{"sets": {name: {…, "rounds": [{phase: figures}]}}, "phases": …}``."""
        self.setup()
        migrating = [p for p in MIGRATING if p in self.phases]
        sets: dict[str, Any] = {
            ms.name: {
                "migrations": str(ms.ini.parent.relative_to(ALEMBIC_INI.parent.parent)),
                "head": ms.head,
                "revisions": ms.revisions,
                "about": ms.about,
                "layout": self.args.layout,
                "tenants": len(self.tenants[ms.name]),
                "rounds": [],
            }
            for ms in self.sets
        }
        for i in range(self.args.rounds if migrating else 0):
            forward = i % 2 == 0
            for ms in self.sets if forward else self.sets[::-1]:
                figures: dict[str, Any] = {}
                for phase in migrating if forward else migrating[::-1]:
                    run: Callable[[MigrationSet], dict[str, Any]] = getattr(self, f"phase_{phase}")
                    figures[phase] = self._timed(
                        f"{ms.name} round {i + 1}: {phase}", functools.partial(run, ms)
                    )
                sets[ms.name]["rounds"].append(figures)
        others = {
            phase: self._timed(phase, getattr(self, f"phase_{phase}"))
            for phase in ("noop", "memory")
            if phase in self.phases
        }
        return {"sets": sets, "phases": others}

    @staticmethod
    def _timed(what: str, phase: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        log(f"{what} …")
        before = loadavg()
        figures = phase()
        figures["loadavg_1m_before"] = before
        figures["loadavg_1m_after"] = loadavg()
        log(f"{what}: {json.dumps(figures)}")
        return figures

    def setup(self) -> None:
        a, dbs = self.args, self.dbs
        migrating = set(MIGRATING) & set(self.phases)
        n_noop = max(
            a.noop_tenants if "noop" in self.phases else 0, a.memory_tenants if "memory" in self.phases else 0
        )
        started = time.perf_counter()
        rows: list[tuple[str, ...]] = []
        if migrating:
            for ms in self.sets:
                rows += self._make_tenants(ms)
        if n_noop:
            head = dbs.create(dbs.name("tpl_head"))
            from alembic import command
            from alembic.config import Config

            cfg = Config(str(ALEMBIC_INI), cmd_opts=argparse.Namespace(x=[f"url={dbs.url(head)}"]))
            cfg.attributes["configure_logger"] = False
            command.upgrade(cfg, "head")
            names = [dbs.name(f"n{i:05d}") for i in range(n_noop)]
            dbs.clone_many(names, head)
            self.noop_urls = [dbs.url(n) for n in names]
            rows += [
                (
                    f"n{i:05d}",
                    dbs.url(n, password=PASSWORD),
                    " ".join(
                        (["noop"] if i < a.noop_tenants else []) + (["mem"] if i < a.memory_tenants else [])
                    ),
                )
                for i, n in enumerate(names)
            ]
        log(f"created {len(rows)} tenants in {time.perf_counter() - started:.1f}s")
        if {"celery", "steady", "inprocess", "inprocess1", "noop", "memory"} & set(self.phases):
            self.tctl = Tenantctl(self.dbs, self.workdir, a.redis)
            self.tctl.register(rows)
        for ms in self.sets if migrating else ():
            check_at(self.tenants[ms.name], None, f"fresh {ms.name} tenants")

    def _make_tenants(self, ms: MigrationSet) -> list[tuple[str, ...]]:
        """The set's tenants at base: a clone of an empty database each, or (``--layout schema``) an empty
        schema each in one database of the set's own. Returns their registry rows."""
        dbs, n = self.dbs, self.args.tenants
        ids = [f"{ms.prefix}{i:05d}" for i in range(n)]
        if self.args.layout == "schema":
            name = dbs.create(dbs.name(f"schemas_{ms.prefix}"))
            with psycopg.connect(dbs.url(name), autocommit=True) as conn:
                for i in range(n):
                    conn.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(f"t{i:05d}")))
            self.tenants[ms.name] = [
                Tenant(id=t, url=dbs.url(name), schema=f"t{i:05d}") for i, t in enumerate(ids)
            ]
            return [
                (t.id, dbs.url(name, password=PASSWORD), ms.tag, str(t.schema)) for t in self.tenants[ms.name]
            ]
        base = dbs.name("tpl_base")
        if base not in dbs.created:
            dbs.create(base)
        names = [dbs.name(t) for t in ids]
        dbs.clone_many(names, base)
        self.tenants[ms.name] = [Tenant(id=t, url=dbs.url(d)) for t, d in zip(ids, names, strict=True)]
        return [(t, dbs.url(d, password=PASSWORD), ms.tag) for t, d in zip(ids, names, strict=True)]

    def _migrated(
        self, ms: MigrationSet, method: str, seconds: float, tenants: Sequence[Tenant], **more: Any
    ) -> dict[str, Any]:
        check_at(tenants, ms.head, method)
        everyone = self.tenants[ms.name]
        reset(everyone, ms)
        check_at(everyone, None, f"reset after {method}")
        return {
            "tenants": len(tenants),
            "seconds": round(seconds, 3),
            "tenants_per_s": round(len(tenants) / seconds, 2),
            **more,
        }

    def _plain_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("TENANTCTL_")}

    def phase_shell(self, ms: MigrationSet) -> dict[str, Any]:
        sample = self.tenants[ms.name][: self.args.shell_sample]
        seconds = shell_loop(sample, ms.ini, self.workdir, self._plain_env())
        return self._migrated(
            ms, "shell", seconds, sample, sample_of=len(self.tenants[ms.name]), alembic=alembic_binary()
        )

    def phase_api(self, ms: MigrationSet) -> dict[str, Any]:
        tenants = self.tenants[ms.name]
        meter = CpuMeter()
        seconds = api_loop(tenants, ms.ini, self.workdir)
        cpu = cpu_per_tenant(during := meter.read(), during, len(tenants))
        return self._migrated(ms, "api", seconds, tenants, cpu_ms_per_tenant=cpu)

    def phase_pool(self, ms: MigrationSet) -> dict[str, Any]:
        tenants, processes = self.tenants[ms.name], self.args.pool_processes
        meter = CpuMeter()
        seconds, process_s = pool_loop(tenants, ms.ini, processes, self.workdir, self._plain_env())
        cpu = cpu_per_tenant(during := meter.read(), during, len(tenants))
        return self._migrated(
            ms,
            "pool",
            seconds,
            tenants,
            processes=processes,
            process_seconds=round(process_s, 3),
            process_tenants_per_s=round(len(tenants) / process_s, 2),
            cpu_ms_per_tenant=cpu,
        )

    def phase_raw(self, ms: MigrationSet) -> dict[str, Any]:
        tenants = self.tenants[ms.name]
        script = offline_sql(tenants[0], ms.ini)
        (self.workdir / f"upgrade-{ms.name}.sql").write_text(script)
        items = [(t.url, script.replace(SCHEMA_STANDIN, t.schema) if t.schema else script) for t in tenants]
        meter = CpuMeter()
        seconds = raw_floor(items, self.args.raw_concurrency)
        cpu = cpu_per_tenant(during := meter.read(), during, len(tenants))
        return self._migrated(
            ms, "raw", seconds, tenants, concurrency=self.args.raw_concurrency, cpu_ms_per_tenant=cpu
        )

    def phase_celery(self, ms: MigrationSet) -> dict[str, Any]:
        return self._celery(ms, "celery")

    def phase_steady(self, ms: MigrationSet) -> dict[str, Any]:
        return self._celery(ms, "steady")

    def _upgrade_all(self, ms: MigrationSet, parallel: int) -> tuple[str, ...]:
        return ("upgrade", "head", "--tag", ms.tag, "--parallel", str(parallel))

    def _celery(self, ms: MigrationSet, phase: str) -> dict[str, Any]:
        """(d) with a control DB that has not seen the tenants at base (every one is read before planning),
        or ``steady``: tenantctl has seen them at base (not timed), as in steady use, so the plan queues
        them without a preflight read."""
        assert self.tctl is not None
        queue = self.tctl.new_queue()
        a, tenants = self.args, self.tenants[ms.name]
        env = self.tctl.env(queue, TENANTCTL_ALEMBIC_CONFIG=str(ms.ini))
        workers = [
            self.tctl.start_worker(queue, a.celery_children, f"{phase}{i}", a.celery_pool, env=env)
            for i in range(a.celery_workers)
        ]
        try:
            if phase == "steady":
                # tenantctl sees every tenant at base (a no-op rollout: each read, each skipped), as it
                # knows its tenants in steady use; no DDL, so the tenants' catalogs are as fresh as for
                # the first contact (a migrate-and-back cycle first made every unit ~10% slower)
                downgrade = ("downgrade", "base", *self._upgrade_all(ms, a.celery_parallel)[2:])
                _, seen = self.tctl.rollout(*downgrade, env=env)
                expect(seen, "skipped", len(tenants), "steady-state sighting")
            meter = CpuMeter([p for w in workers for p in (w.proc.pid, *w.children())])
            seconds, report = self.tctl.rollout(*self._upgrade_all(ms, a.celery_parallel), env=env)
            during = meter.read()
        finally:
            for w in workers:
                w.stop()
        cpu = cpu_per_tenant(during, meter.read(), len(tenants), workers="watched")
        expect(report, "succeeded", len(tenants), f"{phase} rollout")
        distinct = sorted({t["worker"] for t in report["tenants"]})
        return self._migrated(
            ms,
            phase,
            seconds,
            tenants,
            parallel=a.celery_parallel,
            worker_children=a.celery_children,
            worker_processes=a.celery_workers,
            worker_pool=a.celery_pool,
            distinct_workers=len(distinct),
            cpu_ms_per_tenant=cpu,
            **rollout_figures(report, len(tenants)),
        )

    def phase_inprocess(self, ms: MigrationSet) -> dict[str, Any]:
        return self._inprocess(ms, "inprocess", self.args.inprocess_parallel)

    def phase_inprocess1(self, ms: MigrationSet) -> dict[str, Any]:
        return self._inprocess(ms, "inprocess1", 1)

    def _inprocess(self, ms: MigrationSet, phase: str, parallel: int) -> dict[str, Any]:
        assert self.tctl is not None
        tenants = self.tenants[ms.name]
        env = self.tctl.env(TENANTCTL_ALEMBIC_CONFIG=str(ms.ini))
        meter = CpuMeter()
        seconds, report = self.tctl.rollout(*self._upgrade_all(ms, parallel), env=env)
        cpu = cpu_per_tenant(during := meter.read(), during, len(tenants))
        expect(report, "succeeded", len(tenants), f"{phase} rollout")
        return self._migrated(
            ms,
            phase,
            seconds,
            tenants,
            parallel=parallel,
            cpu_ms_per_tenant=cpu,
            **rollout_figures(report, len(tenants)),
        )

    def _ceiling(self, ms: MigrationSet, mode: str) -> dict[str, Any]:
        tenants = self.tenants[ms.name]
        meter = CpuMeter()
        seconds = ceiling(tenants, ms.ini, self.args.ceiling_processes, mode)
        cpu = cpu_per_tenant(during := meter.read(), during, len(tenants))
        return self._migrated(
            ms,
            "units" if mode == "unit" else mode,
            seconds,
            tenants,
            processes=self.args.ceiling_processes,
            cpu_ms_per_tenant=cpu,
        )

    def phase_units(self, ms: MigrationSet) -> dict[str, Any]:
        return self._ceiling(ms, "unit")

    def phase_alembic(self, ms: MigrationSet) -> dict[str, Any]:
        return self._ceiling(ms, "alembic")

    def phase_noop(self) -> dict[str, Any]:
        assert self.tctl is not None
        urls = self.noop_urls[: self.args.noop_tenants]
        n, conc = len(urls), self.args.read_concurrency
        env = self.tctl.env(TENANTCTL_READ_CONCURRENCY=str(conc))
        sql = "SELECT version_num FROM alembic_version"
        reads = [(u, sql) for u in urls]
        raw_floor(reads, conc, fetch=True)  # warm-up: the server's caches, not timed
        floors, runs, calls = [], [], []
        for _ in range(self.args.noop_rounds):
            floors.append(raw_floor(reads, conc, fetch=True))
            seconds, report = self.tctl.rollout("upgrade", "head", "--tag", "noop", env=env)
            expect(report, "skipped", n, "no-op rollout")
            runs.append(seconds)
            calls.append(asyncio.run(_noop_in_process(self.tctl, conc, n)))
        floor_s, tctl_s, call_s = statistics.median(floors), statistics.median(runs), statistics.median(calls)
        return {
            "tenants": n,
            "read_concurrency": conc,
            "rounds": self.args.noop_rounds,
            "floor_seconds": [round(s, 3) for s in floors],
            "tenantctl_seconds": [round(s, 3) for s in runs],
            "floor_tenants_per_s": round(n / floor_s, 1),
            "tenantctl_tenants_per_s": round(n / tctl_s, 1),
            "ratio": round(floor_s / tctl_s, 4),
            "in_process_seconds": [round(s, 3) for s in calls],
            "in_process_tenants_per_s": round(n / call_s, 1),
            "in_process_ratio": round(floor_s / call_s, 4),
        }

    def phase_memory(self) -> dict[str, Any]:
        assert self.tctl is not None
        per_rollout = self.args.memory_tenants
        rollouts = -(-self.args.memory_tasks // per_rollout)
        rollouts += rollouts % 2  # an even number: the tenants end where they started, at head
        queue = self.tctl.new_queue()
        worker = self.tctl.start_worker(queue, 1, "memory")
        marks = sorted({1000, 5000, self.args.memory_tasks, per_rollout} - {0})
        started = time.perf_counter()
        try:
            samples = asyncio.run(
                _memory_rollouts(self.tctl, queue, rollouts, worker, marks, self.args.memory_workload)
            )
        finally:
            worker.stop()
        seconds = time.perf_counter() - started
        memory = [Tenant(id=f"n{i:05d}", url=u) for i, u in enumerate(self.noop_urls[:per_rollout])]
        check_at(memory, HEAD, "memory tenants")
        tasks = rollouts * per_rollout
        warm = next((s for s in samples if s["tasks"] >= 1000), samples[-1])
        last = samples[-1]
        return {
            "tasks": tasks,
            "workload": self.args.memory_workload,
            "tenants": per_rollout,
            "rollouts": rollouts,
            "seconds": round(seconds, 1),
            "tasks_per_s": round(tasks / seconds, 1),
            "samples": samples,
            "same_child": len({s["pid"] for s in samples}) == 1,
            "growth_after_1k_pct": round(100 * (last["rss_kib"] - warm["rss_kib"]) / warm["rss_kib"], 1),
        }


RATIO_METHODS = ("pool", "inprocess1", "inprocess", "celery", "steady", "units", "alembic")
RATIO_BASES = ("shell", "api", "raw", "pool", "units")


def ratios(r: dict[str, Any]) -> dict[str, float]:
    """Rate ratios within one round, from tenants and seconds (not from the rounded rates); ``(span)``:
    the method's rollout created→finished instead of end to end."""
    out: dict[str, float] = {}
    rate = {k: r[k]["tenants"] / r[k]["seconds"] for k in MIGRATING if k in r}
    for method in RATIO_METHODS:
        for base in RATIO_BASES:
            if method in rate and base in rate and method != base:
                out[f"{method}/{base}"] = round(rate[method] / rate[base], 4)
                span = r[method].get("rollout_span_s")
                if span:
                    out[f"{method}(span)/{base}"] = round(r[method]["tenants"] / span / rate[base], 4)
    return out


TARGETS = (
    ("inprocess/pool", 1.0),  # issue 14: (e) --parallel 2 at least as fast as (h) with 2 processes
    ("celery/pool", 1.0),  # issue 14: (d), 2 worker processes, likewise
    ("inprocess(span)/units", 0.9),  # issue 14: created→finished at least 90% of the unit-alone ceiling
    ("celery(span)/units", 0.9),
    ("inprocess1/api", 0.95),  # issue 14: --parallel 1 at least 95% of Alembic's own sequential loop
    ("celery/shell", 9.0),  # issue 3
    ("celery/api", 1.5),  # issue 3
)

LABELS = {
    "shell": "(a) shell loop of `alembic upgrade head`",
    "api": "(b) Alembic API, sequential, one process",
    "pool": "(h) ProcessPoolExecutor over command.upgrade",
    "inprocess1": "(e) tenantctl, in-process, --parallel 1",
    "inprocess": "(e) tenantctl, in-process",
    "celery": "(d) tenantctl, Celery, tenants read first",
    "steady": "(d) tenantctl, Celery, steady state",
    "units": "(f) ceiling: tenantctl's unit alone",
    "alembic": "(g) ceiling: cached Alembic alone",
    "raw": "(c) raw floor: offline SQL over asyncpg",
}


def _note(key: str, f: dict[str, Any]) -> str:
    if key == "shell":
        return f"a sample of {f['tenants']} of {f['sample_of']} tenants"
    if key == "raw":
        return f"{f['concurrency']} tenants at a time"
    if key in ("units", "alembic"):
        return f"{f['processes']} processes, no control DB, no broker"
    if key == "pool":
        return f"P={f['processes']}; its process end to end {f['process_tenants_per_s']}/s"
    if key in ("celery", "steady", "inprocess", "inprocess1"):
        note = f"--parallel {f['parallel']}; created→finished {f['rollout_span_tenants_per_s']}/s"
        if key in ("celery", "steady"):
            note += f"; {f['worker_processes']} worker(s) -c {f['worker_children']}"
        return note
    return ""


def _per_round(values: Sequence[float | None], width: int = 5, digits: int = 2) -> str:
    return " ".join("-".rjust(width) if v is None else f"{v:{width}.{digits}f}" for v in values)


def set_report(name: str, s: dict[str, Any], round_ratios: Sequence[dict[str, float]]) -> list[str]:
    """One set's table: each method's tenants/s in each round, its rate ratios to (h) and (b) within
    each round, its machine CPU per tenant (median over the rounds); then the targets, round by round."""
    rounds = s["rounds"]
    w = 6 * len(rounds)
    defined = SETS.get(name)  # a file saved before these fields were: the set as defined now
    about, revs, head = (s.get(k, getattr(defined, k, "?")) for k in ("about", "revisions", "head"))
    tenants = s.get("tenants") or max((f["tenants"] for r in rounds for f in r.values()), default="?")
    lines = [
        "",
        f"{name} set: {about}; {revs} revisions to {head}, {s.get('layout', 'database')} layout, "
        f"{tenants} tenants, {len(rounds)} round(s)",
        f"{'method':46} {'tenants/s':>{max(9, 8 * len(rounds))}}  {'vs (h)':>{w}}  {'vs (b)':>{w}}  "
        f"{'CPU ms/t':>8}  notes (last round)",
    ]
    for key, label in LABELS.items():
        present = [r[key] for r in rounds if key in r]
        if not present:
            continue
        rates = _per_round([r[key]["tenants_per_s"] if key in r else None for r in rounds], 7)
        vs_h = _per_round([1.0 if key == "pool" else q.get(f"{key}/pool") for q in round_ratios])
        vs_b = _per_round([1.0 if key == "api" else q.get(f"{key}/api") for q in round_ratios])
        cpus = [f["cpu_ms_per_tenant"]["machine"] for f in present if "cpu_ms_per_tenant" in f]
        cpu = f"{statistics.median(cpus):8.1f}" if cpus else ""
        lines.append(
            f"{label:46} {rates:>{max(9, 8 * len(rounds))}}  {vs_h:>{w}}  {vs_b:>{w}}  {cpu:>8}  "
            + _note(key, present[-1])
        )
    for key in ("inprocess1", "inprocess", "celery", "steady"):
        spans = [q.get(f"{key}(span)/units") for q in round_ratios]
        if any(v is not None for v in spans):
            lines.append(f"  {LABELS[key]}: created→finished vs (f) {_per_round(spans)}")
    for key, target in TARGETS:
        values = [q.get(key) for q in round_ratios]
        known = [v for v in values if v is not None]
        if known:
            missed = sum(v < target for v in known)
            verdict = f"MISSED in {missed} of {len(known)} round(s)" if missed else "met"
            lines.append(f"  target {key} >= {target}: {_per_round(values, 6, 3)}  {verdict}")
    return lines


def report(results: dict[str, Any]) -> str:
    lines = [
        f"tenantctl rollout benchmark — {results['machine']['cores']} cores, "
        f"PostgreSQL {results['machine']['postgresql']}, Python {results['machine']['python']}; "
        "vs (h), vs (b): rate ratios within each round"
    ]
    for name, s in results.get("sets", {}).items():
        lines += set_report(name, s, results["ratios"].get(name, []))
    m = results.get("phases", {})
    if "noop" in m:
        f = m["noop"]
        lines.append(
            f"no-op rollout over {f['tenants']} tenants at head (read concurrency {f['read_concurrency']}, "
            f"median of {f['rounds']}): tenantctl {f['tenantctl_tenants_per_s']}/s, asyncpg read floor "
            f"{f['floor_tenants_per_s']}/s, ratio {f['ratio']:.4f} "
            f"(target >= 0.70: {'met' if f['ratio'] >= 0.7 else 'MISSED'}); the same rollout called in "
            f"process (no interpreter start): {f['in_process_tenants_per_s']}/s, "
            f"ratio {f['in_process_ratio']:.4f}"
        )
    if "memory" in m:
        f = m["memory"]
        rss = ", ".join(f"{s['tasks']}: {s['rss_kib'] / 1024:.1f} MiB" for s in f["samples"])
        lines.append(
            f"worker child RSS over {f['tasks']} {f.get('workload', 'stamp')} tasks "
            f"({f['tasks_per_s']} tasks/s, same child: {f['same_child']}): {rss}; "
            f"growth after 1k tasks {f['growth_after_1k_pct']}%"
        )
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.rollout_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--tenants", type=int, default=200, help="tenants migrated by each method (200)")
    p.add_argument("--noop-tenants", type=int, default=1000, help="tenants of the no-op rollout (1000)")
    p.add_argument("--shell-sample", type=int, default=20, help="tenants of the shell loop's sample (20)")
    p.add_argument("--memory-tasks", type=int, default=10000, help="Celery tasks of the memory phase (10000)")
    p.add_argument("--memory-tenants", type=int, default=100, help="tenants per memory-phase rollout (100)")
    p.add_argument(
        "--memory-workload",
        choices=("stamp", "migrate"),
        default="stamp",
        help="memory-phase rollouts: stamp 0003/head alternately (stamp, one cheap step), or downgrade base/"
        "upgrade head alternately (migrate: four migrations a task, env.py and models.py loaded each time)",
    )
    p.add_argument("--noop-rounds", type=int, default=3, help="rounds of the no-op comparison (3)")
    p.add_argument("--raw-concurrency", type=int, default=4)
    p.add_argument("--read-concurrency", type=int, default=32, help="TENANTCTL_READ_CONCURRENCY (32)")
    p.add_argument("--celery-parallel", type=int, default=4, help="--parallel of the Celery rollout (4)")
    p.add_argument("--celery-children", type=int, default=2, help="worker -c of the Celery rollout (2)")
    p.add_argument("--celery-workers", type=int, default=1, help="worker processes of the Celery rollout (1)")
    p.add_argument(
        "--celery-pool", default="prefork", choices=("prefork", "solo"), help="worker --pool (prefork)"
    )
    p.add_argument("--inprocess-parallel", type=int, default=2, help="--parallel of (e) (2)")
    p.add_argument("--pool-processes", type=int, default=2, help="processes of the (h) pool (2)")
    p.add_argument(
        "--migrations",
        choices=("shipped", "data", "both"),
        default="both",
        help="the migration set(s) every migrating phase runs: shipped (migrations/), data "
        "(bench/migrations_data/) or both, each on tenants of its own (both)",
    )
    p.add_argument(
        "--layout",
        choices=("database", "schema"),
        default="database",
        help="the migrating tenants: a database each, or schemas of one database per set (database)",
    )
    p.add_argument(
        "--rounds", type=int, default=1, help="runs of every migrating phase, alternately backwards (1)"
    )
    p.add_argument(
        "--ceiling-processes", type=int, default=2, help="processes of the (f) and (g) ceilings (2)"
    )
    p.add_argument("--redis", default=os.environ.get("TENANTCTL_BENCH_REDIS", "redis://127.0.0.1:6379"))
    p.add_argument("--skip", action="append", default=[], choices=PHASES, help="skip a phase (repeatable)")
    p.add_argument("--output", default="rollout", help="results file name in bench/results/ (rollout)")
    p.add_argument("--report", metavar="JSON", help="only print the table of a saved results file")
    args = p.parse_args(argv)
    if args.shell_sample > args.tenants:
        args.shell_sample = args.tenants
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.report:  # print the table of a saved run again
        saved = json.loads(Path(args.report).read_text())
        if "sets" not in saved:  # saved before issue 14: the shipped set, one round, in "phases"
            phases = saved["phases"]
            saved["sets"] = {"shipped": {"rounds": [{k: v for k, v in phases.items() if k in MIGRATING}]}}
            saved["phases"] = {k: v for k, v in phases.items() if k not in MIGRATING}
        saved["ratios"] = {name: [ratios(r) for r in s["rounds"]] for name, s in saved["sets"].items()}
        if noop := saved["phases"].get("noop"):
            floor_s = statistics.median(noop["floor_seconds"])
            noop["ratio"] = round(floor_s / statistics.median(noop["tenantctl_seconds"]), 4)
            noop["in_process_ratio"] = round(floor_s / statistics.median(noop["in_process_seconds"]), 4)
        print(report(saved))
        return 0
    dbs = Databases()
    results: dict[str, Any] = {
        "command": "python -m bench.rollout_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git_state(),
        "settings": {k: v for k, v in vars(args).items() if k != "redis"},
    }
    with tempfile.TemporaryDirectory(prefix="tctl-rollout-bench-") as tmp, interrupts_unwind():
        bench = Bench(args, dbs, Path(tmp))
        try:
            results.update(bench.run())
        finally:
            try:
                if bench.tctl is not None:
                    bench.tctl.close()
            finally:
                dbs.drop_all()
                left = dbs.leftovers()
                if left:
                    log(f"WARNING: {len(left)} bench databases left: {left[:5]}")
    results["ratios"] = {name: [ratios(r) for r in s["rounds"]] for name, s in results["sets"].items()}
    path = write_results(args.output, results)
    print(report(results))
    log(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
