"""Benchmark of the registry at 10,000 tenants, end to end through the CLI (a subprocess each, interpreter
start and imports included, as a user runs it):

- ``tenants import FILE`` of N new rows (every row with a clear password, so every row is encrypted; tags,
  a group, a schema on a third, some disabled), in YAML, JSON and CSV;
- the same file again (every row unchanged: each stored password decrypted and compared);
- ``tenants list --json`` of the N tenants, and one page of it (``--limit 100 --offset N/2``);
- the command start alone (``tenants list --json --limit 1`` on the registry),

on a SQLite control DB (a file) and on a throwaway PostgreSQL control DB (``tctl_bench_<run>_ctl``, dropped
at the end, on failure and on Ctrl-C or SIGTERM), over ``--rounds`` rounds. Each figure is wall seconds and
the CPU seconds of the CLI process (user + system); the machine is shared, so compare figures of one
invocation. ``--tree DIR`` also runs the CLI of another source tree (a copy of an older checkout) in the
same rounds, alternated with this one, each on its own control DBs.

    python -m bench.import_bench                         # 10,000 rows, 3 rounds, SQLite and PostgreSQL
    python -m bench.import_bench --tree /tmp/before --formats json --rounds 2

Before the change that added this benchmark (issue 14), measured by hand on this machine with
``/usr/bin/time python -m orchestrator tenants …`` (2 vCPUs, other jobs starting; SQLite control DB;
10,000 rows with a password each and a schema on every row; wall seconds, user CPU seconds in brackets):
``tenants import`` CSV 3.6 (2.0), JSON 9.2 (6.3), YAML 8.2 (7.9); the same file again CSV 3.8 (2.1),
JSON 7.3 (6.5), YAML 8.3 (7.7); ``tenants list --json`` 1.3 (1.2). Without passwords: CSV 1.9 (1.6),
JSON 4.6 (4.4), YAML 7.5 (6.8). The causes, found with cProfile and ``-X importtime``: the JSON reader
counted each row's line from the top of the file (quadratic: 2.6 s at 10,000 rows), YAML was composed
by PyYAML's pure-Python parser, each row's URL was parsed five times, and ``list`` parsed and rendered
every URL again to mask its password. The same code through this benchmark (``--tree`` on a copy of
it): README, "The registry at 10,000 tenants".
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import yaml

from bench.common import ROOT, Databases, interrupts_unwind, loadavg, log, machine, write_results

SECRET_KEY = "bench-secret-key"
FORMATS = ("yaml", "json", "csv")


def rows(n: int) -> list[dict[str, Any]]:
    """N tenants as a user's file would hold them: every one with a clear password."""
    return [
        {
            "id": f"t{i:05d}",
            "url": f"postgresql://app:pw-{i:05d}@db{i % 7}.internal:5432/fleet{i % 10}",
            "schema": f"s{i:05d}" if i % 3 == 0 else None,
            "tags": [f"tier{i % 3}", "eu" if i % 2 else "us"],
            "group": f"g{i % 5}",
            "enabled": i % 11 != 0,
        }
        for i in range(n)
    ]


def write_file(folder: Path, fmt: str, data: list[dict[str, Any]]) -> Path:
    path = folder / f"tenants.{fmt}"
    if fmt == "yaml":
        path.write_text(yaml.safe_dump({"tenants": data}, sort_keys=False))
    elif fmt == "json":
        path.write_text(json.dumps(data, indent=2))
    else:
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["id", "url", "schema", "tags", "group", "enabled"])
            for r in data:
                enabled = "true" if r["enabled"] else "false"
                out.writerow([r["id"], r["url"], r["schema"] or "", ";".join(r["tags"]), r["group"], enabled])
    return path


