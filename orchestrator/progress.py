"""What the verbs need of an executor and of whoever watches a rollout: small protocols, no I/O."""

from __future__ import annotations

from typing import Protocol

from .controldb.store import Store
from .models import RunStatus


class Observer(Protocol):
    """Progress of a rollout, for a progress bar or a log."""

    def planned(
        self, rollout_id: int, total: int, done: int, skipped: int, failures: list[tuple[str, str]]
    ) -> None: ...
    def finished(self, tenant_id: str, status: RunStatus, error: str | None) -> None: ...


class Silent:
    def planned(
        self, rollout_id: int, total: int, done: int, skipped: int, failures: list[tuple[str, str]]
    ) -> None:
        pass

    def finished(self, tenant_id: str, status: RunStatus, error: str | None) -> None:
        pass


class Executor(Protocol):
    """Carries a rollout's queued runs until none is left. ``owner``: the coordinator that must stay
    alive for the rollout to go on (the in-process pool), recorded with a lease so that the reaper can
    halt the rollout when it dies; None when workers carry it (Celery)."""

    owner: str | None
    detached: bool
    """True when the rollout goes on after the verb returns (workers, or a server's own pool): ``start``
    may be used instead of ``execute`` (``--no-wait``, a rollout started over HTTP)."""

    def ready(self) -> None:
        """Raise a TenantctlError if the executor cannot carry anything now (a broker that does not
        answer), before the verb records anything."""

    async def execute(self, store: Store, rollout_id: int, observer: Observer) -> None:
        """Run (or dispatch and follow) every queued run of the rollout until none is left."""

    async def start(self, store: Store, rollout_id: int) -> None:
        """Set the rollout going and return at once (only when ``detached``)."""
