"""The HTTP service: ``create_app`` builds the FastAPI application ``tenantctl serve`` runs.

Every route is a thin adapter over the same verbs as the CLI (:mod:`orchestrator.coordinator`,
:mod:`orchestrator.registry`, :mod:`orchestrator.auditor`) and answers with the same JSON builders, so
a rollout started over HTTP and one started from the CLI leave the same rows and read the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..controldb.store import Store
from ..settings import Settings
from . import dashboard, problems, routes_audits, routes_ops, routes_rollouts, routes_tenants
from .auth import AuthenticateFirst, Authenticator
from .background import Background
from .events import Feeds
from .service import Service


def create_app(settings: Settings, environ: Mapping[str, str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Store(settings.database_url.get_secret_value(), pooled=True) as store:
            await store.ensure_ready()
            from ..metrics import ControlMetrics

            svc = Service(
                settings=settings,
                environ=environ,
                store=store,
                auth=Authenticator(settings),
                feeds=Feeds(store, settings),
                background=Background(settings, environ) if settings.broker_url is None else None,
                metrics=ControlMetrics(settings),
            )
            app.state.service = svc
            svc.start_reaper()
            try:
                yield
            finally:
                await svc.close()

    app = FastAPI(
        title="tenantctl",
        version=__version__,
        description="Roll Alembic migrations across tenants, and know where each one stands.",
        lifespan=lifespan,
        openapi_url=None,  # served by routes_ops behind a viewer's token, like every endpoint
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: not on a server of ours
        redoc_url=None,
    )
    problems.install(app)
    app.add_middleware(AuthenticateFirst)
    for module in (routes_ops, routes_tenants, routes_rollouts, routes_audits):
        app.include_router(module.router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static(), name="static")
    return app
