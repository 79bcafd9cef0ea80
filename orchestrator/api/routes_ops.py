"""What runs the service: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ..exceptions import TenantctlError
from ..secrets import mask_text
from .auth import Principal
from .problems import responses
from .service import Service, require, service

router = APIRouter(tags=["operations"])
Svc = Annotated[Service, Depends(service)]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (no dependency is checked: a liveness probe must not restart a server whose
    database is down)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready: why, per check"}})
async def readyz(svc: Svc) -> JSONResponse:
    """The control DB answers and is at this code's revision; the broker answers when one is set."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(svc.store.ensure_ready(), svc.settings.connect_timeout)
        checks["control_db"] = "ok"
    except TenantctlError as exc:
        checks["control_db"] = exc.message
    except TimeoutError:
        checks["control_db"] = f"no answer within {svc.settings.connect_timeout:g}s"
    if svc.background is None:
        try:
            await asyncio.to_thread(svc.executor().ready)
            checks["broker"] = "ok"
        except TenantctlError as exc:
            checks["broker"] = exc.message
    ready = all(v == "ok" for v in checks.values())
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": {k: mask_text(v) for k, v in checks.items()},
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, _: Annotated[Principal, Depends(require("viewer"))]) -> JSONResponse:
    """The OpenAPI schema of this API (a viewer's token, as every endpoint but the probes)."""
    return JSONResponse(request.app.openapi())


def _metrics_reader(request: Request, svc: Svc) -> Principal | None:
    if svc.settings.metrics_public:
        return None
    return require("viewer")(request, svc)


@router.get(
    "/metrics",
    responses=responses(
        401, 403, 503, also={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}}
    ),
)
async def metrics(svc: Svc, _: Annotated[Principal | None, Depends(_metrics_reader)]) -> Response:
    """Prometheus text: rollouts, runs, durations, drift, queue depth, workers (cached a few seconds)."""
    from ..metrics import CONTENT_TYPE

    body = await svc.metrics.render(svc.store)
    return Response(body, media_type=CONTENT_TYPE)
