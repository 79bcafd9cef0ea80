"""Executors run unit jobs and report each result. The in-process executor is a pool of child processes
(Alembic's global ``context`` forbids threads); the Celery executor lives in ``workers/``."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Protocol

from .models import ErrorClass, RunStatus, UnitJob, UnitResult
from .unit import WORKER, run_unit

OnStart = Callable[[UnitJob], Awaitable[None]]
OnResult = Callable[[UnitResult], Awaitable[None]]


class Executor(Protocol):
    async def run(self, jobs: Sequence[UnitJob], on_start: OnStart, on_result: OnResult) -> None:
        """Run every job; call ``on_start`` as each begins and ``on_result`` as each ends."""


class InProcessExecutor:
    """``parallel`` child processes, started fresh (spawn) so no parent state, lock or loop leaks in."""

    def __init__(self, parallel: int) -> None:
        self.parallel = parallel

    async def run(self, jobs: Sequence[UnitJob], on_start: OnStart, on_result: OnResult) -> None:
        if not jobs:
            return
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(self.parallel)
        workers = min(self.parallel, len(jobs))
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:

            async def one(job: UnitJob) -> None:
                async with gate:
                    await on_start(job)
                    try:
                        result = await loop.run_in_executor(pool, run_unit, job)
                    except Exception as exc:  # the child died: record it, never lose the run
                        now = datetime.now(UTC)
                        result = UnitResult(
                            run_id=job.run_id,
                            status=RunStatus.FAILED,
                            from_revision=None,
                            to_revision=None,
                            applied=(),
                            started_at=now,
                            finished_at=now,
                            worker=WORKER,
                            error_class=ErrorClass.INTERNAL,
                            error_message=f"worker process failed: {exc.__class__.__name__}",
                        )
                    await on_result(result)

            await asyncio.gather(*(one(job) for job in jobs))
