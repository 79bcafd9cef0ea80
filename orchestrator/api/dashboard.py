"""The dashboard: server-rendered pages over the same verbs and JSON builders as the API, for people.

A user pastes a token once at ``/login``; the server answers with a signed session cookie (HttpOnly,
SameSite=Strict) carrying the token's name and a CSRF token. Pages only read; every change (retry,
cancel, resume) is a ``fetch`` to the JSON API with the cookie and the ``X-CSRF-Token`` header, so the
API's own role and CSRF checks are the only ones. The rollout page draws its tenants on a canvas fed by
the rollout's server-sent events: one small square per tenant, never one DOM node each.

Pages carry a strict Content-Security-Policy (scripts and styles from ``/static`` only, nothing inline),
and Jinja2 escapes everything they show; tenant URLs come masked from :func:`reports.tenant`.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from pathlib import Path as FsPath
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from .. import __version__, auditor, coordinator, reports
from ..exceptions import TenantctlError, UnknownAudit, UnknownTenant
from ..models import RunStatus
from .auth import COOKIE, Principal
from .problems import status_of
from .service import Service, service

HERE = FsPath(__file__).parent
PAGE_SIZE = 25
FAILURES_SHOWN = 100
"""Failures listed on a rollout page (the rest are counted: "N more"); the grid shows every tenant."""
AUDIT_TENANTS_SHOWN = 200
MAX_FORM_BYTES = 16 * 1024
STATUSES = [s.value for s in RunStatus]
ACTIONS = {"retry": "operator", "cancel": "operator", "resume": "operator"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

router = APIRouter(include_in_schema=False)
Svc = Annotated[Service, Depends(service)]


def _when(value: str | None) -> str:
    """An ISO timestamp as ``2024-11-24 10:32:05 UTC`` (the control DB stores UTC)."""
    if not value:
        return ""
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["when"] = _when
templates = Jinja2Templates(env=_env)


def static() -> StaticFiles:
    """The dashboard's CSS and JavaScript, shipped inside the package (no build step, no CDN)."""
    return StaticFiles(directory=HERE / "static")


def session(request: Request, svc: Svc) -> Principal | None:
    """The caller of a page, from the session cookie only (a page is never a bearer-token client)."""
    value = request.cookies.get(COOKIE)
    found = svc.auth.read_session(value) if value else None
    if found is None:
        return None
    token, csrf = found
    return Principal(name=token.name, role=token.role, csrf=csrf)


Who = Annotated[Principal | None, Depends(session)]


def _render(
    request: Request, name: str, who: Principal | None, status: int = 200, **context: Any
) -> HTMLResponse:
    context |= {"principal": who, "version": __version__, "root": request.scope.get("root_path", "")}
    response = templates.TemplateResponse(request, name, context, status_code=status)
    _harden(response)
    return response


def _harden(response: Response) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"


def _to_login(request: Request) -> RedirectResponse:
    root = request.scope.get("root_path", "")
    wanted = request.url.path.removeprefix(root) + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{root}/login?next={quote(wanted, safe='/')}", status_code=303)


def _failure(request: Request, who: Principal, exc: TenantctlError) -> HTMLResponse:
    """A refusal of the verbs (no such rollout, control DB down) as a page with its one-line message."""
    return _render(request, "error.html", who, status=status_of(exc), message=exc.message)


