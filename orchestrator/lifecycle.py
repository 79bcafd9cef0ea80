"""One tenant run's life, the same for both executors: claim, lease, unit, settle.

A child of the in-process pool and a Celery task both call :func:`carry` with the run's ids (never a
URL or a password). It claims the run with a compare-and-set (run id and attempt as fencing token) that
also starts its lease, renews the lease from the process's heartbeat while the unit migrates, and settles
it: the result (only if this process still holds the run), the failure budget, the next runs (a Celery
worker sends them as messages; a child of the in-process pool carries them itself, next), closing the
rollout and its webhook. A process killed anywhere in between leaves a run whose lease expires, which
the reaper judges from the tenant's real revision.

The control DB may stop answering for a while: the claim and the settle are retried for
``TENANTCTL_CONTROL_DB_GRACE`` seconds. A unit that finished meanwhile is recorded when it is back; past
the grace the run is left to the reaper, which reads where the tenant really is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from . import logs, runs
from .exceptions import ControlDBError
from .models import UnitJob, UnitResult
from .runtime import Runtime
from .settings import Settings
from .unit import run_unit, worker_id

T = TypeVar("T")
log = logging.getLogger("tenantctl.lifecycle")
Observe = Callable[[UnitJob, UnitResult], None]


def carry(
    rt: Runtime,
    settings: Settings,
    environ: Mapping[str, str],
    *,
    rollout_id: int,
    run_id: int,
    attempt: int,
    send: runs.Send,
    observe: Observe | None = None,
) -> str:
    """Carry one run from claim to settle in this process; returns what happened (for logs and tests):
    ``done``, ``duplicate`` (already claimed or finished: a redelivered message), ``unusable`` (recorded
    failed at the claim) or ``unsettled`` (the control DB stayed away; the reaper will settle it).

    Every line logged meanwhile carries the run's rollout_id, run_id and attempt, and its tenant once
    claimed (``logs.bind``). ``observe(job, result)``: told of each unit run (a worker's metrics)."""
    with logs.bind(rollout_id=rollout_id, run_id=run_id, attempt=attempt):
        claimed = _durably(
            settings,
            f"claim of run {run_id}",
            lambda: runs.claim(rt.store, settings, run_id, attempt, worker_id(), environ),
            rt.run,
        )
        if claimed is None or isinstance(claimed, runs.Unusable):
            rt.run(runs.keep_moving(rt.store, settings, rollout_id, send))  # this message started nothing
            return "duplicate" if claimed is None else "unusable"
        with logs.bind(tenant=claimed.tenant_id):
            return _unit(rt, settings, rollout_id, claimed, send, observe)


def _unit(
    rt: Runtime, settings: Settings, rollout_id: int, job: UnitJob, send: runs.Send, observe: Observe | None
) -> str:
    run_id = job.run_id
    with rt.heartbeat.holding(run_id):
        result = run_unit(job)
    if observe is not None:
        observe(job, result)
    try:
        written = _durably(
            settings,
            f"result of run {run_id}",
            lambda: runs.settle(rt.store, settings, rollout_id, result, send),
            rt.run,
        )
    except ControlDBError as exc:
        log.error("run %s: %s; the reaper will settle it from the tenant's revision", run_id, exc.message)
        return "unsettled"
    if not written:
        log.warning("run %s was settled by the reaper before this process finished", run_id)
    return "done"


def _durably(
    settings: Settings,
    what: str,
    make: Callable[[], Coroutine[Any, Any, T]],
    run: Callable[[Coroutine[Any, Any, T]], T],
) -> T:
    """``run(make())``, tried again while the control DB does not answer, for at most the grace."""
    deadline = time.monotonic() + settings.control_db_grace
    pause = 0.2
    while True:
        try:
            return run(make())
        except ControlDBError as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s: %s; trying again in %.1fs", what, exc.message, pause)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
