"""Fixtures shared by every test folder.

A developer's ``TENANTCTL_*`` variables are cleared first, so they cannot change a result. Databases are
created per test with unique names (``tctl_…``) and dropped after; nothing else on the servers is touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

for _name in [n for n in os.environ if n.startswith("TENANTCTL_") and not n.startswith("TENANTCTL_TEST_")]:
    del os.environ[_name]

from tests.support.servers import postgres_url  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_INI = ROOT / "migrations" / "alembic.ini"
FIXTURE_ENVS = ROOT / "tests" / "fixtures" / "envs"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """Base URL of the PostgreSQL server, without a database: ``postgresql://postgres@host:port``."""
    return postgres_url()


def _admin(server: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(f"{server}/postgres", autocommit=True)


class DatabaseFactory:
    """Creates uniquely named databases (optionally cloned from a template) and drops them all."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.created: list[str] = []

    def create(self, template: str | None = None, prefix: str = "tctl") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        with _admin(self.server) as conn:
            conn.execute(query)
        self.created.append(name)
        return name

    def url(self, name: str, driver: str = "postgresql") -> str:
        return f"{self.server.replace('postgresql://', driver + '://', 1)}/{name}"

    def drop_all(self) -> None:
        with _admin(self.server) as conn:
            for name in reversed(self.created):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.created.clear()


@pytest.fixture(scope="session")
def session_dbs(pg_server: str) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_server)
    yield factory
    factory.drop_all()


@pytest.fixture
def dbs(pg_server: str) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_server)
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def control_template(session_dbs: DatabaseFactory) -> str:
    """A control database migrated once; each test clones it."""
    import asyncio

    from orchestrator.controldb.store import Store

    name = session_dbs.create(prefix="tctl_ctltpl")

    async def migrate() -> None:
        async with Store(session_dbs.url(name)) as store:
            await store.migrate()

    asyncio.run(migrate())
    return name


@pytest.fixture
def control_url(dbs: DatabaseFactory, control_template: str) -> str:
    """A fresh, migrated PostgreSQL control database for this test."""
    return dbs.url(dbs.create(template=control_template), driver="postgresql+asyncpg")


@pytest.fixture
def tenant_dbs(dbs: DatabaseFactory) -> Callable[[int], list[str]]:
    """``tenant_dbs(n)``: n empty tenant databases, as plain postgresql:// URLs."""

    def make(n: int) -> list[str]:
        return [dbs.url(dbs.create(prefix="tctl_tenant")) for _ in range(n)]

    return make


@pytest.fixture
def harness(control_url: str, tmp_path: Path) -> object:
    from tests.support.harness import Harness

    return Harness(control_url, MIGRATIONS_INI, tmp_path)


@pytest.fixture(scope="session")
def redis_server() -> str:
    from tests.support.servers import redis_url

    return redis_url()


REDIS_TEST_DB = 13  # a numbered database of its own; only this test's keys are created and deleted


@pytest.fixture
def celery_harness(harness: object, redis_server: str, tmp_path: Path) -> Iterator[object]:
    """The harness with a broker and a queue of its own; workers it starts are stopped after the test."""
    import redis

    from tests.support.workers import WorkerProcess

    queue = f"tctl-test-{uuid.uuid4().hex[:10]}"
    broker = f"{redis_server}/{REDIS_TEST_DB}"
    h = harness
    h.extra_env = {  # type: ignore[attr-defined]
        "TENANTCTL_BROKER_URL": broker,
        "TENANTCTL_QUEUE": queue,
        "TENANTCTL_LEASE_SECONDS": "3",
        "TENANTCTL_POLL_INTERVAL": "0.2",
        "TENANTCTL_REAP_INTERVAL": "1",
        "TENANTCTL_REDISPATCH_AFTER": "4",
    }
    workers: list[WorkerProcess] = []

    def start_worker(concurrency: int = 2, **env: str) -> WorkerProcess:
        w = WorkerProcess(h.env(**env), tmp_path / f"worker-{len(workers)}.log", concurrency, cwd=tmp_path)  # type: ignore[attr-defined]
        workers.append(w)
        w.wait_ready()
        return w

    h.start_worker = start_worker  # type: ignore[attr-defined]
    h.broker = broker  # type: ignore[attr-defined]
    h.queue = queue  # type: ignore[attr-defined]
    yield h
    for w in workers:
        w.stop()
    client = redis.Redis.from_url(broker)
    ours = [*client.keys(f"_kombu.binding.{queue}*"), *client.keys(f"_kombu.binding_permanent.{queue}*")]
    client.delete(queue, *ours)
    client.close()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP endpoint recording the JSON bodies POSTed to it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()
