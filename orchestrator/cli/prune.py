"""``tenantctl prune``: delete old runs, rollouts and audits from the control DB (``retention.prune``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from .. import retention
from .common import JsonOpt, out, print_json, run, settings

commands = typer.Typer()
"""Top-level commands, merged into the main app (see app.py)."""


@commands.command()
def prune(
    older_than: Annotated[
        int,
        typer.Option(
            "--older-than",
            metavar="DAYS",
            min=0,
            max=retention.MAX_DAYS,
            help="Delete history that ended more than DAYS days ago (0: any that has ended).",
        ),
    ],
    keep_last: Annotated[
        int,
        typer.Option(
            "--keep-last", metavar="N", min=0, help="Keep the N newest finished rollouts whatever their age."
        ),
    ] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            metavar="ROWS",
            min=1,
            max=retention.MAX_BATCH,
            help="Rows deleted per transaction.",
        ),
    ] = retention.BATCH,
    as_json: JsonOpt = False,
) -> None:
    """Delete runs of finished rollouts and audits older than DAYS, in batches. Never a rollout in
    progress, a tenant's latest attempt, the --keep-last newest rollouts or the latest audit of each kind."""
    rule = retention.Retention(older_than_days=older_than, keep_last=keep_last)
    now = datetime.now(UTC)
    counts = run(
        lambda store: retention.prune(store, rule, now=now, batch_size=batch_size, dry_run=dry_run),
        cfg=settings(),
    )
    if as_json:
        print_json(counts.to_json(rule, now))
    else:
        out.print(counts.describe(), highlight=False)
