"""What every CLI command shares: settings built once, the store opened and checked, selectors, output."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from .. import validation
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
    """Settings from the environment and ``.env``; an invalid value, or a ``.env`` that cannot be read,
    is one clear line. python-dotenv only logs a line it cannot parse and drops it (a setting silently
    lost): that warning is caught and made the error."""
    dropped = _Collect()
    dotenv_log = logging.getLogger("dotenv.main")
    propagate, dotenv_log.propagate = dotenv_log.propagate, False
    dotenv_log.addHandler(dropped)
    try:
        cfg = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "TENANTCTL_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigurationError(f"invalid {name}: {first['msg']}") from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x})"
        raise ConfigurationError(f"cannot read .env: {reason}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read .env: {exc.strerror or exc.__class__.__name__}") from None
    finally:
        dotenv_log.removeHandler(dropped)
        dotenv_log.propagate = propagate
    if dropped.messages:
        raise ConfigurationError(f"invalid .env: {dropped.messages[0]}")
    return validation.settings(cfg)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


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
