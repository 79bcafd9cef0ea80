"""Schema tenants that share a database are read over one connection (a catalog query, then ``UNION ALL``
batches), and each gets exactly what its own connection would have given it: the per-tenant path
(``read_one``) is the witness, on real PostgreSQL databases."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import psycopg
import pytest
from psycopg import sql

from orchestrator import revisions
from orchestrator.models import ErrorClass
from orchestrator.revisions import Probe, RevisionRead, read_all, read_one
from tests.conftest import DatabaseFactory
from tests.support.harness import Harness

T = TypeVar("T")
TABLE = "alembic_version"
MANY = revisions.BATCH + 30  # more schemas than one batch names


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def _fill(url: str, versions: dict[str, Sequence[str] | None]) -> None:
    """One schema per key; a version table holding the given rows, or none for None."""
    with psycopg.connect(url, autocommit=True) as conn:
        for schema, rows in versions.items():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            if rows is None:
                continue
            table = sql.Identifier(schema, TABLE)
            conn.execute(sql.SQL("CREATE TABLE {} (version_num varchar(32) PRIMARY KEY)").format(table))
            for row in rows:
                conn.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), [row])


@pytest.fixture(scope="module")
def fleet(pg_server: str) -> Iterator[tuple[list[Probe], dict[str, str]]]:
    """Two databases of schema tenants at several revisions, with the odd cases, and a database tenant,
    made once for the module (the tests only read them). The probes, and each one's database name."""
    dbs = DatabaseFactory(pg_server)
    try:
        yield _fleet(dbs)
    finally:
        dbs.drop_all()


def _fleet(dbs: DatabaseFactory) -> tuple[list[Probe], dict[str, str]]:
    first, second, alone = dbs.create(), dbs.create(), dbs.create()
    versions: dict[str, Sequence[str] | None] = {
        f"s{i:03d}": ["0004" if i % 7 else "0002"] for i in range(MANY)
    }
    versions.update(
        {
            "merged": ["0003b", "0003a"],  # two heads
            "empty": [],  # a version table without rows: at base, but the table is there
            "no_table": None,
            'We"ird-Name$ 1': ["0001"],
            "broken": None,  # a version table without version_num: the batch fails, the tenant alone
        }
    )
    _fill(dbs.url(first), versions)
    with psycopg.connect(dbs.url(first), autocommit=True) as conn:
        conn.execute('CREATE TABLE broken.alembic_version ("version" text)')
    _fill(dbs.url(second), {"a": ["0004"], "b": ["0003"], "c": None})
    _fill(dbs.url(alone), {})  # database-per-tenant, no version table
    probes = [Probe(tenant_id=f"one-{s}", url=dbs.url(first), schema=s) for s in versions]
    probes.append(Probe(tenant_id="one-missing", url=dbs.url(first), schema="missing"))
    probes += [Probe(tenant_id=f"two-{s}", url=dbs.url(second), schema=s) for s in "abcd"]
    probes.append(Probe(tenant_id="alone", url=dbs.url(alone), schema=None))
    return probes, {p.tenant_id: p.url.rsplit("/", 1)[1] for p in probes}


def _tagged(probes: Sequence[Probe], tag: str) -> list[Probe]:
    """The probes with an application_name of their own, to find their backends in pg_stat_activity."""
    return [replace(p, url=f"{p.url}?application_name=tctl-grp-{tag}") for p in probes]


async def _one_by_one(probes: Sequence[Probe], timeout: float = 5) -> dict[str, RevisionRead]:
    return {p.tenant_id: await read_one(p, TABLE, timeout) for p in probes}


