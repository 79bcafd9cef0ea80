"""Which queued runs to send to the workers now: a pure function of what is in flight.

Two caps hold at once: the rollout's ``parallel`` (its runs in flight) and ``per_host`` (migrations in
flight on one database server, across every rollout: many tenants share one PostgreSQL host).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


@dataclass(frozen=True, kw_only=True)
class Dispatch:
    """One task message: ids only, never a URL or a password."""

    rollout_id: int
    run_id: int
    tenant_id: str
    attempt: int
    db_host: str = ""


@functools.lru_cache(maxsize=16384)
def db_host(url: str) -> str:
    """The server a tenant lives on, for the per-host cap: ``host:port``, or the file for SQLite.
    Cached: schema tenants share their URL, and parsing one costs 30 µs (10,000 tenants: 0.3 s)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return ""
    if parsed.get_backend_name() == "sqlite":
        return "sqlite"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def choose(
    candidates: Sequence[Dispatch], *, room: int, inflight_by_host: Mapping[str, int], per_host: int
) -> list[Dispatch]:
    """Up to ``room`` candidates, in order, skipping hosts already at ``per_host`` (0 = no cap)."""
    load = dict(inflight_by_host)
    chosen: list[Dispatch] = []
    for item in candidates:
        if len(chosen) >= room:
            break
        if per_host and load.get(item.db_host, 0) >= per_host:
            continue
        load[item.db_host] = load.get(item.db_host, 0) + 1
        chosen.append(item)
    return chosen
