"""``/api/v1/audits``: run a drift audit (operator) and read stored ones, as ``tenantctl audit``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from .. import auditor, reports
from ..audit import AuditKind
from .auth import Principal
from .problems import responses
from .schemas import AuditPage, AuditRequest
from .service import Service, require, service

router = APIRouter(prefix="/api/v1/audits", tags=["audits"], responses=responses(401, 403, 422, 503))
Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Svc = Annotated[Service, Depends(service)]
Report = {"content": {"application/json": {"schema": {"type": "object"}}}, "description": "audit --json"}


@router.post("", status_code=201, responses=responses(400, 404, also={201: Report}))
async def run_audit(principal: Operator, svc: Svc, body: AuditRequest | None = None) -> JSONResponse:
    """Audit the selected tenants read-only, store it, and return it as ``audit --json`` prints it."""
    body = body or AuditRequest()
    kind = AuditKind(body.kind)
    runner = auditor.schema_runner_for(svc.settings, svc.store) if kind is AuditKind.SCHEMA else None
    report: dict[str, Any] = await auditor.run_audit(
        svc.settings,
        svc.store,
        kind=kind,
        selector=body.selector(),
        created_by=principal.name,
        environ=svc.environ,
        schema_runner=runner,
    )
    return JSONResponse(report, status_code=201)


@router.get("", response_model=AuditPage)
async def list_audits(
    _: Viewer,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> JSONResponse:
    records, total = await svc.store.list_audits(limit, offset)
    items = [reports.audit_summary(a) for a in records]
    return JSONResponse({"items": items, "total": total, "limit": limit, "offset": offset})


@router.get("/latest", responses=responses(404, also={200: Report}))
async def latest_audit(_: Viewer, svc: Svc) -> JSONResponse:
    """The newest audit, as ``audit show --json``."""
    return JSONResponse(await auditor.show(svc.store, None))


@router.get("/{audit_id}", responses=responses(404, also={200: Report}))
async def get_audit(audit_id: Annotated[int, Path(ge=1, le=2**31 - 1)], _: Viewer, svc: Svc) -> JSONResponse:
    """A stored audit and what changed since the one of its kind before it (``audit show ID --json``)."""
    return JSONResponse(await auditor.show(svc.store, audit_id))
