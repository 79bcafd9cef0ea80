"""What a running server holds: settings, the control DB, who may call, and the rollouts it carries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from .. import reaper
from ..controldb.store import Store
from ..exceptions import TenantctlError
from ..progress import Executor
from ..settings import Settings
from .auth import Authenticator, Principal, forbidden
from .background import Background
from .events import Feeds

log = logging.getLogger("tenantctl.api")


@dataclass(kw_only=True)
class Service:
    settings: Settings
    environ: Mapping[str, str]
    store: Store
    auth: Authenticator
    feeds: Feeds
    background: Background | None  # None: a broker is configured and Celery workers carry rollouts
    metrics: Any = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _celery: Executor | None = None

    def executor(self, parallel: int | None = None) -> Executor:
        """Celery when a broker is configured (one Celery app for the server's life), else the server's
        own background pool."""
        if self.background is None:
            if self._celery is None:
                from workers.executor import CeleryExecutor

                self._celery = CeleryExecutor(self.settings, self.environ)
            return self._celery
        return self.background.executor(parallel)

    def start_reaper(self) -> None:
        """A reaper pass every ``reap_interval`` (there is no beat without a broker): a server restarted
        after it died finds its rollouts halted and their runs settled, not stuck."""
        self.tasks.append(asyncio.create_task(self._reap_forever()))

    async def _reap_forever(self) -> None:
        send = None
        if self.background is None:
            from workers.app import make_app
            from workers.tasks import sender

            send = sender(make_app(self.settings), self.settings)
        while True:
            try:
                await reaper.reap(self.store, self.settings, self.environ, send)
            except TenantctlError as exc:
                log.warning("reaper pass failed: %s", exc.message)
            except Exception:
                log.exception("reaper pass failed")
            await asyncio.sleep(self.settings.reap_interval)

    async def close(self) -> None:
        self.feeds.closing.set()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.background is not None:
            await self.background.close(self.store)


def service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


def require(role: str) -> Callable[..., Principal]:
    """A dependency: the authenticated caller, who must hold ``role`` or above (401 / 403)."""

    def check(request: Request, svc: Annotated[Service, Depends(service)]) -> Principal:
        # the middleware authenticated API paths already (AuthenticateFirst); /metrics is not among them
        principal: Principal = getattr(request.state, "principal", None) or svc.auth.principal(request)
        if not principal.may(role):
            raise forbidden(principal, role)
        request.state.principal = principal
        return principal

    return check