class Cli:
    """``python -m orchestrator`` of one source tree against one control DB, timed."""

    def __init__(self, tree: Path, control: str, workdir: Path) -> None:
        self.tree = tree
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTCTL_")}
        self.env.update(
            TENANTCTL_DATABASE_URL=control,
            TENANTCTL_SECRET_KEY=SECRET_KEY,
            PYTHONPATH=str(tree),  # before the installed (editable) package
        )

    def __call__(self, *args: str) -> tuple[float, float, str]:
        """Run one command; (wall seconds, CPU seconds of the process, stdout). Fails on a non-zero exit."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(f"tenantctl {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
        return wall, cpu, done.stdout


def empty_registry(control: str) -> None:
    """Every tenant deleted, so the next import creates them all (the control DB's schema stays)."""
    if control.startswith("sqlite"):
        with sqlite3.connect(control.split("///", 1)[1]) as conn:
            conn.execute("DELETE FROM tenants")
    else:
        with psycopg.connect(control.replace("+asyncpg", ""), autocommit=True) as conn:
            conn.execute("DELETE FROM tenants")


def one_round(cli: Cli, control: str, files: dict[str, Path], n: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for fmt, path in files.items():
        empty_registry(control)
        wall, cpu, out = cli("tenants", "import", str(path), "--json")
        assert json.loads(out) == {"created": n, "updated": 0, "unchanged": 0}, out
        figures[f"import_{fmt}"] = (wall, cpu)
        wall, cpu, out = cli("tenants", "import", str(path), "--json")
        assert json.loads(out) == {"created": 0, "updated": 0, "unchanged": n}, out
        figures[f"reimport_{fmt}"] = (wall, cpu)
    wall, cpu, out = cli("tenants", "list", "--json")
    listed = json.loads(out)
    assert len(listed) == n and "pw-" not in out, len(listed)
    figures["list_json"] = (wall, cpu)
    try:
        wall, cpu, out = cli("tenants", "list", "--json", "--limit", "100", "--offset", str(n // 2))
        assert [t["id"] for t in json.loads(out)] == [t["id"] for t in listed[n // 2 : n // 2 + 100]]
        figures["list_page"] = (wall, cpu)
        wall, cpu, _ = cli("tenants", "list", "--json", "--limit", "1")
        figures["start"] = (wall, cpu)
    except RuntimeError as exc:  # a tree from before --limit/--offset
        if "--limit" not in str(exc) and "No such option" not in str(exc):
            raise
    return figures


def summarise(rounds: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per phase: median and best wall seconds, median CPU seconds."""
    phases = dict.fromkeys(k for r in rounds for k in r)
    result: dict[str, dict[str, float]] = {}
    for phase in phases:
        walls = [r[phase][0] for r in rounds if phase in r]
        cpus = [r[phase][1] for r in rounds if phase in r]
        result[phase] = {
            "wall_median": round(statistics.median(walls), 2),
            "wall_best": round(min(walls), 2),
            "cpu_median": round(statistics.median(cpus), 2),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.import_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000, help="rows per file (default 10,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per control DB (default 3)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--skip-pg", action="store_true", help="SQLite control DB only")
    parser.add_argument("--tree", type=Path, help="also run this source tree's CLI, alternated")
    parser.add_argument("--output", default="import", help="bench/results/OUTPUT.json (default import)")
    args = parser.parse_args(argv)

    trees = {"this": ROOT, **({"other": args.tree.resolve()} if args.tree else {})}
    dbs = Databases()
    results: dict[str, Any] = {
        "machine": machine(),
        "tenants": args.tenants,
        "trees": {k: str(v) for k, v in trees.items()},
    }
    with interrupts_unwind(), tempfile.TemporaryDirectory(prefix="tctl_import_bench_") as tmp:
        folder = Path(tmp)
        data = rows(args.tenants)
        files = {fmt: write_file(folder, fmt, data) for fmt in args.formats}
        try:
            controls: dict[str, dict[str, str]] = {}
            for name in trees:
                controls[name] = {"sqlite": f"sqlite:///{folder / f'{name}.db'}"}
                if not args.skip_pg:
                    controls[name]["postgresql"] = dbs.url(dbs.create(dbs.name(f"{name}_ctl")))
            clis = {
                (name, kind): Cli(trees[name], url, folder)
                for name, kinds in controls.items()
                for kind, url in kinds.items()
            }
            for cli in clis.values():
                cli("db", "upgrade")
            measured: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in clis}
            for number in range(1, args.rounds + 1):
                for (name, kind), cli in clis.items():
                    log(f"round {number}: {name} tree, {kind} control DB (load {loadavg()})")
                    control = cli.env["TENANTCTL_DATABASE_URL"]
                    measured[(name, kind)].append(one_round(cli, control, files, args.tenants))
            results["figures"] = {
                f"{name}/{kind}": {"rounds": rounds, "summary": summarise(rounds)}
                for (name, kind), rounds in measured.items()
            }
        finally:
            dbs.drop_all()
    for key, figures in results["figures"].items():
        print(f"\n{key}  (seconds: median wall, best wall, median CPU of the CLI)")
        for phase, f in figures["summary"].items():
            print(f"  {phase:16} {f['wall_median']:6.2f} {f['wall_best']:6.2f} {f['cpu_median']:6.2f}")
    print(f"\nwritten to {write_results(args.output, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
