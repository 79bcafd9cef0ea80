"""``/api/v1/rollouts``: start, watch, retry, cancel and resume rollouts, as the CLI's verbs do.

A rollout started here returns 202 at once with its ``status`` JSON; Celery workers carry it when a broker
is configured, else the server's own pool (:mod:`.background`). ``GET /rollouts/{id}`` is exactly
``tenantctl status ID --json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Path, Query
from fastapi.responses import JSONResponse, StreamingResponse

from .. import coordinator, preview, reports
from ..controldb.store import Seen
from ..models import Command, ErrorClass, Policy
from ..policy import parse_rate
from .auth import Principal
from .problems import ApiError, responses
from .schemas import Overrides, PlanOut, RolloutPage, RolloutReport, RolloutRequest
from .service import Service, require, service

log = logging.getLogger("tenantctl.api")
router = APIRouter(prefix="/api/v1/rollouts", tags=["rollouts"], responses=responses(401, 403, 422, 503))
Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Deployer = Annotated[Principal, Depends(require("deployer"))]
Svc = Annotated[Service, Depends(service)]
RolloutId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ADMIN_COMMANDS = (Command.DOWNGRADE, Command.STAMP)
CHANGES = responses(400, 404, 409)


@router.get("", response_model=RolloutPage)
async def list_rollouts(
    _: Viewer,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> JSONResponse:
    """Rollouts, newest first, as ``tenantctl rollouts --json``, a page at a time."""
    items = await coordinator.rollouts(svc.store, limit, offset)
    total = await svc.store.count_rollouts()
    return JSONResponse({"items": items, "total": total, "limit": limit, "offset": offset})


def _policy(body: RolloutRequest) -> Policy:
    rate = body.max_failure_rate
    return Policy(
        canary=body.canary,
        canary_tag=body.canary_tag,
        batch_size=body.batch_size,
        max_failures=body.max_failures,
        max_failure_rate=parse_rate(str(rate)) if rate is not None else None,
        lock_timeout=body.lock_timeout,
        statement_timeout=body.statement_timeout,
        task_timeout=body.task_timeout,
    )


def _fingerprint(body: RolloutRequest) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


@router.post(
    "",
    status_code=202,
    response_model=RolloutReport,
    responses=responses(400, 404, 409, also={200: {"model": PlanOut, "description": "dry_run: the plan"}}),
)
async def create_rollout(
    body: RolloutRequest,
    principal: Deployer,
    svc: Svc,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Start ``command revision`` over the selected tenants (deployer; admin for downgrade and stamp).
    With ``dry_run``: 200 and the plan, nothing changed. The same ``Idempotency-Key`` and body return
    the same rollout; the same key with another body is 409."""
    if body.command in ADMIN_COMMANDS and not principal.may("admin"):
        raise ApiError(
            403,
            "Forbidden",
            f"token {principal.name!r} is {principal.role}; {body.command.value} needs admin",
        )
    selector = body.selector()
    policy = _policy(body)
    if body.dry_run:
        rows = await preview.preview(
            svc.settings,
            svc.store,
            command=body.command,
            revision=body.revision,
            selector=selector,
            environ=svc.environ,
        )
        refused = preview.refusal(body.revision, rows)
        return JSONResponse(
            reports.plan(body.command, body.revision, rows, refused.message if refused else None)
        )
    if idempotency_key is not None:
        seen, earlier = await svc.store.claim_idempotency(principal.name, idempotency_key, _fingerprint(body))
        if seen is Seen.OTHER:
            raise ApiError(
                409, "Idempotency key reused", "this Idempotency-Key was used with another request body"
            )
        if seen is Seen.SAME:
            if earlier is None:
                raise ApiError(
                    409, "Request in progress", "the first request with this Idempotency-Key is still running"
                )
            return JSONResponse(await coordinator.status(svc.store, earlier), status_code=202)
    try:
        rollout_id = await coordinator.rollout(
            svc.settings,
            svc.store,
            command=body.command,
            revision=body.revision,
            selector=selector,
            parallel=body.parallel,
            policy=policy,
            created_by=principal.name,
            environ=svc.environ,
            executor=svc.executor(body.parallel),
            wait=False,
            confirm=coordinator.Confirmation(limit=svc.settings.api_max_selection, count=body.confirm_count),
        )
    except BaseException:
        if idempotency_key is not None:
            await svc.store.settle_idempotency(principal.name, idempotency_key, None)
        raise
    if idempotency_key is not None:
        await svc.store.settle_idempotency(principal.name, idempotency_key, rollout_id)
    log.info("rollout %s started by %s", rollout_id, principal.name, extra={"rollout_id": rollout_id})
    return JSONResponse(await coordinator.status(svc.store, rollout_id), status_code=202)


