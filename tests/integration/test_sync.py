"""`tenantctl tenants sync` against a real customers table in PostgreSQL, through the CLI as an operator
(or beat) runs it: the diff, all or nothing, read-only and bounded queries, passwords kept out of sight."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator import sync as sync_core
from orchestrator.exceptions import ConfigurationError, SyncRefused, SyncSourceError
from orchestrator.secrets import SecretBox
from tests.conftest import DatabaseFactory
from tests.support.harness import SECRET_KEY, Harness

SOURCE_PW = "src-pw-7f3a91"  # the source URL's password: must never be printed
TENANT_PW = "tenant-pw-c0ffee"  # a tenant URL's password in the customers table
QUERY = (
    "SELECT id, db_url AS url, schema_name AS schema, tier, region FROM customers WHERE active ORDER BY id"
)
COLUMNS = ("--tag-column", "tier", "--group-column", "region")


class Customers:
    """The application's own database: a customers table the sync reads, never writes."""

    def __init__(self, dbs: DatabaseFactory) -> None:
        self.name = dbs.create(prefix="tctl_app")
        self.admin = dbs.url(self.name)
        server = dbs.server.removeprefix("postgresql://").split("@", 1)[1]
        self.url = f"postgresql://postgres:{SOURCE_PW}@{server}/{self.name}"  # trust auth: any password
        self.execute(
            "CREATE TABLE customers (id text PRIMARY KEY, db_url text, schema_name text, tier text, "
            "region text, active boolean NOT NULL DEFAULT true)"
        )

    def execute(self, statement: str, *params: Any) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(statement, params or None)  # type: ignore[arg-type]

    def add(
        self, cid: str, url: str, schema: str | None = None, tier: str | None = "gold", region: str = "eu"
    ) -> None:
        self.execute(
            "INSERT INTO customers VALUES (%s, %s, %s, %s, %s, true)", cid, url, schema, tier, region
        )

    def writes(self) -> int:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
            row = conn.execute(
                "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables "
                "WHERE relname = 'customers'"
            ).fetchone()
        return int(row[0]) if row else 0


@pytest.fixture
def customers(dbs: DatabaseFactory) -> Customers:
    app = Customers(dbs)
    app.add("acme", f"postgresql://app:{TENANT_PW}@db1/acme", tier="gold", region="eu")
    app.add("globex", "postgresql://app@db1/shared", schema="globex", tier="silver", region="us")
    app.add("initech", "postgresql://app@db2/initech", tier=None, region="eu")
    return app


def sync(harness: Harness, customers: Customers, *args: str, query: str = QUERY, **env: str) -> Any:
    return harness.cli(
        "tenants", "sync", "--from-sql", query, "--source-url", customers.url, *COLUMNS, *args, **env
    )


def registry(harness: Harness) -> dict[str, dict[str, Any]]:
    listed = json.loads(harness.cli("tenants", "list", "--json").stdout)
    return {t["id"]: t for t in listed}


def test_sync_creates_updates_disables_and_reenables(harness: Harness, customers: Customers) -> None:
    first = sync(harness, customers, "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["counts"] == {"created": 3, "updated": 0, "disabled": 0, "reenabled": 0, "unchanged": 0}
    assert report["created"] == ["acme", "globex", "initech"] and report["dry_run"] is False
    tenants = registry(harness)
    assert tenants["acme"]["tags"] == ["gold"] and tenants["acme"]["group"] == "eu"
    assert tenants["globex"]["schema"] == "globex" and tenants["initech"]["tags"] == []
    stored = harness.with_store(lambda store: store.get_tenant("acme"))
    assert stored.url == "postgresql://app@db1/acme"  # the password is encrypted, as `tenants import` does
    assert SecretBox(SECRET_KEY).decrypt(stored.password_token or "") == TENANT_PW

    customers.execute(
        "UPDATE customers SET db_url = %s WHERE id = 'acme'", "postgresql://app:rotated@db1/acme"
    )
    customers.execute("UPDATE customers SET region = 'us', tier = 'platinum' WHERE id = 'initech'")
    customers.execute("UPDATE customers SET active = false WHERE id = 'globex'")
    customers.add("hooli", "postgresql://app@db3/hooli")
    second = sync(harness, customers)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        "updated     acme: password",
        "disabled    globex: not in the source",
        "created     hooli",
        "updated     initech: tags, group",
        "created 1, updated 2, disabled 1, re-enabled 0, unchanged 0",
    ]
    tenants = registry(harness)
    assert tenants["globex"]["enabled"] is False  # disabled, never deleted
    assert tenants["initech"]["tags"] == ["platinum"] and tenants["initech"]["group"] == "us"

    customers.execute("UPDATE customers SET active = true WHERE id = 'globex'")
    third = json.loads(sync(harness, customers, "--json").stdout)
    assert third["reenabled"] == [{"id": "globex", "fields": ["enabled"]}]
    assert third["counts"]["unchanged"] == 3 and registry(harness)["globex"]["enabled"] is True
    writes = customers.writes()
    assert sync(harness, customers).returncode == 0
    assert customers.writes() == writes  # the sync never writes to its source


