"""Service commands: the Celery worker and beat, and one reaper pass by hand."""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Annotated

import typer

from .. import logs, reaper, reports
from ..controldb.store import Store
from ..settings import Settings
from .common import JsonOpt, err, out, print_json, run, settings

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


commands = typer.Typer()
"""Top-level commands, merged into the main app (see app.py)."""


@commands.command(context_settings=PASS_THROUGH)
def worker(
    ctx: typer.Context,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Serve this worker's Prometheus metrics (units carried, their durations) on this port.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address the metrics are served on.")
    ] = "0.0.0.0",
) -> None:
    """A Celery worker for tenantctl's queue; extra Celery options pass through (e.g. -c 4)."""
    from workers import metrics

    cfg = settings(celery=True)
    # multiprocess mode first: before prometheus-client makes a value and before Celery forks its pool
    with metrics.serving(metrics_port, metrics_host) if metrics_port else nullcontext():
        from workers.app import make_app

        app_ = make_app(cfg)
        app_.worker_main([*_quiet(cfg), "worker", "-Q", cfg.queue, "--loglevel", cfg.log_level, *ctx.args])


@commands.command(context_settings=PASS_THROUGH)
def beat(ctx: typer.Context) -> None:
    """Celery beat: the reaper every TENANTCTL_REAP_INTERVAL seconds (and the nightly audit)."""
    from workers.app import make_app

    cfg = settings(celery=True)
    make_app(cfg).start([*_quiet(cfg), "beat", "--loglevel", cfg.log_level, *ctx.args])


def _quiet(cfg: Settings) -> list[str]:
    """With JSON logs, no Celery start-up banner: it is not a log line, and would be the only lines of the
    stream that are not JSON."""
    return ["--quiet"] if cfg.log_format == "json" else []


@commands.command()
def reap(as_json: JsonOpt = False) -> None:
    """One reaper pass now: settle runs whose worker vanished, re-send lost messages."""
    cfg = settings()
    environ = dict(os.environ)
    send = None
    if cfg.broker_url is not None:
        from workers.app import make_app
        from workers.tasks import sender

        send = sender(make_app(cfg), cfg)

    async def go(store: Store) -> list[reaper.Reaped]:
        return await reaper.reap(store, cfg, environ, send)

    reaped = run(go, cfg=cfg)
    if as_json:
        print_json(reports.reaped(reaped))
        return
    for r in reaped:
        out.print(f"rollout {r.rollout_id} {r.tenant_id}: {r.status.value} — {r.message}", highlight=False)
    err.print(f"{len(reaped)} run(s) settled")


@commands.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """The HTTP API, the dashboard and /metrics (FastAPI on uvicorn). Rollouts started over HTTP run on
    the Celery workers when a broker is set, else in this server's own pool of processes."""
    import uvicorn

    from ..api.app import create_app

    cfg = settings()
    run(lambda store: store.ensure_ready(), cfg=cfg)  # one line, exit 2, before the port is taken
    logs.configure(cfg)  # a service logs at INFO (access lines included), in text or JSON
    if not cfg.api_tokens:
        err.print("no TENANTCTL_API_TOKENS: every request but /healthz and /readyz will be refused (401)")
    app = create_app(cfg, dict(os.environ))
    uvicorn.run(app, host=host, port=port, log_config=None, timeout_graceful_shutdown=10, access_log=True)
