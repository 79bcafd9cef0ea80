"""A tenant whose URL holds a password: it appears nowhere — output, logs, status JSON, control DB."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import psycopg

from tests.conftest import FIXTURE_ENVS
from tests.support.harness import Harness, tenant_revision

PASSWORD = "Sup3r-S3cret-Pw"


def _with_password(url: str, password: str = PASSWORD) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


def test_password_appears_nowhere(harness: Harness, tenant_dbs: Callable[[int], list[str]]) -> None:
    harness.alembic_ini = FIXTURE_ENVS / "failing" / "alembic.ini"
    urls = tenant_dbs(2)
    with psycopg.connect(urls[1], autocommit=True) as conn:
        conn.execute("CREATE TABLE poison (id int)")  # its migration error carries the full URL
    outputs = [
        harness.cli("tenants", "add", "p0", "--url", _with_password(urls[0])),
        harness.cli("tenants", "add", "p1", "--url", _with_password(urls[1]), "--tag", "pw"),
        harness.cli("tenants", "list"),
        harness.cli("tenants", "list", "--json"),
        harness.cli("tenants", "show", "p1", "--json"),
        harness.cli("upgrade", "head", "--debug"),
        harness.cli("status"),
        harness.cli("current", "--json"),
    ]
    status_json = harness.cli("status", "--json")
    outputs.append(status_json)
    assert [o.returncode for o in outputs[:5]] == [0] * 5, [o.stderr for o in outputs]
    assert outputs[5].returncode == 1
    for o in outputs:
        assert PASSWORD not in o.stdout + o.stderr, o.args

    report = json.loads(status_json.stdout)
    failed = next(t for t in report["tenants"] if t["tenant"] == "p1")
    assert "poisoned tenant at postgresql://postgres:***@" in failed["error"]
    assert tenant_revision(urls[0]) == "f003"
    shown = json.loads(outputs[4].stdout)
    assert shown["url"].startswith("postgresql://postgres:***@")

    dump = subprocess.run(
        ["pg_dump", "--data-only", "--inserts", harness.control_url.replace("+asyncpg", "")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "poisoned tenant" in dump and "p1" in dump  # the dump is real and holds the runs
    assert PASSWORD not in dump


def test_env_reference_is_resolved_only_at_migration_time(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    (url,) = tenant_dbs(1)
    ref = _with_password(url, "${T0_DB_PASSWORD}")
    assert harness.cli("tenants", "add", "t0", "--url", ref).returncode == 0
    listed = json.loads(harness.cli("tenants", "list", "--json").stdout)
    assert listed[0]["url"] == ref  # a reference is not a secret: shown as written

    missing = harness.cli("upgrade", "head", "--json")
    assert missing.returncode == 1
    run = json.loads(missing.stdout)["tenants"][0]
    assert run["error_class"] == "invalid_config" and "T0_DB_PASSWORD" in run["error"]

    ok = harness.cli("upgrade", "head", T0_DB_PASSWORD="from-the-environment")
    assert ok.returncode == 0, ok.stderr
    assert "from-the-environment" not in ok.stdout + ok.stderr
    assert tenant_revision(url) == "0004"
