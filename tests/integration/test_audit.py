"""Drift audits over real PostgreSQL tenants put by hand in every class, through the CLI as on-call runs
it: classification, grouping, hints, exit codes, stored reports and their changes, and not one byte
written to any tenant."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql

from orchestrator.controldb.schema import metadata as control_metadata
from tests.conftest import FIXTURE_ENVS, MIGRATIONS_INI, ROOT, DatabaseFactory
from tests.support.harness import Harness, alembic

UNREACHABLE = "postgresql://postgres:s3cret@127.0.0.1:1/nowhere"
MIGRATION_HINT = "the schema differs from the models at head"


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def _snapshot_once(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        system = "('pg_catalog', 'information_schema', 'pg_toast')"
        versions = {}
        for (schema,) in conn.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'alembic_version'"
        ).fetchall():
            ident = sql.Identifier(schema, "alembic_version")
            rows = conn.execute(sql.SQL("SELECT version_num FROM {} ORDER BY 1").format(ident)).fetchall()
            versions[schema] = rows
        return {
            "schemas": conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall(),
            "columns": conn.execute(
                "SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default "
                f"FROM information_schema.columns WHERE table_schema NOT IN {system} ORDER BY 1, 2, 3"
            ).fetchall(),
            "indexes": conn.execute(
                f"SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
                f"WHERE schemaname NOT IN {system} ORDER BY 1, 2, 3"
            ).fetchall(),
            "versions": versions,
            "writes": conn.execute(
                "SELECT schemaname, relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
                "ORDER BY 1, 2"
            ).fetchall(),
        }


def snapshot(url: str) -> dict[str, Any]:
    """Schema, version rows and write counters of one database, once the statistics of sessions that
    just ended have landed (two equal reads in a row, within a deadline)."""
    deadline = time.monotonic() + 10
    last = _snapshot_once(url)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        again = _snapshot_once(url)
        if again == last:
            return again
        last = again
    return last


@dataclass
class Fleet:
    harness: Harness
    urls: dict[str, str]  # tenant id -> database URL (without the password)
    databases: list[str]  # every database the tenants live in


@pytest.fixture
def fleet(harness: Harness, dbs: DatabaseFactory) -> Iterator[Fleet]:
    """Tenants put by hand in each class the audit knows."""
    template = dbs.create()
    alembic(dbs.url(template), "upgrade", "head")

    def clone(*statements: str) -> str:
        url = dbs.url(dbs.create(template=template))
        if statements:
            execute(url, *statements)
        return url

    def fresh(revision: str | None = None) -> str:
        url = dbs.url(dbs.create())
        if revision:
            alembic(url, "upgrade", revision)
        return url

    urls = {
        "head-1": clone(),
        "head-2": clone(),
        "behind-1": fresh("0002"),
        "behind-2": fresh("0002"),
        "empty-rows": fresh(),
        "unknown": clone("UPDATE alembic_version SET version_num = 'deadbeef'"),
        "multi": clone("INSERT INTO alembic_version VALUES ('0003')"),
        "novt-empty": fresh(),
        "novt-schema": clone("DROP TABLE alembic_version"),
        "noidx-1": clone("DROP INDEX ix_invoices_status"),
        "noidx-2": clone("DROP INDEX ix_invoices_status"),
        "extra": clone("ALTER TABLE accounts ADD COLUMN nickname text"),
    }
    execute(urls["empty-rows"], "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    shared = fresh()
    alembic(shared, "upgrade", "head", schema="Tenant-x")
    alembic(shared, "upgrade", "head", schema="tenant_ok")
    execute(shared, 'ALTER TABLE "Tenant-x".accounts ADD COLUMN nickname text')
    for tenant_id, url in urls.items():
        password_url = url.replace("postgres@", "postgres:s3cret@", 1) if tenant_id == "head-1" else url
        harness.register(tenant_id, password_url)
    harness.register("schema-extra", shared, schema="Tenant-x")
    harness.register("schema-ok", shared, schema="tenant_ok")
    harness.register("unreachable", UNREACHABLE)
    urls |= {"schema-extra": shared, "schema-ok": shared}
    yield Fleet(harness=harness, urls=urls, databases=sorted(set(urls.values())))


def run_json(harness: Harness, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
    result = harness.cli("audit", *args, "--json", **env)
    assert "s3cret" not in result.stdout + result.stderr
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def by_tenant(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["tenant"]: t for t in report["tenants"]}


def group_lines(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(g["summary"], g["tenants"]) for g in report["groups"]]


def test_audits_classify_group_hint_store_and_write_nothing(fleet: Fleet) -> None:
    h = fleet.harness
    before = {url: snapshot(url) for url in fleet.databases}

    code, rev = run_json(h)
    assert code == 1
    got = {t: (f["state"], f["revision"], f["behind_by"]) for t, f in by_tenant(rev).items()}
    assert got == {
        "head-1": ("at_head", "0004", None),
        "head-2": ("at_head", "0004", None),
        "noidx-1": ("at_head", "0004", None),
        "noidx-2": ("at_head", "0004", None),
        "extra": ("at_head", "0004", None),
        "schema-extra": ("at_head", "0004", None),
        "schema-ok": ("at_head", "0004", None),
        "behind-1": ("behind", "0002", 2),
        "behind-2": ("behind", "0002", 2),
        "empty-rows": ("behind", None, 4),
        "unknown": ("unknown_revision", "deadbeef", None),
        "multi": ("multiple_versions", "0003,0004", None),
        "novt-empty": ("no_version_table", None, None),
        "novt-schema": ("no_version_table", None, None),
        "unreachable": ("unreachable", None, None),
    }
    tenants = by_tenant(rev)
    assert tenants["behind-1"]["missing"] == ["0003", "0004"]
    assert tenants["empty-rows"]["missing"] == ["0001", "0002", "0003", "0004"]
    assert "Connect call failed" in tenants["unreachable"]["error"]
    assert rev["kind"] == "revision" and rev["head"] == "0004"
    assert rev["counts"] == {
        "at_head": 7,
        "behind": 3,
        "unknown_revision": 1,
        "multiple_versions": 1,
        "no_version_table": 2,
        "unreachable": 1,
    }
    assert rev["drift"] == 8
    assert group_lines(rev) == [
        (
            "1 tenant is behind head by 4 revisions (at base, empty version table; missing 0001, 0002, 0003, "
            "0004)",
            ["empty-rows"],
        ),
        ("2 tenants are behind head by 2 revisions (at 0002; missing 0003, 0004)", ["behind-1", "behind-2"]),
        ("1 tenant is on revision deadbeef, unknown to the scripts", ["unknown"]),
        ("1 tenant has several version rows (0003, 0004)", ["multi"]),
        ("2 tenants have no version table", ["novt-empty", "novt-schema"]),
        ("1 tenant is unreachable", ["unreachable"]),
    ]
    hints = {g["summary"].split(" (")[0]: g["hint"] for g in rev["groups"]}
    assert hints["2 tenants are behind head by 2 revisions"] == (
        "tenantctl upgrade head --tenant behind-1 --tenant behind-2"
    )
    assert (
        "deploy the code that knows it" in hints["1 tenant is on revision deadbeef, unknown to the scripts"]
    )
    assert tenants["behind-1"]["hint"] == "tenantctl upgrade head --tenant behind-1"
    assert rev["changes"] == {
        "previous": None,
        "new_drift": sorted(got.keys() - _at_head(rev)),
        "resolved": [],
    }

    code, schema = run_json(h, "--schema")
    assert code == 1
    assert schema["kind"] == "schema" and schema["changes"]["previous"] is None
    assert schema["drift"] == 12
    tenants = by_tenant(schema)
    assert tenants["noidx-1"]["differences"] == ["lacks index ix_invoices_status on invoices (status)"]
    assert tenants["extra"]["differences"] == ["has extra column accounts.nickname"]
    assert tenants["schema-extra"]["differences"] == ["has extra column accounts.nickname"]
    assert tenants["schema-ok"]["differences"] == [] and not tenants["schema-ok"]["drift"]
    assert tenants["head-1"]["differences"] == [] and not tenants["head-1"]["drift"]
    assert tenants["behind-1"]["differences"] == [
        "lacks column accounts.email",
        "lacks index ix_invoices_status on invoices (status)",
    ]
    lines = group_lines(schema)
    assert ("2 tenants lack index ix_invoices_status on invoices (status)", ["noidx-1", "noidx-2"]) in lines
    assert ("2 tenants have extra column accounts.nickname", ["extra", "schema-extra"]) in lines
    assert ("1 tenant has no version table, schema matches head", ["novt-schema"]) in lines
    assert ("1 tenant has no version table", ["novt-empty"]) in lines
    assert lines[-2:] == [
        ("2 tenants have extra column accounts.nickname", ["extra", "schema-extra"]),
        ("2 tenants lack index ix_invoices_status on invoices (status)", ["noidx-1", "noidx-2"]),
    ]
    hint = {g["summary"]: g["hint"] for g in schema["groups"]}
    assert hint["2 tenants lack index ix_invoices_status on invoices (status)"].startswith(MIGRATION_HINT)
    assert (
        "--tenant noidx-1 --tenant noidx-2"
        in hint["2 tenants lack index ix_invoices_status on invoices (status)"]
    )
    assert tenants["novt-schema"]["hint"].startswith("tenantctl stamp head --tenant novt-schema")
    assert tenants["novt-empty"]["hint"] == "tenantctl upgrade head --tenant novt-empty"
    assert (
        tenants["multi"]["hint"]
        == "tenantctl stamp base --tenant multi && tenantctl stamp head --tenant multi"
    )
    assert "stamp --purge head, for unknown" in tenants["unknown"]["hint"]
    assert tenants["unknown"]["hint"].startswith("the schema matches head")

    # Read-only: the same schemas, version rows and write counters; no version table was created.
    assert {url: snapshot(url) for url in fleet.databases} == before
    with psycopg.connect(fleet.urls["novt-empty"]) as conn:
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)

    # Stored: the first audit reads back as it was printed, text and JSON.
    shown = h.cli("audit", "show", str(rev["id"]), "--json")
    assert shown.returncode == 1
    assert json.loads(shown.stdout) == rev
    text = h.cli("audit", "show", str(schema["id"]))
    assert text.returncode == 1
    assert "2 tenants lack index ix_invoices_status on invoices (status)" in text.stdout
    assert "→ tenantctl upgrade head --tenant behind-1 --tenant behind-2" in text.stdout
    assert "s3cret" not in text.stdout

    # Changes since the previous revision audit: one tenant repaired, one newly behind.
    alembic(fleet.urls["behind-1"], "upgrade", "head")
    execute(fleet.urls["head-2"], "UPDATE alembic_version SET version_num = '0003'")
    code, again = run_json(h)
    assert code == 1
    assert again["changes"] == {"previous": rev["id"], "new_drift": ["head-2"], "resolved": ["behind-1"]}
    latest = h.cli("audit", "show")
    assert f"since audit {rev['id']}: new drift: head-2; resolved: behind-1" in latest.stdout

    code, clean = run_json(h, "--tenant", "head-1", "--tenant", "schema-ok")
    assert code == 0 and clean["drift"] == 0 and clean["groups"] == []
    missing = h.cli("audit", "show", "9999")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "tenantctl: error: unknown audit '9999'"


def _at_head(report: dict[str, Any]) -> set[str]:
    return {t["tenant"] for t in report["tenants"] if t["state"] == "at_head"}


def test_schema_audit_needs_metadata(harness: Harness, tenant_dbs: Any, tmp_path: Path) -> None:
    """Without models.py beside env.py, `--schema` is one line and exit 2, before any tenant is read;
    a module:attribute from the settings is then used."""
    (url,) = tenant_dbs(1)
    alembic(url, "upgrade", "head")
    harness.register("t", url)
    no_models = str(FIXTURE_ENVS / "connection_only" / "alembic.ini")
    result = harness.cli("audit", "--schema", TENANTCTL_ALEMBIC_CONFIG=no_models)
    assert result.returncode == 2
    assert result.stderr.startswith("tenantctl: error: no models to compare with:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert harness.with_store(lambda store: store.previous_audit(None, _schema_kind())) is None

    bad = harness.cli("audit", "--schema", TENANTCTL_SCHEMA_METADATA="no_such_module:metadata")
    assert bad.returncode == 2 and "cannot load the models' metadata" in bad.stderr

    (tmp_path / "tenant_models.py").write_text((ROOT / "migrations" / "models.py").read_text())
    code, report = run_json(
        harness,
        "--schema",
        TENANTCTL_ALEMBIC_CONFIG=no_models,
        TENANTCTL_SCHEMA_METADATA="tenant_models:metadata",
    )
    assert code == 0
    assert by_tenant(report)["t"]["schema_checked"] is True


def _schema_kind() -> Any:
    from orchestrator.audit import AuditKind

    return AuditKind.SCHEMA


def test_control_db_history_matches_its_tables(control_url: str) -> None:
    """The control DB's migrations (c0003 included) build exactly what schema.py declares."""
    engine = sa.create_engine(control_url.replace("+asyncpg", "+psycopg"))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, type_, _p: (
                        not (type_ == "table" and name == "tenantctl_version")
                    ),
                },
            )
            assert compare_metadata(context, control_metadata) == []
    finally:
        engine.dispose()


