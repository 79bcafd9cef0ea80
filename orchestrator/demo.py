"""``tenantctl demo``: a throwaway workspace of local SQLite tenants, rolled to head, on a machine with
nothing configured. It uses the same verbs as every other command; only the workspace is special."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from . import coordinator
from .cli import render
from .cli.common import err, out, who
from .controldb.store import Store
from .exceptions import ConfigurationError
from .models import Command, Selector, TenantSpec
from .registry import add
from .secrets import SecretBox
from .settings import Settings

GROUPS = ("eu", "us")


def example_migrations() -> Path:
    """The shipped tenant migration environment: inside the package when installed, ``migrations/``
    at the top of a source checkout otherwise."""
    packaged = Path(__file__).with_name("_example_migrations")
    if (packaged / "alembic.ini").is_file():
        return packaged
    source = Path(__file__).resolve().parent.parent / "migrations"
    if (source / "alembic.ini").is_file():
        return source
    raise ConfigurationError("the example migrations are missing from this installation")


def run_demo(workspace: Path, count: int) -> int:
    if workspace.exists() and any(workspace.iterdir()):
        raise ConfigurationError(
            f"{workspace} already exists and is not empty: remove it or pass --workspace"
        )
    workspace = workspace.resolve()
    (workspace / "tenants").mkdir(parents=True)
    shutil.copytree(
        example_migrations(), workspace / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    control = f"sqlite+aiosqlite:///{workspace / 'tenantctl.db'}"
    alembic_ini = workspace / "migrations" / "alembic.ini"
    (workspace / ".env").write_text(
        f"TENANTCTL_DATABASE_URL={control}\nTENANTCTL_ALEMBIC_CONFIG={alembic_ini}\n", encoding="utf-8"
    )
    cfg = Settings(database_url=control, alembic_config=alembic_ini, _env_file=None)  # type: ignore[arg-type,call-arg]

    async def main() -> dict[str, object]:
        async with Store(control) as store:
            await store.migrate()
            for i in range(1, count + 1):
                spec = TenantSpec(
                    id=f"tenant-{i:03d}",
                    url=f"sqlite:///{workspace / 'tenants' / f'tenant-{i:03d}.db'}",
                    tags=("demo", "big") if i % 4 == 0 else ("demo",),
                    group=GROUPS[i % len(GROUPS)],
                )
                await add(store, spec, SecretBox(None))
            with render.ProgressObserver("upgrade head") as observer:
                rollout_id = await coordinator.rollout(
                    cfg,
                    store,
                    command=Command.UPGRADE,
                    revision="head",
                    selector=Selector(),
                    created_by=who(),
                    environ={},
                    observer=observer,
                )
            return await coordinator.status(store, rollout_id)

    err.print(f"demo workspace: {workspace} ({count} SQLite tenants)", highlight=False)
    report = asyncio.run(main())
    render.summary(report)
    out.print(
        "\nNext, from the workspace (its .env points tenantctl at it):\n"
        f"  cd {workspace}\n"
        "  tenantctl tenants list\n"
        "  tenantctl current --group eu\n"
        "  tenantctl status --json\n"
        "  tenantctl downgrade -1 --tag big\n"
        "  tenantctl upgrade head\n"
        "  tenantctl history",
        highlight=False,
    )
    return coordinator.exit_code(str(report["state"]))
