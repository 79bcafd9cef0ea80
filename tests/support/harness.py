"""A control plane for a test: settings, the store, the CLI in a subprocess, and direct reads of tenants."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from pydantic import SecretStr

from orchestrator import coordinator, registry
from orchestrator.controldb.store import Store
from orchestrator.models import Command, Selector, TenantSpec
from orchestrator.secrets import SecretBox
from orchestrator.settings import Settings

T = TypeVar("T")
SECRET_KEY = "test-secret-key-not-for-production"


class Harness:
    def __init__(self, control_url: str, alembic_ini: Path, workdir: Path) -> None:
        self.control_url = control_url
        self.alembic_ini = alembic_ini
        self.workdir = workdir
        self.box = SecretBox(SECRET_KEY)
        self.extra_env: dict[str, str] = {}

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": SecretStr(self.control_url),
            "alembic_config": self.alembic_ini,
            "secret_key": SecretStr(SECRET_KEY),
            "parallelism": 4,
            "connect_timeout": 3.0,
            "lock_wait": 60.0,
        }
        for name, value in self.extra_env.items():
            values[name.removeprefix("TENANTCTL_").lower()] = value
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTCTL_")}
        env.update(
            TENANTCTL_DATABASE_URL=self.control_url,
            TENANTCTL_ALEMBIC_CONFIG=str(self.alembic_ini),
            TENANTCTL_SECRET_KEY=SECRET_KEY,
            TENANTCTL_CONNECT_TIMEOUT="3",
            COLUMNS="200",
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = 240, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=self.workdir,
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def with_store(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        async def main() -> T:
            async with Store(self.control_url) as store:
                return await fn(store)

        return asyncio.run(main())

    def register(self, tenant_id: str, url: str, **fields: Any) -> None:
        spec = TenantSpec(id=tenant_id, url=url, **fields)
        self.with_store(lambda store: registry.add(store, spec, self.box))

    def rollout(
        self, command: Command, revision: str, selector: Selector | None = None, **overrides: Any
    ) -> dict[str, Any]:
        cfg = self.settings(**overrides)

        async def go(store: Store) -> dict[str, Any]:
            rid = await coordinator.rollout(
                cfg,
                store,
                command=command,
                revision=revision,
                selector=selector or Selector(),
                created_by="tests",
                environ=dict(os.environ),
            )
            return await coordinator.status(store, rid)

        return self.with_store(go)

    def status(self, rollout_id: int | None = None) -> dict[str, Any]:
        return self.with_store(lambda store: coordinator.status(store, rollout_id))


def alembic(url: str, verb: str, revision: str, schema: str | None = None) -> None:
    """Run the shipped environment in this process, as `alembic -x url=… [-x schema=…] VERB REV`: a
    tenant moved behind tenantctl's back."""
    from alembic import command
    from alembic.config import Config

    from tests.conftest import MIGRATIONS_INI

    x = [f"url={url}"] + ([f"schema={schema}"] if schema else [])
    cfg = Config(str(MIGRATIONS_INI), cmd_opts=argparse.Namespace(x=x))
    cfg.attributes["configure_logger"] = False
    getattr(command, verb)(cfg, revision)


def tenant_revision(url: str, schema: str | None = None, table: str = "alembic_version") -> str | None:
    """Read a tenant's version rows straight from PostgreSQL, as an independent witness."""
    with psycopg.connect(url, autocommit=True) as conn:
        ident = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [ident.as_string(conn)]).fetchone()
        if not exists or not exists[0]:
            return None
        rows = conn.execute(sql.SQL("SELECT version_num FROM {}").format(ident)).fetchall()
    return ",".join(sorted(r[0] for r in rows)) or None
