"""tenantctl's pytest plugin as users run it: pytest in a subprocess (pytester), loading the plugin
through its ``pytest11`` entry point, over the sample projects of ``tests/fixtures/plugin/``, against
the real PostgreSQL server.

Every run is verbose, so the plugin's summary line names the run's database prefix: whatever the run
did (passed, failed, broke its migration, was interrupted), no database with that prefix is left on
the server, and should one be, this module drops it after checking.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import MIGRATIONS_INI, ROOT

pytest_plugins = ["pytester"]

SAMPLES = ROOT / "tests" / "fixtures" / "plugin"
ASYNC_TEMPLATE_INI = ROOT / "tests" / "fixtures" / "envs" / "sqlalchemy_url" / "alembic.ini"
# the settings our own suite runs with, so a warning the plugin raises fails the run
INNER_INI = "[pytest]\naddopts = -v -ra --strict-markers -p no:cacheprovider\nfilterwarnings = error\n"
SUMMARY = re.compile(
    r"^tenantctl: \d+ test databases? on \S+ \((tctl_pytest_[0-9a-f]+_)\*\), all dropped$", re.M
)
MISSING_BOTH = (
    "tenantctl: set TENANTCTL_TEST_URL (or --tenantctl-url) to a PostgreSQL URL the tests may create "
    "databases on and TENANTCTL_ALEMBIC_CONFIG (or --tenantctl-alembic-config) to your alembic.ini"
)
SETTINGS = ("TENANTCTL_TEST_URL", "TENANTCTL_ALEMBIC_CONFIG")

Run = Callable[..., pytest.RunResult]


def databases_with(server: str, prefix: str) -> list[str]:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE left(datname, length(%s)) = %s", (prefix, prefix)
        ).fetchall()
    return sorted(str(r[0]) for r in rows)


def run_prefix(result: pytest.RunResult) -> str:
    """The run's database prefix, from the plugin's summary line (which also says all were dropped)."""
    found = SUMMARY.findall(result.stdout.str())
    assert len(found) == 1, result.stdout.str()
    return str(found[0])


@pytest.fixture
def sample(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, pg_server: str) -> Iterator[Run]:
    """``sample(name, *args, url=…, ini=…)`` runs pytest over ``tests/fixtures/plugin/<name>/user_tests.py``
    with the settings in the environment (None: unset)."""
    prefixes: list[str] = []

    def run(
        name: str, *args: str, url: str | None = pg_server, ini: Path | None = MIGRATIONS_INI
    ) -> pytest.RunResult:
        for var, value in zip(SETTINGS, (url, ini), strict=True):
            if value is None:
                monkeypatch.delenv(var, raising=False)
            else:
                monkeypatch.setenv(var, str(value))
        pytester.makeini(INNER_INI)
        pytester.makepyfile(test_user=(SAMPLES / name / "user_tests.py").read_text())
        result = pytester.runpytest_subprocess(*args, timeout=240)
        prefixes.extend(SUMMARY.findall(result.stdout.str()))
        return result

    yield run
    with psycopg.connect(f"{pg_server}/postgres", autocommit=True) as conn:
        for name in [n for p in prefixes for n in databases_with(pg_server, p)]:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def assert_clean(result: pytest.RunResult, pg_server: str) -> None:
    assert databases_with(pg_server, run_prefix(result)) == []
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_database_per_tenant(sample: Run, pg_server: str) -> None:
    result = sample("database")
    result.assert_outcomes(passed=6)
    assert_clean(result, pg_server)


def test_schema_per_tenant_settings_from_the_command_line(sample: Run, pg_server: str) -> None:
    # the options win over the environment, which here would fail every test
    result = sample(
        "schema",
        f"--tenantctl-url={pg_server}",
        f"--tenantctl-alembic-config={MIGRATIONS_INI}",
        url="sqlite:///nowhere.db",
        ini=Path("/nowhere/alembic.ini"),
    )
    result.assert_outcomes(passed=5)
    assert_clean(result, pg_server)


def test_handwritten_env_py_and_the_applications_logging(sample: Run, pg_server: str) -> None:
    asyncpg_url = pg_server.replace("postgresql://", "postgresql+asyncpg://", 1)
    result = sample("handwritten", url=asyncpg_url, ini=ASYNC_TEMPLATE_INI)
    result.assert_outcomes(passed=1)
    assert_clean(result, pg_server)


def test_a_broken_migration_fails_the_fixture_with_its_error(sample: Run, pg_server: str) -> None:
    ini = SAMPLES / "broken" / "alembic.ini"
    result = sample("broken", ini=ini)
    result.assert_outcomes(errors=3)
    error = (
        f"tenantctl: migrating the test template with {ini} to head failed at revision b002 (alter a "
        "table that does not exist), b002_alter_missing_table.py:21: ProgrammingError: "
        '(psycopg.errors.UndefinedTable) relation "no_such_table" does not exist '
        "[SQL: ALTER TABLE no_such_table ADD COLUMN x INTEGER]"
    )
    # once per test, and nothing of the plugin's own: no traceback, no frame of ours
    assert result.stdout.lines.count(error) == 3, result.stdout.str()
    assert "orchestrator/" not in result.stdout.str()
    assert_clean(result, pg_server)


def test_failing_tests_and_bad_markers_leave_nothing(sample: Run, pg_server: str) -> None:
    result = sample("cleanup")
    result.assert_outcomes(failed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.tenantctl: tenants=0: a whole number, at least 1",
            "@pytest.mark.tenantctl: unknown argument tenant: it takes tenants= and layout=",
        ],
        consecutive=False,
    )
    assert_clean(result, pg_server)


def test_an_interrupted_run_leaves_nothing(pytester: pytest.Pytester, pg_server: str) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_user=(SAMPLES / "interrupted" / "user_tests.py").read_text())
    ready = pytester.path / "ready"
    env = {
        **os.environ,
        "TENANTCTL_TEST_URL": pg_server,
        "TENANTCTL_ALEMBIC_CONFIG": str(MIGRATIONS_INI),
        "SAMPLE_READY_FILE": str(ready),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest"],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # as from a terminal: an xdist worker ignores SIGINT and a child inherits that (then Python
        # raises no KeyboardInterrupt)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.communicate(timeout=60)[0] if proc.poll() is not None else "no ready file"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out
    found = SUMMARY.findall(out)
    assert len(found) == 1, out
    assert databases_with(pg_server, found[0]) == []


def skip_reasons(result: pytest.RunResult) -> list[str]:
    return [line.split(": ", 1)[1] for line in result.stdout.lines if line.startswith("SKIPPED [")]


def test_missing_settings_skip_with_one_line(sample: Run) -> None:
    result = sample("database", url=None, ini=None)
    result.assert_outcomes(skipped=6)
    assert skip_reasons(result) == [MISSING_BOTH] * 6
    assert "test databases on" not in result.stdout.str()

    result = sample("database", ini=None)
    result.assert_outcomes(skipped=6)
    assert (
        skip_reasons(result)
        == ["tenantctl: set TENANTCTL_ALEMBIC_CONFIG (or --tenantctl-alembic-config) to your alembic.ini"] * 6
    )


def test_unusable_settings_fail_with_one_line(sample: Run) -> None:
    result = sample("database", url="sqlite:///tenants.db")
    result.assert_outcomes(errors=6)
    result.stdout.fnmatch_lines(
        [
            "tenantctl: TENANTCTL_TEST_URL / --tenantctl-url must be a PostgreSQL URL "
            "(postgresql://user@host:5432), not sqlite:"
        ]
    )
    result = sample("database", ini=Path("no/such/alembic.ini"))
    result.assert_outcomes(errors=6)
    result.stdout.fnmatch_lines(
        [
            "tenantctl: TENANTCTL_ALEMBIC_CONFIG / --tenantctl-alembic-config: "
            "'*/no/such/alembic.ini' is not a file"
        ]
    )
    result = sample("database", url="postgresql://postgres@127.0.0.1:1")
    result.assert_outcomes(errors=6)
    result.stdout.fnmatch_lines(
        [
            "tenantctl: cannot create database tctl_pytest_*_tpl on the test server "
            "postgresql://postgres@127.0.0.1:1: *"
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_the_plugin_is_inert_in_a_suite_that_does_not_use_it(sample: Run) -> None:
    result = sample("inert", url=None, ini=None)
    result.assert_outcomes(passed=1)
    assert "tenantctl: " not in result.stdout.str()
