"""The Celery executor: the coordinator's side of distributed execution. It dispatches a rollout's runs
under the caps and follows progress from the control DB (never from Celery results), re-dispatching and
reaping as it goes, so a rollout finishes even through a broker restart."""

from __future__ import annotations

from collections.abc import Mapping

from celery import Celery

from orchestrator import runs
from orchestrator.controldb.store import Store
from orchestrator.exceptions import BrokerUnavailable
from orchestrator.executors import Ticker
from orchestrator.progress import Observer
from orchestrator.secrets import mask_text
from orchestrator.settings import Settings

from .app import make_app
from .tasks import sender


class CeleryExecutor:
    owner: str | None = None  # workers carry the rollout: it needs no living coordinator
    detached = True

    def __init__(self, settings: Settings, environ: Mapping[str, str], app: Celery | None = None) -> None:
        self.settings = settings
        self.environ = environ
        self.app = app or make_app(settings)
        self.send = sender(self.app, settings)

    def ready(self) -> None:
        """The broker answers within the connect timeout, or BrokerUnavailable (one line) before the
        rollout is recorded: a rollout whose messages cannot be sent would only wait."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=self.settings.connect_timeout)
        except Exception as exc:  # kombu and redis raise many kinds; all mean "not reachable now"
            where = mask_text(self.settings.broker_url.get_secret_value() if self.settings.broker_url else "")
            raise BrokerUnavailable(f"broker {where} does not answer: {mask_text(str(exc))}") from exc

    async def start(self, store: Store, rollout_id: int) -> None:
        """Dispatch what the caps allow and return; workers dispatch the rest as they finish (--no-wait)."""
        await runs.dispatch_more(store, self.settings, rollout_id, self.send)

    async def execute(self, store: Store, rollout_id: int, observer: Observer) -> None:
        """Dispatch, then follow from the control DB; the workers send the rest as they finish."""
        ticker = Ticker(store, self.settings, self.environ, rollout_id, self.send, resend=self.send)
        await ticker.follow(observer)
