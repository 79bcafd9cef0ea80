"""The HTTP API in-process (Starlette's TestClient, the app's real lifespan): who may call what, problems
that read as the CLI's errors, idempotent and confirmed rollouts, who did what, no password anywhere, the
same rows and JSON as the CLI, and the events of a rollout. Real PostgreSQL, the server's real pool."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.api.auth import COOKIE, CSRF_HEADER
from tests.conftest import FIXTURE_ENVS
from tests.support.harness import Harness, tenant_revision
from tests.support.workers import wait_for

ROLES = ("viewer", "operator", "deployer", "admin")
TOKENS = {role: f"test-token-{role}-0123456789" for role in ROLES}
NAMES = {role: f"{role}-bot" for role in ROLES}
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"  # refused at once: nothing listens on port 1
SLOW = FIXTURE_ENVS / "slow" / "alembic.ini"


def api_tokens() -> list[dict[str, str]]:
    """``TENANTCTL_API_TOKENS``: one token per role, named ``<role>-bot``."""
    return [
        {"name": NAMES[r], "role": r, "sha256": hashlib.sha256(TOKENS[r].encode()).hexdigest()} for r in ROLES
    ]


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@contextmanager
def api(h: Harness, **overrides: Any) -> Iterator[TestClient]:
    """The app on the harness's control DB, its lifespan running (store, reaper, background pool)."""
    cfg = h.settings(**{"api_tokens": api_tokens(), "poll_interval": 0.1, **overrides})
    with TestClient(create_app(cfg, h.env())) as client:
        yield client


