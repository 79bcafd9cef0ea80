"""A Celery worker's own Prometheus metrics (``tenantctl worker --metrics-port N``): the units its pool
processes carried, by command, status and error class, and how long they took.

The units run in prefork children, so prometheus-client's multiprocess mode: each child writes its
counters to files under ``PROMETHEUS_MULTIPROC_DIR`` and the worker's main process serves their sum.
That directory must be chosen before prometheus-client makes its first value and before the children
are forked, so :func:`serving` runs first in the ``worker`` command. The metric objects are made on the
first unit a child records, so importing this module costs nothing and commits to no mode.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from orchestrator.exceptions import ConfigurationError
from orchestrator.models import UnitJob, UnitResult

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import Counter, Histogram

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("tenantctl.worker")
_metrics: tuple[Counter, Histogram] | None = None


def enabled() -> bool:
    """Whether this process records: it was started in multiprocess mode (by :func:`serving`, or by a
    user who runs ``celery worker`` with their own exporter)."""
    return MULTIPROC_DIR in os.environ


def record(job: UnitJob, result: UnitResult) -> None:
    """Count one carried unit (``lifecycle.carry``'s hook): a few microseconds, an mmap'd file write."""
    global _metrics
    if _metrics is None:
        from prometheus_client import Counter, Histogram

        from orchestrator.metrics import DURATION_BUCKETS  # the control plane's histogram's, to compare

        _metrics = (
            Counter(
                "tenantctl_worker_units",
                "Units of work carried by this worker's processes.",
                ["command", "status", "error_class"],
                registry=None,
            ),
            Histogram(
                "tenantctl_worker_unit_duration_seconds",
                "How long the units carried by this worker's processes took.",
                ["command"],
                buckets=DURATION_BUCKETS,
                registry=None,
            ),
        )
    units, durations = _metrics
    error_class = result.error_class.value if result.error_class else ""
    try:
        units.labels(job.command.value, result.status.value, error_class).inc()
        durations.labels(job.command.value).observe(result.duration_ms / 1000)
    except OSError as exc:  # the metrics directory is full or gone: the migration's record matters more
        log.warning("worker metrics not recorded: %s", exc)


@contextmanager
def serving(port: int, host: str) -> Iterator[None]:
    """Multiprocess mode and an HTTP server of the children's summed metrics on ``host:port``, in this
    (the worker's main) process, for as long as the block runs.

    ``PROMETHEUS_MULTIPROC_DIR`` as the user set it (it should be empty at start: nothing here deletes
    files from a directory of theirs), else a fresh temporary directory, removed at the end."""
    made = None
    if MULTIPROC_DIR not in os.environ:
        made = tempfile.mkdtemp(prefix="tenantctl-metrics-")
        os.environ[MULTIPROC_DIR] = made
    try:
        server = _start(port, host)
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def _start(port: int, host: str) -> WSGIServer:
    from celery import signals
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server, values

    if values.ValueClass is values.MutexValue:  # imported before the directory was set: choose again
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve worker metrics on {host}:{port}: {exc.strerror or exc}"
        ) from None
    signals.worker_process_shutdown.connect(_process_ended, weak=False, dispatch_uid="tenantctl-metrics")
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return server


def _process_ended(pid: int | None = None, **_: object) -> None:
    """A pool child is exiting: its live gauges, if any, are no longer summed (counters stay)."""
    from prometheus_client import multiprocess

    if pid is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