def test_dry_run_changes_nothing(harness: Harness, customers: Customers) -> None:
    harness.register("acme", "postgresql://app@old/acme")
    harness.register("legacy", "postgresql://app@db9/legacy")
    before = registry(harness)
    result = sync(harness, customers, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "updated     acme: url, password, tags, group" in result.stdout
    assert "disabled    legacy: not in the source" in result.stdout
    assert "created 2, updated 1, disabled 1" in result.stdout
    assert "dry run: nothing was changed" in result.stderr
    assert registry(harness) == before
    as_json = json.loads(sync(harness, customers, "--dry-run", "--json").stdout)
    assert as_json["dry_run"] is True and as_json["counts"]["created"] == 2
    assert registry(harness) == before


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (
            "UPDATE customers SET tier = 'Gold Plan' WHERE id = 'globex'",
            "source row 2 (id 'globex'): invalid tag",
        ),
        (
            "UPDATE customers SET db_url = 'mysql://app:" + TENANT_PW + "@h/x' WHERE id = 'initech'",
            "source row 3 (id 'initech'): invalid url",
        ),
        (
            "UPDATE customers SET schema_name = 'bad;name' WHERE id = 'acme'",
            "source row 1 (id 'acme'): invalid schema",
        ),
        (
            "UPDATE customers SET db_url = NULL WHERE id = 'acme'",
            "source row 1 (id 'acme'): missing field 'url'",
        ),
    ],
)
def test_a_bad_row_is_one_line_exit_2_nothing_written(
    harness: Harness, customers: Customers, setup: str, needle: str
) -> None:
    customers.execute(setup)
    result = sync(harness, customers)
    assert result.returncode == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and needle in err and err.endswith("(nothing synced)"), err
    assert TENANT_PW not in err and SOURCE_PW not in err and result.stdout == ""
    assert registry(harness) == {}


def test_duplicate_ids_in_the_source_are_one_line(harness: Harness, customers: Customers) -> None:
    query = (
        "SELECT id, db_url AS url FROM customers UNION ALL SELECT 'acme', 'postgresql://h/again' ORDER BY 1"
    )
    result = harness.cli("tenants", "sync", "--from-sql", query, "--source-url", customers.url)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tenantctl: error: source row 2 (id 'acme'): id 'acme' appears twice (first in row 1) "
        "(nothing synced)"
    ]
    assert registry(harness) == {}


def test_the_source_password_is_never_printed(harness: Harness, customers: Customers, tmp_path: Path) -> None:
    outputs = []
    for args in (
        (),
        ("--json",),
        ("--dry-run", "--json"),
        ("--debug",),  # a traceback would be no better
    ):
        result = sync(harness, customers, *args)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    failing = [
        sync(harness, customers, query="SELECT id, url FROM no_such_table"),
        sync(harness, customers, "--debug", query="SELECT id, url FROM no_such_table"),
        harness.cli(
            "tenants",
            "sync",
            "--from-sql",
            QUERY,
            "--source-url",
            f"postgresql://postgres:{SOURCE_PW}@127.0.0.1:1/x",
        ),
        harness.cli(
            "tenants",
            "sync",
            "--from-sql",
            QUERY,
            "--source-url",
            f"postgresql://postgres:{SOURCE_PW}@127.0.0.1:1/x",
            "--debug",
        ),
    ]
    for result in failing:
        assert result.returncode != 0, result.stderr  # 2, or 1 with --debug's traceback
        outputs.append(result.stdout + result.stderr)
    assert 'relation "no_such_table" does not exist' in failing[0].stderr
    assert "postgres:***@" in failing[2].stderr
    for text in outputs:
        assert SOURCE_PW not in text and TENANT_PW not in text


