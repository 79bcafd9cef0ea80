"""Helpers shared by the bench scripts: throwaway databases named ``tctl_bench_…`` that are always
dropped, SIGTERM unwinding like Ctrl-C, machine facts for the report, and the results folder."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = ROOT / "migrations" / "alembic.ini"
DATA_ALEMBIC_INI = ROOT / "bench" / "migrations_data" / "alembic.ini"  # the data-heavy set (issue 14)
RESULTS = ROOT / "bench" / "results"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"


def server_url() -> str:
    """The PostgreSQL server to benchmark on (no database): ``TENANTCTL_BENCH_PG`` or the local one."""
    return os.environ.get("TENANTCTL_BENCH_PG", DEFAULT_SERVER).rstrip("/")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Databases:
    """Creates ``tctl_bench_<run>_…`` databases and drops every one it created (call :meth:`drop_all`
    in a ``finally``). Clones use ``STRATEGY WAL_LOG``: on PostgreSQL 15 ``FILE_COPY`` forces two
    checkpoints per database (measured 0.73 s per clone here, against 0.02 s)."""

    def __init__(self, server: str | None = None) -> None:
        self.server = server or server_url()
        self.run = uuid.uuid4().hex[:8]
        self.created: list[str] = []

    def name(self, suffix: str) -> str:
        return f"tctl_bench_{self.run}_{suffix}"

    def url(self, name: str, *, password: str | None = None, driver: str = "postgresql") -> str:
        base = self.server.replace("postgresql://", f"{driver}://", 1)
        if password:
            base = base.replace("@", f":{password}@", 1)
        return f"{base}/{name}"

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(f"{self.server}/postgres", autocommit=True)

    def create(
        self, name: str, template: str | None = None, conn: psycopg.Connection[Any] | None = None
    ) -> str:
        if not name.startswith("tctl_bench_"):
            raise ValueError(f"bench databases are named tctl_bench_…, not {name!r}")
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY WAL_LOG").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        self.created.append(name)  # before: a half-created one is still dropped (IF EXISTS)
        if conn is not None:
            conn.execute(query)
        else:
            with self.admin() as admin:
                admin.execute(query)
        return name

    def clone_many(self, names: Sequence[str], template: str, workers: int = 4) -> float:
        """Clone ``template`` into every name, ``workers`` at a time; returns the seconds taken."""
        started = time.perf_counter()

        def clone(chunk: Sequence[str]) -> None:
            with self.admin() as conn:
                for name in chunk:
                    self.create(name, template=template, conn=conn)

        _in_chunks(clone, list(names), workers)
        return time.perf_counter() - started

    def drop_all(self, workers: int = 8) -> None:
        """Drop every database this object created, also those whose creation failed half-way."""
        names = list(dict.fromkeys(reversed(self.created)))
        if not names:
            return
        failures: list[str] = []

        def drop(chunk: Sequence[str]) -> None:
            with self.admin() as conn:
                for name in chunk:
                    try:
                        conn.execute(
                            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                        )
                    except psycopg.Error as exc:
                        failures.append(f"{name}: {exc}")

        _in_chunks(drop, names, workers)
        self.created.clear()
        if failures:
            log(f"could not drop {len(failures)} database(s): {failures[:3]}")
        log(f"dropped {len(names) - len(failures)} bench databases")

    def leftovers(self) -> list[str]:
        """This run's databases still on the server (should be none after drop_all)."""
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"tctl_bench_{self.run}_%"]
            ).fetchall()
        return [str(r[0]) for r in rows]


def _in_chunks(fn: Callable[[Sequence[str]], None], items: list[str], workers: int) -> None:
    workers = max(1, min(workers, len(items)))
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(fn, items[i::workers]) for i in range(workers)]:
            future.result()


@contextmanager
def interrupts_unwind() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so ``finally`` blocks drop the databases either way."""

    def stop(_signo: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (no psutil)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    with psycopg.connect(f"{server_url()}/postgres") as conn:
        row = conn.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else "?"
        fsync = conn.execute("SHOW fsync").fetchone()
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "postgresql_fsync": str(fsync[0]) if fsync else "?",
        "platform": platform.platform(),
    }


def git_state() -> dict[str, Any]:
    """The commit measured and the files that differed from it (the tree may be someone's work)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return {}
    return {"head": head.stdout.strip(), "changed": [line[3:] for line in dirty.stdout.splitlines()]}


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds of a process from /proc (utime+stime; with ``children`` also the reaped children's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def _postmaster() -> int | None:
    out = subprocess.run(["pgrep", "-o", "-x", "postgres"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


class CpuMeter:
    """Where the CPU of a phase went: the whole machine (/proc/stat), PostgreSQL (the postmaster and the
    backends it reaped: take the end reading after the phase's connections closed), the processes
    given, and the subprocesses this process reaped. Seconds of CPU, not of wall time."""

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self.pids = list(pids)
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        import resource

        total = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        busy = sum(int(v) for i, v in enumerate(total[:8]) if i not in (3, 4)) / _TICK  # minus idle, iowait
        pm = _postmaster()
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "machine": busy,
            "postgresql": _proc_cpu(pm, children=True) if pm else 0.0,
            "watched": sum(_proc_cpu(p) for p in self.pids),
            "reaped_subprocesses": kids.ru_utime + kids.ru_stime,
        }

    def watch(self, pids: Sequence[int]) -> None:
        """Add processes (their CPU so far counts from now on)."""
        self.start["watched"] += sum(_proc_cpu(p) for p in pids)
        self.pids.extend(pids)

    def read(self) -> dict[str, float]:
        now = self._read()
        return {k: round(now[k] - self.start[k], 2) for k in now}
