"""A failing tenant, concurrent rollouts, and env.py files written the other common ways."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from orchestrator.models import Command, UnitJob
from tests.conftest import FIXTURE_ENVS, MIGRATIONS_INI
from tests.support.harness import Harness, tenant_revision


def test_failing_tenant_stays_at_last_good_revision_others_succeed(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    harness.alembic_ini = FIXTURE_ENVS / "failing" / "alembic.ini"
    urls = tenant_dbs(6)
    for i, url in enumerate(urls):
        harness.register(f"t{i}", url)
    with psycopg.connect(urls[3], autocommit=True) as conn:
        conn.execute("CREATE TABLE poison (id int)")

    result = harness.cli("upgrade", "head", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    by_tenant = {t["tenant"]: t for t in report["tenants"]}
    assert report["state"] == "failed"
    assert report["counts"]["failed"] == 1 and report["counts"]["succeeded"] == 5
    bad = by_tenant["t3"]
    assert bad["status"] == "failed"
    assert bad["to_revision"] == "f001" == tenant_revision(urls[3])
    assert bad["applied"] == ["f001"]
    assert bad["error_class"] == "migration_error"
    assert "poisoned tenant" in bad["error"]
    with psycopg.connect(urls[3]) as conn:
        assert conn.execute("SELECT to_regclass('b')").fetchone() == (None,), "f002's DDL must be rolled back"
    run = harness.with_store(lambda s: s.rollout_runs(report["id"]))
    traceback = next(r.traceback for r in run if r.tenant_id == "t3")
    assert traceback and "RuntimeError: poisoned tenant" in traceback and "f002" in traceback
    assert all(tenant_revision(u) == "f003" for i, u in enumerate(urls) if i != 3)
    assert "t3" in result.stderr and "poisoned tenant" in result.stderr  # shown as it happens


def test_two_rollouts_at_once_never_migrate_a_tenant_twice(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    harness.alembic_ini = FIXTURE_ENVS / "slow" / "alembic.ini"
    urls = tenant_dbs(8)
    for i, url in enumerate(urls):
        harness.register(f"t{i}", url)
    args = [sys.executable, "-m", "orchestrator", "upgrade", "head", "--json", "--parallel", "4"]
    env = harness.env(TENANTCTL_TEST_SLOW_SECONDS="0.3")
    procs = [
        subprocess.Popen(
            args, cwd=harness.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    reports = [json.loads(out) for out, _ in outputs]
    for i, url in enumerate(urls):
        assert tenant_revision(url) == "s003"
        applied = [
            r for rep in reports for t in rep["tenants"] if t["tenant"] == f"t{i}" for r in t["applied"]
        ]
        assert sorted(applied) == ["s001", "s002", "s003"], f"t{i} migrated more than once: {applied}"


def test_env_reading_only_sqlalchemy_url(harness: Harness, tenant_dbs: Callable[[int], list[str]]) -> None:
    """The unmodified `alembic init -t async` env.py: asyncio.run over sqlalchemy.url."""
    harness.alembic_ini = FIXTURE_ENVS / "sqlalchemy_url" / "alembic.ini"
    urls = tenant_dbs(3)
    for i, url in enumerate(urls):
        harness.register(f"t{i}", url.replace("postgresql://", "postgresql+asyncpg://"))
    report = harness.rollout(Command.UPGRADE, "head")
    assert report["state"] == "succeeded", report
    assert [tenant_revision(u) for u in urls] == ["0004"] * 3


def test_env_reading_only_the_shared_connection(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    harness.alembic_ini = FIXTURE_ENVS / "connection_only" / "alembic.ini"
    urls = tenant_dbs(3)
    for i, url in enumerate(urls):
        harness.register(f"t{i}", url)
    report = harness.rollout(Command.UPGRADE, "head")
    assert report["state"] == "succeeded", report
    down = harness.rollout(Command.DOWNGRADE, "-2")
    assert {t["to_revision"] for t in down["tenants"]} == {"0002"}
    assert [tenant_revision(u) for u in urls] == ["0002"] * 3


def test_tenants_of_one_server_share_an_engine_yet_each_gets_its_own_database(
    tenant_dbs: Callable[[int], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process keeps one Engine per database server: each connection must still reach its own tenant,
    and what env.py sees as the Engine's URL must name no tenant's database or password."""
    from sqlalchemy.engine import make_url

    from orchestrator import unit
    from orchestrator.models import RunStatus, UnitJob

    log = tmp_path / "engines.txt"
    monkeypatch.setenv("TENANTCTL_TEST_ENGINE_LOG", str(log))
    urls = tenant_dbs(3)
    ini = str(FIXTURE_ENVS / "connection_only" / "alembic.ini")
    for i, url in enumerate(urls):
        secret = url.replace("postgresql://postgres@", f"postgresql://postgres:pw-secret-{i}@", 1)
        job = UnitJob(
            run_id=i,
            tenant_id=f"t{i}",
            command=Command.UPGRADE,
            target="head",
            url=secret,
            schema=None,
            alembic_config=ini,
        )
        result = unit.run_unit(job)
        assert result.status is RunStatus.SUCCEEDED, result.error_message
        assert result.to_revision == "0004" == tenant_revision(url)
    seen = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert [database for database, _ in seen] == [make_url(u).database for u in urls]
    assert len({engine_url for _, engine_url in seen}) == 1, "one Engine for the server"
    assert not any(make_url(u).database in seen[0][1] for u in urls)
    assert "pw-secret" not in log.read_text()


