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
from rich.console import Console

from .. import logs
from ..config import load_settings
from ..controldb.store import Store
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


def settings(*, celery: bool = False) -> Settings:
    """Settings from the environment and ``.env`` (:func:`config.load_settings`), and the process's
    logging set up from them (``TENANTCTL_LOG_FORMAT``; on stderr, stdout being the report). ``celery``
    (a worker, beat): text logs are Celery's to set up (``workers/app.py``); JSON logs are ours from the
    start, so even what Celery warns before its logging is set up is a JSON line."""
    cfg = load_settings()
    if not celery or cfg.log_format == "json":
        logs.configure(cfg, cli=not celery)
    return cfg


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
