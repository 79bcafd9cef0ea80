"""The Celery app, configured from tenantctl's settings.

Choices made for long migrations, and why:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only when its task ends,
  so a worker that dies mid-task does not lose it; the redelivered copy finds the run claimed (a CAS in
  the control DB) and does nothing, and the reaper settles the run from the tenant's real revision.
- ``worker_prefetch_multiplier = 1``: a worker reserves one migration at a time, so a slow tenant never
  holds others hostage in its prefetch buffer.
- A dedicated queue (``TENANTCTL_QUEUE``): migration workers are not shared with other apps' tasks.
- Soft and hard time limits from settings; the broker's ``visibility_timeout`` well above the hard limit,
  so Redis never redelivers a task that is still running (which would start a second migration).
- JSON only, and messages carry ids (rollout, run, attempt): never a URL or a password.
- No result backend: the control database is the truth.
"""

from __future__ import annotations

import logging

from celery import Celery, signals
from celery.schedules import crontab

from orchestrator import logs
from orchestrator.exceptions import ConfigurationError
from orchestrator.settings import Settings

MIGRATE = "tenantctl.migrate"
REAP = "tenantctl.reap"
SYNC = "tenantctl.sync_tenants"


def cron(expression: str, setting: str = "TENANTCTL_AUDIT_CRON") -> crontab:
    """A cron setting (minute hour day-of-month month day-of-week) as a Celery crontab."""
    fields = expression.split()
    if len(fields) != 5:
        raise ConfigurationError(f"invalid {setting} {expression!r}: want 5 fields, e.g. '0 3 * * *'")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"invalid {setting} {expression!r}: {exc}") from None


def make_app(settings: Settings) -> Celery:
    if settings.broker_url is None:
        raise ConfigurationError("TENANTCTL_BROKER_URL is not set: Celery workers need a broker (redis://…)")
    app = Celery("tenantctl", broker=settings.broker_url.get_secret_value(), set_as_current=False)
    hard = settings.task_time_limit
    schedule: dict[str, dict[str, object]] = {
        "tenantctl-reap": {"task": REAP, "schedule": settings.reap_interval, "options": {"expires": 60}},
        "tenantctl-nightly-audit": {"task": "tenantctl.nightly_audit", "schedule": cron(settings.audit_cron)},
    }
    if settings.sync_cron:  # the registry follows the customer base (unset: no scheduled sync)
        schedule["tenantctl-sync"] = {
            "task": SYNC,
            "schedule": cron(settings.sync_cron, "TENANTCTL_SYNC_CRON"),
        }
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_default_exchange=settings.queue,
        task_default_routing_key=settings.queue,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=hard,
        broker_transport_options={"visibility_timeout": int(hard * 2 + 600)},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        enable_utc=True,
        beat_schedule=schedule,
    )
    from . import tasks

    tasks.register(app, settings)
    _logging(settings)
    return app


def _logging(settings: Settings) -> None:
    """How a worker or beat logs, hooked into Celery's logging setup (in the main process; the pool
    children are forked from it and inherit it). JSON: ``logs.configure`` instead of Celery's setup (a
    ``setup_logging`` receiver makes Celery leave logging alone: no handler, no stdout redirection).
    Text: Celery's usual lines, with our filters (passwords scrubbed) on its handlers."""
    if settings.log_format == "json":

        def setup(**_: object) -> None:
            logs.configure(settings)

        signals.setup_logging.connect(setup, weak=False, dispatch_uid="tenantctl-logs")
        return

    def scrub(logger: logging.Logger, **_: object) -> None:
        for handler in logger.handlers:
            logs.add_filters(handler)

    signals.after_setup_logger.connect(scrub, weak=False, dispatch_uid="tenantctl-logs")
    signals.after_setup_task_logger.connect(scrub, weak=False, dispatch_uid="tenantctl-task-logs")
