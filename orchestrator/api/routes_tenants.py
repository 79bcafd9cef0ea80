"""``/api/v1/tenants``: the registry over HTTP, as ``tenantctl tenants …`` (admin for changes)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from .. import registry, reports, tenantfile
from ..exceptions import EmptySelection, ImportFileError
from ..models import Selector, TenantSpec
from ..secrets import SecretBox
from ..selection import select
from .auth import Principal
from .problems import responses
from .schemas import Imported, TenantIn, TenantOut, TenantPage, TenantPatch, TenantRunOut
from .service import Service, require, service

log = logging.getLogger("tenantctl.api")
router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"], responses=responses(401, 403, 422, 503))
Viewer = Annotated[Principal, Depends(require("viewer"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Svc = Annotated[Service, Depends(service)]
Limit = Annotated[int, Query(ge=1, le=10_000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
IMPORT_TYPES = {
    "application/json": "json",
    "text/csv": "csv",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
}


def _box(svc: Service) -> SecretBox:
    key = svc.settings.secret_key
    return SecretBox(key.get_secret_value() if key else None)


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


@router.get("", response_model=TenantPage, responses=responses(404))
async def list_tenants(
    _: Viewer,
    svc: Svc,
    tenant: Annotated[list[str] | None, Query()] = None,
    tag: Annotated[list[str] | None, Query()] = None,
    group: Annotated[str | None, Query(max_length=63)] = None,
    exclude: Annotated[list[str] | None, Query()] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> JSONResponse:
    """Tenants in id order, passwords masked; with selectors, only the enabled ones they match."""
    selector = Selector(
        tenants=tuple(tenant or ()), tags=tuple(tag or ()), group=group, exclude=tuple(exclude or ())
    )
    if selector == Selector():  # the page alone from the store, as `tenants list --limit --offset`
        page, total = await svc.store.tenants_page(limit, offset)
    else:
        try:
            tenants = select(await svc.store.list_tenants(), selector)
        except EmptySelection:
            tenants = []
        page, total = tenants[offset : offset + limit], len(tenants)
    items = [reports.tenant(t) for t in page]
    return _json({"items": items, "total": total, "limit": limit, "offset": offset})


@router.post("", status_code=201, response_model=TenantOut, responses=responses(400, 409))
async def create_tenant(body: TenantIn, principal: Admin, svc: Svc) -> JSONResponse:
    spec = TenantSpec(
        id=body.id,
        url=body.url,
        schema=body.schema_,
        tags=tuple(body.tags),
        group=body.group,
        enabled=body.enabled,
    )
    tenant = await registry.add(svc.store, spec, _box(svc), principal.name)
    log.info("tenant %s created by %s", tenant.id, principal.name)
    return _json(reports.tenant(tenant), 201)


@router.post(
    "/import",
    response_model=Imported,
    responses=responses(409),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string"}} for t in ("text/yaml", "text/csv")}
            | {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
        }
    },
)
async def import_tenants(
    request: Request,
    principal: Admin,
    svc: Svc,
    fmt: Annotated[str | None, Query(alias="format", pattern="^(yaml|json|csv)$")] = None,
) -> JSONResponse:
    """Create or update tenants from a YAML, JSON or CSV body (``?format=`` or the Content-Type), all or
    nothing, as ``tenants import``."""
    kind = fmt or IMPORT_TYPES.get(request.headers.get("content-type", "").split(";")[0].strip().lower())
    if kind is None:
        raise ImportFileError(
            "<body>", None, "unknown format: send ?format=yaml|json|csv or its Content-Type"
        )
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ImportFileError("<body>", line, f"not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    specs = tenantfile.parse(text, kind)
    counts = await registry.import_specs(svc.store, specs, _box(svc), principal.name)
    log.info("tenants imported by %s: %s", principal.name, reports.imported(counts))
    return _json(reports.imported(counts))


@router.get("/{tenant_id}", response_model=TenantOut, responses=responses(404))
async def get_tenant(tenant_id: str, _: Viewer, svc: Svc) -> JSONResponse:
    return _json(reports.tenant(await svc.store.get_tenant(tenant_id)))


@router.patch("/{tenant_id}", response_model=TenantOut, responses=responses(400, 404, 409))
async def update_tenant(tenant_id: str, body: TenantPatch, principal: Admin, svc: Svc) -> JSONResponse:
    """Change the fields given; a URL not given keeps the stored one and its password."""
    changes = body.model_dump(exclude_unset=True, by_alias=True)
    tenant = await registry.update(svc.store, tenant_id, changes, _box(svc), principal.name)
    log.info("tenant %s updated by %s: %s", tenant_id, principal.name, ", ".join(sorted(changes)))
    return _json(reports.tenant(tenant))


@router.post("/{tenant_id}/enable", response_model=TenantOut, responses=responses(404))
async def enable_tenant(tenant_id: str, principal: Admin, svc: Svc) -> JSONResponse:
    await svc.store.set_enabled(tenant_id, True, principal.name)
    return _json(reports.tenant(await svc.store.get_tenant(tenant_id)))


@router.post("/{tenant_id}/disable", response_model=TenantOut, responses=responses(404))
async def disable_tenant(tenant_id: str, principal: Admin, svc: Svc) -> JSONResponse:
    await svc.store.set_enabled(tenant_id, False, principal.name)
    return _json(reports.tenant(await svc.store.get_tenant(tenant_id)))


@router.delete("/{tenant_id}", status_code=204, responses=responses(404))
async def delete_tenant(tenant_id: str, principal: Admin, svc: Svc) -> Response:
    """Remove a tenant from the registry (its database is not touched; its run history is kept)."""
    await svc.store.remove_tenant(tenant_id)
    log.info("tenant %s removed by %s", tenant_id, principal.name)
    return Response(status_code=204)


@router.get("/{tenant_id}/runs", response_model=list[TenantRunOut], responses=responses(404))
async def tenant_runs(
    tenant_id: str, _: Viewer, svc: Svc, limit: Limit = 100, offset: Offset = 0
) -> JSONResponse:
    """The tenant's attempts across rollouts, newest first, with their scrubbed tracebacks."""
    await svc.store.get_tenant(tenant_id)
    runs = list(reversed(await svc.store.tenant_history(tenant_id)))
    return _json([reports.tenant_run(r) for r in runs[offset : offset + limit]])