def _counting_connects(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every asyncpg connection opened, by database: the real connect, counted on the way."""
    opened: Counter[str] = Counter()
    real = asyncpg.connect

    async def connect(**kwargs: Any) -> Any:
        opened[kwargs["database"]] += 1
        return await real(**kwargs)

    monkeypatch.setattr(asyncpg, "connect", connect)
    return opened


def test_grouped_reads_equal_the_per_tenant_reads_over_one_connection_per_database(
    fleet: tuple[list[Probe], dict[str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    probes, where = fleet
    probes = [*probes, Probe(tenant_id="lite", url=f"sqlite:///{tmp_path / 'none.db'}", schema=None)]
    expected = _run(_one_by_one(probes))

    opened = _counting_connects(monkeypatch)
    grouped = _run(read_all(probes, version_table=TABLE, concurrency=8, timeout=5))

    assert grouped == expected
    assert list(grouped) == [p.tenant_id for p in probes], "in the probes' order"
    assert opened == Counter(set(where.values())), "one connection per database"
    # the witness itself read what the databases hold
    assert grouped["one-s001"].heads == ("0004",) and grouped["one-s000"].heads == ("0002",)
    assert grouped["one-merged"].heads == ("0003a", "0003b")
    assert grouped["one-empty"] == RevisionRead(tenant_id="one-empty", version_table=True)
    for base in ("one-no_table", "one-missing", "two-c", "two-d", "alone", "lite"):
        assert grouped[base] == RevisionRead(tenant_id=base), base
    assert grouped['one-We"ird-Name$ 1'].heads == ("0001",)
    assert grouped["two-b"].heads == ("0003",)
    broken = grouped["one-broken"]
    assert broken.error_class is ErrorClass.UNREACHABLE and "version_num" in (broken.error or "")


def test_one_backend_per_database_seen_by_postgresql(
    fleet: tuple[list[Probe], dict[str, str]], pg_server: str
) -> None:
    """pg_stat_activity while the reads wait on a lock held on a version table in each database: one
    backend per database, however high the concurrency; released, every tenant reads."""
    tag = uuid.uuid4().hex[:10]
    probes, where = _tagged(fleet[0], tag), fleet[1]
    locked = {where[p.tenant_id]: p.schema for p in probes if p.schema in ("s000", "a")}  # first of each
    databases = sorted(locked)

    async def scenario() -> tuple[Counter[str], dict[str, RevisionRead]]:
        admin = await asyncpg.connect(f"{pg_server}/postgres")
        holders = [await asyncpg.connect(f"{pg_server}/{name}") for name in databases]
        try:
            for holder, name in zip(holders, databases, strict=True):
                schema = locked[name]
                await holder.execute("BEGIN")
                await holder.execute(f'LOCK TABLE "{schema}".alembic_version IN ACCESS EXCLUSIVE MODE')
            reading = asyncio.ensure_future(read_all(probes, version_table=TABLE, concurrency=16, timeout=10))
            query = "SELECT datname, wait_event_type FROM pg_stat_activity WHERE application_name = $1"
            deadline = time.monotonic() + 8
            while True:
                rows = await admin.fetch(query, f"tctl-grp-{tag}")
                if sum(r["wait_event_type"] == "Lock" for r in rows) == len(databases):
                    break
                assert time.monotonic() < deadline, f"the reads never waited on both locks: {rows}"
                await asyncio.sleep(0.02)
            seen = Counter(str(r["datname"]) for r in rows)
            for holder in holders:
                await holder.execute("ROLLBACK")
            return seen, await reading
        finally:
            for conn in (admin, *holders):
                await conn.close()

    seen, reads = _run(scenario())
    assert {db: seen[db] for db in databases} == dict.fromkeys(databases, 1)
    assert reads["one-s001"].heads == ("0004",) and reads["two-a"].heads == ("0004",)


def test_a_locked_version_table_fails_its_tenant_only(fleet: tuple[list[Probe], dict[str, str]]) -> None:
    """A version table held by someone's DDL: its batch fails on lock_timeout, not the session."""
    probes, _ = fleet
    url = next(p.url for p in probes if p.schema == "s001")

    async def scenario() -> tuple[float, dict[str, RevisionRead]]:
        holder = await asyncpg.connect(url)
        try:
            await holder.execute("BEGIN")
            await holder.execute('LOCK TABLE "s001".alembic_version IN ACCESS EXCLUSIVE MODE')
            started = time.monotonic()
            reads = await read_all(probes, version_table=TABLE, concurrency=4, timeout=1)
            return time.monotonic() - started, reads
        finally:
            await holder.close()

    took, reads = _run(scenario())
    locked = reads["one-s001"]
    assert locked.error_class is ErrorClass.UNREACHABLE and "lock timeout" in (locked.error or "")
    assert [r.tenant_id for r in reads.values() if not r.ok] == ["one-s001", "one-broken"]
    assert took < 4


def test_unreachable_database_gives_each_tenant_its_masked_error(pg_server: str) -> None:
    password = f"pw{uuid.uuid4().hex[:8]}"
    host = pg_server.split("@", 1)[1]
    missing_db = f"postgresql://postgres:{password}@{host}/tctl_gone_{password}"  # the name holds it
    refused = f"postgresql://postgres:{password}@127.0.0.1:1/tenants"
    odd_option = f"{pg_server}/postgres?channel_binding=require"
    probes = [
        Probe(tenant_id=f"{kind}-{i}", url=url, schema=f"t{i}")
        for kind, url in (("gone", missing_db), ("refused", refused), ("odd", odd_option))
        for i in range(5)
    ]
    expected = _run(_one_by_one(probes, timeout=2))
    reads = _run(read_all(probes, version_table=TABLE, concurrency=4, timeout=2))

    assert reads == expected
    for read in reads.values():
        kind = read.tenant_id.split("-")[0]
        want = ErrorClass.INVALID_CONFIG if kind == "odd" else ErrorClass.UNREACHABLE
        assert read.error_class is want and read.error, read
        assert password not in read.error
    assert "***" in reads["gone-3"].error  # type: ignore[operator]
    assert "channel_binding" in reads["odd-0"].error  # type: ignore[operator]


def test_current_through_the_cli_reads_schema_tenants(harness: Harness, dbs: DatabaseFactory) -> None:
    url = dbs.url(dbs.create())
    _fill(url, {"Acme-Corp$1": ["0004"], "globex": ["0002"], "initech": None})
    for schema in ("Acme-Corp$1", "globex", "initech", "umbrella"):
        harness.register(schema.lower().replace("$", "-"), url, schema=schema)
    result = harness.cli("current", "--json")
    assert result.returncode == 0, result.stderr
    assert {r["tenant"]: r["revision"] for r in json.loads(result.stdout)} == {
        "acme-corp-1": "0004",
        "globex": "0002",
        "initech": None,
        "umbrella": None,
    }
