"""The errors tenantctl raises, and the exit code each one maps to at the CLI.

::

    TenantctlError                  (exit 2 unless a subclass says otherwise)
    ├── UserError                   bad input: the user can fix the command line or the file
    │   ├── InvalidTenant           a tenant field fails validation (id, url, schema, tag, group)
    │   ├── DuplicateTenant         `tenants add` of an id that exists
    │   ├── UnknownTenant           an id that is not in the registry
    │   ├── EmptySelection          the selectors match no enabled tenant
    │   ├── SelectionNotConfirmed   an API rollout over more tenants than allowed, without confirm_count
    │   ├── ImportFileError         a tenant file that cannot be read; carries its line
    │   ├── UnknownRevision         a revision spec the scripts cannot resolve
    │   ├── UnknownRollout          a rollout id that does not exist
    │   ├── UnknownAudit            an audit id that does not exist
    │   ├── SyncSourceError         `tenants sync`: the source cannot be read, or its columns are wrong
    │   │   └── SyncRowError        a source row is not a valid tenant, or repeats an id; carries the row
    │   └── ConfigurationError      settings, secret key or alembic.ini not usable
    ├── PreflightRefused            (exit 3) the rollout would be unsafe, e.g. several heads
    │   ├── TargetUnreachable       some selected tenants cannot reach the revision (e.g. `head+100`)
    │   └── UnsoundHistory          `check`: several heads, a revision file that fails to import, a bad graph
    ├── UnsafeMigrations            (exit 1) `check`: SQL that would lock a busy table or break running code
    ├── SyncRefused                 (exit 3) a sync would disable past --max-disable, or every tenant
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sync import SyncPlan


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


class SelectionNotConfirmed(UserError):
    """A large selection was not confirmed with its size (``confirm_count``)."""


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


class UnsoundHistory(PreflightRefused):
    """The tenants' history is not sound; ``problems`` holds one line per problem (``tenantctl check``)."""

    def __init__(self, config: str, problems: Sequence[str]) -> None:
        self.config, self.problems = config, tuple(problems)
        n = len(self.problems)
        super().__init__(f"{n} structural problem{'s' if n != 1 else ''} in the history of {config}")


class UnsafeMigrations(TenantctlError):
    """Revisions whose SQL would lock a busy table for long or break the code still running.

    ``findings`` holds one line per finding, ``revisions`` the revisions they are in (``tenantctl check``).
    """

    exit_code = 1

    def __init__(self, findings: Sequence[str], revisions: Sequence[str]) -> None:
        self.findings, self.revisions = tuple(findings), tuple(revisions)
        n = len(self.findings)
        super().__init__(
            f"{n} lint finding{'s' if n != 1 else ''} in {', '.join(self.revisions)}: make "
            f"{'it' if n == 1 else 'them'} safe, or allow a rule in its revision (`# tenantctl: allow RULE`) "
            "or everywhere (TENANTCTL_LINT_DISABLE)"
        )


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


class SyncSourceError(UserError):
    """The tenant source cannot be read; nothing was synced.

    ``where`` names the source (its URL masked, or ``file:line``); ``reason`` is the problem, password-free.
    """

    def __init__(self, where: str, reason: str) -> None:
        self.where, self.reason = where, reason
        super().__init__(f"{where}: {reason} (nothing synced)")


class SyncRowError(SyncSourceError):
    """A row of the tenant source is not a valid tenant; nothing was synced.

    ``row`` counts from 1 in the order the source returned its rows; ``tenant`` is the row's id when it
    has a textual one, so the row can be found in the source either way.
    """

    def __init__(self, row: int, tenant: str | None, reason: str) -> None:
        self.row, self.tenant = row, tenant
        super().__init__(f"source row {row}" + (f" (id {tenant!r})" if tenant else ""), reason)


class SyncRefused(TenantctlError):
    """The sync would disable more tenants than allowed: nothing was changed.

    A broken source (an empty result, a wrong ``WHERE``) looks exactly like customers leaving: past
    ``allowed`` (from ``--max-disable``), or when every enabled tenant would go, the sync stops until a
    person looks and passes ``--force``. ``plan`` is what it would have done, for the caller to show.
    """

    exit_code = 3

    def __init__(self, *, disabling: int, enabled: int, allowed: int, limit: str, plan: SyncPlan) -> None:
        self.disabling, self.enabled, self.allowed, self.limit = disabling, enabled, allowed, limit
        self.plan = plan
        if disabling > allowed:
            why = f"more than --max-disable {limit} allows ({allowed})"
        else:
            why = "every enabled tenant"
        super().__init__(
            f"the sync would disable {disabling} of {enabled} enabled tenant(s), {why}: nothing changed; "
            "check the source, or pass --force"
        )
