"""The errors tenantctl raises, and the exit code each one maps to at the CLI.

::

    TenantctlError                  (exit 2 unless a subclass says otherwise)
    ├── UserError                   bad input: the user can fix the command line or the file
    │   ├── InvalidTenant           a tenant field fails validation (id, url, schema, tag, group)
    │   ├── DuplicateTenant         `tenants add` of an id that exists
    │   ├── UnknownTenant           an id that is not in the registry
    │   ├── EmptySelection          the selectors match no enabled tenant
    │   ├── ImportFileError         a tenant file that cannot be read; carries its line
    │   ├── UnknownRevision         a revision spec the scripts cannot resolve
    │   ├── UnknownRollout          a rollout id that does not exist
    │   ├── UnknownAudit            an audit id that does not exist
    │   └── ConfigurationError      settings, secret key or alembic.ini not usable
    ├── PreflightRefused            (exit 3) the rollout would be unsafe, e.g. several heads
    ├── ControlDBError              the control database cannot be reached or is not migrated
    └── TenantError                 one tenant's unit of work failed (recorded, never fatal to a rollout)
        ├── TenantUnreachable       connecting to the tenant failed within the connect timeout
        └── TenantLockTimeout       another runner held the tenant's advisory lock past the deadline

Messages never hold a password: callers pass masked URLs and scrubbed text.
"""

from __future__ import annotations


class TenantctlError(Exception):
    """tenantctl failed."""

    exit_code = 2

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0])


class UserError(TenantctlError):
    """The command or its input is not valid."""


class InvalidTenant(UserError):
    """A tenant field is not valid."""

    def __init__(self, field: str, value: str, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"invalid {field} {value!r}: {reason}")


class DuplicateTenant(UserError):
    """A tenant with this id is already registered."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        super().__init__(f"tenant {tenant!r} already exists (use `tenants import` to update it)")


class UnknownTenant(UserError):
    """No tenant has this id."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        super().__init__(f"unknown tenant {tenant!r}")


class EmptySelection(UserError):
    """The selectors match no enabled tenant."""

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(f"no enabled tenant matches {description}")


class ImportFileError(UserError):
    """The tenant file cannot be imported; nothing was written."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason} (nothing imported)")


class UnknownRevision(UserError):
    """The revision spec does not resolve against the tenant scripts."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec, self.reason = spec, reason
        super().__init__(f"unknown revision {spec!r}: {reason}")


class UnknownRollout(UserError):
    """No rollout has this id."""

    def __init__(self, rollout: str) -> None:
        self.rollout = rollout
        super().__init__(f"unknown rollout {rollout!r}" if rollout else "no rollout has run yet")


class ConfigurationError(UserError):
    """The settings are not usable."""


class PreflightRefused(TenantctlError):
    """The rollout was refused before touching any tenant."""

    exit_code = 3


class ControlDBError(TenantctlError):
    """The control database cannot be used."""


class TenantError(TenantctlError):
    """A tenant's unit of work failed."""

    def __init__(self, tenant: str, message: str) -> None:
        self.tenant = tenant
        super().__init__(message)


class TenantUnreachable(TenantError):
    """The tenant database could not be reached."""


class TenantLockTimeout(TenantError):
    """Another runner held the tenant's migration lock until the deadline."""


class UnknownAudit(UserError):
    """No audit has this id (a ``UserError``: exit 2)."""

    def __init__(self, audit: str) -> None:
        self.audit = audit
        super().__init__(f"unknown audit {audit!r}" if audit else "no audit has run yet")
