"""The control plane's Prometheus metrics, as the API serves them at ``/metrics``.

A scrape reads a cached snapshot: the control DB's figures (``controldb.metrics``: bounded, index-backed
reads, whatever the history's length) and the broker's queue depth, taken at most once every
``TENANTCTL_METRICS_CACHE_SECONDS``; scrapes that arrive during a refresh wait for it and share it. Labels
are states, statuses and error classes only, never a tenant id or a URL. A control DB that does not
answer fails the scrape (ControlDBError: the target shows as down); a broker that does not answer only
drops the queue gauge, with a warning.

The worker processes' own counters (units carried, their durations) are served by each worker:
``workers/metrics.py`` (``tenantctl worker --metrics-port``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .audit import State
from .controldb.metrics import ControlFigures
from .controldb.store import Store
from .models import ErrorClass, RolloutState, RunStatus
from .secrets import mask_text
from .settings import Settings

CONTENT_TYPE = CONTENT_TYPE_LATEST
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Seconds; a tenant's migration takes from a tenth of a second (nothing to do) to an hour (a backfill)."""
BROKER_TIMEOUT = 2.0
"""At most this long to ask the broker, so a scrape answers well within Prometheus's 10 s timeout."""

log = logging.getLogger("tenantctl.metrics")


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """What one scrape reports: the control DB's figures, the queue depth (None: no Redis broker, or it
    did not answer) and how long reading them took."""

    figures: ControlFigures
    queue_depth: int | None
    refresh_seconds: float


class ControlMetrics:
    """The control plane's metrics; one per process (the API's), kept for its lifetime: it holds the cache."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = asyncio.Lock()
        self._snapshot: Snapshot | None = None
        self._taken = -math.inf
        self._broker_answered = True

    async def render(self, store: Store) -> bytes:
        """The Prometheus text exposition (``CONTENT_TYPE``) of the current snapshot."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(await self.snapshot(store)))
        return generate_latest(registry)

    async def snapshot(self, store: Store) -> Snapshot:
        """The cached snapshot, refreshed when older than ``metrics_cache_seconds``."""
        if (cached := self._fresh()) is not None:
            return cached
        async with self._lock:  # concurrent scrapes: the first refreshes, the others reuse its snapshot
            if (cached := self._fresh()) is not None:
                return cached
            started = time.perf_counter()
            figures = await store.control_figures(
                lease_s=self.settings.lease_seconds, bounds_s=DURATION_BUCKETS
            )
            depth = await self._queue_depth()
            self._snapshot = Snapshot(
                figures=figures, queue_depth=depth, refresh_seconds=time.perf_counter() - started
            )
            self._taken = self._clock()
            return self._snapshot

    def _fresh(self) -> Snapshot | None:
        if self._snapshot is not None and self._clock() - self._taken < self.settings.metrics_cache_seconds:
            return self._snapshot
        return None

    async def _queue_depth(self) -> int | None:
        """Messages waiting in the Celery queue (``LLEN``), for a Redis broker; None otherwise. A broker
        that does not answer is one warning until it answers again, never a failed scrape."""
        url = self.settings.broker_url.get_secret_value() if self.settings.broker_url else None
        if url is None or urlsplit(url).scheme not in ("redis", "rediss"):
            return None
        try:
            depth = await asyncio.wait_for(_llen(url, self.settings.queue), BROKER_TIMEOUT)
        except Exception as exc:  # redis-py, sockets and the timeout raise many kinds; all mean "no answer"
            if self._broker_answered:
                log.warning("metrics: broker %s does not answer: %s", mask_text(url), mask_text(str(exc)))
            self._broker_answered = False
            return None
        self._broker_answered = True
        return depth


async def _llen(url: str, queue: str) -> int:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = Redis.from_url(
        url,
        socket_connect_timeout=BROKER_TIMEOUT,
        socket_timeout=BROKER_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return int(await client.llen(queue))
    finally:
        await client.aclose()


class _Families(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        return families(self.snapshot)


def families(snapshot: Snapshot) -> Iterator[Metric]:
    """The metric families of a snapshot. Every known state and status is reported, zero included, so a
    query never has to tell a zero from a missing series."""
    f = snapshot.figures
    rollouts = GaugeMetricFamily("tenantctl_rollouts", "Rollouts by state, all time.", labels=["state"])
    for state in RolloutState:
        rollouts.add_metric([state.value], f.rollouts.get(state.value, 0))
    yield rollouts

    tenants = GaugeMetricFamily("tenantctl_tenants", "Registered tenants.", labels=["enabled"])
    for enabled in (True, False):
        tenants.add_metric([str(enabled).lower()], f.tenants.get(enabled, 0))
    yield tenants

    yield GaugeMetricFamily(
        "tenantctl_current_rollouts",
        "Rollouts the tenant-run figures cover: those not closed yet, and the newest.",
        value=len(f.current),
    )
    runs = GaugeMetricFamily(
        "tenantctl_tenant_runs",
        "Tenants of the current rollouts by the status and error class of their latest attempt.",
        labels=["status", "error_class"],
    )
    for key, n in sorted({**_zero_runs(), **f.runs}.items()):
        runs.add_metric(list(key), n)
    yield runs

    d = f.durations
    yield HistogramMetricFamily(
        "tenantctl_migration_duration_seconds",
        "Finished attempts (succeeded or failed) of the current rollouts by duration.",
        buckets=[*((_le(b), c) for b, c in zip(d.bounds_s, d.cumulative, strict=True)), ("+Inf", d.count)],
        sum_value=d.sum_s,
    )
    yield from _audit(f)
    if snapshot.queue_depth is not None:
        yield GaugeMetricFamily(
            "tenantctl_queue_messages", "Messages waiting in the Celery queue.", value=snapshot.queue_depth
        )
    yield GaugeMetricFamily(
        "tenantctl_worker_processes",
        "Processes (host:pid) that held a live lease or finished a run within the lease period.",
        value=len(f.workers),
    )
    yield GaugeMetricFamily(
        "tenantctl_worker_hosts",
        "Hosts of those processes.",
        value=len({w.rsplit(":", 1)[0] for w in f.workers}),
    )
    yield GaugeMetricFamily(
        "tenantctl_metrics_refresh_seconds",
        "How long reading these figures took (control DB and broker).",
        value=snapshot.refresh_seconds,
    )


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client's own histograms write it (``1.0``, ``2.5``)."""
    return repr(float(bound))


def _zero_runs() -> dict[tuple[str, str], int]:
    zeros = {(s.value, ""): 0 for s in RunStatus if s is not RunStatus.FAILED}
    zeros.update({(RunStatus.FAILED.value, c.value): 0 for c in ErrorClass})
    return zeros


def _audit(f: ControlFigures) -> Iterator[Metric]:
    if f.audit is None:
        return
    tenants = GaugeMetricFamily(
        "tenantctl_audit_tenants", "Tenants of the newest drift audit by state.", labels=["state"]
    )
    for state, n in sorted({**{s.value: 0 for s in State}, **f.audit.states}.items()):
        tenants.add_metric([state], n)
    yield tenants
    yield GaugeMetricFamily(
        "tenantctl_audit_drift_tenants", "Tenants the newest audit found drifted.", value=f.audit.drift
    )
    yield GaugeMetricFamily(
        "tenantctl_audit_timestamp_seconds",
        "When the newest audit ran (Unix time).",
        value=f.audit.created_at.timestamp(),
    )
