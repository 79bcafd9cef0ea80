"""Every SQL statement against the control database, as named methods of one facade.

Split by concern, each module with one reason to change: ``engine`` (connections, transactions, driver
errors translated into ours), ``tenants``, ``runs`` (rollouts and their tenant runs), ``audits`` and
``metrics`` (the bounded reads behind ``/metrics``).
"""

from __future__ import annotations

from .audits import AuditStore
from .engine import MIGRATIONS, VERSION_TABLE, ImportCounts, async_url, utcnow
from .metrics import MetricsStore
from .prune import PruneStore
from .runs import DISPATCH_LOCK, KNOWN_RUNS, TERMINAL, RunStore
from .service import Seen, ServiceStore
from .tenants import TenantStore

__all__ = [
    "DISPATCH_LOCK",
    "KNOWN_RUNS",
    "MIGRATIONS",
    "TERMINAL",
    "VERSION_TABLE",
    "ImportCounts",
    "Seen",
    "Store",
    "async_url",
    "utcnow",
]


class Store(TenantStore, ServiceStore, RunStore, AuditStore, MetricsStore, PruneStore):
    """The control database. Use as ``async with Store(url) as store``."""
