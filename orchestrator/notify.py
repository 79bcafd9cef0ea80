"""Notifications: a Slack-compatible webhook called when a rollout finishes or halts (and, later, when an
audit finds new drift). Best effort: a webhook that fails is logged, never fails the rollout."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from .secrets import mask_text
from .settings import Settings

log = logging.getLogger("tenantctl.notify")
FIRST_FAILURES = 5


def rollout_message(report: Mapping[str, Any], halt_reason: str | None = None) -> dict[str, Any]:
    """The webhook body: ``text`` for Slack, plus the structured fields for anything else."""
    counts = {k: v for k, v in report["counts"].items() if v}
    failed = [t for t in report["tenants"] if t["status"] == "failed"][:FIRST_FAILURES]
    lines = [
        f"tenantctl rollout {report['id']} ({report['command']} {report['target']}): *{report['state']}*"
        + (f" — {halt_reason}" if halt_reason else ""),
        ", ".join(f"{n} {status}" for status, n in counts.items()),
    ]
    lines += [
        f"• {t['tenant']}: {(t['error'] or '').splitlines()[0][:200] if t['error'] else ''}" for t in failed
    ]
    return {
        "text": "\n".join(lines),
        "rollout": report["id"],
        "state": report["state"],
        "counts": report["counts"],
        "halt_reason": halt_reason,
        "first_failures": [{"tenant": t["tenant"], "error": t["error"]} for t in failed],
    }


def drift_message(report: Mapping[str, Any]) -> dict[str, Any]:
    """New drift found by an audit: one line per group, the first tenants named."""
    new = list(report["changes"]["new_drift"])
    lines = [
        f"tenantctl {report['kind']} audit {report['id']}: {len(new)} tenant(s) drifted since the last audit"
        f" ({report['drift']} drifting in all)",
    ]
    lines += [f"• {g['summary']}" for g in report.get("groups", [])[: FIRST_FAILURES * 2]]
    return {
        "text": "\n".join(lines),
        "audit": report["id"],
        "kind": report["kind"],
        "drift": report["drift"],
        "new_drift": new,
        "resolved": list(report["changes"]["resolved"]),
    }


def _post(url: str, body: dict[str, Any], timeout: float) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


async def send(settings: Settings, body: dict[str, Any]) -> bool:
    """POST ``body`` to the webhook, if one is set; True when it was delivered."""
    if settings.webhook_url is None:
        return False
    url = settings.webhook_url.get_secret_value()
    try:
        await asyncio.to_thread(_post, url, body, settings.webhook_timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("webhook failed: %s", mask_text(str(exc), [url]))
        return False
    return True
