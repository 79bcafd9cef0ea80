"""Ctrl-C and SIGTERM while a rollout runs in the foreground: stop well, then stop at once.

The first signal halts the rollout (``runs.stop``): no tenant starts any more, and each running unit
stops after its current migration (each migration is its own transaction), so every tenant rests at a
revision it really reached and every run is recorded; the rollout is then left halted (``tenantctl
resume`` continues it) and :class:`Interrupted` (exit 130) ends the command. A second signal leaves at
once: units still running finish on their own and record themselves, or, if they die, the reaper judges
them from their leases.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from . import runs
from .controldb.store import Store
from .exceptions import Interrupted
from .settings import Settings

Guard = Callable[[int], AbstractAsyncContextManager[object]]
"""What a verb wraps the carrying of a rollout in, once the rollout exists (its id)."""

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def guard(
    store: Store, settings: Settings, by: str, write: Callable[[str], object] = sys.stderr.write
) -> Guard:
    """A :data:`Guard` for a command in the foreground (the CLI)."""

    @asynccontextmanager
    async def interruptible(rollout_id: int) -> AsyncIterator[object]:
        loop = asyncio.get_running_loop()
        received: list[asyncio.Task[bool]] = []

        def on_signal() -> None:
            if received:
                write(
                    "tenantctl: leaving now: running tenants finish and record themselves, "
                    f"or `tenantctl reap` settles them; `tenantctl status {rollout_id}` shows where\n"
                )
                os._exit(130)
            write(
                f"tenantctl: interrupted: rollout {rollout_id} starts no more tenants; running ones stop "
                "after their current migration (interrupt again to leave at once)\n"
            )
            reason = f"interrupted by {by}"
            received.append(loop.create_task(runs.stop(store, settings, rollout_id, reason)))

        installed = []
        for sig in SIGNALS:
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or no signals
                pass
        try:
            yield None
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        if received:
            await received[0]
            raise Interrupted(rollout_id)

    return interruptible
