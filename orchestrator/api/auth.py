"""Who is calling, and may they: bearer tokens configured by their SHA-256, roles that each include the
ones before, and the dashboard's signed session cookie with its CSRF token.

A token is hashed and compared with every configured hash in constant time (``hmac.compare_digest``,
no early exit), so neither timing nor an error message tells a caller how close a guess came.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..settings import ApiToken, Settings
from .problems import ApiError

ROLES = ("viewer", "operator", "deployer", "admin")
"""In order: each role may do what the ones before it may."""

COOKIE = "tenantctl_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def rank(role: str) -> int:
    return ROLES.index(role)


@dataclass(frozen=True, kw_only=True)
class Principal:
    """An authenticated caller: ``name`` is recorded as who did what (``created_by``)."""

    name: str
    role: str
    csrf: str | None = None  # set when authenticated by the session cookie

    def may(self, role: str) -> bool:
        return rank(self.role) >= rank(role)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Authenticator:
    """Tokens and sessions as configured at start; the session cookie is signed with the secret key."""

    def __init__(self, settings: Settings) -> None:
        self.tokens: tuple[ApiToken, ...] = tuple(settings.api_tokens)
        self.max_age = int(settings.session_hours * 3600)
        key = settings.secret_key.get_secret_value() if settings.secret_key else None
        self._sessions = URLSafeTimedSerializer(key, salt="tenantctl.session") if key else None

    def by_token(self, token: str) -> ApiToken | None:
        wanted = digest(token)
        found: ApiToken | None = None
        for configured in self.tokens:
            if hmac.compare_digest(wanted, configured.sha256):
                found = configured
        return found

    def by_name(self, name: str) -> ApiToken | None:
        return next((t for t in self.tokens if t.name == name), None)

    # -- dashboard sessions --------------------------------------------------------------------------
    @property
    def sessions_enabled(self) -> bool:
        return self._sessions is not None

    def open_session(self, token: ApiToken) -> str:
        """The cookie's value: the token's name and a fresh CSRF token, signed and timestamped."""
        if self._sessions is None:
            raise ApiError(400, "Dashboard login unavailable", "set TENANTCTL_SECRET_KEY to log in")
        return str(self._sessions.dumps({"n": token.name, "c": secrets.token_urlsafe(24)}))

    def read_session(self, value: str) -> tuple[ApiToken, str] | None:
        """The token and CSRF token of a valid, unexpired cookie whose token is still configured."""
        if self._sessions is None:
            return None
        try:
            data: Any = self._sessions.loads(value, max_age=self.max_age)
        except BadSignature:
            return None
        token = self.by_name(str(data.get("n", ""))) if isinstance(data, dict) else None
        return (token, str(data["c"])) if token is not None else None

    # -- requests ------------------------------------------------------------------------------------
    def principal(self, request: Request) -> Principal:
        """The caller, from ``Authorization: Bearer`` or else the session cookie; 401 if neither is
        valid. A cookie-authenticated request that changes state must carry the session's CSRF token."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            found = self.by_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
            if found is None:
                raise unauthorized("unknown or malformed bearer token")
            return Principal(name=found.name, role=found.role)
        cookie = request.cookies.get(COOKIE)
        session = self.read_session(cookie) if cookie else None
        if session is None:
            raise unauthorized("no token: send Authorization: Bearer TOKEN")
        owner, csrf = session
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), csrf.encode()):
                raise ApiError(403, "CSRF check failed", f"a change from the dashboard needs {CSRF_HEADER}")
        return Principal(name=owner.name, role=owner.role, csrf=csrf)


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(principal: Principal, role: str) -> ApiError:
    return ApiError(
        403, "Forbidden", f"token {principal.name!r} is {principal.role}; this needs {role} or above"
    )


class AuthenticateFirst:
    """ASGI middleware: an API request's caller is known before its body is read, so that a caller
    without a valid token gets 401 (or 403 for a forged dashboard change) even when the body is not JSON,
    which FastAPI would otherwise refuse first (422). The caller is kept in ``request.state`` for the
    routes, which check its role."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(GUARDED):
            from .problems import problem

            request = Request(scope)
            try:
                request.state.principal = scope["app"].state.service.auth.principal(request)
            except ApiError as exc:
                response = problem(exc.status, exc.title, exc.detail, exc.title, exc.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


GUARDED = ("/api/", "/openapi.json")
