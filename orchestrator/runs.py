"""The life of a tenant run outside the in-process pool: claimed by a worker, dispatched in waves under the
caps, followed from the control DB. Broker-agnostic: sending a message is a callable handed in."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import notify
from .controldb.store import Store
from .dispatch import Dispatch
from .exceptions import ControlDBError, TenantctlError, UnknownTenant
from .jobs import job_from
from .models import ErrorClass, Rollout, RolloutState, RunStatus, UnitJob, UnitResult
from .policy import decide, gated
from .progress import Observer
from .secrets import mask_text
from .settings import Settings

log = logging.getLogger("tenantctl.runs")

Send = Callable[[Sequence[Dispatch]], int]
TAIL_POLL = 0.1  # the shortest wait between two progress reads


@dataclass(frozen=True)
class Unusable:
    """A claimed run that could not start (its tenant was removed, its URL cannot be resolved): it is
    already recorded failed, ``invalid_config``."""

    run_id: int


async def claim(
    store: Store, settings: Settings, run_id: int, attempt: int, worker: str, environ: Mapping[str, str]
) -> UnitJob | Unusable | None:
    """Claim a run (CAS, starting its lease) and build its job; None when the message is a duplicate."""
    context = await store.claim_context(run_id, attempt, worker, settings.lease_seconds)
    if context is None:
        log.info("run %s attempt %s already claimed or finished: duplicate message ignored", run_id, attempt)
        return None
    run, rollout, tenant = context
    try:
        if tenant is None:
            raise UnknownTenant(run.tenant_id)
        return job_from(settings, run, rollout, tenant, environ)
    except TenantctlError as exc:
        now = datetime.now(UTC)
        await store.record_result(
            UnitResult(
                run_id=run_id,
                status=RunStatus.FAILED,
                from_revision=None,
                to_revision=None,
                applied=(),
                started_at=now,
                finished_at=now,
                worker=worker,
                error_class=ErrorClass.INVALID_CONFIG,
                error_message=mask_text(exc.message),
            ),
            fenced=True,
        )
        return Unusable(run_id)


async def next_wave(
    store: Store, settings: Settings, rollout_id: int, rollout: Rollout | None = None
) -> int | None:
    """The wave whose queued runs may start now, after applying the rollout's policy: a crossed failure
    budget or a failed canary halts the rollout here (and notifies). None: nothing may start.
    ``rollout``: the rollout as just read by the caller, so it is not read twice."""
    rollout = rollout or await store.get_rollout(rollout_id)
    if rollout.state is not RolloutState.RUNNING:
        return None
    if not gated(rollout.policy):
        # one wave, no canary, no budget: nothing to decide, and no need to read every run per task
        return 1 if await store.has_runs(rollout_id, RunStatus.QUEUED) else None
    statuses = await store.wave_statuses(rollout_id)
    decision = decide(rollout.policy, statuses, len(statuses))
    if decision.halt is not None:
        await stop(store, settings, rollout_id, decision.halt)
        return None
    return decision.open_wave


async def stop(
    store: Store, settings: Settings, rollout_id: int, reason: str, state: RolloutState = RolloutState.HALTED
) -> bool:
    """Halt or cancel a rollout (runs not started wait for ``resume``) and say why; it closes (and
    notifies) once its running runs have ended, at once when none is running."""
    if not await store.halt(rollout_id, reason, state):
        return False
    log.warning("rollout %s %s: %s", rollout_id, state.value, reason)
    await close_if_done(store, settings, rollout_id)
    return True


async def close_if_done(store: Store, settings: Settings, rollout_id: int) -> RolloutState | None:
    """Close the rollout when nothing of it is queued or running. Every path that may close a rollout
    (a worker, a pool child, the coordinator, the reaper, ``status --follow``, ``cancel``) comes here,
    and the close is a compare-and-set: exactly one caller closes it, and that one sends the webhook."""
    state = await store.finish_if_done(rollout_id)
    # the report reads every run: only built when a webhook will carry it
    if state is not None and settings.webhook_url is not None:
        rollout = await store.get_rollout(rollout_id)
        await notify.send(
            settings, notify.rollout_message(await report(store, rollout_id), rollout.halt_reason)
        )
    return state


async def report(store: Store, rollout_id: int) -> dict[str, Any]:
    from .coordinator import status

    return await status(store, rollout_id)


def _plain_wave(rollout: Rollout) -> int | None:
    """The wave a settling worker may reserve from without asking the policy: a running rollout with
    nothing to decide is one wave (1); None sends the decision to :func:`dispatch_more`."""
    return 1 if rollout.state is RolloutState.RUNNING and not gated(rollout.policy) else None


async def settle(store: Store, settings: Settings, rollout_id: int, result: UnitResult, send: Send) -> bool:
    """What a process does after its unit: record the result (fenced by its claim), apply the policy,
    send the next runs (a Celery worker as messages; a pool child keeps them for itself), and close the
    rollout when none is left, notifying. For a plain rollout the record and the reservation are one
    transaction. Returns whether the result was written (False: the reaper settled the run first)."""
    written, rollout, chosen = await store.record_and_reserve(
        result, rollout_id, settings.per_host_limit, settings.redispatch_after, _plain_wave
    )
    if chosen is None:
        await keep_moving(store, settings, rollout_id, send, rollout)
    elif not (chosen and send(chosen)):
        await close_if_done(store, settings, rollout_id)
    return written


async def keep_moving(
    store: Store, settings: Settings, rollout_id: int, send: Send, rollout: Rollout | None = None
) -> None:
    """Send what the caps allow now; when nothing was sent, close the rollout if nothing is left (runs
    just sent are queued, so it cannot be done: asking would cost queries)."""
    if not await dispatch_more(store, settings, rollout_id, send, rollout):
        await close_if_done(store, settings, rollout_id)


async def dispatch_more(
    store: Store, settings: Settings, rollout_id: int, send: Send, rollout: Rollout | None = None
) -> int:
    """Send as many queued runs of the rollout's open wave as the caps allow; returns how many were sent.

    Runs are stamped dispatched before their message is sent: a message lost on the way (broker down)
    is sent again after ``redispatch_after``, and a duplicate is harmless (the claim is a CAS).
    ``rollout``: as just read by the caller.
    """
    rollout = rollout or await store.get_rollout(rollout_id)
    wave = await next_wave(store, settings, rollout_id, rollout)
    if wave is None:
        return 0
    chosen = await store.reserve_dispatch(
        rollout_id, rollout.parallel, settings.per_host_limit, settings.redispatch_after, wave
    )
    return send(chosen) if chosen else 0


async def follow(
    store: Store,
    rollout_id: int,
    observer: Observer,
    poll_interval: float,
    tick: Callable[[], Awaitable[None]] | None = None,
    wait: Callable[[float], Awaitable[object]] = asyncio.sleep,
    grace: float = 60.0,
) -> None:
    """Report runs as they become terminal, reading only the control DB, until none is queued or running.

    ``wait(seconds)``: between two reads (the in-process executor wakes as soon as a child ends). A
    control DB that stops answering is read again every poll for ``grace`` seconds (units go on
    meanwhile); past that, ControlDBError ends the follow (the rollout itself goes on without it)."""
    rollout = await store.get_rollout(rollout_id)
    # every attempt at rest now, earlier ones included: a retry's follow must not report them again
    seen = await store.terminal_run_ids(rollout_id)
    since = rollout.created_at - timedelta(seconds=1)
    started, already = time.monotonic(), len(seen)
    down_since: float | None = None
    while True:
        try:
            # counts first: when they say nothing is left, the read after them holds every last result
            counts = await store.rollout_counts(rollout_id)
            for run in await store.endings_since(rollout_id, since):
                if run.id not in seen:
                    seen.add(run.id)
                    observer.finished(run.tenant_id, run.status, run.error_message)
                # workers' clocks may differ slightly: look back a little, dedupe by id
                since = max(since, run.finished_at - timedelta(seconds=5))
            left = counts.get(RunStatus.QUEUED, 0) + counts.get(RunStatus.RUNNING, 0)
            if not left:
                return
            if tick is not None:
                await tick()
            down_since = None
        except ControlDBError as exc:
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > grace:
                raise ControlDBError(
                    f"{exc.message} (for {grace:g}s): rollout {rollout_id} goes on without this command; "
                    f"`tenantctl status {rollout_id} --follow` attaches again"
                ) from exc
            log.warning("rollout %s: %s; reading again", rollout_id, exc.message)
            await asyncio.sleep(poll_interval)
            continue
        elapsed = time.monotonic() - started
        await wait(next_poll(poll_interval, left, (len(seen) - already) / elapsed if elapsed else 0))


def next_poll(poll_interval: float, left: int, per_second: float) -> float:
    """Seconds to the next progress read: the poll interval, or sooner when the runs left should be done
    before it at the rate seen so far, so the end is noticed (and the CLI exits) soon after it comes;
    never more often than TAIL_POLL."""
    if per_second <= 0:
        return poll_interval
    return max(TAIL_POLL, min(poll_interval, left / per_second))
