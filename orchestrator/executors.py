"""The in-process executor: a pool of child processes that carry a rollout's runs, dispatched and
followed through the control DB exactly as Celery workers are.

Each child runs :func:`lifecycle.carry` (claim with a lease, heartbeat, unit, settle), so a run carried
here and a run carried by a Celery worker live the same life and die the same death: a killed child or a
killed coordinator leaves runs whose leases expire, and the reaper judges them. The coordinator holds a
lease on the rollout itself (``rollouts.owner``) and renews it while it dispatches; when it dies, the
reaper halts the rollout, and ``resume``/``retry`` continue it.

Children are started fresh (spawn: no parent state, lock or loop leaks in; Alembic's global ``context``
forbids threads) and ignore SIGINT and SIGTERM: Ctrl-C in a terminal reaches the whole process group,
and a migration must end at a migration boundary (the coordinator halts the rollout; each unit stops
after its current migration), never in the middle of one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from . import lifecycle, logs, reaper, runs
from .controldb.store import Store
from .dispatch import Dispatch
from .exceptions import ConfigurationError, ControlDBError, RolloutBusy
from .progress import Executor, Observer
from .runtime import runtime
from .settings import Settings
from .unit import worker_id

log = logging.getLogger("tenantctl.executor")
Wait = Callable[[float], Awaitable[object]]

_settings: Settings | None = None
_environ: Mapping[str, str] = {}
_parent: int | None = None  # the coordinator's pid, as the child first saw it


def _child_init(settings: Settings, environ: Mapping[str, str], cli_logs: bool | None = None) -> None:
    """``cli_logs``: the parent's ``logs.configured()``; a spawned child starts with no logging set up."""
    global _settings, _environ, _parent
    _parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if cli_logs is not None:
        logs.configure(settings, cli=cli_logs)
    _settings, _environ = settings, dict(environ)
    threading.Thread(target=_orphan_watch, name="tenantctl-orphan-watch", daemon=True).start()


_carrying = threading.Lock()  # held while this child carries runs


def _orphan_watch(every: float = 1.0) -> None:
    """End this child once its coordinator is gone and it carries nothing. A child waiting for work
    would wait forever: its sibling holds the task queue's pipe open, so no end of file comes (seen:
    a SIGKILLed coordinator's children idle for hours, holding control-DB connections). One carrying a
    run finishes and records it first (``_child_carry`` takes no new one)."""
    while True:
        time.sleep(every)
        if os.getppid() != _parent and _carrying.acquire(blocking=False):
            os._exit(0)


def _child_carry(rollout_id: int, run_id: int, attempt: int) -> str:
    """Carry a run, then the runs this child reserves as it settles each one, as a Celery worker sends
    them: a finished unit's next run starts in the same process within the settle's transaction, not
    after a round trip through the coordinator (which cost a fifth of the throughput, measured). The
    chain ends when the caps or the policy leave nothing for it; the coordinator dispatches the rest."""
    assert _settings is not None, "the pool's initializer sets the settings"
    rt = runtime(_settings)
    chain: deque[tuple[int, int, int]] = deque([(rollout_id, run_id, attempt)])

    def keep(batch: Sequence[Dispatch]) -> int:
        chain.extend((d.rollout_id, d.run_id, d.attempt) for d in batch)
        return len(batch)

    carried = 0
    with _carrying:
        while chain:
            if os.getppid() != _parent:
                # the coordinator died: finish nothing new; the reaper halts what is left from its lease
                log.warning("the coordinator is gone: %d reserved run(s) left to the reaper", len(chain))
                break
            rollout, run, attempt_ = chain.popleft()
            lifecycle.carry(
                rt, _settings, _environ, rollout_id=rollout, run_id=run, attempt=attempt_, send=keep
            )
            carried += 1
    return f"{carried} run(s)"


class _Pool:
    """A process pool that is made on first use and made again if a child died abruptly (a dead child
    breaks a ProcessPoolExecutor; the runs it held are judged by the reaper from their leases)."""

    def __init__(self, size: int, settings: Settings, environ: Mapping[str, str]) -> None:
        self.size, self.settings, self.environ = size, settings, environ
        self._pool: ProcessPoolExecutor | None = None
        self.pending: set[asyncio.Future[str]] = set()

    def send(self, batch: Sequence[Dispatch]) -> int:
        loop = asyncio.get_running_loop()
        for d in batch:
            future = loop.run_in_executor(self._executor(), _child_carry, d.rollout_id, d.run_id, d.attempt)
            self.pending.add(future)
        return len(batch)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.size,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_init,
                initargs=(self.settings, self.environ, logs.configured()),
            )
        return self._pool

    def idle(self) -> bool:
        """Whether a child may be without work: a chain of runs ended (or none started yet). While every
        child carries a chain, each reserves its own next run as it settles: the coordinator's dispatch
        would find nothing (it cost 5-8 ms of CPU per progress poll, on the cores the children need)."""
        return len(self.pending) < self.size

    async def wait(self, timeout: float) -> None:
        """Sleep until a child ends or ``timeout`` passes; drop finished futures, replace a broken pool."""
        if not self.pending:
            await asyncio.sleep(timeout)
            return
        done, self.pending = await asyncio.wait(self.pending, timeout=timeout, return_when="FIRST_COMPLETED")
        for future in done:
            exc = future.exception()
            if isinstance(exc, BrokenProcessPool):
                log.warning("a pool process died; its runs are left to the reaper (lease expiry)")
                self.shutdown(wait=False)
            elif exc is not None:
                log.error("a pool process failed: %s: %s", exc.__class__.__name__, exc)

    def shutdown(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=not wait)
            self._pool = None


