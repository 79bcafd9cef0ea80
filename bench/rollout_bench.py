"""Benchmark of a rollout (issue 3), in one run on the local PostgreSQL:

(a) ``shell``: the shell loop ``alembic -c migrations/alembic.ini -x url=… upgrade head``, one process per
    tenant, over ``--shell-sample`` tenants (its rate is measured on that sample);
(b) ``api``: ``alembic.command.upgrade(Config(ini, cmd_opts=…), "head")`` per tenant, sequentially, in one
    (spawned) process; the loop alone is timed;
(c) ``raw``: the floor, the offline SQL of the same upgrade (``upgrade head --sql``, generated once) sent
    to each tenant over asyncpg, 4 tenants at a time (connect, one ``execute`` of the script with its
    BEGIN/COMMIT per revision, close);
(d) ``celery``: ``tenantctl upgrade head --parallel 4`` through Celery (Redis DB 14, a queue of its own)
    and one ``tenantctl worker -c 2`` (prefork), CLI end to end, interpreter start included;
``steady``: (d) again in steady use: before it (not timed) a no-op ``tenantctl downgrade base`` has seen
    every tenant at base, so the plan queues them without a preflight read; (d) proper is the first
    contact, a control DB that has never seen these tenants (every one read first);
(e) ``inprocess``: ``tenantctl upgrade head --parallel 2`` with the in-process executor, end to end;
(f) ``units``: a ceiling, tenantctl's unit of work alone (``run_unit``: lock, reads, Alembic over the
    cached script directory and the shared Engine) per tenant in ``--ceiling-processes`` (2) spawned
    processes, each over its share of the tenants, with no control DB, broker or coordinator;
(g) ``alembic``: a lower ceiling still, the same processes running only Alembic (``run_alembic`` on a
    connection of the shared Engine): what any orchestrator that runs Alembic per tenant could reach;
``noop``: ``tenantctl upgrade head`` over ``--noop-tenants`` tenants already at head (every one skipped)
    against reading ``alembic_version`` from each over asyncpg at the same concurrency (32);
``memory``: ``--memory-tasks`` Celery tasks (rollouts over ``--memory-tenants`` tenants: ``stamp 0003`` and
    ``stamp head`` alternately, or with ``--memory-workload migrate`` ``downgrade base`` and ``upgrade
    head``) through one worker child (``-c 1``), its RSS read from /proc at 0, 100, 1k, 5k and all tasks.

Every migration phase takes the same N tenants from base to head (tables dropped between phases, not
timed). Run: ``python -m bench.rollout_bench [--tenants 200] [--skip shell] …``; the table goes to
stdout, progress to stderr, the figures to ``bench/results/rollout.json``.

Tenant databases are clones of a template (``bench.common.Databases``). Every database it creates is
named ``tctl_bench_<run>_…`` and dropped at the end, on failure, Ctrl-C or SIGTERM; the Redis keys of
its own queues (and kombu's bookkeeping keys its workers created) are deleted. ``--report FILE`` prints
the table of a saved run again.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
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
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from .common import (
    ALEMBIC_INI,
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

MIGRATING = ("shell", "api", "raw", "celery", "steady", "inprocess", "units", "alembic")  # base to head
PHASES = (*MIGRATING, "noop", "memory")
SECRET_KEY = "bench-secret-key"
PASSWORD = "bench-pw"  # trust auth ignores it; stored encrypted, so workers pay for decryption
REDIS_DB = 14
HEAD = "0004"
UPGRADE_ALL = ("upgrade", "head", "--tag", "rollout", "--parallel")  # + the phase's parallelism


# -- tenants ---------------------------------------------------------------------------------------
async def _each(urls: Sequence[str], concurrency: int, sql: str, fetch: bool = False) -> list[list[Any]]:
    """Connect to each tenant, run ``sql`` (``execute``: a whole script, simple protocol; or ``fetch``:
    one query), close; ``concurrency`` tenants at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str) -> list[Any]:
        async with gate:
            conn = await asyncpg.connect(url, timeout=10)
            try:
                return list(await conn.fetch(sql)) if fetch else [await conn.execute(sql)]
            finally:
                await conn.close()

    return list(await asyncio.gather(*(one(u) for u in urls)))


