"""Per-tenant mutual exclusion, so two runners never migrate one tenant at once.

PostgreSQL: a session advisory lock, taken with ``pg_try_advisory_lock`` in a loop until a deadline (the
blocking form would hang a worker forever behind a stuck peer). SQLite: an exclusive ``flock`` on a file
next to the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .exceptions import TenantLockTimeout


def lock_key(database: str, schema: str | None, version_table: str) -> int:
    """A stable signed 64-bit key for (database, schema, version table).

    Derived with BLAKE2b, never Python's ``hash()`` (salted per process), so every runner on every machine
    computes the same key. Advisory locks are per database already; the host is left out on purpose, so
    two spellings of one server (localhost, 127.0.0.1) still exclude each other.
    """
    digest = hashlib.blake2b(
        f"tenantctl\0{database}\0{schema or ''}\0{version_table}".encode(), digest_size=8
    )
    return int.from_bytes(digest.digest(), "big", signed=True)


def _backoff(deadline: float, delay: float) -> float:
    time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
    return min(delay * 2, 0.5)


@contextmanager
def pg_lock(conn: Connection, tenant: str, key: int, wait_s: float) -> Iterator[None]:
    deadline = time.monotonic() + wait_s
    delay = 0.02
    while True:
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.commit()
        if got:
            break
        if time.monotonic() >= deadline:
            raise TenantLockTimeout(
                tenant, f"another runner held tenant {tenant}'s migration lock for {wait_s:g}s"
            )
        delay = _backoff(deadline, delay)
    try:
        yield
    finally:
        if not conn.invalidated:  # an invalidated session is gone, and its lock with it
            if conn.in_transaction():
                conn.rollback()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


@contextmanager
def file_lock(path: str, tenant: str, wait_s: float) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        delay = 0.02
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TenantLockTimeout(
                        tenant, f"another runner held tenant {tenant}'s migration lock for {wait_s:g}s"
                    ) from None
                delay = _backoff(deadline, delay)
        yield
    finally:
        os.close(fd)
