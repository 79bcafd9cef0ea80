"""Looking before leaping: the dry-run plan and the offline SQL of a rollout. Nothing here writes to a
tenant or to the control database."""

from __future__ import annotations

import io
import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from alembic.util import CommandError

from . import scripts
from .controldb.store import Store
from .coordinator import read_current, resolve_selection
from .exceptions import ConfigurationError, TargetUnreachable
from .models import Command, Selector
from .planning import alembic_steps, unreachable
from .settings import Settings
from .unit import alembic_config_for, run_alembic


@dataclass(frozen=True, kw_only=True)
class Step:
    from_revision: str | None
    to_revision: str | None
    steps: int
    error: str | None = None


def steps_for(script: ScriptDirectory, command: Command, target: str, current: tuple[str, ...]) -> Step:
    """Where ``command target`` takes a tenant at ``current``, and how many migrations it runs (pure)."""
    here = ",".join(current) or None
    heads: Any = current  # Alembic's private step functions take the current heads as a tuple
    try:
        if command is Command.UPGRADE:
            steps = script._upgrade_revs(target, heads)
        elif command is Command.DOWNGRADE:
            steps = script._downgrade_revs(target, heads)
        else:
            resolved = script.get_revisions(target)
            dest = ",".join(sorted(r.revision for r in resolved if r is not None)) or None
            return Step(from_revision=here, to_revision=dest, steps=0)
    except CommandError as exc:
        return Step(from_revision=here, to_revision=None, steps=0, error=str(exc).splitlines()[0])
    if not steps:
        return Step(from_revision=here, to_revision=here, steps=0)
    dest = ",".join(sorted(steps[-1].to_revisions)) or None
    return Step(from_revision=here, to_revision=dest, steps=len(steps))


@dataclass(frozen=True, kw_only=True)
class PreviewRow:
    tenant: str
    schema: str | None
    step: Step
    error: str | None = None
    refused: bool = False  # the target cannot be reached from where this tenant is


async def preview(
    settings: Settings,
    store: Store,
    *,
    command: Command,
    revision: str,
    selector: Selector,
    environ: Mapping[str, str],
) -> list[PreviewRow]:
    """Every selected tenant's path under ``command revision``, from its live revision."""
    script = scripts.scripts(settings.alembic_config)
    scripts.resolve(script, command, revision)  # same preflight as a real rollout
    resolved = await resolve_selection(settings, store, selector, environ)
    reads = await read_current(settings, resolved)
    # a tenant that cannot reach the target is shown with why; the rollout itself would be refused
    current = {t: r.heads for t, r in reads.items() if r.ok}
    found = unreachable(alembic_steps(script), tuple(sorted(script.get_heads())), command, revision, current)
    why = {tenant: reason for reason, tenants in found.items() for tenant in tenants}
    rows = []
    for tenant in resolved.tenants:
        if tenant.id in resolved.unusable:
            rows.append(
                PreviewRow(
                    tenant=tenant.id, schema=tenant.schema, step=_none, error=resolved.unusable[tenant.id][1]
                )
            )
            continue
        read = reads[tenant.id]
        if not read.ok:
            rows.append(PreviewRow(tenant=tenant.id, schema=tenant.schema, step=_none, error=read.error))
            continue
        if tenant.id in why:
            step = Step(from_revision=",".join(read.heads) or None, to_revision=None, steps=0)
            error = f"cannot reach {revision}: {why[tenant.id]}"
            rows.append(
                PreviewRow(tenant=tenant.id, schema=tenant.schema, step=step, error=error, refused=True)
            )
            continue
        step = steps_for(script, command, revision, read.heads)
        rows.append(PreviewRow(tenant=tenant.id, schema=tenant.schema, step=step, error=step.error))
    return rows


def refusal(revision: str, rows: Sequence[PreviewRow]) -> TargetUnreachable | None:
    """The refusal the rollout itself would meet (exit 3), from a preview's rows; None if none."""
    found: dict[str, list[str]] = {}
    for row in rows:
        if row.refused and row.error:
            found.setdefault(row.error.split(": ", 1)[1], []).append(row.tenant)
    return TargetUnreachable(revision, found) if found else None


_none = Step(from_revision=None, to_revision=None, steps=0)


def group(rows: Sequence[PreviewRow]) -> list[dict[str, Any]]:
    """ "180 tenants r3→r5 (2 steps)", "3 unreachable": one entry per distinct path, biggest first."""
    groups: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for row in rows:
        if row.error is not None:
            groups[("error", row.error.split(":")[0])].append(row.tenant)
        else:
            groups[("path", row.step.from_revision, row.step.to_revision, row.step.steps)].append(row.tenant)
    out = []
    for key, tenants in sorted(groups.items(), key=lambda kv: (-len(kv[1]), str(kv[0]))):
        n = f"{len(tenants)} tenant{'s' if len(tenants) != 1 else ''}"
        if key[0] == "error":
            out.append({"summary": f"{n} not plannable ({key[1]})", "tenants": tenants, "steps": None})
        else:
            _, frm, to, steps = key
            arrow = f"{frm or 'base'}→{to or 'base'}"
            what = "already there" if frm == to else f"{steps} step{'s' if steps != 1 else ''}"
            out.append(
                {
                    "summary": f"{n} {arrow} ({what})",
                    "tenants": tenants,
                    "steps": steps,
                    "from": frm,
                    "to": to,
                }
            )
    return out


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def offline_sql(
    settings: Settings, rows: Sequence[PreviewRow], urls: Mapping[str, str], command: Command, out: Path
) -> dict[str, Any]:
    """Write, per distinct (from, to, schema), the SQL Alembic would run, and ``plan.json`` saying which
    tenants each file is for. Tenants that could not be read are listed, not guessed."""
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    script_path = str(scripts.config_path(settings.alembic_config))
    groups: dict[tuple[str | None, str | None, str | None], list[PreviewRow]] = defaultdict(list)
    skipped: dict[str, str] = {}
    for row in rows:
        if row.error is not None:
            skipped[row.tenant] = row.error
        elif row.step.from_revision == row.step.to_revision and command is not Command.STAMP:
            skipped[row.tenant] = "already at target"
        else:
            groups[(row.step.from_revision, row.step.to_revision, row.schema)].append(row)
    files: dict[str, list[str]] = {}
    for (frm, to, schema), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        name = _SAFE.sub(
            "_", f"{command.value}-{frm or 'base'}-to-{to or 'base'}" + (f"-{schema}" if schema else "")
        )
        buffer = io.StringIO()
        cfg = alembic_config_for(
            script_path, urls[members[0].tenant], members[0].tenant, schema, settings.version_table, None
        )
        cfg.output_buffer = buffer
        destination = to or "base"
        run_alembic(cfg, scripts.load(script_path), command, destination, as_sql=True, starting_rev=frm)
        (out / f"{name}.sql").write_text(buffer.getvalue(), encoding="utf-8")
        files[f"{name}.sql"] = [m.tenant for m in members]
    index = {"command": command.value, "files": files, "not_written": skipped}
    (out / "plan.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return index
