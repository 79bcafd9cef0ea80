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
    │   └── TargetUnreachable       some selected tenants cannot reach the revision (e.g. `head+100`)
    ├── ControlDBError              the control database cannot be reached or is not migrated
    │   └── ConstraintViolation     a write broke a named constraint (the store maps it to one below)
    ├── ConcurrentChange            another command changed the same rollout first (e.g. two `retry`)
    │   └── RolloutBusy             the rollout is being carried by another live coordinator
    ├── ConcurrentRegistryChange    another command created the same tenants first (two imports)
    ├── BrokerUnavailable           the Celery broker does not answer (checked before anything is recorded)
    ├── EnvIntegrationError         tenantctl could not serve what env.py asked of it (error class
    │                               ``internal``), e.g. a connection from the shared Engine outside a unit
    ├── Interrupted                 (exit 130) Ctrl-C or SIGTERM: the rollout was halted and recorded
    └── TenantError                 one tenant's unit of work failed (recorded, never fatal to a rollout)
        ├── TenantUnreachable       connecting to the tenant failed within the connect timeout
        └── TenantLockTimeout       another runner held the tenant's advisory lock past the deadline

Messages never hold a password: callers pass masked URLs and scrubbed text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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


class TargetUnreachable(PreflightRefused):
    """The revision cannot be reached from where some tenants stand; no rollout was recorded.

    ``unreachable`` maps each reason (``is 100 steps past the head 0004``) to the tenants it holds for.
    """

    def __init__(self, spec: str, unreachable: Mapping[str, Sequence[str]]) -> None:
        self.spec, self.unreachable = spec, dict(unreachable)
        parts = [f"{reason} for {_some_tenants(tenants)}" for reason, tenants in self.unreachable.items()]
        super().__init__(f"revision {spec!r} " + "; ".join(parts))


def _some_tenants(tenants: Sequence[str], shown: int = 3) -> str:
    names = ", ".join(tenants[:shown]) + (
        f" (and {len(tenants) - shown} more)" if len(tenants) > shown else ""
    )
    return f"tenant{'s' if len(tenants) > 1 else ''} {names}"


class ControlDBError(TenantctlError):
    """The control database cannot be used."""


class ConstraintViolation(ControlDBError):
    """A control-DB write broke a constraint."""

    def __init__(self, constraint: str, message: str | None = None) -> None:
        self.constraint = constraint
        super().__init__(message or f"control database refused the change: constraint {constraint}")


class ConcurrentChange(TenantctlError):
    """Another command changed the same rollout at the same moment; nothing was done here."""

    def __init__(self, rollout: int, what: str) -> None:
        self.rollout, self.what = rollout, what
        super().__init__(f"rollout {rollout}: {what}")


class ConcurrentRegistryChange(TenantctlError):
    """The registry changed while this command was writing to it (another import or add created one of
    these tenants): nothing was written; run it again."""


class BrokerUnavailable(TenantctlError):
    """The broker does not answer; nothing was recorded."""


class RolloutBusy(ConcurrentChange):
    """A live coordinator is carrying this rollout."""

    def __init__(self, rollout: int, owner: str) -> None:
        self.owner = owner
        super().__init__(
            rollout, f"is being carried by {owner}; wait for it, or `tenantctl cancel {rollout}`"
        )


class Interrupted(TenantctlError):
    """Interrupted: the rollout was halted, and everything that ran is recorded."""

    exit_code = 130

    def __init__(self, rollout: int) -> None:
        self.rollout = rollout
        super().__init__(f"interrupted: rollout {rollout} halted; `tenantctl resume {rollout}` continues it")


class EnvIntegrationError(TenantctlError):
    """tenantctl could not hand the tenant to env.py.

    Raised where tenantctl meets a tenant's ``env.py`` (the Engine it shares, the config it builds), never
    for the migration's own SQL: a failed run carries the class ``internal``, not ``migration_error``, so
    nobody hunts for a bug in a revision that never ran."""


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
