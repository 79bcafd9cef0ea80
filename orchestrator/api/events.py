"""Server-sent events of a rollout: its counts and state, and each tenant's transitions, read from the
control DB.

One reader per rollout, however many clients watch it: a :class:`Feed` polls the control DB once per
``poll_interval`` (counts, runs running now, runs finished since its last read; all indexed and bounded
by what changed, not by the rollout's size) and hands each change to every subscriber's queue. Fifty
dashboards on one rollout cost the control DB what one does. A subscriber first gets a snapshot of
every tenant, then only changes; ``end`` is sent once the rollout is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from ..controldb.store import Store
from ..exceptions import ControlDBError
from ..models import RunStatus, TenantRun
from ..settings import Settings

log = logging.getLogger("tenantctl.api.events")
KEEPALIVE_S = 15.0
Event = tuple[str, Any]


def encode(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def _row(r: TenantRun) -> list[Any]:
    """A tenant's state, compact (a 10,000-tenant snapshot stays small): id, status, attempt, error
    class, error message."""
    return [
        r.tenant_id,
        r.status.value,
        r.attempt,
        r.error_class.value if r.error_class else None,
        r.error_message,
    ]


class Feed:
    """The one reader of a rollout's changes, shared by its subscribers."""

    def __init__(self, store: Store, settings: Settings, rollout_id: int) -> None:
        self.store, self.settings, self.rollout_id = store, settings, rollout_id
        self.subscribers: set[asyncio.Queue[Event]] = set()
        self.tenants: dict[str, list[Any]] = {}
        self.counts: dict[str, int] = {}
        self.state = ""
        self.ended = False
        self.task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        rollout = await self.store.get_rollout(self.rollout_id)
        self.since = rollout.created_at - timedelta(seconds=1)
        self.tenants = {r.tenant_id: _row(r) for r in await self.store.rollout_runs(self.rollout_id)}
        self.counts = self._count()
        self.state = rollout.state.value
        self.ended = rollout.state.value != "running" and not self._active()

    def _count(self) -> dict[str, int]:
        counts = {s.value: 0 for s in RunStatus}
        for row in self.tenants.values():
            counts[row[1]] += 1
        return counts

    def _active(self) -> bool:
        return any(row[1] in ("queued", "running") for row in self.tenants.values())

    def snapshot(self) -> list[Event]:
        head = {"state": self.state, "counts": self.counts}
        return [("snapshot", head | {"tenants": list(self.tenants.values())})] + (
            [("end", head)] if self.ended else []
        )

    async def poll(self) -> list[Event]:
        """What changed since the last read: running runs, runs finished since, the rollout's state."""
        rollout = await self.store.get_rollout(self.rollout_id)
        changed: list[list[Any]] = []
        fresh = await self.store.running_runs(self.rollout_id)
        fresh += await self.store.runs_finished_since(self.rollout_id, self.since)
        for r in fresh:
            row = _row(r)
            old = self.tenants.get(r.tenant_id)
            if old is None or (row[2] >= old[2] and row != old):  # never an older attempt over a newer
                self.tenants[r.tenant_id] = row
                changed.append(row)
            if r.finished_at is not None:  # workers' clocks may differ a little: look back, dedupe by state
                self.since = max(self.since, r.finished_at - timedelta(seconds=5))
        if rollout.state.value != self.state and rollout.state.value != "running":
            # a halt or cancel puts queued runs at rest without running them: reread the latest rows once
            for r in await self.store.rollout_runs(self.rollout_id):
                row = _row(r)
                if self.tenants.get(r.tenant_id) != row:
                    self.tenants[r.tenant_id] = row
                    changed.append(row)
        events: list[Event] = []
        if changed:
            events.append(("tenants", changed))
        counts = self._count()
        if counts != self.counts or rollout.state.value != self.state:
            self.counts, self.state = counts, rollout.state.value
            events.append(("counts", {"state": self.state, "counts": self.counts}))
        if rollout.state.value != "running" and not self._active():
            self.ended = True
            events.append(("end", {"state": self.state, "counts": self.counts}))
        return events

    async def run(self) -> None:
        """Poll while anyone listens and the rollout is not over."""
        while self.subscribers and not self.ended:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                events = await self.poll()
            except ControlDBError as exc:
                log.warning("rollout %s: events paused: %s", self.rollout_id, exc.message)
                continue
            for queue in list(self.subscribers):
                for event in events:
                    queue.put_nowait(event)


class Feeds:
    """The feeds of the rollouts being watched, made on the first subscriber, dropped after the last."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.feeds: dict[int, Feed] = {}
        self._lock = asyncio.Lock()
        self.closing = asyncio.Event()

    async def subscribe(self, rollout_id: int) -> AsyncIterator[str]:
        """SSE text for one client: the snapshot, then changes, then ``end``; a comment every
        ``KEEPALIVE_S`` seconds keeps proxies from closing a quiet stream."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        async with self._lock:
            feed = self.feeds.get(rollout_id)
            if feed is None:
                feed = Feed(self.store, self.settings, rollout_id)
                await feed.load()
                self.feeds[rollout_id] = feed
            feed.subscribers.add(queue)
            for event in feed.snapshot():
                queue.put_nowait(event)
            if feed.task is None or feed.task.done():
                feed.task = asyncio.create_task(feed.run())
        return self._stream(feed, queue)

    async def _stream(self, feed: Feed, queue: asyncio.Queue[Event]) -> AsyncIterator[str]:
        try:
            while not self.closing.is_set():
                try:
                    name, data = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                yield encode(name, data)
                if name == "end":
                    return
        finally:
            feed.subscribers.discard(queue)
            if not feed.subscribers:
                self.feeds.pop(feed.rollout_id, None)
                if feed.task is not None:
                    feed.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await feed.task
