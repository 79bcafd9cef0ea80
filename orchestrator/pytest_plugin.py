"""tenantctl's pytest plugin: tenants migrated to head with your Alembic project, one template per
session and a clone per test, everything dropped afterwards.

Loaded by every pytest run through the ``pytest11`` entry point, it stays inert until a test asks for
``tenantctl_tenants`` or ``migrated_db``: starting pytest costs two options and a marker, and SQLAlchemy,
Alembic and the server are reached only then. Settings missing: those tests are skipped with one line
saying what to set. Anything else wrong (settings, server, a migration that fails) fails them with one
line, never a traceback of the plugin.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import pytest

from .exceptions import TenantctlError
from .testing.errors import PluginSettingsMissing
from .testing.spec import (
    INI_ENV,
    INI_OPTION,
    URL_ENV,
    URL_OPTION,
    Settings,
    Tenant,
    run_prefix,
    settings_from,
    spec_from_markers,
)

if TYPE_CHECKING:
    from .testing.databases import SessionDatabases

MARKER = "tenantctl"
T = TypeVar("T")
_DATABASES = pytest.StashKey["SessionDatabases"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tenantctl", "tenantctl test databases (fixtures tenantctl_tenants, migrated_db)")
    group.addoption(
        URL_OPTION,
        metavar="URL",
        help=f"PostgreSQL server the tenantctl fixtures may create databases on (default: ${URL_ENV})",
    )
    group.addoption(
        INI_OPTION,
        metavar="PATH",
        help=f"alembic.ini of the history the tenantctl fixtures migrate to head (default: ${INI_ENV})",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(tenants=2, layout='database'): how many tenants the tenantctl_tenants fixture makes, "
        "each in its own database or (layout='schema') its own schema of one database",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """One line, when the fixtures were used: how many databases, their name prefix, and whether all
    were dropped. Shown with ``-v``, or always when some may be left."""
    databases = config.stash.get(_DATABASES, None)
    if databases is not None and (config.get_verbosity() > 0 or not databases.closed):
        terminalreporter.write_line(databases.summary())


def _or_fail(call: Callable[[], T]) -> T:
    """``call()``, our errors failing the test in one line (raised outside the ``except``, so no
    chained traceback comes with it)."""
    try:
        return call()
    except TenantctlError as exc:
        message = exc.message
    pytest.fail(message, pytrace=False)


def _settings(config: pytest.Config) -> Settings:
    options = {name: config.getoption(name) for name in (URL_OPTION, INI_OPTION)}
    try:
        return settings_from(options, os.environ, config.invocation_params.dir)
    except PluginSettingsMissing as exc:
        pytest.skip(exc.message)


@pytest.fixture(scope="session")
def _tenantctl(pytestconfig: pytest.Config) -> Iterator[SessionDatabases]:
    """The session's test databases; at its end every database this run made is dropped, the ones a
    test's own finalizer could not drop included (the run's name prefix finds them)."""
    settings = _or_fail(lambda: _settings(pytestconfig))
    from .testing.databases import SessionDatabases  # SQLAlchemy and Alembic: only now, for these tests

    databases = _or_fail(lambda: SessionDatabases(settings, run_prefix(uuid.uuid4().hex[:10])))
    pytestconfig.stash[_DATABASES] = databases
    yield databases
    _or_fail(databases.close)


@pytest.fixture
def tenantctl_tenants(request: pytest.FixtureRequest, _tenantctl: SessionDatabases) -> list[Tenant]:
    """Tenants at head, each with ``.id``, ``.url`` and ``.schema``; how many and where from
    ``@pytest.mark.tenantctl(tenants=2, layout="database")``. Dropped after the test."""
    markers = [(m.args, m.kwargs) for m in request.node.iter_markers(MARKER)]
    spec = _or_fail(lambda: spec_from_markers(markers))
    created: list[str] = []
    request.addfinalizer(lambda: _or_fail(lambda: _tenantctl.drop(created)))
    return _or_fail(lambda: _tenantctl.tenants(spec, created))


@pytest.fixture
def migrated_db(request: pytest.FixtureRequest, _tenantctl: SessionDatabases) -> str:
    """The URL of one database at head, dropped after the test."""
    created: list[str] = []
    request.addfinalizer(lambda: _or_fail(lambda: _tenantctl.drop(created)))
    return _or_fail(lambda: _tenantctl.database(created))
