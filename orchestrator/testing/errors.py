"""The errors of tenantctl's pytest plugin, slotted into tenantctl's tree (``orchestrator.exceptions``).

::

    TenantctlError
    ├── UserError
    │   ├── InvalidMarker               ``@pytest.mark.tenantctl(...)`` with an argument it does not take
    │   └── ConfigurationError
    │       ├── PluginSettingsMissing   no server URL or no alembic.ini given: the tests are skipped
    │       └── PluginSettingsInvalid   a setting is given but cannot be used
    ├── PluginServerError               the PostgreSQL server refused (unreachable, no CREATEDB, ...)
    └── TemplateMigrationFailed         the user's history did not reach head; names the revision

The plugin turns each into one line (a skip for ``PluginSettingsMissing``, a failure otherwise), never a
traceback of its own. Messages hold no password.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..exceptions import ConfigurationError, TenantctlError, UserError


class InvalidMarker(UserError):
    """The tenantctl marker's arguments are not valid."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"@pytest.mark.tenantctl: {reason}")


class PluginSettingsMissing(ConfigurationError):
    """The plugin needs a server and an Alembic project; ``missing`` names what to set."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        super().__init__("tenantctl: set " + " and ".join(self.missing))


class PluginSettingsInvalid(ConfigurationError):
    """A setting of the plugin is given but cannot be used."""


class PluginServerError(TenantctlError):
    """The test PostgreSQL server refused what the plugin asked of it."""


class TemplateMigrationFailed(TenantctlError):
    """Migrating the session's template to head failed.

    ``revision`` is the revision that was running (None: env.py failed before or after every revision),
    ``location`` the line of that revision's file the error came from, when it did, and ``error`` the
    error in one line (and its SQL, if any), passwords masked.
    """

    def __init__(
        self, ini: str, revision: str | None, doc: str | None, location: str | None, error: str
    ) -> None:
        self.ini, self.revision, self.doc, self.location, self.error = ini, revision, doc, location, error
        if revision is None:
            where = "in env.py, outside any revision"
        else:
            where = f"at revision {revision}" + (f" ({doc})" if doc else "")
            where += f", {location}" if location else ""
        super().__init__(f"tenantctl: migrating the test template with {ini} to head failed {where}: {error}")
