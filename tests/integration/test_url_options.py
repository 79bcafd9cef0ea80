"""A tenant URL's libpq options reach every connection tenantctl opens to it: the migration's (psycopg)
and the reads' (asyncpg: preflight, `tenantctl current`, the reaper's lock probe)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import psycopg

from orchestrator.revisions import Probe, probe_lock, read_one
from tests.support.harness import Harness, tenant_revision


def test_options_search_path_is_honoured_by_the_migration_and_by_every_read(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    """No tenantctl ``schema``: only the URL's ``options=-c search_path=s1`` puts the version table in
    ``s1``. Were the reads blind to it they would see a tenant at base and migrate it again."""
    (url,) = tenant_dbs(1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA s1")
    tenant_url = url + "?options=-csearch_path%3Ds1&application_name=acme-billing"
    harness.register("acme", tenant_url)

    first = harness.cli("upgrade", "head", "--json")
    assert first.returncode == 0, first.stderr
    assert tenant_revision(url, "s1") == "0004"
    assert tenant_revision(url) is None, "nothing was written outside the URL's search_path"

    current = harness.cli("current", "--json")
    assert current.returncode == 0, current.stderr
    assert json.loads(current.stdout) == [{"tenant": "acme", "revision": "0004", "error": None}]

    again = harness.cli("upgrade", "head", "--json")
    assert again.returncode == 0, again.stderr
    (row,) = json.loads(again.stdout)["tenants"]
    assert row["status"] == "skipped" and row["from_revision"] == "0004"
    assert row["worker"] is None, "found at the target by the preflight read, not by a unit"

    read = asyncio.run(read_one(Probe(tenant_id="acme", url=tenant_url, schema=None), "alembic_version", 5))
    assert read.heads == ("0004",)
    lock = asyncio.run(probe_lock(tenant_url, None, "alembic_version", 5))
    assert lock.lock_free and lock.heads == ("0004",)


def test_an_option_reads_cannot_honour_fails_that_tenant_as_invalid_config(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    good, odd = tenant_dbs(2)
    harness.register("good", good)
    harness.register("odd", odd + "?channel_binding=disable")
    result = harness.cli("current", "--json")
    assert result.returncode == 1
    rows = {r["tenant"]: r for r in json.loads(result.stdout)}
    assert rows["good"]["error"] is None
    assert "'channel_binding'" in rows["odd"]["error"]