def rows(h: Harness, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the control DB directly, as an independent witness."""
    with psycopg.connect(h.control_url.replace("+asyncpg", ""), autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def settled(client: TestClient, rollout_id: int, timeout: float = 60) -> dict[str, Any]:
    """``GET /rollouts/{id}`` once the rollout is closed."""

    def closed() -> dict[str, Any] | None:
        response = client.get(f"/api/v1/rollouts/{rollout_id}", headers=bearer("viewer"))
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        return report if report["finished_at"] is not None else None

    return wait_for(closed, timeout, f"rollout {rollout_id} to close", interval=0.1)  # type: ignore[return-value]


def cli_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one line the CLI prints for a user's mistake (exit 2; 3 when preflight refuses), without its
    ``tenantctl: error:`` prefix."""
    assert result.returncode == code, (result.returncode, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("tenantctl: error: "), line
    return line.removeprefix("tenantctl: error: ")


def problem(response: Any, status: int) -> str:
    """Assert a problem-details answer of ``status``; return its ``detail``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail"}, body
    assert body["status"] == status and body["type"].startswith("urn:tenantctl:problem:"), body
    assert "\n" not in body["detail"], body
    detail: str = body["detail"]
    return detail


# -- who may call what ---------------------------------------------------------------------------------
API, PUBLIC, PAGE = "api", "public", "page"


@dataclass(frozen=True)
class Call:
    """One cheap request to one route (``path`` as the app declares it): an ``API`` route takes a bearer
    token and needs ``role``; a ``PAGE`` of the dashboard takes a session cookie, any role; ``PUBLIC``
    needs nothing. Unknown ids answer 404, which is past the checks."""

    method: str
    path: str
    role: str = "viewer"
    kind: str = API
    url: str = ""
    json: Any = None
    content: str | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def send(self, client: TestClient, headers: dict[str, str]) -> Any:
        return client.request(
            self.method,
            self.url or self.path,
            json=self.json,
            content=self.content,
            data=self.data,
            headers={**self.headers, **headers},
            follow_redirects=False,
        )


NO_SUCH = 987_654
ROLLOUT = "/api/v1/rollouts/{rollout_id}"
TENANT = "/api/v1/tenants/{tenant_id}"
TABLE = (
    Call("GET", "/healthz", kind=PUBLIC),
    Call("GET", "/readyz", kind=PUBLIC),
    Call("GET", "/openapi.json", "viewer"),
    Call("GET", "/metrics", "viewer"),
    Call("GET", "/api/v1/tenants", "viewer"),
    Call("POST", "/api/v1/tenants", "admin", json={"id": "probe", "url": UNREACHABLE}),
    Call(
        "POST",
        "/api/v1/tenants/import",
        "admin",
        url="/api/v1/tenants/import?format=yaml",
        content=f"- id: probe-imported\n  url: {UNREACHABLE}\n",
        headers={"Content-Type": "application/yaml"},
    ),
    Call("GET", TENANT, "viewer", url="/api/v1/tenants/nobody"),
    Call("PATCH", TENANT, "admin", url="/api/v1/tenants/nobody", json={"tags": ["x"]}),
    Call("POST", f"{TENANT}/enable", "admin", url="/api/v1/tenants/nobody/enable"),
    Call("POST", f"{TENANT}/disable", "admin", url="/api/v1/tenants/nobody/disable"),
    Call("DELETE", TENANT, "admin", url="/api/v1/tenants/nobody"),
    Call("GET", f"{TENANT}/runs", "viewer", url="/api/v1/tenants/nobody/runs"),
    Call("GET", "/api/v1/rollouts", "viewer"),
    Call(
        "POST",
        "/api/v1/rollouts",
        "deployer",
        json={"command": "upgrade", "revision": "head", "dry_run": True},
    ),
    Call("POST", "/api/v1/rollouts", "admin", json={"command": "stamp", "revision": "head", "dry_run": True}),
    Call(
        "POST",
        "/api/v1/rollouts",
        "admin",
        json={"command": "downgrade", "revision": "base", "dry_run": True},
    ),
    Call("GET", ROLLOUT, "viewer", url=f"/api/v1/rollouts/{NO_SUCH}"),
    Call("POST", f"{ROLLOUT}/retry", "operator", url=f"/api/v1/rollouts/{NO_SUCH}/retry"),
    Call("POST", f"{ROLLOUT}/resume", "operator", url=f"/api/v1/rollouts/{NO_SUCH}/resume"),
    Call("POST", f"{ROLLOUT}/cancel", "operator", url=f"/api/v1/rollouts/{NO_SUCH}/cancel"),
    Call("GET", f"{ROLLOUT}/events", "viewer", url=f"/api/v1/rollouts/{NO_SUCH}/events"),
    Call("POST", "/api/v1/audits", "operator", json={}),
    Call("GET", "/api/v1/audits", "viewer"),
    Call("GET", "/api/v1/audits/latest", "viewer"),
    Call("GET", "/api/v1/audits/{audit_id}", "viewer", url=f"/api/v1/audits/{NO_SUCH}"),
    # the dashboard
    Call("GET", "/login", kind=PUBLIC),
    Call("POST", "/login", kind=PUBLIC, data={"token": TOKENS["viewer"], "next": "/"}),
    Call("GET", "/static", kind=PUBLIC, url="/static/dashboard.css"),
    Call("GET", "/", kind=PAGE),
    Call("GET", "/rollouts/{rollout_id}", kind=PAGE, url=f"/rollouts/{NO_SUCH}"),
    Call("GET", "/tenants/{tenant_id}", kind=PAGE, url="/tenants/nobody"),
    Call("GET", "/audits/latest", kind=PAGE),
    Call("GET", "/audits/{audit_id}", kind=PAGE, url=f"/audits/{NO_SUCH}"),
    Call("POST", "/logout", kind=PAGE),
)
CALLERS = ("no token", "wrong token", *ROLES)


def routes(client: TestClient) -> set[tuple[str, str]]:
    """Every (method, path) the app answers, HEAD aside (Starlette adds it to each GET)."""
    found = set()
    for route in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        for method in getattr(route, "methods", None) or {"GET"}:  # a mount: GET its files
            if method != "HEAD":
                found.add((method, str(route.path)))
    return found


def login(client: TestClient, role: str) -> tuple[str, str]:
    """A dashboard session of ``role``: its cookie and the CSRF token its pages carry."""
    client.cookies.clear()
    response = client.post("/login", data={"token": TOKENS[role]}, follow_redirects=False)
    assert response.status_code == 303, response.text
    cookie = response.cookies[COOKIE]
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 200, page.text
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert csrf, page.text
    client.cookies.clear()
    return cookie, csrf.group(1)


def credentials(
    client: TestClient, kind: str, caller: str, sessions: dict[str, tuple[str, str]]
) -> dict[str, str]:
    """Put the caller's credentials of this kind of route on the client: headers to send."""
    client.cookies.clear()
    if kind != PAGE:
        if caller == "no token":
            return {}
        return {
            "Authorization": "Bearer not-a-configured-token"
            if caller == "wrong token"
            else f"Bearer {TOKENS[caller]}"
        }
    if caller == "no token":
        return {}
    if caller == "wrong token":
        client.cookies.set(COOKIE, "forged.session.cookie")
        return {}
    cookie, csrf = sessions[caller]
    client.cookies.set(COOKIE, cookie)
    return {CSRF_HEADER: csrf}


def outcome(response: Any) -> str:
    """ "401"/"403", "login" (a page sent to the login form), or "allowed"."""
    if response.status_code in (401, 403):
        return str(response.status_code)
    location = response.headers.get("location", "")
    if (
        response.status_code == 303
        and location.startswith("/login")
        and COOKIE not in response.headers.get("set-cookie", "")
    ):
        return "login"
    return "allowed"


def expected(call: Call, caller: str) -> str:
    if call.kind == PUBLIC:
        return "allowed"
    if caller not in ROLES:
        return "login" if call.kind == PAGE else "401"
    return "allowed" if ROLES.index(caller) >= ROLES.index(call.role) else "403"


def test_every_endpoint_refuses_or_admits_each_caller_by_role(harness: Harness) -> None:
    with api(harness) as client:
        assert routes(client) == {(c.method, c.path) for c in TABLE}, "a route without a row, or a stale row"
        sessions = {role: login(client, role) for role in ROLES}
        wrong = []
        for call in TABLE:
            for caller in CALLERS:
                response = call.send(client, credentials(client, call.kind, caller, sessions))
                got, want = outcome(response), expected(call, caller)
                if got != want or response.status_code >= 500:
                    wrong.append(
                        f"{call.method} {call.url or call.path} {call.json or ''} as {caller}: "
                        f"{response.status_code} (want {want}) {response.text[:200]}"
                    )
                elif got == "401":
                    problem(response, 401)
                    assert response.headers["www-authenticate"] == "Bearer"
                elif got == "403":
                    problem(response, 403)
        assert not wrong, "\n".join(wrong)
        client.cookies.clear()
        # the admin's calls did what they say, so "allowed" meant allowed, not a refusal of another kind
        listed = client.get("/api/v1/tenants", headers=bearer("viewer")).json()["items"]
        assert {t["id"] for t in listed} == {"probe", "probe-imported"}
        assert client.get("/api/v1/audits", headers=bearer("viewer")).json()["total"] == 3, "one per role"
        # a page is never a bearer-token client
        assert outcome(client.get("/", headers=bearer("admin"), follow_redirects=False)) == "login"


def test_a_dashboard_session_changes_nothing_without_its_csrf_token(harness: Harness) -> None:
    with api(harness) as client:
        cookie, csrf = login(client, "operator")
        client.cookies.set(COOKIE, cookie)
        assert client.get("/api/v1/rollouts").status_code == 200, "a session reads the API"
        cancel = f"/api/v1/rollouts/{NO_SUCH}/cancel"
        assert "CSRF" in problem(client.post(cancel), 403)
        assert "CSRF" in problem(client.post(cancel, headers={CSRF_HEADER: "not-the-token"}), 403)
        problem(client.post(cancel, headers={CSRF_HEADER: csrf}), 404)  # past the checks
        problem(client.post("/api/v1/tenants/nobody/enable", headers={CSRF_HEADER: csrf}), 403)  # operator


def test_metrics_public_serves_metrics_without_a_token(harness: Harness) -> None:
    with api(harness, metrics_public=True) as client:
        for caller in CALLERS:
            response = client.get("/metrics", headers=credentials(client, API, caller, {}))
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("text/plain")
        assert client.get("/api/v1/tenants").status_code == 401, "only /metrics is public"


# -- problems --------------------------------------------------------------------------------------------
def test_a_users_mistake_is_a_4xx_problem_with_the_clis_message(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = harness
    (url,) = tenant_dbs(1)
    h.register("t0", url)
    deployer, admin = bearer("deployer"), bearer("admin")
    with api(h) as client:
        unknown_rollout = problem(client.get(f"/api/v1/rollouts/{NO_SUCH}", headers=bearer("viewer")), 404)
        assert unknown_rollout == cli_error(h.cli("status", str(NO_SUCH)))
        assert (
            problem(client.post(f"/api/v1/rollouts/{NO_SUCH}/retry", headers=deployer), 404)
            == unknown_rollout
        )

        body = {"command": "upgrade", "revision": "nope"}
        unknown_revision = problem(client.post("/api/v1/rollouts", headers=deployer, json=body), 422)
        assert unknown_revision == cli_error(h.cli("upgrade", "nope"))

        body = {"command": "upgrade", "revision": "head+100"}
        too_far = problem(client.post("/api/v1/rollouts", headers=deployer, json=body), 409)
        assert too_far == cli_error(h.cli("upgrade", "head+100"), code=3)

        duplicate = problem(client.post("/api/v1/tenants", headers=admin, json={"id": "t0", "url": url}), 409)
        assert duplicate == cli_error(h.cli("tenants", "add", "t0", "--url", url))

        bad_id = {"id": "Not A Slug!", "url": url}
        invalid_id = problem(client.post("/api/v1/tenants", headers=admin, json=bad_id), 422)
        assert invalid_id == cli_error(h.cli("tenants", "add", "Not A Slug!", "--url", url))

        for bad in (
            {"command": "upgrade"},
            {"command": "sideways", "revision": "head"},
            {"command": "upgrade", "revision": "head", "parallel": 0},
            {"command": "upgrade", "revision": "head", "no_such_option": 1},
            [1, 2],
        ):
            problem(client.post("/api/v1/rollouts", headers=deployer, json=bad), 422)
        not_json = client.post(
            "/api/v1/rollouts", headers={**deployer, "Content-Type": "application/json"}, content="{nope"
        )
        assert problem(not_json, 422) == (
            "body: not JSON: Expecting property name enclosed in double quotes (at character 1)"
        )
        problem(client.get("/api/v1/rollouts/0", headers=deployer), 422)
        problem(client.get("/api/v1/rollouts?limit=0", headers=deployer), 422)
        assert rows(h, "SELECT count(*) FROM rollouts") == [(0,)], "no mistake started anything"


# -- idempotency, confirmation, who did it ----------------------------------------------------------------
def test_idempotency_key_returns_the_same_rollout_for_the_same_body(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = harness
    (url,) = tenant_dbs(1)
    h.register("t0", url)
    body = {"command": "upgrade", "revision": "head"}
    with api(h) as client:
        key = {**bearer("deployer"), "Idempotency-Key": "deploy-42"}
        first = client.post("/api/v1/rollouts", headers=key, json=body)
        assert first.status_code == 202, first.text
        again = client.post("/api/v1/rollouts", headers=key, json=body)
        assert again.status_code == 202, again.text
        assert again.json()["id"] == first.json()["id"]
        other = client.post("/api/v1/rollouts", headers=key, json={**body, "revision": "+1"})
        assert problem(other, 409) == "this Idempotency-Key was used with another request body"
        report = settled(client, first.json()["id"])
        assert report["state"] == "succeeded", report
        assert client.post("/api/v1/rollouts", headers=key, json=body).json()["id"] == report["id"]
    assert rows(h, "SELECT id FROM rollouts") == [(report["id"],)], "one rollout row"
    assert tenant_revision(url) == "0004"


def test_a_large_selection_needs_its_confirm_count(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = harness
    urls = tenant_dbs(3)
    for i, url in enumerate(urls):
        h.register(f"t{i}", url)
    body: dict[str, Any] = {"command": "upgrade", "revision": "head"}
    with api(h, api_max_selection=2) as client:
        unconfirmed = problem(client.post("/api/v1/rollouts", headers=bearer("deployer"), json=body), 422)
        assert unconfirmed == (
            "the selection has 3 tenants, more than TENANTCTL_API_MAX_SELECTION (2): "
            'send "confirm_count": 3 to go ahead'
        )
        wrong = {**body, "confirm_count": 4}
        refused = problem(client.post("/api/v1/rollouts", headers=bearer("deployer"), json=wrong), 422)
        assert refused == "confirm_count is 4 but the selection has 3 tenant(s): nothing was started"
        two = {**body, "tenants": ["t0", "t1"], "confirm_count": 3}  # a stated count is checked at any size
        problem(client.post("/api/v1/rollouts", headers=bearer("deployer"), json=two), 422)
        assert rows(h, "SELECT count(*) FROM rollouts") == [(0,)], "nothing recorded when refused"

        started = client.post(
            "/api/v1/rollouts", headers=bearer("deployer"), json={**body, "confirm_count": 3}
        )
        assert started.status_code == 202, started.text
        report = settled(client, started.json()["id"])
    assert report["state"] == "succeeded" and report["counts"]["succeeded"] == 3, report
    assert report["created_by"] == NAMES["deployer"]
    assert rows(h, "SELECT created_by FROM rollouts") == [(NAMES["deployer"],)]
    assert [tenant_revision(u) for u in urls] == ["0004"] * 3


def test_tenants_changed_over_http_record_the_tokens_name(harness: Harness) -> None:
    h = harness
    admin = bearer("admin")
    with api(h) as client:
        made = client.post("/api/v1/tenants", headers=admin, json={"id": "made", "url": UNREACHABLE})
        assert made.status_code == 201, made.text
        imported = client.post(
            "/api/v1/tenants/import",
            headers={**admin, "Content-Type": "application/json"},
            content=json.dumps([{"id": "imported", "url": UNREACHABLE}]),
        )
        assert imported.json() == {"created": 1, "updated": 0, "unchanged": 0}, imported.text
    assert h.cli("tenants", "add", "by-cli", "--url", UNREACHABLE).returncode == 0
    by = dict(rows(h, "SELECT id, updated_by FROM tenants"))
    assert by["made"] == by["imported"] == NAMES["admin"], by
    assert by["by-cli"] not in (None, NAMES["admin"]), by
    renamed = [{**t, "name": "ops-team"} if t["role"] == "admin" else t for t in api_tokens()]
    with api(h, api_tokens=renamed) as client:
        assert client.post("/api/v1/tenants/by-cli/disable", headers=admin).status_code == 200
        patched = client.patch("/api/v1/tenants/made", headers=admin, json={"tags": ["blue"]})
        assert patched.status_code == 200, patched.text
    by = dict(rows(h, "SELECT id, updated_by FROM tenants"))
    assert by["by-cli"] == by["made"] == "ops-team", by


# -- no password ---------------------------------------------------------------------------------------------
PASSWORD_HTTP = "Http-Sekrit-7741"
PASSWORD_CLI = "Cli-Sekrit-9923"


def _with_password(url: str, password: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


def test_no_password_in_any_answer_event_or_row(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = harness
    http_url, cli_url = tenant_dbs(2)
    admin, viewer = bearer("admin"), bearer("viewer")
    added = h.cli("tenants", "add", "by-cli", "--url", _with_password(cli_url, PASSWORD_CLI))
    assert added.returncode == 0, added.stderr
    with api(h) as client:
        tenants = [  # trust auth takes any password; the last one is refused (its error and traceback kept)
            {"id": "by-http", "url": _with_password(http_url, PASSWORD_HTTP)},
            {"id": "down", "url": _with_password(UNREACHABLE, PASSWORD_HTTP)},
        ]
        for tenant in tenants:
            assert client.post("/api/v1/tenants", headers=admin, json=tenant).status_code == 201
        started = client.post(
            "/api/v1/rollouts", headers=bearer("deployer"), json={"command": "upgrade", "revision": "head"}
        )
        assert started.status_code == 202, started.text
        rollout_id = started.json()["id"]
        events = _raw_events(client, rollout_id)
        report = settled(client, rollout_id)
        assert report["counts"]["succeeded"] == 2 and report["counts"]["failed"] == 1, report
        audit = client.post("/api/v1/audits", headers=bearer("operator"), json={})
        assert audit.status_code == 201, audit.text
        answers = {"events": events, "started": started.text, "audit": audit.text}
        ids = {
            "tenant_id": ("by-http", "by-cli", "down"),
            "rollout_id": (rollout_id,),
            "audit_id": (audit.json()["id"],),
        }
        client.cookies.set(COOKIE, login(client, "viewer")[0])  # the dashboard's pages too
        for url in _every_get(routes(client), ids):
            response = client.get(url, headers=viewer, follow_redirects=False)
            assert response.status_code == (303 if url == "/login" else 200), (url, response.text)
            answers[url] = response.text
    assert rows(h, "SELECT count(*) FROM tenants WHERE password_token IS NOT NULL") == [(3,)], (
        "kept, encrypted"
    )
    assert {f"/rollouts/{rollout_id}", "/tenants/down", "/api/v1/tenants/down/runs"} <= set(answers)
    down = next(t for t in report["tenants"] if t["tenant"] == "down")
    assert down["error"], "the refused tenant's error is there to be scrubbed"
    tables = {
        name: "\n".join(str(r[0]) for r in rows(h, f"SELECT t::text FROM {name} t"))
        for name in ("rollouts", "tenant_runs", "audits", "audit_findings")
    }
    for password in (PASSWORD_HTTP, PASSWORD_CLI):
        for where, text in {**answers, **tables}.items():
            assert password not in text, f"{password} in {where}"


def _every_get(found: set[tuple[str, str]], ids: dict[str, tuple[Any, ...]]) -> Iterator[str]:
    """A URL of every GET route with each of ``ids`` in its path (the events stream aside: it is read
    to its end on its own)."""
    for method, path in sorted(found):
        if method != "GET" or path.endswith("/events"):
            continue
        if path == "/static":
            yield "/static/rollout.js"
            continue
        name = next((n for n in ids if "{" + n + "}" in path), None)
        for value in ids[name] if name else (None,):
            url = path.replace("{" + name + "}", str(value)) if name else path
            yield url
            if path == ROLLOUT:
                yield f"{url}?attempts=true&tracebacks=true"


def _raw_events(client: TestClient, rollout_id: int) -> str:
    """The SSE text of a rollout up to its ``end`` event."""
    lines = []
    with client.stream("GET", f"/api/v1/rollouts/{rollout_id}/events", headers=bearer("viewer")) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            lines.append(line)
            if lines[-2:-1] == ["event: end"]:
                break
    return "\n".join(lines)


def parse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    name = None
    for line in text.splitlines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((str(name), json.loads(line.removeprefix("data: "))))
    return events


# -- the same as the CLI ------------------------------------------------------------------------------------
RUN_COLUMNS = (
    "attempt, status, from_revision, to_revision, applied, error_class, error_message, traceback, db_host, "
    "wave, retries, blocked_by"
)


def test_an_http_rollout_leaves_the_rows_and_json_of_a_cli_rollout(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    h = harness
    urls = tenant_dbs(4)
    for i, url in enumerate(urls[:2]):
        h.register(f"api{i}", url)
    for i, url in enumerate(urls[2:]):
        h.register(f"cli{i}", url)
    with api(h) as client:
        body = {"command": "upgrade", "revision": "head", "tenants": ["api0", "api1"]}
        started = client.post("/api/v1/rollouts", headers=bearer("deployer"), json=body)
        assert started.status_code == 202, started.text
        by_http = settled(client, started.json()["id"])
        by_cli = h.cli("upgrade", "head", "--tenant", "cli0", "--tenant", "cli1", "--json")
        assert by_cli.returncode == 0, by_cli.stderr
        cli_id = json.loads(by_cli.stdout)["id"]
        for rollout_id in (by_http["id"], cli_id):
            over_http = client.get(f"/api/v1/rollouts/{rollout_id}", headers=bearer("viewer"))
            status = h.cli("status", str(rollout_id), "--json")
            assert status.returncode == 0, status.stderr
            assert over_http.json() == json.loads(status.stdout)
        whole = json.loads(status.stdout)
        paged = client.get(f"/api/v1/rollouts/{cli_id}?limit=1&offset=1", headers=bearer("viewer")).json()
        assert paged["tenants"] == whole["tenants"][1:2] and paged["counts"] == whole["counts"]
        assert paged["page"] == {"total": 2, "limit": 1, "offset": 1}
        failed = client.get(f"/api/v1/rollouts/{cli_id}?limit=5&failed=1", headers=bearer("viewer")).json()
        assert failed["tenants"] == [] and failed["page"]["total"] == 0
        assert failed["counts"] == whole["counts"]
    assert by_http["state"] == "succeeded", by_http

    def runs(rollout_id: int, prefix: str) -> list[tuple[Any, ...]]:
        found = rows(
            h,
            f"SELECT replace(tenant_id, %s, ''), {RUN_COLUMNS} FROM tenant_runs "
            "WHERE rollout_id = %s ORDER BY tenant_id, attempt",
            prefix,
            rollout_id,
        )
        assert found, rollout_id
        return found

    assert runs(by_http["id"], "api") == runs(cli_id, "cli")
    query = (
        "SELECT command, target, state, parallel, policy, halt_reason, owner, owner_lease_expires_at "
        "FROM rollouts WHERE id = %s"
    )
    assert rows(h, query, by_http["id"]) == rows(h, query, cli_id)
    assert [tenant_revision(u) for u in urls] == ["0004"] * 4


# -- events --------------------------------------------------------------------------------------------------
def test_events_are_a_snapshot_then_transitions_then_end(
    harness: Harness, tenant_dbs: Callable[[int], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    monkeypatch.setenv("TENANTCTL_TEST_SLOW_SECONDS", "1")  # the pool's children inherit it
    urls = tenant_dbs(2)
    for i, url in enumerate(urls):
        h.register(f"t{i}", url)
    with api(h, alembic_config=SLOW) as client:
        body = {"command": "upgrade", "revision": "head", "parallel": 1}
        started = client.post("/api/v1/rollouts", headers=bearer("deployer"), json=body)
        assert started.status_code == 202, started.text
        rollout_id = started.json()["id"]
        events = parse_events(_raw_events(client, rollout_id))
        report = settled(client, rollout_id)
    names = [name for name, _ in events]
    assert names[0] == "snapshot" and names[-1] == "end" and names.count("end") == 1, names
    assert {"tenants", "counts"} <= set(names[1:-1]), names
    snapshot = events[0][1]
    assert snapshot["state"] == "running" and sorted(t[0] for t in snapshot["tenants"]) == ["t0", "t1"]
    seen: dict[str, list[str]] = {t[0]: [t[1]] for t in snapshot["tenants"]}
    for name, data in events[1:-1]:
        if name == "tenants":
            for tenant, status, *_ in data:
                if seen[tenant][-1] != status:
                    seen[tenant].append(status)
    for tenant, statuses in seen.items():
        assert statuses[-1] == "succeeded" and "running" in statuses, (tenant, statuses)
    end = events[-1][1]
    assert end == {"state": report["state"], "counts": report["counts"]}, (end, report)
    assert report["state"] == "succeeded" and report["counts"]["succeeded"] == 2
    last = {name: data for name, data in events if name == "counts"}["counts"]
    assert last["counts"] == report["counts"]
