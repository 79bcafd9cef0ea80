"""Settings, read once at each entry point (CLI, worker, API) and passed down; the core never reads the
environment itself."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CONTROL_DB = "sqlite+aiosqlite:///tenantctl.db"


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
    secret_key: SecretStr | None = Field(
        default=None, description="Key that encrypts tenant passwords at rest (any long random string)."
    )
