"""Errors as problem details (RFC 9457: ``type``, ``title``, ``status``, ``detail``), carrying the same
one-line message the CLI prints. A user's mistake is a 4xx, never a 500; a 500 says nothing of its cause
(the log has it)."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import exceptions as e
from ..secrets import mask_text

log = logging.getLogger("tenantctl.api")
MEDIA_TYPE = "application/problem+json"

STATUS: tuple[tuple[type[e.TenantctlError], int], ...] = (
    (e.UnknownTenant, 404),
    (e.UnknownRollout, 404),
    (e.UnknownAudit, 404),
    (e.DuplicateTenant, 409),
    (e.ConcurrentChange, 409),
    (e.ConcurrentRegistryChange, 409),
    (e.PreflightRefused, 409),
    (e.SyncRefused, 409),
    (e.ControlDBError, 503),
    (e.BrokerUnavailable, 503),
    (e.ConfigurationError, 400),
    (e.UserError, 422),
)
"""First match wins: the CLI's exit code 2 (bad input) splits into 404 (no such thing), 409 (the state
refuses it now) and 422/400 (the request itself is wrong); 503 when a backing service is down."""


class ApiError(Exception):
    """An HTTP-level refusal (authentication, roles, CSRF, idempotency) with its problem details."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers


def _type(name: str) -> str:
    words = name.split() if " " in name else re.sub(r"(?<!^)(?=[A-Z])", " ", name).split()
    return "urn:tenantctl:problem:" + "-".join(words).lower()


def problem(
    status: int, title: str, detail: str, kind: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "type": _type(kind),
        "title": title,
        "status": status,
        "detail": mask_text(" ".join(detail.split())),
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def status_of(exc: e.TenantctlError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 400)


def install(app: FastAPI) -> None:
    @app.exception_handler(e.TenantctlError)
    async def tenantctl_error(request: Request, exc: e.TenantctlError) -> JSONResponse:
        status = status_of(exc)
        return problem(status, _title(exc), exc.message, exc.__class__.__name__)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.title, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":  # its loc is ("body", offset), not a field
            reason = first.get("ctx", {}).get("error", first["msg"])
            at = first["loc"][-1] if len(first.get("loc", ())) > 1 else "?"
            return problem(422, "Invalid request", f"body: not JSON: {reason} (at character {at})", "Invalid")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return problem(
            422, "Invalid request", f"{where}: {first['msg']}" if where else first["msg"], "Invalid"
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, _reason(exc.status_code), str(exc.detail), "Http")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, mask_text(repr(exc)), exc_info=exc)
        return problem(500, "Internal error", "the server failed; its log has the details", "Internal")


def _title(exc: e.TenantctlError) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", exc.__class__.__name__).capitalize()


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
}


def responses(*codes: int, also: dict[int, dict[str, Any]] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route may answer with (and ``also``, its other answers)."""
    found: dict[int | str, dict[str, Any]] = {k: v for k, v in (also or {}).items()}
    for code in codes:
        found[code] = {"description": _reason(code), "content": {MEDIA_TYPE: {"schema": SCHEMA}}}
    return found