def test_embedded_sqlite_audit_and_the_nightly_entry_point(tmp_path: Path) -> None:
    """SQLite control DB and SQLite tenants: the audit works without any server, never creates a
    missing tenant file, and `auditor.nightly` is one synchronous call that stores an audit."""
    from orchestrator import auditor
    from orchestrator.audit import AuditKind
    from orchestrator.models import Command

    h = Harness(f"sqlite:///{tmp_path / 'control.db'}", MIGRATIONS_INI, tmp_path)
    h.with_store(lambda s: s.migrate())
    good, extra, absent = tmp_path / "good.db", tmp_path / "extra.db", tmp_path / "absent.db"
    h.register("good", f"sqlite:///{good}")
    h.register("extra", f"sqlite:///{extra}")
    assert h.rollout(Command.UPGRADE, "head")["counts"]["succeeded"] == 2
    h.register("absent", f"sqlite:///{absent}")
    with sqlite3.connect(extra) as conn:
        conn.execute("ALTER TABLE accounts ADD COLUMN nickname TEXT")
    before = {p: p.read_bytes() for p in (good, extra)}

    code, report = run_json(h, "--schema")
    assert code == 1
    tenants = by_tenant(report)
    assert {t: f["state"] for t, f in tenants.items()} == {
        "absent": "no_version_table",
        "extra": "at_head",
        "good": "at_head",
    }
    assert tenants["extra"]["differences"] == ["has extra column accounts.nickname"]
    assert tenants["good"]["differences"] == []
    assert tenants["absent"]["hint"] == "tenantctl upgrade head --tenant absent"
    assert not absent.exists()
    assert {p: p.read_bytes() for p in (good, extra)} == before

    nightly = auditor.nightly(h.settings(), {}, kind=AuditKind.SCHEMA)
    assert nightly["id"] == report["id"] + 1 and nightly["drift"] == 2
    assert nightly["changes"] == {"previous": report["id"], "new_drift": [], "resolved": []}
    assert json.loads(h.cli("audit", "show", "--json").stdout)["id"] == nightly["id"]