def test_env_opening_its_own_connection_from_the_shared_one(
    harness: Harness, tenant_dbs: Callable[[int], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alembic's cookbook env.py: ``connection.engine.connect()``. That Engine is shared by the tenants of
    one server, yet each connection env.py opens must reach its own tenant, up and back down."""
    from sqlalchemy.engine import make_url

    log = tmp_path / "own.txt"
    monkeypatch.setenv("TENANTCTL_TEST_ENGINE_LOG", str(log))
    harness.alembic_ini = FIXTURE_ENVS / "own_connection" / "alembic.ini"
    urls = tenant_dbs(4)
    databases = {f"t{i}": make_url(u).database for i, u in enumerate(urls)}
    for i, url in enumerate(urls):
        harness.register(f"t{i}", url)

    up = harness.rollout(Command.UPGRADE, "head")
    assert up["state"] == "succeeded", up
    assert [tenant_revision(u) for u in urls] == ["0004"] * 4
    down = harness.rollout(Command.DOWNGRADE, "base")
    assert down["state"] == "succeeded", down
    assert {t["to_revision"] for t in down["tenants"]} == {None}
    assert [tenant_revision(u) for u in urls] == [None] * 4

    seen = [line.split() for line in log.read_text().splitlines()]
    assert sorted(tenant for tenant, _, _ in seen) == sorted([*databases] * 2)
    assert all(database == databases[tenant] for tenant, database, _ in seen), seen


@pytest.mark.parametrize("where", ["thread", "loop"])
def test_own_connection_opened_from_a_thread_or_an_event_loop_reaches_the_tenant(
    tenant_dbs: Callable[[int], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from sqlalchemy.engine import make_url

    from orchestrator import unit
    from orchestrator.models import RunStatus

    log = tmp_path / "own.txt"
    monkeypatch.setenv("TENANTCTL_TEST_ENGINE_LOG", str(log))
    monkeypatch.setenv("TENANTCTL_TEST_OWN_CONNECTION_IN", where)
    urls = tenant_dbs(2)
    for i, url in enumerate(urls):
        result = unit.run_unit(_own_connection_job(i, url))
        assert result.status is RunStatus.SUCCEEDED, result.traceback
        assert result.to_revision == "0004" == tenant_revision(url)
    seen = [line.split() for line in log.read_text().splitlines()]
    assert seen == [[f"t{i}", make_url(u).database, where] for i, u in enumerate(urls)]


def test_env_reusing_an_engine_of_an_earlier_tenant_fails_as_internal(
    tenant_dbs: Callable[[int], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An env.py that keeps the Engine of its first tenant and connects with it for a tenant of another
    server gets a tenantctl error naming the mistake, classed ``internal``, never another tenant's
    database, and never ``migration_error``."""
    import sys

    from orchestrator import unit
    from orchestrator.models import ErrorClass, RunStatus

    monkeypatch.setenv("TENANTCTL_TEST_OWN_CONNECTION_IN", "cached")
    first, second = tenant_dbs(2)
    other_server = second.replace("@127.0.0.1", "@localhost", 1)
    assert other_server != second, "the test needs the server spelled two ways"
    try:
        ok = unit.run_unit(_own_connection_job(0, first))
        assert ok.status is RunStatus.SUCCEEDED, ok.traceback
        bad = unit.run_unit(_own_connection_job(1, other_server))
    finally:
        sys.modules.pop("_own_connection_fixture_cache", None)
    assert bad.status is RunStatus.FAILED
    assert bad.error_class is ErrorClass.INTERNAL
    assert bad.error_message and "EnvIntegrationError" in bad.error_message
    assert "another database server" in bad.error_message
    assert tenant_revision(second) is None and tenant_revision(first) == "0004"


def test_task_timeout_ends_the_session_env_py_opened_itself(
    tenant_dbs: Callable[[int], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted by the task timeout, the statement env.py runs on its own connection must not go on
    holding its locks in a session nobody owns: the unit ends every session it opened."""
    import time

    from sqlalchemy.engine import make_url

    from orchestrator import unit
    from orchestrator.models import ErrorClass, RunStatus

    ini = tmp_path / "alembic.ini"
    ini.write_text(
        "[alembic]\n"
        f"script_location = {FIXTURE_ENVS / 'own_connection'}\n"
        f"version_locations = {FIXTURE_ENVS / 'slow' / 'versions'}\n"
        "path_separator = os\n"
    )
    monkeypatch.setenv("TENANTCTL_TEST_SLOW_SECONDS", "30")
    (url,) = tenant_dbs(1)
    job = UnitJob(
        run_id=1,
        tenant_id="t0",
        command=Command.UPGRADE,
        target="head",
        url=url,
        schema=None,
        alembic_config=str(ini),
        task_timeout_s=1.5,
    )
    started = time.monotonic()
    result = unit.run_unit(job)
    assert time.monotonic() - started < 20
    assert result.status is RunStatus.FAILED and result.error_class is ErrorClass.TIMEOUT, result.traceback
    assert result.to_revision is None is tenant_revision(url)  # one transaction for both, rolled back
    database = make_url(url).database
    deadline = time.monotonic() + 10
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        while True:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [database]
            ).fetchone()
            if row == (0,) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert row == (0,), "a session of the unit outlived it"


def _own_connection_job(i: int, url: str) -> UnitJob:
    return UnitJob(
        run_id=i,
        tenant_id=f"t{i}",
        command=Command.UPGRADE,
        target="head",
        url=url,
        schema=None,
        alembic_config=str(FIXTURE_ENVS / "own_connection" / "alembic.ini"),
    )


def test_status_json_offers_the_stored_tracebacks_on_request(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    harness.alembic_ini = FIXTURE_ENVS / "failing" / "alembic.ini"
    good, bad = tenant_dbs(2)
    harness.register("good", good)
    harness.register("bad", bad.replace("postgresql://postgres@", "postgresql://postgres:s3cr3t-pw@", 1))
    with psycopg.connect(bad, autocommit=True) as conn:
        conn.execute("CREATE TABLE poison (id int)")
    assert harness.cli("upgrade", "head", "--json").returncode == 1

    plain = harness.cli("status", "--json")
    assert plain.returncode == 1, plain.stderr
    assert all("traceback" not in t for t in json.loads(plain.stdout)["tenants"]), "the contract is unchanged"

    result = harness.cli("status", "--json", "--tracebacks")
    assert result.returncode == 1, result.stderr
    rows = {t["tenant"]: t for t in json.loads(result.stdout)["tenants"]}
    assert rows["good"]["traceback"] is None
    traceback = rows["bad"]["traceback"]
    assert traceback.startswith("Traceback (most recent call last)")
    assert "RuntimeError: poisoned tenant" in traceback and "f002" in traceback
    assert "s3cr3t-pw" not in result.stdout
    assert {k for k in rows["bad"] if k != "traceback"} == set(json.loads(plain.stdout)["tenants"][0])


def test_several_heads_refused_before_touching_anything(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    harness.alembic_ini = FIXTURE_ENVS / "twoheads" / "alembic.ini"
    (url,) = tenant_dbs(1)
    harness.register("t0", url)
    result = harness.cli("upgrade", "head")
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "h002a" in lines[0] and "h002b" in lines[0]
    assert tenant_revision(url) is None
    with pytest.raises(Exception, match="no rollout"):
        harness.status()


def test_shipped_env_also_runs_under_plain_alembic(tenant_dbs: Callable[[int], list[str]]) -> None:
    """The contract: what tenantctl drives is what `alembic -x url=… upgrade head` runs."""
    (url,) = tenant_dbs(1)
    cmd = [
        sys.executable,
        "-m",
        "alembic",
        "-c",
        str(MIGRATIONS_INI),
        "-x",
        f"url={url}",
        "-x",
        "schema=acme",
    ]
    subprocess.run([*cmd, "upgrade", "head"], check=True, capture_output=True)
    assert tenant_revision(url, "acme") == "0004"


@pytest.mark.parametrize("pre_ping", [True, False])
def test_pooled_store_replaces_a_connection_dropped_while_idle(control_url: str, pre_ping: bool) -> None:
    """A worker's pooled control-DB connection that the server dropped while it sat idle (a restart, an
    idle timeout) is replaced before use; without the idle ping the next call fails (the control)."""
    import asyncio

    from sqlalchemy.engine import make_url

    from orchestrator.controldb.store import Store
    from orchestrator.exceptions import ControlDBError

    database = make_url(control_url).database
    admin = control_url.replace("postgresql+asyncpg://", "postgresql://", 1).rsplit("/", 1)[0] + "/postgres"

    async def go() -> None:
        async with Store(control_url, pooled=True, pre_ping=pre_ping, idle_ping=0.05) as store:
            await store.list_tenants()
            with psycopg.connect(admin, autocommit=True) as conn:
                killed = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                    [database],
                ).fetchone()
            assert killed is not None and killed[0] >= 1
            await asyncio.sleep(0.2)
            if pre_ping:
                assert await store.list_tenants() == []
            else:
                with pytest.raises(ControlDBError):
                    await store.list_tenants()

    asyncio.run(go())
