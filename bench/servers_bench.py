"""Benchmark of the per-server cap over several database servers:

``--servers`` throwaway PostgreSQL servers (the local binaries, other ports, ``fsync=off``) hold
``--tenants`` tenant databases between them; ``tenantctl upgrade head`` runs through Celery with one
``tenantctl worker -c 4`` (4 processes) and ``TENANTCTL_PER_HOST_LIMIT=1``. While it runs, a sampler
reads each server's ``pg_locks`` every ``--sample-ms``: the tenant advisory locks granted there are the
migrations running on it (a unit holds its tenant's lock for exactly its migration). The report:

- the most migrations ever seen at once on one server (the cap says 1);
- how often each server had one running (all servers busy: the cap, not the dispatch, is the limit);
- from the control DB, each server's busy share of the rollout (its runs' durations over the span) and
  the most overlapping runs on it;
- the rollout's tenants/s against what the cap allows: servers times one unit's rate, the unit's rate being
  measured in the same invocation as the same rollout with one server's tenants alone (cap 1 there too).

    python -m bench.servers_bench [--servers 3] [--tenants 300]

Every server is removed at the end (its data directory too), and the control DB and Redis keys made here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.common import Databases, git_state, interrupts_unwind, loadavg, log, machine, write_results
from bench.rollout_bench import Tenantctl, Worker
from tests.support.servers import ThrowawayPostgres

SLOW_INI = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "envs" / "slow" / "alembic.ini"
LOCKS = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"


class Sampler(threading.Thread):
    """Counts granted advisory locks on every server every ``interval`` seconds."""

    def __init__(self, servers: list[str], interval: float) -> None:
        super().__init__(daemon=True)
        self.servers, self.interval = servers, interval
        self.samples: list[list[int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        conns = [psycopg.connect(f"{s}/postgres", autocommit=True) for s in self.servers]
        try:
            while not self.halt.is_set():
                row = []
                for conn in conns:
                    found = conn.execute(LOCKS).fetchone()
                    row.append(int(found[0]) if found else 0)
                self.samples.append(row)
                time.sleep(self.interval)
        finally:
            for conn in conns:
                conn.close()


def _make_tenants(server: str, names: list[str]) -> None:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')


def _overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def _from_control_db(tctl: Tenantctl, rollout_id: int) -> dict[str, Any]:
    with psycopg.connect(tctl.control_url.replace("+asyncpg", "")) as conn:
        rows = conn.execute(
            "SELECT db_host, started_at, finished_at FROM tenant_runs"
            " WHERE rollout_id = %s AND status = 'succeeded'",
            [rollout_id],
        ).fetchall()
        span = conn.execute(
            "SELECT extract(epoch FROM finished_at - created_at) FROM rollouts WHERE id = %s", [rollout_id]
        ).fetchone()
    by_host: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for host, started, finished in rows:
        by_host[host].append((started, finished))
    seconds = float(span[0]) if span and span[0] else 0.0
    return {
        "created_to_finished_s": round(seconds, 2),
        "per_server": {
            host: {
                "runs": len(iv),
                "most_at_once": _overlap(iv),
                "busy_share": round(sum((b - a).total_seconds() for a, b in iv) / seconds, 3)
                if seconds
                else None,
            }
            for host, iv in sorted(by_host.items())
        },
    }


def _rollout(
    tctl: Tenantctl, env: dict[str, str], tag: str, servers: list[str], interval: float
) -> dict[str, Any]:
    sampler = Sampler(servers, interval)
    sampler.start()
    started = time.perf_counter()
    try:
        _, report = tctl.rollout("upgrade", "head", "--tag", tag, "--parallel", "4", env=env)
    finally:
        sampler.halt.set()
        sampler.join()
    seconds = time.perf_counter() - started
    counts = report["counts"]
    if counts["succeeded"] != len(report["tenants"]):
        raise RuntimeError(f"rollout did not succeed everywhere: {counts}")
    samples = sampler.samples
    per_server_max = [max(s[i] for s in samples) for i in range(len(servers))] if samples else []
    all_busy = sum(1 for s in samples if all(v >= 1 for v in s)) / len(samples) if samples else 0.0
    busy_each = [round(sum(1 for s in samples if s[i] >= 1) / len(samples), 3) for i in range(len(servers))]
    figures = _from_control_db(tctl, int(report["id"]))
    return {
        "tenants": len(report["tenants"]),
        "tenants_per_s_created_to_finished": round(
            len(report["tenants"]) / figures["created_to_finished_s"], 2
        ),
        "seconds_end_to_end": round(seconds, 2),
        "tenants_per_s": round(len(report["tenants"]) / seconds, 2),
        "samples": len(samples),
        "most_migrations_at_once_per_server": per_server_max,
        "share_of_samples_all_servers_busy": round(all_busy, 3),
        "share_of_samples_each_server_busy": busy_each,
        "control_db": figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=300)
    parser.add_argument("--sample-ms", type=float, default=20.0)
    parser.add_argument(
        "--slow",
        type=float,
        default=0.0,
        help="seconds each tenant's migration waits on its server (pg_sleep; the slow fixture history): "
        "the servers' time, not this machine's 2 cores, is then what the cap shares out",
    )
    args = parser.parse_args()
    from tests.support.servers import redis_url

    dbs = Databases()
    servers: list[ThrowawayPostgres] = []
    results: dict[str, Any] = {
        "machine": machine(),
        "git": git_state(),
        "load_before": loadavg(),
        "slow_s": args.slow,
    }
    workdir = Path(tempfile.mkdtemp(prefix="tctl-servers-bench-"))
    tctl: Tenantctl | None = None
    with interrupts_unwind():
        try:
            for _ in range(args.servers):
                servers.append(ThrowawayPostgres().start())
            urls = [s.url for s in servers]
            log(f"{args.servers} throwaway servers: {', '.join(u.rsplit(':', 1)[1] for u in urls)}")
            per = args.tenants // args.servers
            # one server's share alone first (the unit rate the cap allows on one server), on tenants of
            # its own; then the main rollout over every server's share
            lone_names = [f"tctl_srv_lone_{j:04d}" for j in range(per)]
            _make_tenants(urls[0], lone_names)
            lone = [(f"lone-{j:04d}", f"{urls[0]}/{n}", "lone") for j, n in enumerate(lone_names)]
            rest: list[tuple[str, str, str]] = []
            for i, server in enumerate(urls):
                names = [f"tctl_srv_{i}_{j:04d}" for j in range(per)]
                _make_tenants(server, names)
                rest += [(f"s{i}-{j:04d}", f"{server}/{n}", "main") for j, n in enumerate(names)]
            tctl = Tenantctl(dbs, workdir, redis_url())
            tctl.register(lone + rest)
            queue = tctl.new_queue()
            extra = {"TENANTCTL_PER_HOST_LIMIT": "1", "TENANTCTL_POLL_INTERVAL": "0.2"}
            if args.slow:
                extra |= {
                    "TENANTCTL_ALEMBIC_CONFIG": str(SLOW_INI),
                    "TENANTCTL_TEST_SLOW_SECONDS": str(args.slow),
                }
            env = tctl.env(queue, **extra)
            tctl.snapshot_keys()
            worker = Worker(env, workdir, "servers", 4)
            tctl.workers.append(worker)
            tctl.nodes.append(worker.node)
            worker.wait_ready()
            log(f"one server's {per} tenants alone (cap 1) …")
            results["one_server"] = _rollout(tctl, env, "lone", urls[:1], args.sample_ms / 1000)
            log(json.dumps(results["one_server"]))
            log(f"{len(rest)} tenants over {args.servers} servers (cap 1, 4 worker processes) …")
            results["all_servers"] = _rollout(tctl, env, "main", urls, args.sample_ms / 1000)
            log(json.dumps(results["all_servers"]))
            allowed = results["one_server"]["tenants_per_s"] * args.servers
            results["cap_allows_tenants_per_s"] = round(allowed, 2)
            results["share_of_what_the_cap_allows"] = round(
                results["all_servers"]["tenants_per_s"] / allowed, 3
            )
        finally:
            if tctl is not None:
                tctl.close()
            dbs.drop_all()
            for server in servers:
                server.destroy()
    results["load_after"] = loadavg()
    log(f"results: {write_results('servers', results)}")
    print(json.dumps({k: v for k, v in results.items() if k not in ("machine", "git")}, indent=2))


if __name__ == "__main__":
    main()
