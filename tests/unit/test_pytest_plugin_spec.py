"""The pytest plugin's pure core: the marker, the settings, the records and messages (no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.testing.errors import (
    InvalidMarker,
    PluginSettingsInvalid,
    PluginSettingsMissing,
    TemplateMigrationFailed,
)
from orchestrator.testing.spec import Layout, Settings, Tenant, TenantsSpec, settings_from, spec_from_markers


def marker(**kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (), kwargs


def test_marker_defaults_and_the_closest_marker_wins_per_argument() -> None:
    assert spec_from_markers([]) == TenantsSpec(tenants=2, layout=Layout.DATABASE)
    module, test = marker(layout="schema", tenants=5), marker(tenants=3)
    assert spec_from_markers([test, module]) == TenantsSpec(tenants=3, layout=Layout.SCHEMA)


@pytest.mark.parametrize(
    ("markers", "message"),
    [
        ([marker(tenants=0)], "@pytest.mark.tenantctl: tenants=0: a whole number, at least 1"),
        ([marker(tenants=True)], "@pytest.mark.tenantctl: tenants=True: a whole number, at least 1"),
        ([marker(tenants="3")], "@pytest.mark.tenantctl: tenants='3': a whole number, at least 1"),
        ([marker(layout="schemas")], "@pytest.mark.tenantctl: layout='schemas': 'database' or 'schema'"),
        (
            [marker(tenant=3)],
            "@pytest.mark.tenantctl: unknown argument tenant: it takes tenants= and layout=",
        ),
        (
            [((3,), {})],
            "@pytest.mark.tenantctl: takes keyword arguments only (tenants=, layout=), not (3,)",
        ),
    ],
)
def test_bad_markers_are_one_line(
    markers: list[tuple[tuple[Any, ...], dict[str, Any]]], message: str
) -> None:
    with pytest.raises(InvalidMarker) as info:
        spec_from_markers(markers)
    assert info.value.message == message


def test_an_option_wins_over_its_environment_variable_and_paths_are_from_the_cwd() -> None:
    options = {"--tenantctl-url": "postgresql://a@h1", "--tenantctl-alembic-config": None}
    env = {"TENANTCTL_TEST_URL": "postgresql://b@h2", "TENANTCTL_ALEMBIC_CONFIG": "db/alembic.ini"}
    assert settings_from(options, env, Path("/src/app")) == Settings(
        server_url="postgresql://a@h1", alembic_config=Path("/src/app/db/alembic.ini")
    )


def test_missing_settings_name_what_to_set() -> None:
    with pytest.raises(PluginSettingsMissing) as info:
        settings_from({}, {"TENANTCTL_TEST_URL": "postgresql://h"}, Path("/"))
    assert info.value.message == (
        "tenantctl: set TENANTCTL_ALEMBIC_CONFIG (or --tenantctl-alembic-config) to your alembic.ini"
    )


@pytest.mark.parametrize("url", ["sqlite:///t.db", "mysql://h/db", "h:5432"])
def test_the_server_must_be_postgresql(url: str) -> None:
    with pytest.raises(PluginSettingsInvalid, match="must be a PostgreSQL URL"):
        settings_from({}, {"TENANTCTL_TEST_URL": url, "TENANTCTL_ALEMBIC_CONFIG": "a.ini"}, Path("/"))


@pytest.mark.parametrize("url", ["postgresql://h", "postgresql+asyncpg://u:p@h/db", "postgres://h"])
def test_any_postgresql_driver_is_accepted(url: str) -> None:
    assert settings_from({}, {"TENANTCTL_TEST_URL": url, "TENANTCTL_ALEMBIC_CONFIG": "a.ini"}, Path("/"))


def test_a_tenants_url_stays_out_of_its_repr() -> None:
    tenant = Tenant(id="tenant_1", url="postgresql://u:secret@h/db", schema=None)
    assert repr(tenant) == "Tenant(id='tenant_1', schema=None)"


def test_a_failed_migration_names_the_revision_or_env_py() -> None:
    at = TemplateMigrationFailed("a.ini", "0005", "add x", "0005_add_x.py:12", "ValueError: no")
    assert at.message == (
        "tenantctl: migrating the test template with a.ini to head failed at revision 0005 (add x), "
        "0005_add_x.py:12: ValueError: no"
    )
    assert TemplateMigrationFailed("a.ini", None, None, None, "ImportError: x").message == (
        "tenantctl: migrating the test template with a.ini to head failed in env.py, outside any "
        "revision: ImportError: x"
    )