def test_env_references_in_the_source_url(harness: Harness, customers: Customers) -> None:
    url = customers.url.replace(SOURCE_PW, "${APP_DB_PW}")
    args = ("tenants", "sync", "--from-sql", QUERY, "--source-url", url, *COLUMNS, "--json")
    unset = harness.cli(*args)
    assert unset.returncode == 2
    assert "environment variable APP_DB_PW referenced by the source URL is not set" in unset.stderr
    special = f"{SOURCE_PW}@/:?#%"  # taken whole from the environment, never parsed as URL text
    ok = harness.cli(*args, APP_DB_PW=special)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["counts"]["created"] == 3
    assert SOURCE_PW not in ok.stdout + ok.stderr
    wrong_db = harness.cli(*args[:5], url.replace(customers.name, "no_such_db"), APP_DB_PW=special)
    assert wrong_db.returncode == 2 and 'database "no_such_db" does not exist' in wrong_db.stderr
    assert SOURCE_PW not in wrong_db.stderr and "${APP_DB_PW}" not in wrong_db.stderr


def test_the_query_is_read_only_single_and_bounded(harness: Harness, customers: Customers) -> None:
    customers.execute(
        "CREATE FUNCTION sneaky() RETURNS text LANGUAGE sql AS "
        "$$ UPDATE customers SET tier = 'hacked'; SELECT 'x' $$"
    )
    writes = customers.writes()
    cases = {
        "SELECT id, db_url AS url, sneaky() AS schema FROM customers": "read-only transaction",
        f"{QUERY}; DELETE FROM customers": "the query failed",
        "DELETE FROM customers RETURNING id, db_url AS url": "the query failed",
        "SELECT id, db_url AS url FROM customers, pg_sleep(5)": "statement timeout (0.5s)",
    }
    for query, needle in cases.items():
        result = harness.cli(
            "tenants", "sync", "--from-sql", query, "--source-url", customers.url, "--timeout", "0.5"
        )
        assert result.returncode == 2 and needle in result.stderr, (query, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert customers.writes() == writes
    assert registry(harness) == {}


def test_an_unknown_column_is_refused_not_ignored(harness: Harness, customers: Customers) -> None:
    result = sync(
        harness, customers, query="SELECT id, db_url AS url, schema_name AS schema_nme FROM customers"
    )
    assert result.returncode == 2
    assert "column 'schema_nme' is not a tenant field" in result.stderr
    assert registry(harness) == {}


def test_the_valve_stops_a_broken_source_from_disabling_the_fleet(
    harness: Harness, customers: Customers
) -> None:
    assert sync(harness, customers).returncode == 0
    empty = sync(harness, customers, "--json", query=QUERY.replace("WHERE active", "WHERE false"))
    assert empty.returncode == 3
    assert "would disable 3 of 3 enabled tenant(s)" in empty.stderr and "--force" in empty.stderr
    report = json.loads(empty.stdout)
    assert report["counts"]["disabled"] == 3 and report["refused"]
    assert all(t["enabled"] for t in registry(harness).values())

    for cid in ("d1", "d2", "d3", "d4", "d5", "d6", "d7"):
        customers.add(cid, f"postgresql://app@db/{cid}")
    assert sync(harness, customers).returncode == 0  # 10 tenants
    customers.execute("UPDATE customers SET active = false WHERE id IN ('d1', 'd2')")
    two = sync(harness, customers)
    assert two.returncode == 3 and "more than --max-disable 10% allows (1)" in two.stderr
    assert "disabled    d1: not in the source" in two.stdout
    assert sum(not t["enabled"] for t in registry(harness).values()) == 0
    assert sync(harness, customers, "--max-disable", "2").returncode == 0
    assert sum(not t["enabled"] for t in registry(harness).values()) == 2
    forced = sync(harness, customers, "--force", query=QUERY.replace("WHERE active", "WHERE false"))
    assert forced.returncode == 0, forced.stderr
    assert not any(t["enabled"] for t in registry(harness).values())


def test_from_file_with_tag_and_group_columns(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(
        f"id,url,tier,region\nacme,postgresql://app:{TENANT_PW}@db1/acme,gold,eu\nglobex,postgresql://app@db1/g,,us\n"
    )
    result = harness.cli("tenants", "sync", "--from-file", str(path), *COLUMNS, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["created"] == ["acme", "globex"]
    tenants = registry(harness)
    assert tenants["acme"]["tags"] == ["gold"] and tenants["globex"]["group"] == "us"

    path.write_text("id,url,tier,region\nacme,postgresql://app@db1/acme,Gold,eu\n")
    bad = harness.cli("tenants", "sync", "--from-file", str(path), *COLUMNS)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        f"tenantctl: error: {path}:2: invalid tag 'Gold': use 1-63 lowercase letters, digits, '-', '_' "
        "or '.' (nothing synced)"
    )
    path.write_text("id,url,tier,region\nacme,postgresql://app:" + TENANT_PW + "@db1/acme,gold,eu\n")
    dropped = harness.cli("tenants", "sync", "--from-file", str(path), *COLUMNS)
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout.splitlines() == [
        "disabled    globex: not in the source",
        "created 0, updated 0, disabled 1, re-enabled 0, unchanged 1",
    ]


def test_a_sqlite_source(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, db TEXT, plan TEXT, live INTEGER)")
        conn.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?)",
            [(1, "postgresql://app@db/c1", "pro", 1), (2, "postgresql://app@db/c2", "free", 0)],
        )
    conn.close()
    query = "SELECT id, db AS url, plan, live AS enabled FROM customers"
    result = harness.cli(
        "tenants", "sync", "--from-sql", query, "--source-url", f"sqlite:///{path}", "--tag-column", "plan"
    )
    assert result.returncode == 0, result.stderr
    tenants = registry(harness)
    assert tenants["1"]["tags"] == ["pro"] and tenants["2"]["enabled"] is False
    write = harness.cli(
        "tenants",
        "sync",
        "--from-sql",
        "DELETE FROM customers RETURNING id, db AS url",
        "--source-url",
        f"sqlite:///{path}",
    )
    assert write.returncode == 2 and "readonly" in write.stderr, write.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (2,)
    conn.close()


