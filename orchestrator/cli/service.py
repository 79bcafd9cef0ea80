"""Service commands: the Celery worker and beat, and one reaper pass by hand."""

from __future__ import annotations

import os

import typer

from .. import reaper
from ..controldb.store import Store
from .common import JsonOpt, err, out, print_json, run, settings

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


commands = typer.Typer()
"""Top-level commands, merged into the main app (see app.py)."""


@commands.command(context_settings=PASS_THROUGH)
def worker(ctx: typer.Context) -> None:
    """A Celery worker for tenantctl's queue; extra Celery options pass through (e.g. -c 4)."""
    from workers.app import make_app

    cfg = settings()
    app_ = make_app(cfg)
    app_.worker_main(["worker", "-Q", cfg.queue, "--loglevel", "INFO", *ctx.args])


@commands.command(context_settings=PASS_THROUGH)
def beat(ctx: typer.Context) -> None:
    """Celery beat: the reaper every TENANTCTL_REAP_INTERVAL seconds (and the nightly audit)."""
    from workers.app import make_app

    make_app(settings()).start(["beat", "--loglevel", "INFO", *ctx.args])


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
        print_json([r.__dict__ | {"status": r.status.value} for r in reaped])
        return
    for r in reaped:
        out.print(f"rollout {r.rollout_id} {r.tenant_id}: {r.status.value} — {r.message}", highlight=False)
    err.print(f"{len(reaped)} run(s) settled")
