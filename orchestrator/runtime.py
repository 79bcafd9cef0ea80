"""What a process that carries tenant runs keeps between them (a Celery worker process, a child of the
in-process pool): one event loop and one control-DB store (a connection pool), plus a heartbeat thread
that renews the lease of the run being migrated."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from . import logs
from .controldb.store import Store
from .exceptions import ControlDBError
from .settings import Settings
from .unit import worker_id

T = TypeVar("T")
log = logging.getLogger("tenantctl.worker")


class Heartbeat(threading.Thread):
    """Renews the current run's lease every third of the lease, on its own loop and store (the unit's
    thread is busy migrating). A control DB that does not answer is logged in one line and tried again
    at the next beat: the unit goes on, and its lease is renewed once the control DB is back."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="tenantctl-heartbeat", daemon=True)
        self.settings = settings
        self.current: int | None = None
        self.wake = threading.Event()

    def run(self) -> None:
        asyncio.run(self._beat())

    async def _beat(self) -> None:
        async with Store(self.settings.database_url.get_secret_value(), pooled=True) as store:
            while True:
                self.wake.wait(self.settings.lease_seconds / 3)
                self.wake.clear()
                run_id = self.current
                if run_id is None:
                    continue
                with logs.bind(run_id=run_id):  # a thread of its own: the unit's bound fields are not here
                    try:
                        if not await store.extend_lease(run_id, worker_id(), self.settings.lease_seconds):
                            log.warning("lease of run %s was taken over (reaped?)", run_id)
                    except ControlDBError as exc:
                        log.warning("heartbeat of run %s: %s", run_id, exc.message)

    @contextmanager
    def holding(self, run_id: int) -> Iterator[None]:
        self.current = run_id
        try:
            yield
        finally:
            self.current = None


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.store = Store(settings.database_url.get_secret_value(), pooled=True)
        self.heartbeat = Heartbeat(settings)
        self.heartbeat.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


_runtime: Runtime | None = None
_lock = threading.Lock()


def runtime(settings: Settings) -> Runtime:
    """The process's runtime, made on first use (after the prefork fork, never before it)."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(settings)
        return _runtime