def _safe_next(value: str | None) -> str:
    """Only a path of this site: a login link must not send the user elsewhere."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


# -- login and logout ---------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_form(
    request: Request,
    who: Who,
    svc: Svc,
    wanted: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
) -> Response:
    if who is not None:
        return RedirectResponse(request.scope.get("root_path", "") + _safe_next(wanted), status_code=303)
    return _render(
        request, "login.html", None, next=_safe_next(wanted), error=None, enabled=svc.auth.sessions_enabled
    )


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (no multipart dependency for one field)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, svc: Svc) -> Response:
    """A valid token opens a session; the token itself is never stored, only its name is signed in."""
    form = await _form(request)
    nxt = _safe_next(form.get("next"))
    if not svc.auth.sessions_enabled:
        return _render(request, "login.html", None, status=400, next=nxt, error=None, enabled=False)
    token = svc.auth.by_token(form.get("token", "").strip())
    if token is None:
        error = "Unknown token."
        return _render(request, "login.html", None, status=401, next=nxt, error=error, enabled=True)
    response = RedirectResponse(request.scope.get("root_path", "") + nxt, status_code=303)
    response.set_cookie(
        COOKIE,
        svc.auth.open_session(token),
        max_age=svc.auth.max_age,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
async def logout(request: Request, who: Who) -> Response:
    """Clears the session; the form carries the CSRF token, as a header would for the API."""
    root = request.scope.get("root_path", "")
    if who is None:
        return RedirectResponse(f"{root}/login", status_code=303)
    sent = (await _form(request)).get("csrf") or request.headers.get("x-csrf-token", "")
    if not hmac.compare_digest(sent.encode(), (who.csrf or "").encode()):
        return _render(request, "error.html", who, status=403, message="CSRF check failed: reload and retry.")
    response = RedirectResponse(f"{root}/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


# -- pages --------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def rollouts_page(
    request: Request, who: Who, svc: Svc, page: Annotated[int, Query(ge=1, le=1_000_000)] = 1
) -> Response:
    """Rollouts, newest first, a page at a time."""
    if who is None:
        return _to_login(request)
    try:
        items = await coordinator.rollouts(svc.store, PAGE_SIZE, (page - 1) * PAGE_SIZE)
        total = await svc.store.count_rollouts()
    except TenantctlError as exc:
        return _failure(request, who, exc)
    pages = max(1, -(-total // PAGE_SIZE))
    return _render(
        request, "rollouts.html", who, items=items, total=total, page=page, pages=pages, statuses=STATUSES
    )


@router.get("/rollouts/{rollout_id}", response_class=HTMLResponse)
async def rollout_page(
    request: Request, rollout_id: Annotated[int, Path(ge=1, le=2**31 - 1)], who: Who, svc: Svc
) -> Response:
    """The rollout's header, counts and first failures; the page's script then follows its events."""
    if who is None:
        return _to_login(request)
    try:
        report = await coordinator.status(svc.store, rollout_id, failed=True)
    except TenantctlError as exc:
        return _failure(request, who, exc)
    counts: dict[str, int] = report["counts"]
    total = sum(counts.values())
    done = total - counts.get("queued", 0) - counts.get("running", 0)
    failures = report["tenants"]
    return _render(
        request,
        "rollout.html",
        who,
        rollout=report,
        counts=counts,
        total=total,
        done=done,
        statuses=STATUSES,
        failures=failures[:FAILURES_SHOWN],
        more=max(0, len(failures) - FAILURES_SHOWN),
        failures_shown=FAILURES_SHOWN,
        actions=[a for a, role in ACTIONS.items() if who.may(role)],
    )


@router.get("/tenants/{tenant_id}", response_class=HTMLResponse)
async def tenant_page(
    request: Request, tenant_id: Annotated[str, Path(max_length=63)], who: Who, svc: Svc
) -> Response:
    """The tenant (URL masked) and every attempt at it across rollouts, newest first."""
    if who is None:
        return _to_login(request)
    try:
        try:
            tenant: dict[str, Any] | None = reports.tenant(await svc.store.get_tenant(tenant_id))
        except UnknownTenant:
            tenant = None  # removed from the registry: its history is kept, and still worth reading
        history = [reports.tenant_run(r) for r in reversed(await svc.store.tenant_history(tenant_id))]
        if tenant is None and not history:
            raise UnknownTenant(tenant_id)
    except TenantctlError as exc:
        return _failure(request, who, exc)
    return _render(request, "tenant.html", who, tenant_id=tenant_id, tenant=tenant, history=history)


@router.get("/audits/latest", response_class=HTMLResponse)
async def latest_audit_page(request: Request, who: Who, svc: Svc) -> Response:
    return await _audit(request, who, svc, None)


@router.get("/audits/{audit_id}", response_class=HTMLResponse)
async def audit_page(
    request: Request, audit_id: Annotated[int, Path(ge=1, le=2**31 - 1)], who: Who, svc: Svc
) -> Response:
    return await _audit(request, who, svc, audit_id)


async def _audit(request: Request, who: Principal | None, svc: Service, audit_id: int | None) -> Response:
    """An audit grouped by finding, each group with its tenants (capped) and the command that repairs it."""
    if who is None:
        return _to_login(request)
    try:
        report: dict[str, Any] | None = await auditor.show(svc.store, audit_id)
    except UnknownAudit as exc:
        if audit_id is not None:
            return _failure(request, who, exc)
        report = None
    except TenantctlError as exc:
        return _failure(request, who, exc)
    return _render(request, "audit.html", who, audit=report, shown=AUDIT_TENANTS_SHOWN)