def reset(urls: Sequence[str]) -> None:
    """Back to base, as a fresh clone of the empty template: the three tables (and their sequences and
    index) dropped."""
    asyncio.run(_each(urls, 8, "DROP TABLE IF EXISTS alembic_version, invoices, accounts CASCADE"))


def revisions(urls: Sequence[str]) -> list[str | None]:
    """Each tenant's version rows (None: no version table), read directly as a witness."""
    gate = asyncio.Semaphore(16)

    async def one(url: str) -> str | None:
        async with gate:
            conn = await asyncpg.connect(url, timeout=10)
            try:
                if not await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
                    return None
                rows = await conn.fetch("SELECT version_num FROM alembic_version")
                return ",".join(sorted(r[0] for r in rows))
            finally:
                await conn.close()

    async def go() -> list[str | None]:
        return list(await asyncio.gather(*(one(u) for u in urls)))

    return asyncio.run(go())


def check_at(urls: Sequence[str], revision: str | None, what: str) -> None:
    found = revisions(urls)
    wrong = [(u.rsplit("/", 1)[1], r) for u, r in zip(urls, found, strict=True) if r != revision]
    if wrong:
        raise RuntimeError(f"{what}: {len(wrong)} tenant(s) not at {revision}: {wrong[:3]}")


# -- the five methods ------------------------------------------------------------------------------
def alembic_binary() -> str:
    """The ``alembic`` console script of this interpreter (not a version manager's shim, which would add
    its own start-up to every tenant)."""
    candidate = Path(sys.executable).parent / "alembic"
    return str(candidate) if candidate.exists() else "alembic"


def shell_loop(urls: Sequence[str], workdir: Path, env: dict[str, str]) -> float:
    binary = alembic_binary()
    out = workdir / "shell.log"
    lines = [f'"{binary}" -c "{ALEMBIC_INI}" -x url={u} upgrade head >>"{out}" 2>&1 || exit 1' for u in urls]
    script = workdir / "shell_loop.sh"
    script.write_text("set -e\n" + "\n".join(lines) + "\n")
    started = time.perf_counter()
    result = subprocess.run(["bash", str(script)], env=env, cwd=workdir, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"shell loop failed ({result.returncode}), see {out}")
    return elapsed


def _api_loop(urls: Sequence[str], ini: str, log_path: str) -> float:
    """In a spawned child: Alembic's API per tenant, one after the other. Its INFO lines go to a file."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    from alembic import command
    from alembic.config import Config

    started = time.perf_counter()
    for url in urls:
        command.upgrade(Config(ini, cmd_opts=argparse.Namespace(x=[f"url={url}"])), "head")
    return time.perf_counter() - started


def api_loop(urls: Sequence[str], workdir: Path) -> float:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_api_loop, list(urls), str(ALEMBIC_INI), str(workdir / "api.log")).result()


def _ceiling_warm(ini: str) -> None:
    """In a spawned child, before the clock starts: the imports and the script directory."""
    from orchestrator import scripts
    from orchestrator.unit import run_unit  # noqa: F401

    scripts.load(ini)
    time.sleep(1.0)  # busy, so the other warm-up goes to the other child


def _ceiling_loop(urls: Sequence[str], ini: str, mode: str) -> None:
    """In a spawned child: ``mode`` "unit" runs tenantctl's unit of work (lock, reads, Alembic) per
    tenant with no control DB; "alembic" runs only Alembic over the cached script directory and the
    shared Engine."""
    from sqlalchemy.engine import make_url

    from orchestrator import scripts
    from orchestrator.models import Command, RunStatus, UnitJob
    from orchestrator.unit import _connect, alembic_config, run_alembic, run_unit

    for url in urls:
        job = UnitJob(
            run_id=0,
            tenant_id=url.rsplit("/", 1)[-1],
            command=Command.UPGRADE,
            target="head",
            url=url,
            schema=None,
            alembic_config=ini,
        )
        if mode == "unit":
            result = run_unit(job)
            if result.status is not RunStatus.SUCCEEDED:
                raise RuntimeError(f"unit failed: {result.error_message}")
        else:
            with _connect(job, make_url(url)) as conn:
                run_alembic(alembic_config(job, conn), scripts.load(ini), Command.UPGRADE, "head")


def ceiling(urls: Sequence[str], processes: int, mode: str) -> float:
    """``processes`` spawned children share the tenants (each its own slice); the wall time of the
    slowest loop after every child has warmed up."""
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        for warm in [pool.submit(_ceiling_warm, str(ALEMBIC_INI)) for _ in range(processes)]:
            warm.result()
        started = time.perf_counter()
        loops = [
            pool.submit(_ceiling_loop, list(urls[i::processes]), str(ALEMBIC_INI), mode)
            for i in range(processes)
        ]
        for loop in loops:
            loop.result()
        return time.perf_counter() - started


def offline_sql(url: str) -> str:
    """``alembic upgrade head --sql`` for the tenants' dialect, as Alembic generates it."""
    from alembic import command
    from alembic.config import Config

    buffer = io.StringIO()
    cfg = Config(str(ALEMBIC_INI), cmd_opts=argparse.Namespace(x=[f"url={url}"]), output_buffer=buffer)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head", sql=True)
    return buffer.getvalue()


