"""The Celery executor: the coordinator's side of distributed execution. It dispatches a rollout's runs
under the caps and follows progress from the control DB (never from Celery results), re-dispatching and
reaping as it goes, so a rollout finishes even through a broker restart."""

from __future__ import annotations

import time
from collections.abc import Mapping

from celery import Celery

from orchestrator import reaper, runs
from orchestrator.controldb.store import Store
from orchestrator.executors import Observer
from orchestrator.settings import Settings

from .app import make_app
from .tasks import sender


class CeleryExecutor:
    def __init__(self, settings: Settings, environ: Mapping[str, str], app: Celery | None = None) -> None:
        self.settings = settings
        self.environ = environ
        self.app = app or make_app(settings)
        self.send = sender(self.app, settings)

    async def start(self, store: Store, rollout_id: int) -> None:
        """Dispatch what the caps allow and return; workers dispatch the rest as they finish (--no-wait)."""
        await runs.dispatch_more(store, self.settings, rollout_id, self.send)

    async def execute(self, store: Store, rollout_id: int, observer: Observer) -> None:
        await self.start(store, rollout_id)
        last_reap = time.monotonic()

        async def tick() -> None:
            nonlocal last_reap
            await runs.dispatch_more(store, self.settings, rollout_id, self.send)
            if time.monotonic() - last_reap >= self.settings.reap_interval:
                last_reap = time.monotonic()
                await reaper.reap(store, self.settings, self.environ, self.send)

        await runs.follow(store, rollout_id, observer, self.settings.poll_interval, tick)
