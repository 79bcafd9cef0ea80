"""Showing rollouts to people: the live progress bar and the summary table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..models import RunStatus
from .common import err, out

STATUS_STYLE = {
    "succeeded": "green",
    "skipped": "dim",
    "failed": "red",
    "running": "yellow",
    "queued": "cyan",
    "halted": "yellow",
    "cancelled": "yellow",
}


class ProgressObserver:
    """A live bar on stderr; failures are printed as they happen, so a long run shows trouble early."""

    def __init__(self, label: str, *, quiet: bool = False) -> None:
        self.label = label
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=err,
            transient=False,
            disable=quiet,
        )
        self.task: Any = None
        self.done = 0
        self.failed = 0
        self.skipped = 0

    def __enter__(self) -> ProgressObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def planned(
        self, rollout_id: int, total: int, done: int, skipped: int, failures: list[tuple[str, str]]
    ) -> None:
        self.done = done
        self.failed = len(failures)
        self.skipped = skipped
        self.task = self.progress.add_task(
            f"rollout {rollout_id} {self.label}", total=max(total, 1), completed=done, detail=""
        )
        for tenant, message in failures:
            self.progress.console.print(f"[red]✗[/red] {tenant}: {message}", highlight=False)
        self._refresh()

    def finished(self, tenant_id: str, status: RunStatus, error: str | None) -> None:
        self.done += 1
        if status is RunStatus.FAILED:
            self.failed += 1
            first = error.splitlines()[0] if error else ""
            self.progress.console.print(f"[red]✗[/red] {tenant_id}: {first}", highlight=False)
        elif status is RunStatus.SKIPPED:  # a unit found it there (planned unread, or moved meanwhile)
            self.skipped += 1
        self._refresh()

    def _refresh(self) -> None:
        detail = f"[red]{self.failed} failed[/red]" if self.failed else ""
        if self.skipped:
            detail = f"{self.skipped} already at target " + detail
        self.progress.update(self.task, completed=self.done, detail=detail)


def next_step(report: Mapping[str, Any]) -> str:
    """What continues a stopped rollout. A failure budget counts the failed tenants: ``resume`` alone
    would halt again at once, so their cause is fixed and they are retried first."""
    rid = report["id"]
    if report["state"] == "halted" and report["counts"].get("failed", 0):
        return f"fix the failures, `tenantctl retry {rid}`, then `tenantctl resume {rid}`"
    return f"`tenantctl resume {rid}`"


def summary(report: Mapping[str, Any]) -> None:
    """The end-of-rollout table: counts by status, then every failed tenant with its error."""
    counts = {k: v for k, v in report["counts"].items() if v}
    parts = ", ".join(f"[{STATUS_STYLE.get(k, '')}]{v} {k}[/]" for k, v in counts.items())
    out.print(
        f"rollout {report['id']}: {report['command']} {report['target']} — "
        f"[bold]{report['state']}[/bold] ({parts})",
        highlight=False,
    )
    if report.get("halt_reason"):
        out.print(f"[yellow]{report['state']}: {report['halt_reason']}[/yellow] — {next_step(report)}")
    busy: dict[int, list[str]] = {}
    for t in report["tenants"]:
        if t.get("blocked_by") is not None:
            busy.setdefault(t["blocked_by"], []).append(t["tenant"])
    for holder, tenants in sorted(busy.items()):
        shown = ", ".join(tenants[:5]) + (f" and {len(tenants) - 5} more" if len(tenants) > 5 else "")
        out.print(
            f"[yellow]{len(tenants)} skipped: rollout {holder} holds {shown}[/yellow] — "
            f"`tenantctl status {holder} --follow`",
            highlight=False,
        )
    failed = [t for t in report["tenants"] if t["status"] == "failed"]
    if failed:
        table = Table("tenant", "at", "error class", "error", box=None, header_style="bold red")
        for t in failed[:50]:
            table.add_row(
                t["tenant"], t["to_revision"] or "base", t["error_class"] or "", (t["error"] or "")[:200]
            )
        out.print(table)
        if len(failed) > 50:
            out.print(f"… and {len(failed) - 50} more: tenantctl status {report['id']} --json")


def status_table(report: Mapping[str, Any]) -> None:
    table = Table("tenant", "attempt", "status", "from", "to", "ms", "error", box=None, header_style="bold")
    for t in report["tenants"]:
        style = STATUS_STYLE.get(t["status"], "")
        table.add_row(
            t["tenant"],
            str(t["attempt"]),
            f"[{style}]{t['status']}[/]",
            t["from_revision"] or "base",
            t["to_revision"] or ("base" if t["status"] in ("succeeded", "failed", "skipped") else ""),
            "" if t["duration_ms"] is None else str(t["duration_ms"]),
            (t["error"] or t.get("note") or "")[:120],
        )
    out.print(table)
    summary(report)