def raw_floor(urls: Sequence[str], sql: str, concurrency: int, fetch: bool = False) -> float:
    async def go() -> float:
        started = time.perf_counter()
        await _each(urls, concurrency, sql, fetch)
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

    def register(self, rows: Sequence[tuple[str, str, str]]) -> None:
        path = self.workdir / "tenants.csv"
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "url", "tags"])
            writer.writerows(rows)
        env = self.env()
        self.cli("db", "upgrade", env=env)
        self.cli("tenants", "import", str(path), env=env)

    def start_worker(self, queue: str, concurrency: int, label: str, pool: str = "prefork") -> Worker:
        if not self.workers:
            self.snapshot_keys()
        worker = Worker(self.env(queue), self.workdir, label, concurrency, pool)
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
        self.results: dict[str, Any] = {}
        self.tenant_urls: list[str] = []
        self.noop_urls: list[str] = []
        self.tctl: Tenantctl | None = None

    def run(self) -> dict[str, Any]:
        self.setup()
        for phase in self.phases:
            log(f"phase {phase} …")
            before = loadavg()
            figures = getattr(self, f"phase_{phase}")()
            figures["loadavg_1m_before"] = before
            figures["loadavg_1m_after"] = loadavg()
            self.results[phase] = figures
            log(f"phase {phase}: {json.dumps(figures)}")
        return self.results

    def setup(self) -> None:
        a, dbs = self.args, self.dbs
        migrating = set(MIGRATING) & set(self.phases)
        n_noop = max(
            a.noop_tenants if "noop" in self.phases else 0, a.memory_tenants if "memory" in self.phases else 0
        )
        started = time.perf_counter()
        rows: list[tuple[str, str, str]] = []
        if migrating:
            base = dbs.create(dbs.name("tpl_base"))
            names = [dbs.name(f"r{i:05d}") for i in range(a.tenants)]
            dbs.clone_many(names, base)
            self.tenant_urls = [dbs.url(n) for n in names]
            rows += [(f"r{i:05d}", dbs.url(n, password=PASSWORD), "rollout") for i, n in enumerate(names)]
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
        log(f"created {len(rows)} tenant databases in {time.perf_counter() - started:.1f}s")
        if {"celery", "steady", "inprocess", "noop", "memory"} & set(self.phases):
            self.tctl = Tenantctl(dbs, self.workdir, a.redis)
            self.tctl.register(rows)
        if migrating:
            check_at(self.tenant_urls, None, "fresh tenants")

    def _migrated(
        self, method: str, tenants: int, seconds: float, urls: Sequence[str], **more: Any
    ) -> dict[str, Any]:
        check_at(urls, HEAD, method)
        reset(self.tenant_urls)
        check_at(self.tenant_urls, None, f"reset after {method}")
        return {
            "tenants": tenants,
            "seconds": round(seconds, 3),
            "tenants_per_s": round(tenants / seconds, 2),
            **more,
        }

    def _plain_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("TENANTCTL_")}

    def phase_shell(self) -> dict[str, Any]:
        sample = self.tenant_urls[: self.args.shell_sample]
        seconds = shell_loop(sample, self.workdir, self._plain_env())
        return self._migrated(
            "shell", len(sample), seconds, sample, sample_of=len(self.tenant_urls), alembic=alembic_binary()
        )

    def phase_api(self) -> dict[str, Any]:
        meter = CpuMeter()
        seconds = api_loop(self.tenant_urls, self.workdir)
        n = len(self.tenant_urls)
        cpu = cpu_per_tenant(during := meter.read(), during, n)
        return self._migrated("api", n, seconds, self.tenant_urls, cpu_ms_per_tenant=cpu)

    def phase_raw(self) -> dict[str, Any]:
        script = offline_sql(self.tenant_urls[0])
        (self.workdir / "upgrade.sql").write_text(script)
        meter = CpuMeter()
        seconds = raw_floor(self.tenant_urls, script, self.args.raw_concurrency)
        n = len(self.tenant_urls)
        cpu = cpu_per_tenant(during := meter.read(), during, n)
        return self._migrated(
            "raw", n, seconds, self.tenant_urls, concurrency=self.args.raw_concurrency, cpu_ms_per_tenant=cpu
        )

    def phase_celery(self) -> dict[str, Any]:
        return self._celery("celery")

    def phase_steady(self) -> dict[str, Any]:
        return self._celery("steady")

    def _celery(self, phase: str) -> dict[str, Any]:
        """(d) as a first contact (the control DB has never seen these tenants: every one is read before
        planning), or ``steady``: tenantctl has seen them at base (not timed), as in steady use, so the
        plan queues them without a preflight read."""
        assert self.tctl is not None
        queue = self.tctl.new_queue()
        a = self.args
        workers = [
            self.tctl.start_worker(queue, a.celery_children, f"{phase}{i}", a.celery_pool)
            for i in range(a.celery_workers)
        ]
        parallel = str(a.celery_parallel)
        try:
            env = self.tctl.env(queue)
            if phase == "steady":
                # tenantctl sees every tenant at base (a no-op rollout: each read, each skipped), as it
                # knows its tenants in steady use; no DDL, so the tenants' catalogs are as fresh as for
                # the first contact (a migrate-and-back cycle first made every unit ~10% slower)
                _, seen = self.tctl.rollout("downgrade", "base", *UPGRADE_ALL[2:], parallel, env=env)
                expect(seen, "skipped", len(self.tenant_urls), "steady-state sighting")
            meter = CpuMeter([p for w in workers for p in (w.proc.pid, *w.children())])
            seconds, report = self.tctl.rollout(*UPGRADE_ALL, parallel, env=env)
            during = meter.read()
        finally:
            for w in workers:
                w.stop()
        n = len(self.tenant_urls)
        cpu = cpu_per_tenant(during, meter.read(), n, workers="watched")
        expect(report, "succeeded", n, f"{phase} rollout")
        distinct = sorted({t["worker"] for t in report["tenants"]})
        return self._migrated(
            phase,
            n,
            seconds,
            self.tenant_urls,
            parallel=a.celery_parallel,
            worker_children=a.celery_children,
            worker_processes=a.celery_workers,
            worker_pool=a.celery_pool,
            distinct_workers=len(distinct),
            cpu_ms_per_tenant=cpu,
            **rollout_figures(report, n),
        )

    def phase_inprocess(self) -> dict[str, Any]:
        assert self.tctl is not None
        meter = CpuMeter()
        seconds, report = self.tctl.rollout(
            *UPGRADE_ALL, str(self.args.inprocess_parallel), env=self.tctl.env()
        )
        n = len(self.tenant_urls)
        cpu = cpu_per_tenant(during := meter.read(), during, n)
        expect(report, "succeeded", n, "in-process rollout")
        return self._migrated(
            "inprocess",
            n,
            seconds,
            self.tenant_urls,
            parallel=self.args.inprocess_parallel,
            cpu_ms_per_tenant=cpu,
            **rollout_figures(report, n),
        )

    def _ceiling(self, mode: str) -> dict[str, Any]:
        meter = CpuMeter()
        seconds = ceiling(self.tenant_urls, self.args.ceiling_processes, mode)
        n = len(self.tenant_urls)
        cpu = cpu_per_tenant(during := meter.read(), during, n)
        return self._migrated(
            mode, n, seconds, self.tenant_urls, processes=self.args.ceiling_processes, cpu_ms_per_tenant=cpu
        )

    def phase_units(self) -> dict[str, Any]:
        return self._ceiling("unit")

    def phase_alembic(self) -> dict[str, Any]:
        return self._ceiling("alembic")

    def phase_noop(self) -> dict[str, Any]:
        assert self.tctl is not None
        urls = self.noop_urls[: self.args.noop_tenants]
        n, conc = len(urls), self.args.read_concurrency
        env = self.tctl.env(TENANTCTL_READ_CONCURRENCY=str(conc))
        sql = "SELECT version_num FROM alembic_version"
        raw_floor(urls, sql, conc, fetch=True)  # warm-up: the server's caches, not timed
        floors, runs, calls = [], [], []
        for _ in range(self.args.noop_rounds):
            floors.append(raw_floor(urls, sql, conc, fetch=True))
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
        check_at(self.noop_urls[:per_rollout], HEAD, "memory tenants")
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


