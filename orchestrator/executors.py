"""Executors take a created rollout and bring each of its queued runs to a terminal state.

The in-process executor is a pool of child processes (Alembic's global ``context`` forbids threads);
the Celery executor (``workers/executor.py``) dispatches tasks and follows the control DB.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Protocol

from .controldb.store import Store
from .dispatch import db_host
from .exceptions import ConfigurationError
from .jobs import build_job, secret_box
from .models import ErrorClass, RunStatus, Tenant, UnitJob, UnitResult
from .registry import connection_url
from .settings import Settings
from .unit import run_unit, worker_id


class Observer(Protocol):
    """Progress of a rollout, for a progress bar or a log."""

    def planned(
        self, rollout_id: int, total: int, done: int, skipped: int, failures: list[tuple[str, str]]
    ) -> None: ...
    def finished(self, tenant_id: str, status: RunStatus, error: str | None) -> None: ...


class Silent:
    def planned(
        self, rollout_id: int, total: int, done: int, skipped: int, failures: list[tuple[str, str]]
    ) -> None:
        pass

    def finished(self, tenant_id: str, status: RunStatus, error: str | None) -> None:
        pass


class Executor(Protocol):
    async def execute(self, store: Store, rollout_id: int, observer: Observer) -> None:
        """Run (or dispatch and follow) every queued run of the rollout until none is left."""


def _failed(job: UnitJob, cls: ErrorClass, message: str) -> UnitResult:
    now = datetime.now(UTC)
    return UnitResult(
        run_id=job.run_id,
        status=RunStatus.FAILED,
        from_revision=None,
        to_revision=None,
        applied=(),
        started_at=now,
        finished_at=now,
        worker=worker_id(),
        error_class=cls,
        error_message=message,
    )


class InProcessExecutor:
    """``parallel`` child processes, started fresh (spawn) so no parent state, lock or loop leaks in; at most
    ``settings.per_host_limit`` of them on one database server. Waves run one after the other; the
    rollout's policy is checked after every result, so a crossed budget halts it at once."""

    def __init__(self, settings: Settings, environ: Mapping[str, str], parallel: int | None = None) -> None:
        self.settings = settings
        self.environ = environ
        self.parallel = parallel or settings.parallelism

    async def execute(self, store: Store, rollout_id: int, observer: Observer) -> None:
        from .runs import next_wave

        pool: ProcessPoolExecutor | None = None
        try:
            while (wave := await next_wave(store, self.settings, rollout_id)) is not None:
                jobs = await self._jobs(store, observer, rollout_id, wave)
                if jobs:
                    pool = pool or ProcessPoolExecutor(
                        max_workers=self.parallel, mp_context=multiprocessing.get_context("spawn")
                    )
                    await self._run(store, observer, pool, jobs)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    async def _jobs(
        self, store: Store, observer: Observer, rollout_id: int, wave: int
    ) -> list[tuple[UnitJob, str]]:
        rollout = await store.get_rollout(rollout_id)
        queued = await store.queued_runs(rollout_id, wave)
        tenants = {t.id: t for t in await store.list_tenants()}
        box = secret_box(self.settings)
        jobs: list[tuple[UnitJob, str]] = []
        for run_id, tenant_id in queued:
            tenant = tenants.get(tenant_id) or Tenant(id=tenant_id, url="")
            try:
                if not tenant.url:
                    raise ConfigurationError(f"tenant {tenant_id} was removed from the registry")
                url = connection_url(tenant, box, self.environ)
            except ConfigurationError as exc:
                job = build_job(self.settings, run_id=run_id, tenant=tenant, rollout=rollout, url="")
                await store.mark_running(run_id, worker_id())
                await self._record(store, observer, job, _failed(job, ErrorClass.INVALID_CONFIG, exc.message))
                continue
            job = build_job(self.settings, run_id=run_id, tenant=tenant, rollout=rollout, url=url)
            jobs.append((job, db_host(url)))
        return jobs

    async def _run(
        self, store: Store, observer: Observer, pool: ProcessPoolExecutor, jobs: list[tuple[UnitJob, str]]
    ) -> None:
        from .runs import next_wave

        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(self.parallel)
        per_host = self.settings.per_host_limit or self.parallel
        hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_host))

        async def one(job: UnitJob, host: str) -> None:
            async with hosts[host], gate:
                # the claim fails if the rollout was halted or cancelled meanwhile: then nothing starts
                if not await store.mark_running(job.run_id, worker_id()):
                    return
                try:
                    result = await loop.run_in_executor(pool, run_unit, job)
                except Exception as exc:  # the child died: record it, never lose the run
                    result = _failed(
                        job, ErrorClass.INTERNAL, f"worker process failed: {exc.__class__.__name__}"
                    )
                await self._record(store, observer, job, result)
                if result.status is RunStatus.FAILED:
                    await next_wave(store, self.settings, job.rollout_id)  # applies the failure budget now

        await asyncio.gather(*(one(job, host) for job, host in jobs))

    @staticmethod
    async def _record(store: Store, observer: Observer, job: UnitJob, result: UnitResult) -> None:
        await store.record_result(result)
        observer.finished(job.tenant_id, result.status, result.error_message)
