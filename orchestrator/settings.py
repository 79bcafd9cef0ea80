"""Settings, read once at each entry point (CLI, worker, API) and passed down; the core never reads the
environment itself."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CONTROL_DB = "sqlite+aiosqlite:///tenantctl.db"

Role = Literal["viewer", "operator", "deployer", "admin"]


class ApiToken(BaseModel):
    """One API token as configured: its name (recorded as who did what), its role, and the SHA-256 of
    the token in hex (``printf %s "$TOKEN" | sha256sum``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@:-]+$")
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Settings(BaseSettings):
    """Every knob of tenantctl. Each field is ``TENANTCTL_<NAME>`` in the environment or ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="TENANTCTL_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_CONTROL_DB),
        description="Control database: a local SQLite file by default, postgresql+asyncpg://… in production.",
    )
    alembic_config: Path = Field(default=Path("alembic.ini"), description="Path of the tenants' alembic.ini.")
    broker_url: SecretStr | None = Field(
        default=None, description="Celery broker (redis://…); unset runs tenants in the in-process pool."
    )
    parallelism: int = Field(default=4, ge=1, le=512, description="Tenants migrated at once.")
    read_concurrency: int = Field(
        default=32, ge=1, le=1024, description="Tenants whose revision is read at once (preflight, current)."
    )
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to connect to a tenant.")
    lock_timeout: float = Field(
        default=10.0,
        ge=0,
        description="PostgreSQL lock_timeout (seconds) for migration statements; 0 = none.",
    )
    statement_timeout: float = Field(
        default=0.0, ge=0, description="PostgreSQL statement_timeout (seconds) for migrations; 0 = none."
    )
    lock_wait: float = Field(
        default=60.0,
        ge=0,
        description="Seconds to wait for a tenant's migration lock held by another runner.",
    )
    version_table: str = Field(default="alembic_version", description="Alembic version table name.")
    queue: str = Field(default="tenantctl", description="Celery queue of migration tasks.")
    per_host_limit: int = Field(
        default=0, ge=0, description="Migrations at once on one database server (host:port); 0 = no limit."
    )
    task_soft_time_limit: float = Field(
        default=3600.0, gt=0, description="Seconds before a migration task is asked to stop (timeout)."
    )
    task_time_limit: float = Field(
        default=3900.0, gt=0, description="Seconds before a migration task's process is killed."
    )
    lease_seconds: float = Field(
        default=30.0, gt=0, description="A running tenant run's lease; the worker renews it every third."
    )
    control_db_grace: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Seconds a worker or a coordinator keeps retrying a control DB that does not answer before it "
            "gives up (the reaper then settles its runs from the tenants' real revisions)."
        ),
    )
    redispatch_after: float = Field(
        default=120.0, gt=0, description="Seconds after which a dispatched run never claimed is sent again."
    )
    reap_interval: float = Field(default=30.0, gt=0, description="Seconds between reaper passes (beat).")
    poll_interval: float = Field(
        default=0.5, gt=0, description="Seconds between progress reads of a rollout."
    )
    webhook_url: SecretStr | None = Field(
        default=None, description="Slack-compatible webhook called when a rollout finishes or halts."
    )
    webhook_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for the webhook.")
    transient_retries: int = Field(
        default=3, ge=0, le=20, description="Retries of a transient failure within one attempt."
    )
    retry_backoff: float = Field(
        default=1.0, gt=0, description="First backoff (seconds) of a transient retry."
    )
    retry_backoff_max: float = Field(default=15.0, gt=0, description="Cap of the transient retry backoff.")
    task_timeout: float = Field(
        default=0.0, ge=0, description="Seconds one tenant's migration may take; 0 = no limit."
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Key that encrypts tenant passwords at rest (any long random string)."
    )
    api_tokens: list[ApiToken] = Field(
        default_factory=list,
        description="Bearer tokens of the HTTP API, as JSON: "
        '[{"name": "ci", "role": "deployer", "sha256": "<hex SHA-256 of the token>"}]; '
        "roles viewer < operator < deployer < admin. Only the hash is configured, never the token.",
    )
    api_max_selection: int = Field(
        default=1000,
        ge=1,
        description="A rollout started over HTTP on more tenants than this needs "
        '"confirm_count" equal to the selection\'s size.',
    )
    metrics_public: bool = Field(
        default=False, description="Serve /metrics without a token (behind a network you trust)."
    )
    session_hours: float = Field(
        default=12.0, gt=0, description="How long a dashboard login (signed session cookie) lasts."
    )
    audit_cron: str = Field(
        default="0 3 * * *",
        description="When the nightly drift audit runs (cron: minute hour day month weekday).",
    )
    audit_schema_nightly: bool = Field(
        default=False, description="Also run the (heavier) schema audit nightly."
    )
    lint_disable: str = Field(
        default="",
        description="Lint rules `tenantctl check` skips in every revision, comma-separated "
        "(e.g. rename-table,drop-column); one revision allows one with `# tenantctl: allow RULE`.",
    )
    schema_metadata: str | None = Field(
        default=None,
        description="The models' MetaData for `audit --schema`, as module:attribute "
        "(default: `metadata` of models.py beside the tenants' env.py).",
    )
    sync_cron: str | None = Field(
        default=None,
        description="When beat syncs the registry from its source (cron: minute hour day month weekday); "
        "unset = never.",
    )
    sync_from_sql: str | None = Field(
        default=None,
        description="The query `tenants sync` and the scheduled sync read tenants with: one row per tenant, "
        "columns named after the import fields (id, url, schema, tags, group, enabled).",
    )
    sync_source_url: SecretStr | None = Field(
        default=None,
        description="Database the sync query runs on (postgresql://… or sqlite:///…); ${ENV} resolved.",
    )
    sync_from_file: Path | None = Field(
        default=None, description="A YAML/JSON/CSV tenant file as the sync source, instead of a query."
    )
    sync_tag_columns: str | None = Field(
        default=None, description="Comma-separated source columns whose values become tags."
    )
    sync_group_column: str | None = Field(
        default=None, description="The source column whose value becomes the group."
    )
    sync_max_disable: str = Field(
        default="10%",
        description="Most tenants one sync may disable: a share of the enabled ones (10%) or a count (3).",
    )
    sync_timeout: float = Field(
        default=60.0, gt=0, description="statement_timeout (seconds) of the sync query on its source."
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Logs on stderr: `text` (the CLI's warnings, Celery's own lines in workers and beat) or "
        "`json`, one object per line with time, level, logger, message and, for a tenant run, rollout_id, "
        "run_id, tenant and attempt.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO",
        description="Least level logged by workers, beat, `serve` and JSON logs; the CLI's text logs show "
        "warnings and errors unless this is set.",
    )
    metrics_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Seconds a scrape of /metrics reuses the figures it read from the control DB and "
        "the broker.",
    )

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object, info: ValidationInfo) -> object:
        """``json``/``JSON``, ``info``/``INFO``: as users write them."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        return value.upper() if info.field_name == "log_level" else value.lower()
