"""Domain records: plain frozen data shared by the core, the stores and the edges."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Command(enum.StrEnum):
    """The Alembic verbs tenantctl runs across tenants."""

    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    STAMP = "stamp"


class RunStatus(enum.StrEnum):
    """Where one attempt at one tenant stands. Everything but ``queued`` and ``running`` is at rest;
    ``halted`` and ``cancelled`` runs wait for ``resume``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    HALTED = "halted"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)


class RolloutState(enum.StrEnum):
    """Where a rollout stands: ``running`` until every tenant run is terminal."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    HALTED = "halted"
    CANCELLED = "cancelled"


class ErrorClass(enum.StrEnum):
    """Why a tenant run failed, so ops can filter failures by cause."""

    TRANSIENT = "transient"
    UNREACHABLE = "unreachable"
    LOCK_TIMEOUT = "lock_timeout"
    MIGRATION_ERROR = "migration_error"
    TIMEOUT = "timeout"
    INVALID_CONFIG = "invalid_config"
    LOST = "lost"
    INTERNAL = "internal"


@dataclass(frozen=True, kw_only=True)
class TenantSpec:
    """A tenant as the user describes it (``tenants add`` / a row of ``tenants import``).

    ``url`` may hold a clear password; the registry encrypts it before storing.
    """

    id: str
    url: str
    schema: str | None = None
    tags: tuple[str, ...] = ()
    group: str | None = None
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class Tenant:
    """A registered tenant. ``url`` never holds a clear password: it is encrypted in ``password_token``
    or referenced as ``${ENV_VAR}`` inside the URL."""

    id: str
    url: str
    password_token: str | None = None
    schema: str | None = None
    tags: tuple[str, ...] = ()
    group: str | None = None
    enabled: bool = True
    updated_by: str | None = None  # who last created or changed it (API token name or user@host)


@dataclass(frozen=True, kw_only=True)
class Selector:
    """Which tenants a command acts on; empty means every enabled tenant."""

    tenants: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    group: str | None = None
    exclude: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"--tenant {t}" for t in self.tenants]
        parts += [f"--tag {t}" for t in self.tags]
        parts += [f"--group {self.group}"] if self.group else []
        parts += [f"--exclude {t}" for t in self.exclude]
        return " ".join(parts) if parts else "the registry (all enabled tenants)"


@dataclass(frozen=True, kw_only=True)
class Policy:
    """How a rollout proceeds and when it stops; stored with the rollout so every runner applies it.

    ``canary``/``canary_tag``: that set first, continuing only if all of it succeeded; then waves of
    ``batch_size`` (0 = one wave). ``max_failures`` / ``max_failure_rate`` (a fraction of the rollout's
    tenants): the failure budget. Timeouts in seconds override the settings for this rollout.
    """

    canary: int = 0
    canary_tag: str | None = None
    batch_size: int = 0
    max_failures: int | None = None
    max_failure_rate: float | None = None
    lock_timeout: float | None = None
    statement_timeout: float | None = None
    task_timeout: float | None = None


@dataclass(frozen=True, kw_only=True)
class Rollout:
    id: int
    command: Command
    target: str
    selection: str
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    state: RolloutState
    parallel: int
    policy: Policy = field(default_factory=lambda: Policy())
    halt_reason: str | None = None
    owner: str | None = None


@dataclass(frozen=True, kw_only=True)
class TenantRun:
    """One attempt at one tenant within a rollout."""

    id: int
    rollout_id: int
    tenant_id: str
    attempt: int
    status: RunStatus
    from_revision: str | None = None
    to_revision: str | None = None
    applied: tuple[str, ...] = ()
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    worker: str | None = None
    error_class: ErrorClass | None = None
    error_message: str | None = None
    traceback: str | None = None
    db_host: str = ""
    dispatched_at: datetime | None = None
    lease_expires_at: datetime | None = None
    wave: int = 1
    retries: int = 0
    blocked_by: int | None = None


@dataclass(frozen=True, kw_only=True)
class UnitJob:
    """Everything one unit of work needs, resolved: it crosses a process boundary, never a broker
    (``url`` holds the clear password)."""

    run_id: int
    tenant_id: str
    command: Command
    target: str
    url: str = field(repr=False)
    schema: str | None
    alembic_config: str
    version_table: str = "alembic_version"
    lock_timeout_ms: int = 10_000
    statement_timeout_ms: int = 0
    lock_wait_s: float = 60.0
    connect_timeout_s: float = 5.0
    task_timeout_s: float = 0.0
    transient_retries: int = 3
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 15.0
    rollout_id: int = 0
    control_url: str = field(default="", repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True, kw_only=True)
class UnitResult:
    """What a unit of work observed; the recorder turns it into the tenant run's final row."""

    run_id: int
    status: RunStatus
    from_revision: str | None
    to_revision: str | None
    applied: tuple[str, ...]
    started_at: datetime
    finished_at: datetime
    worker: str
    error_class: ErrorClass | None = None
    error_message: str | None = None
    traceback: str | None = None
    retries: int = 0

    @property
    def duration_ms(self) -> int:
        return int((self.finished_at - self.started_at).total_seconds() * 1000)