def test_the_scheduled_sync_runs_the_same_core_from_settings(
    harness: Harness, customers: Customers, redis_server: str
) -> None:
    """The beat entry exists only with TENANTCTL_SYNC_CRON, and its task runs ``sync.scheduled`` with the
    worker's settings: called here with the same settings (a second app finalized in this process would
    collide with the first's shared task names)."""
    from workers.app import SYNC, make_app

    cfg = harness.settings(
        broker_url=f"{redis_server}/13",
        sync_cron="*/10 * * * *",
        sync_from_sql=QUERY,
        sync_source_url=customers.url.replace(SOURCE_PW, "${APP_DB_PW}"),
        sync_tag_columns="tier",
        sync_group_column="region",
    )
    entry = make_app(cfg).conf.beat_schedule["tenantctl-sync"]
    assert entry["task"] == SYNC and entry["schedule"].minute == {0, 10, 20, 30, 40, 50}
    assert (
        "tenantctl-sync" not in make_app(harness.settings(broker_url=f"{redis_server}/13")).conf.beat_schedule
    )
    with pytest.raises(ConfigurationError, match="invalid TENANTCTL_SYNC_CRON '61 "):
        make_app(harness.settings(broker_url=f"{redis_server}/13", sync_cron="61 * * * *"))

    environ = {"APP_DB_PW": SOURCE_PW}
    report = sync_core.scheduled(cfg, environ)
    assert report["counts"]["created"] == 3, report
    assert SOURCE_PW not in json.dumps(report) and report["source"].startswith(
        "source postgresql://postgres:"
    )
    assert registry(harness)["globex"]["tags"] == ["silver"] and registry(harness)["globex"]["group"] == "us"

    customers.execute("UPDATE customers SET active = false")  # a broken source: the valve holds on beat too
    with pytest.raises(SyncRefused, match="would disable 3 of 3"):
        sync_core.scheduled(cfg, environ)
    assert all(t["enabled"] for t in registry(harness).values())
    with pytest.raises(SyncSourceError, match="APP_DB_PW"):
        sync_core.scheduled(cfg, {})
