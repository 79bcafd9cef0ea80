"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real ``tenantctl
serve`` process on a PostgreSQL control DB, with rollouts that really migrate tenant databases.

Screenshots go to ``$TENANTCTL_TEST_ARTIFACTS/dashboard/`` (default ``<repo>/test-artifacts/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import FIXTURE_ENVS, ROOT
from tests.support.harness import Harness
from tests.support.serve import CHROMIUM, CHROMIUM_ARGS, ServeProcess

ROLES = ("viewer", "operator", "deployer")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)


def artifacts() -> Path:
    where = Path(os.environ.get("TENANTCTL_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "dashboard"
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def tokens() -> dict[str, str]:
    return {role: secrets.token_urlsafe(18) for role in ROLES}


@pytest.fixture
def serve(harness: Harness, tokens: dict[str, str]) -> Iterator[Callable[..., ServeProcess]]:
    """``serve(**env)`` starts the server with the harness as the test has set it up (its Alembic
    scripts), and these variables."""
    configured = [
        {"name": f"{role}-1", "role": role, "sha256": hashlib.sha256(t.encode()).hexdigest()}
        for role, t in tokens.items()
    ]
    started: list[ServeProcess] = []

    def start(**extra: str) -> ServeProcess:
        env = harness.env(
            TENANTCTL_API_TOKENS=json.dumps(configured),
            TENANTCTL_POLL_INTERVAL="0.2",
            TENANTCTL_PARALLELISM="3",
            **extra,
        )
        started.append(ServeProcess(env, harness.workdir, harness.workdir / f"serve-{len(started)}.log"))
        started[-1].wait_ready()
        return started[-1]

    yield start
    for srv in started:
        srv.stop()
        print(f"server log: {srv.log}\n{srv.log.read_text()[-4000:]}")


def _shoot(page: Any, name: str) -> Path:
    path = artifacts() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _login(browser: Any, base: str, token: str) -> tuple[Any, Any]:
    context = browser.new_context(base_url=base, viewport={"width": 1100, "height": 800})
    context.set_default_timeout(20_000)
    page = context.new_page()
    context.on("console", lambda m: print(f"browser console: {m.type}: {m.text}"))
    context.on("weberror", lambda e: print(f"browser error: {e.error}"))
    page.goto("/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    return context, page


SETTLED = """([state, counts]) => window.tenantctlGrid && tenantctlGrid.count() > 0
    && tenantctlGrid.state() === state && document.getElementById("state").textContent === state
    && Object.entries(counts).every(([s, n]) => tenantctlGrid.counts()[s] === n
        && document.querySelector(`#counts [data-status=${s}]`).textContent === String(n))"""


def _settled(page: Any, state: str, **counts: int) -> None:
    """Wait until the page has drawn the rollout in this state with these counts (the stream's
    ``tenants`` come before its ``counts``, so the grid is final too)."""
    page.wait_for_function(SETTLED, arg=[state, counts])


def _finished(page: Any, rollout_id: int, state: str, **counts: int) -> None:
    page.goto(f"/rollouts/{rollout_id}")
    _settled(page, state, **counts)


def _count(page: Any, status: str) -> str:
    text: str = page.locator(f"#counts [data-status={status}]").inner_text()
    return text


@pytest.mark.timeout(120)
def test_watch_a_rollout_open_the_failure_and_retry_it_from_the_browser(
    harness: Harness,
    tenant_dbs: Callable[[int], list[str]],
    serve: Callable[..., ServeProcess],
    tokens: dict[str, str],
) -> None:
    from playwright.sync_api import sync_playwright

    harness.alembic_ini = FIXTURE_ENVS / "failing" / "alembic.ini"
    urls = dict(zip(["h0", "h1", "h2", "c0", "c1", "c2"], tenant_dbs(6), strict=True))
    for tenant_id, url in urls.items():
        harness.register(tenant_id, url, tags=("http" if tenant_id[0] == "h" else "cli",))
    for poisoned in ("h1", "c1"):
        with psycopg.connect(urls[poisoned], autocommit=True) as conn:
            conn.execute("CREATE TABLE poison (id int)")
    cli = harness.cli("upgrade", "head", "--tag", "cli", "--json")
    assert cli.returncode == 1, cli.stderr
    cli_id = json.loads(cli.stdout)["id"]
    server = serve()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        api = pw.request.new_context(
            base_url=server.url, extra_http_headers={"Authorization": f"Bearer {tokens['deployer']}"}
        )
        try:
            # a viewer, not logged in, is sent to the login page; a wrong token is refused there
            anon = browser.new_context(base_url=server.url)
            page = anon.new_page()
            page.goto("/")
            assert page.url.startswith(f"{server.url}/login")
            page.fill("input[name=token]", "not-a-token")
            with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as r:
                page.click("button[type=submit]")
            assert r.value.status == 401
            assert page.locator("#login-error").inner_text() == "Unknown token."
            anon.close()

            # an operator watches a rollout a deployer started over the API
            ctx, page = _login(browser, server.url, tokens["operator"])
            started = api.post(
                "/api/v1/rollouts", data={"command": "upgrade", "revision": "head", "tags": ["http"]}
            )
            assert started.status == 202, started.text()
            rollout_id = started.json()["id"]
            page.goto(f"/rollouts/{rollout_id}")
            page.evaluate("window.__notReloaded = true")
            _settled(page, "failed", succeeded=2, failed=1)
            assert page.locator("#grid").get_attribute("data-done") == "3"
            grid = page.evaluate("tenantctlGrid.snapshot()")
            assert grid == {"h0": "succeeded", "h1": "failed", "h2": "succeeded"}
            assert (_count(page, "succeeded"), _count(page, "failed")) == ("2", "1")
            assert page.evaluate("window.__notReloaded") is True, "the page reloaded"
            failure = page.locator("#failures tr[data-tenant=h1]")
            assert "migration_error" in failure.inner_text() and "poisoned tenant" in failure.inner_text()
            assert page.locator("#retry").is_enabled() and page.locator("#cancel").is_disabled()
            _shoot(page, "rollout-failed")

            # a rollout the CLI ran over equivalent tenants reads the same
            other = ctx.new_page()
            _finished(other, cli_id, "failed", succeeded=2, failed=1)
            cli_grid = other.evaluate("tenantctlGrid.snapshot()")
            assert {k.replace("c", "h", 1): v for k, v in cli_grid.items()} == grid
            assert other.evaluate("tenantctlGrid.counts()") == page.evaluate("tenantctlGrid.counts()")
            assert other.locator("#counts").inner_text() == page.locator("#counts").inner_text()
            _shoot(other, "rollout-from-cli")

            # its failed tenant, opened from its square on the grid, says why
            _finished(other, rollout_id, "failed", failed=1)
            where = other.evaluate("tenantctlGrid.cellCenter('h1')")
            other.locator("#grid").click(position=where)
            other.wait_for_url(f"{server.url}/tenants/h1")
            attempt = other.locator(f"#history li[data-rollout='{rollout_id}']")
            assert attempt.get_attribute("data-status") == "failed"
            assert attempt.locator(".error-class").inner_text() == "migration_error"
            assert "poisoned tenant" in attempt.locator(".error-message").inner_text()
            assert "RuntimeError: poisoned tenant" in attempt.locator("pre.traceback").inner_text()
            assert other.locator("#tenant-tags").inner_text().strip() == "http"
            _shoot(other, "tenant-failed")

            # a viewer sees no buttons; a change without the CSRF header is refused, whoever sends it
            vctx, viewer = _login(browser, server.url, tokens["viewer"])
            viewer.goto("/audits/latest")
            assert viewer.locator("#no-audit").is_visible()
            _finished(viewer, rollout_id, "failed", failed=1)
            assert viewer.locator("#actions button").count() == 0
            forged = viewer.request.post(f"/api/v1/rollouts/{rollout_id}/retry")
            assert forged.status == 403, forged.text()
            _shoot(viewer, "rollout-viewer")
            vctx.close()
            # a script on the page that leaves the header out
            refused = page.evaluate(
                "async u => { const r = await fetch(u, {method: 'POST'}); return [r.status, await r.json()]}",
                f"/api/v1/rollouts/{rollout_id}/retry",
            )
            assert refused[0] == 403 and refused[1]["title"] == "CSRF check failed", refused
            assert api.get(f"/api/v1/rollouts/{rollout_id}").json()["state"] == "failed"

            # the cause removed, the operator's retry turns it green without a reload
            with psycopg.connect(urls["h1"], autocommit=True) as conn:
                conn.execute("DROP TABLE poison")
            page.click("#retry")
            _settled(page, "succeeded", succeeded=3, failed=0)
            assert page.evaluate("tenantctlGrid.statusOf('h1')") == "succeeded"
            assert page.locator("#grid").get_attribute("data-done") == "3"
            assert (_count(page, "succeeded"), _count(page, "failed")) == ("3", "0")
            assert page.locator("#failures tr").count() == 0
            assert page.evaluate("window.__notReloaded") is True, "the page reloaded"
            assert page.evaluate("tenantctlGrid.events().snapshot") >= 2, "the stream was not reconnected"
            _shoot(page, "rollout-retried")
            report = api.get(f"/api/v1/rollouts/{rollout_id}").json()
            assert report["state"] == "succeeded"
            assert {t["tenant"]: t["attempt"] for t in report["tenants"]} == {"h0": 1, "h1": 2, "h2": 1}

            # the drift audit, grouped: the CLI's failed tenant is behind, with the command that repairs it
            assert api.post("/api/v1/audits", data={}).status == 201
            page.goto("/audits/latest")
            assert page.locator("#drift").get_attribute("data-drift") == "true"
            group = page.locator("#groups li.group")
            assert group.count() == 1 and group.locator(".tenants").inner_text().strip() == "c1"
            assert "upgrade" in group.locator("pre.hint").inner_text()
            _shoot(page, "audit")

            # the list, newest first; logging out ends the session
            page.goto("/")
            listed = page.locator("#rollouts tbody tr")
            assert listed.evaluate_all("rows => rows.map(r => r.dataset.rollout)") == [
                str(rollout_id),
                str(cli_id),
            ]
            assert listed.first.locator(".state").inner_text() == "succeeded"
            assert listed.nth(1).locator("[data-status=failed]").inner_text() == "1"
            _shoot(page, "rollouts")
            page.click("#logout")
            page.wait_for_url(f"{server.url}/login")
            page.goto(f"/rollouts/{rollout_id}")
            assert page.url.startswith(f"{server.url}/login?next=/rollouts/{rollout_id}")
        finally:
            api.dispose()
            browser.close()


@pytest.mark.timeout(60)
def test_the_login_page_says_when_the_server_cannot_sign_sessions(serve: Callable[..., ServeProcess]) -> None:
    server = serve(TENANTCTL_SECRET_KEY="")
    with urllib.request.urlopen(f"{server.url}/login", timeout=5) as response:
        page = response.read().decode()
    assert 'id="no-secret"' in page and "TENANTCTL_SECRET_KEY" in page
