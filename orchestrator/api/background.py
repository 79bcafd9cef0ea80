"""Rollouts a server carries itself: without a broker, a rollout started over HTTP runs in the server's
own pool of child processes, under the same lifecycle as every run (claim, lease, heartbeat, settle).

The server is the rollout's coordinator (``rollouts.owner``, with a lease it renews while it carries
the rollout), so a server that dies leaves nothing the reaper cannot judge: the rollout is halted, its
runs settled from the tenants' real revisions, and ``resume``/``retry`` continue it. A server that is
stopped halts its rollouts first and lets each running unit end its current migration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from ..controldb.store import Store
from ..exceptions import TenantctlError
from ..executors import InProcessExecutor
from ..models import RolloutState, RunStatus
from ..progress import Silent
from ..runs import close_if_done, stop
from ..settings import Settings

log = logging.getLogger("tenantctl.api.background")


class Background:
    """The server's rollouts in progress, one asyncio task each."""

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self.settings, self.environ = settings, environ
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._again: set[int] = set()

    def executor(self, parallel: int | None = None) -> Detached:
        return Detached(self, parallel)

    def spawn(self, store: Store, rollout_id: int, executor: InProcessExecutor) -> None:
        """Carry the rollout unless a task of this server already does; that one then looks again for
        queued runs before it ends (a retry added while it was finishing)."""
        self._again.add(rollout_id)
        if rollout_id not in self.tasks:
            self.tasks[rollout_id] = asyncio.create_task(self._carry(store, rollout_id, executor))

    async def _carry(self, store: Store, rollout_id: int, executor: InProcessExecutor) -> None:
        try:
            while rollout_id in self._again:
                self._again.discard(rollout_id)
                await executor.execute(store, rollout_id, Silent())
                if await store.has_runs(rollout_id, RunStatus.QUEUED):
                    self._again.add(rollout_id)
                    await asyncio.sleep(self.settings.poll_interval)
            await close_if_done(store, self.settings, rollout_id)
        except TenantctlError as exc:  # the lease expires; the reaper judges what is left
            log.warning("rollout %s: the server stopped carrying it: %s", rollout_id, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rollout %s: the server stopped carrying it", rollout_id)
        finally:
            self.tasks.pop(rollout_id, None)
            self._again.discard(rollout_id)

    async def close(self, store: Store) -> None:
        """Halt every rollout this server carries, then wait until its running units have ended their
        current migration and settled (``resume`` continues each)."""
        for rollout_id in list(self.tasks):
            reason = f"the server carrying it stopped: `tenantctl resume {rollout_id}` continues"
            try:
                await stop(store, self.settings, rollout_id, reason, RolloutState.HALTED)
            except TenantctlError as exc:
                log.warning("rollout %s: could not halt it: %s", rollout_id, exc.message)
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()))


class Detached(InProcessExecutor):
    """The in-process executor, started by a request and carried on by the server after it answers."""

    detached = True

    def __init__(self, background: Background, parallel: int | None) -> None:
        super().__init__(background.settings, background.environ, parallel)
        self.background = background

    async def start(self, store: Store, rollout_id: int) -> None:
        self.background.spawn(store, rollout_id, self)
