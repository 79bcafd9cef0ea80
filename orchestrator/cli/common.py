"""What every CLI command shares: settings built once, the store opened and checked, selectors, output."""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from ..controldb.store import Store
from ..exceptions import ConfigurationError
from ..models import Selector
from ..settings import Settings

T = TypeVar("T")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
if not out.is_terminal:  # piped output: do not cut URLs and errors at 80 columns
    out.width = 200

TenantOpt = Annotated[
    list[str] | None, typer.Option("--tenant", "-t", help="Tenant id (repeatable).", show_default=False)
]
TagOpt = Annotated[
    list[str] | None, typer.Option("--tag", help="Only tenants with this tag (repeatable: all must match).")
]
GroupOpt = Annotated[str | None, typer.Option("--group", "-g", help="Only tenants of this group.")]
ExcludeOpt = Annotated[
    list[str] | None, typer.Option("--exclude", help="Leave this tenant out (repeatable).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def selector(
    tenant: list[str] | None, tag: list[str] | None, group: str | None, exclude: list[str] | None
) -> Selector:
    return Selector(
        tenants=tuple(tenant or ()), tags=tuple(tag or ()), group=group, exclude=tuple(exclude or ())
    )


def settings() -> Settings:
    """Settings from the environment and ``.env``; an invalid value is one clear line."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "TENANTCTL_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigurationError(f"invalid {name}: {first['msg']}") from None


def run(fn: Callable[[Store], Awaitable[T]], *, cfg: Settings, ready: bool = True) -> T:
    """Open the control DB, check it is migrated, run ``fn`` on it: one event loop, so the store keeps
    its connections for the command's life."""

    async def main() -> T:
        async with Store(cfg.database_url.get_secret_value(), pooled=True, pre_ping=False) as store:
            if ready:
                await store.ensure_ready()
            return await fn(store)

    return asyncio.run(main())


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()