def for_settings(settings: Settings, environ: Mapping[str, str], parallel: int | None = None) -> Executor:
    """The executor a verb runs with: Celery workers when a broker is configured, else this process's
    own pool of ``parallel`` children."""
    if settings.broker_url is not None:
        from workers.executor import CeleryExecutor

        return CeleryExecutor(settings, environ)
    return InProcessExecutor(settings, environ, parallel)


class InProcessExecutor:
    """Carries a rollout with ``parallel`` child processes (default: the rollout's own ``--parallel``),
    at most ``settings.per_host_limit`` migrations on one database server across every rollout."""

    def __init__(self, settings: Settings, environ: Mapping[str, str], parallel: int | None = None) -> None:
        self.settings = settings
        self.environ = environ
        self.parallel = parallel
        self._owner = worker_id()  # host:pid of this coordinator process
        self.owner: str | None = self._owner

    detached = False  # the pool lives as long as this command

    def ready(self) -> None:
        """Nothing to check: the pool is this process's own."""

    async def start(self, store: Store, rollout_id: int) -> None:
        raise ConfigurationError(
            "--no-wait needs workers: set TENANTCTL_BROKER_URL and run `tenantctl worker`"
        )

    async def execute(self, store: Store, rollout_id: int, observer: Observer) -> None:
        owner = self._owner
        holder = await store.take_rollout(rollout_id, owner, self.settings.lease_seconds)
        if holder is not None:
            raise RolloutBusy(rollout_id, holder)
        rollout = await store.get_rollout(rollout_id)
        pool = _Pool(self.parallel or rollout.parallel, self.settings, self.environ)
        tick = Ticker(store, self.settings, self.environ, rollout_id, pool.send, owner=owner, idle=pool.idle)
        try:
            await tick.follow(observer, pool.wait)
        finally:
            pool.shutdown()  # the children's current units end and settle first
            try:
                await store.release_rollout(rollout_id, owner)
            except ControlDBError as exc:  # the lease simply expires; the reaper reads nothing into it
                log.warning(
                    "rollout %s: could not release the coordinator's lease: %s", rollout_id, exc.message
                )


class Ticker:
    """A waiting coordinator's work between two progress reads, on either executor: renew its lease on
    the rollout (in-process: ``owner``), dispatch what the caps allow, and now and then a reaper pass (a
    process killed mid-unit; with a broker, messages lost are sent again)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        environ: Mapping[str, str],
        rollout_id: int,
        send: runs.Send,
        *,
        owner: str | None = None,
        resend: runs.Send | None = None,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        """``idle``: whether dispatching may find a taker (the in-process pool: a child's chain ended);
        None: always try (Celery workers take messages whenever they have room)."""
        self.store, self.settings, self.environ = store, settings, environ
        self.rollout_id, self.owner, self.send, self.resend = rollout_id, owner, send, resend
        self.idle = idle
        self.renewed = self.reaped = time.monotonic()
        self.holding = True

    async def follow(
        self, observer: Observer, wait: Callable[[float], Awaitable[object]] = asyncio.sleep
    ) -> None:
        """Dispatch, then report progress until no run of the rollout is queued or running."""
        await self()
        poll, grace = self.settings.poll_interval, self.settings.control_db_grace
        await runs.follow(self.store, self.rollout_id, observer, poll, self, wait, grace)

    async def __call__(self) -> None:
        now = time.monotonic()
        if self.owner is not None and now - self.renewed >= self.settings.lease_seconds / 3:
            self.renewed = now
            if not await self.store.renew_rollout(self.rollout_id, self.owner, self.settings.lease_seconds):
                if self.holding:
                    log.warning(
                        "rollout %s: this coordinator lost its lease; it dispatches no more", self.rollout_id
                    )
                self.holding = False
        if self.holding and (self.idle is None or self.idle()):
            await runs.dispatch_more(self.store, self.settings, self.rollout_id, self.send)
        if now - self.reaped >= self.settings.reap_interval:
            self.reaped = now
            await reaper.reap(self.store, self.settings, self.environ, self.resend)
