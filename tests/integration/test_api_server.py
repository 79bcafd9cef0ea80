"""``tenantctl serve`` as a real process: a server killed in the middle of a rollout it carries leaves
nothing stuck once it is back, and with a broker the rollouts it starts run on the Celery workers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import FIXTURE_ENVS
from tests.integration.test_api import api_tokens, bearer, rows
from tests.support.harness import Harness, tenant_revision
from tests.support.serve import ServeProcess
from tests.support.workers import WorkerProcess, wait_for

SLOW = FIXTURE_ENVS / "slow" / "alembic.ini"


class Server(ServeProcess):
    """``tenantctl serve`` with the tests' tokens, and a client that calls it as a role."""

    def __init__(self, h: Harness, log: Path, **env: str) -> None:
        super().__init__(h.env(TENANTCTL_API_TOKENS=json.dumps(api_tokens()), **env), h.workdir, log)
        self.http = httpx2.Client(base_url=self.url, timeout=30)
        self.wait_ready()

    def call(self, method: str, path: str, role: str = "viewer", **kwargs: Any) -> Any:
        return self.http.request(method, path, headers=bearer(role), **kwargs)

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        response = self.call("GET", f"/api/v1/rollouts/{rollout_id}")
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        return report

    def closed(self, rollout_id: int, timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            report = self.rollout(rollout_id)
            return report if report["finished_at"] is not None else None

        return wait_for(done, timeout, f"rollout {rollout_id} to close", interval=0.2)  # type: ignore[return-value]

    def kill(self) -> None:
        super().kill()
        self.http.close()

    def stop(self) -> None:
        super().stop()
        self.http.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(h: Harness, **env: str) -> Server:
        started.append(Server(h, tmp_path / f"server-{len(started)}.log", **env))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _active_runs(h: Harness, rollout_id: int) -> int:
    query = "SELECT count(*) FROM tenant_runs WHERE rollout_id = %s AND status IN ('queued', 'running')"
    return int(rows(h, query, rollout_id)[0][0])


def test_a_server_killed_mid_rollout_leaves_nothing_stuck(
    harness: Harness, tenant_dbs: Callable[[int], list[str]], servers: Callable[..., Server]
) -> None:
    h = harness
    h.alembic_ini = SLOW
    h.extra_env = {
        "TENANTCTL_LEASE_SECONDS": "2",
        "TENANTCTL_REAP_INTERVAL": "1",
        "TENANTCTL_POLL_INTERVAL": "0.2",
    }
    urls = tenant_dbs(3)
    for i, url in enumerate(urls):
        h.register(f"t{i}", url)
    first = servers(h, TENANTCTL_TEST_SLOW_SECONDS="4")
    body = {"command": "upgrade", "revision": "head", "parallel": 3}
    started = first.call("POST", "/api/v1/rollouts", "deployer", json=body)
    assert started.status_code == 202, started.text
    rollout_id = started.json()["id"]
    # each unit commits s001, then sleeps inside s002's transaction: the server dies with all three there
    wait_for(lambda: all(tenant_revision(u) == "s001" for u in urls), 60, "every tenant in s002")
    owner = rows(h, "SELECT owner FROM rollouts WHERE id = %s", rollout_id)[0][0]
    assert owner and owner.endswith(f":{first.proc.pid}"), f"the server coordinates it: {owner}"
    first.kill()
    assert _active_runs(h, rollout_id) == 3, "killed mid-migration: three runs left running"

    second = servers(h)  # its reaper settles what the first left, once the leases have expired
    report = second.closed(rollout_id, timeout=90)
    assert _active_runs(h, rollout_id) == 0
    assert report["state"] == "failed", report
    assert [t["status"] for t in report["tenants"]] == ["failed"] * 3, report["tenants"]
    assert {t["error_class"] for t in report["tenants"]} == {"lost"}, report["tenants"]
    assert [tenant_revision(u) for u in urls] == ["s001"] * 3, "s002 rolled back whole"

    retried = second.call("POST", f"/api/v1/rollouts/{rollout_id}/retry", "operator")
    assert retried.status_code == 202, retried.text
    report = second.closed(rollout_id)
    assert report["state"] == "succeeded" and report["counts"]["succeeded"] == 3, report
    assert [tenant_revision(u) for u in urls] == ["s003"] * 3
    assert _active_runs(h, rollout_id) == 0


def test_with_a_broker_an_http_rollout_runs_on_the_celery_workers(
    celery_harness: Harness, tenant_dbs: Callable[[int], list[str]], servers: Callable[..., Server]
) -> None:
    h = celery_harness
    urls = tenant_dbs(2)
    for i, url in enumerate(urls):
        h.register(f"t{i}", url)
    worker: WorkerProcess = h.start_worker(concurrency=2)  # type: ignore[attr-defined]
    server = servers(h)
    started = server.call(
        "POST", "/api/v1/rollouts", "deployer", json={"command": "upgrade", "revision": "head"}
    )
    assert started.status_code == 202, started.text
    report = server.closed(started.json()["id"])
    assert report["state"] == "succeeded" and report["counts"]["succeeded"] == 2, report
    assert report["created_by"] == "deployer-bot"
    carriers = {int(t["worker"].rsplit(":", 1)[1]) for t in report["tenants"]}
    assert server.proc.pid not in carriers
    assert carriers <= {worker.proc.pid, *worker.children()}, (carriers, worker.children())
    assert [tenant_revision(u) for u in urls] == ["0004"] * 2