def ratios(r: dict[str, Any]) -> dict[str, float]:
    """Rate ratios, from tenants and seconds (not from the rounded rates)."""
    out: dict[str, float] = {}
    rate = {k: r[k]["tenants"] / r[k]["seconds"] for k in MIGRATING if k in r}
    for method in MIGRATING[3:]:  # every tenantctl method and ceiling, against (a), (b) and (c)
        for base in ("shell", "api", "raw"):
            if method in rate and base in rate:
                out[f"{method}/{base}"] = round(rate[method] / rate[base], 4)
                span = r[method].get("rollout_span_s")
                if span:
                    out[f"{method}(span)/{base}"] = round(r[method]["tenants"] / span / rate[base], 4)
    return out


TARGETS = tuple(
    (f"{method}/{base}", target)
    for method in ("celery", "steady")
    for base, target in (("shell", 9.0), ("api", 1.5), ("raw", 0.65))
)


def report(results: dict[str, Any]) -> str:
    lines = [
        f"tenantctl rollout benchmark — {results['machine']['cores']} cores, "
        f"PostgreSQL {results['machine']['postgresql']}, Python {results['machine']['python']}"
    ]
    names = {
        "shell": "(a) shell loop of `alembic upgrade head`",
        "api": "(b) Alembic API, sequential, one process",
        "raw": "(c) raw floor: offline SQL over asyncpg",
        "celery": "(d) tenantctl, Celery, first contact",
        "steady": "(d) tenantctl, Celery, steady state",
        "inprocess": "(e) tenantctl, in-process",
        "units": "(f) ceiling: tenantctl's unit alone",
        "alembic": "(g) ceiling: cached Alembic alone",
    }
    m = results["phases"]
    lines.append(f"{'method':48} {'tenants':>7} {'seconds':>9} {'tenants/s':>10}  notes")
    for key, label in names.items():
        if key not in m:
            continue
        f = m[key]
        note = ""
        if key == "shell":
            note = f"measured on a sample of {f['tenants']} of {f['sample_of']} tenants"
        elif key == "raw":
            note = f"{f['concurrency']} tenants at a time"
        elif key in ("units", "alembic"):
            note = f"{f['processes']} processes, no control DB, no broker"
        elif key in ("celery", "steady", "inprocess"):
            note = (
                f"--parallel {f['parallel']}; CLI end to end; rollout created→finished "
                f"{f['rollout_span_s']:.2f}s = {f['rollout_span_tenants_per_s']}/s"
            )
            if key in ("celery", "steady"):
                note += f"; {f['worker_children']} worker children"
        lines.append(f"{label:48} {f['tenants']:>7} {f['seconds']:>9.2f} {f['tenants_per_s']:>10.2f}  {note}")
    if results["ratios"]:
        lines.append(
            "ratios (end to end; (span) = rollout created→finished): "
            + ", ".join(f"{k} {v:.3f}" for k, v in results["ratios"].items())
        )
        for key, target in TARGETS:
            if key in results["ratios"]:
                value = results["ratios"][key]
                lines.append(
                    f"  target {key} >= {target}: {value:.4f} {'met' if value >= target else 'MISSED'}"
                )
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
    p.add_argument("--inprocess-parallel", type=int, default=2)
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
        saved["ratios"] = ratios(saved["phases"])
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
            results["phases"] = bench.run()
        finally:
            try:
                if bench.tctl is not None:
                    bench.tctl.close()
            finally:
                dbs.drop_all()
                left = dbs.leftovers()
                if left:
                    log(f"WARNING: {len(left)} bench databases left: {left[:5]}")
    results["ratios"] = ratios(results["phases"])
    path = write_results(args.output, results)
    print(report(results))
    log(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
