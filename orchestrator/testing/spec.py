"""What a test asks of tenantctl's pytest plugin, as plain data: the settings, the tenants a marker
asks for, and the names of what the plugin creates. Pure: no pytest, no server, no ``os.environ``."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidMarker, PluginSettingsInvalid, PluginSettingsMissing

URL_OPTION, URL_ENV = "--tenantctl-url", "TENANTCTL_TEST_URL"
INI_OPTION, INI_ENV = "--tenantctl-alembic-config", "TENANTCTL_ALEMBIC_CONFIG"
# Every database the plugin creates starts with this and a per-run token: the end-of-session sweep
# drops exactly this run's, never a concurrent run's (another xdist worker, another developer).
PREFIX = "tctl_pytest_"
DEFAULT_TENANTS = 2


class Layout(enum.StrEnum):
    """Where each tenant of a test lives: its own database, or its own schema of one shared database."""

    DATABASE = "database"
    SCHEMA = "schema"


@dataclass(frozen=True, kw_only=True)
class Tenant:
    """One tenant of a test, migrated to head.

    ``url`` is its database, with the driver and credentials of the server URL the plugin was given; with
    ``layout="schema"`` every tenant of the test shares that database and ``schema`` names its own. The
    URL may hold a password, so it stays out of the repr.
    """

    id: str
    url: str = field(repr=False)
    schema: str | None = None


@dataclass(frozen=True, kw_only=True)
class TenantsSpec:
    """What ``@pytest.mark.tenantctl(tenants=…, layout=…)`` asks for."""

    tenants: int = DEFAULT_TENANTS
    layout: Layout = Layout.DATABASE


@dataclass(frozen=True, kw_only=True)
class Settings:
    server_url: str
    alembic_config: Path


def spec_from_markers(markers: Iterable[tuple[tuple[Any, ...], Mapping[str, Any]]]) -> TenantsSpec:
    """The spec from the markers' ``(args, kwargs)``, closest first: each argument comes from the closest
    marker that sets it, so a test's marker refines its module's ``pytestmark`` instead of replacing it."""
    chosen: dict[str, Any] = {}
    for args, kwargs in markers:
        if args:
            raise InvalidMarker(f"takes keyword arguments only (tenants=, layout=), not {args!r}")
        unknown = sorted(set(kwargs) - {"tenants", "layout"})
        if unknown:
            raise InvalidMarker(f"unknown argument {', '.join(unknown)}: it takes tenants= and layout=")
        for key, value in kwargs.items():
            chosen.setdefault(key, value)
    tenants = chosen.get("tenants", DEFAULT_TENANTS)
    if isinstance(tenants, bool) or not isinstance(tenants, int) or tenants < 1:
        raise InvalidMarker(f"tenants={tenants!r}: a whole number, at least 1")
    layout = chosen.get("layout", Layout.DATABASE)
    try:
        return TenantsSpec(tenants=tenants, layout=Layout(layout))
    except ValueError:
        raise InvalidMarker(f"layout={layout!r}: 'database' or 'schema'") from None


def settings_from(options: Mapping[str, str | None], env: Mapping[str, str], cwd: Path) -> Settings:
    """The plugin's settings, a command-line option before its environment variable; a relative
    alembic.ini path is taken from ``cwd``, where pytest was started. Nothing is read from disk here."""
    url = options.get(URL_OPTION) or env.get(URL_ENV)
    ini = options.get(INI_OPTION) or env.get(INI_ENV)
    missing = []
    if not url:
        missing.append(f"{URL_ENV} (or {URL_OPTION}) to a PostgreSQL URL the tests may create databases on")
    if not ini:
        missing.append(f"{INI_ENV} (or {INI_OPTION}) to your alembic.ini")
    if not url or not ini:
        raise PluginSettingsMissing(missing)
    scheme = urlsplit(url).scheme
    if scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise PluginSettingsInvalid(
            f"tenantctl: {URL_ENV} / {URL_OPTION} must be a PostgreSQL URL (postgresql://user@host:5432), "
            f"not {scheme + ':' if scheme else 'this'}"
        )
    return Settings(server_url=url, alembic_config=cwd / ini)


def tenant_ids(count: int) -> list[str]:
    """Ids, and with ``layout="schema"`` schema names: the same in every test, whose databases differ."""
    return [f"tenant_{i}" for i in range(1, count + 1)]


def run_prefix(token: str) -> str:
    return f"{PREFIX}{token}_"


def template_name(prefix: str, layout: Layout, count: int) -> str:
    return f"{prefix}tpl" if layout is Layout.DATABASE else f"{prefix}tpl_s{count}"