@router.get("/{rollout_id}", response_model=RolloutReport, responses=responses(404))
async def get_rollout(
    rollout_id: RolloutId,
    _: Viewer,
    svc: Svc,
    failed: bool = False,
    error_class: ErrorClass | None = None,
    attempts: bool = False,
    tracebacks: bool = False,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> JSONResponse:
    """``tenantctl status ID --json``, exactly; ``limit``/``offset`` page the tenants (then ``page`` says
    where, and ``counts`` stay the whole rollout's)."""
    report = await coordinator.status(
        svc.store,
        rollout_id,
        attempts=attempts,
        tracebacks=tracebacks,
        failed=failed,
        error_class=error_class,
        limit=limit,
        offset=offset if limit is not None else 0,
    )
    return JSONResponse(report)


@router.post(
    "/{rollout_id}/retry", status_code=202, response_model=RolloutReport, responses=responses(400, 404, 409)
)
async def retry(
    rollout_id: RolloutId, principal: Operator, svc: Svc, body: Annotated[Overrides | None, Body()] = None
) -> JSONResponse:
    """Run the failed tenants again (all, or those the selectors match), as new attempts."""
    body = body or Overrides()
    await coordinator.retry(
        svc.settings,
        svc.store,
        rollout_id=rollout_id,
        selector=body.selector(),
        environ=svc.environ,
        executor=svc.executor(body.parallel),
        wait=False,
        overrides=_overrides(body),
    )
    log.info("rollout %s retried by %s", rollout_id, principal.name, extra={"rollout_id": rollout_id})
    return JSONResponse(await coordinator.status(svc.store, rollout_id), status_code=202)


@router.post(
    "/{rollout_id}/resume", status_code=202, response_model=RolloutReport, responses=responses(400, 404, 409)
)
async def resume(
    rollout_id: RolloutId, principal: Operator, svc: Svc, body: Annotated[Overrides | None, Body()] = None
) -> JSONResponse:
    """Continue a halted or cancelled rollout."""
    body = body or Overrides()
    if body.selector() != Overrides().selector():
        raise ApiError(422, "Invalid request", "resume takes no selectors: it continues the whole rollout")
    await coordinator.resume(
        svc.settings,
        svc.store,
        rollout_id=rollout_id,
        environ=svc.environ,
        executor=svc.executor(body.parallel),
        wait=False,
        overrides=_overrides(body),
    )
    log.info("rollout %s resumed by %s", rollout_id, principal.name, extra={"rollout_id": rollout_id})
    return JSONResponse(await coordinator.status(svc.store, rollout_id), status_code=202)


@router.post("/{rollout_id}/cancel", response_model=RolloutReport, responses=responses(404, 409))
async def cancel(rollout_id: RolloutId, principal: Operator, svc: Svc) -> JSONResponse:
    """Tenants not started are not started; running ones stop after their current migration."""
    await coordinator.cancel(svc.settings, svc.store, rollout_id=rollout_id, by=principal.name)
    return JSONResponse(await coordinator.status(svc.store, rollout_id))


@router.get(
    "/{rollout_id}/events",
    responses=responses(404, also={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}}),
)
async def events(rollout_id: RolloutId, _: Viewer, svc: Svc) -> StreamingResponse:
    """Server-sent events: ``snapshot`` (every tenant: id, status, attempt, error class, error), then
    ``tenants`` (changed ones) and ``counts`` as they change, and ``end`` once the rollout is over."""
    stream = await svc.feeds.subscribe(rollout_id)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


def _overrides(body: Overrides) -> coordinator.Overrides:
    return coordinator.Overrides(
        parallel=body.parallel,
        lock_timeout=body.lock_timeout,
        statement_timeout=body.statement_timeout,
        task_timeout=body.task_timeout,
    )
