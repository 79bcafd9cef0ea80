"""Planning a rollout: which selected tenants get a task, which are skipped as already at the target,
and which cannot be reached; and whether the target can be reached at all from where the queued tenants
stand. Pure: the revisions were read before, nothing is written here."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError

from .exceptions import TargetUnreachable
from .models import Command, ErrorClass, Tenant
from .revisions import RevisionRead
from .scripts import Target

ALREADY_AT_TARGET = "already at target"


@dataclass(frozen=True, kw_only=True)
class Plan:
    queued: list[tuple[str, str | None]] = field(default_factory=list)
    skipped: list[tuple[str, str | None, str]] = field(default_factory=list)
    failed: list[tuple[str, ErrorClass, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.queued) + len(self.skipped) + len(self.failed)


def known_behind(
    tenants: Sequence[Tenant], known: Mapping[str, tuple[str, ...]], target: Target
) -> dict[str, tuple[str, ...]]:
    """The tenants tenantctl last saw short of the target (any tenant seen, for a relative target): they
    are queued without a preflight read. Their unit reads the revision under the tenant's lock anyway,
    and records the tenant as skipped if it is at the target after all; the read, a second connection
    per tenant, cost 3.8 ms of machine CPU per tenant (3.4 of it PostgreSQL's) and 0.48 s before the
    first migration at 200 tenants (measured).
    Tenants never seen, or seen at the target, are read: a skip is only ever decided on a live read."""
    return {t.id: known[t.id] for t in tenants if t.id in known and not target.reached_by(known[t.id])}


def plan(
    tenants: Sequence[Tenant],
    reads: Mapping[str, RevisionRead],
    target: Target,
    unusable: Mapping[str, tuple[ErrorClass, str]] | None = None,
    behind: Mapping[str, tuple[str, ...]] | None = None,
) -> Plan:
    """Queue every tenant that is reachable and not already at an absolute target; ``behind`` (see
    :func:`known_behind`) are queued unread, from where tenantctl last saw them."""
    result = Plan()
    unusable = unusable or {}
    behind = behind or {}
    for tenant in tenants:
        if tenant.id in unusable:
            cls, message = unusable[tenant.id]
            result.failed.append((tenant.id, cls, message))
            continue
        if tenant.id in behind:
            result.queued.append((tenant.id, ",".join(behind[tenant.id]) or None))
            continue
        read = reads[tenant.id]
        current = ",".join(read.heads) or None
        if not read.ok:
            result.failed.append((tenant.id, read.error_class or ErrorClass.UNREACHABLE, read.error or ""))
        elif target.reached_by(read.heads):
            result.skipped.append((tenant.id, current, ALREADY_AT_TARGET))
        else:
            result.queued.append((tenant.id, current))
    return result


StepCount = Callable[[Command, str, tuple[str, ...]], int]
"""How many migrations ``command spec`` runs for a tenant at the given revisions; raises one of
:data:`NO_PATH` when there is no way there."""

NO_PATH = (CommandError, RevisionError, AssertionError)
"""What Alembic's step computation raises for an unreachable target: CommandError (``Relative revision
+7 didn't produce 7 migrations``, ``not a valid downgrade target``), RevisionError, and a bare
AssertionError for a relative spec anchored past the head (``head+100``)."""

_RELATIVE = re.compile(r"^(?P<anchor>.*?)(?P<sign>[+-])(?P<n>\d+)$")


def alembic_steps(script: ScriptDirectory) -> StepCount:
    """The steps exactly as the unit of work computes them (``unit.run_alembic``), so a target refused
    here is one every such tenant's unit would have failed on. Alembic's warnings (``downgrade -1 from
    multiple heads is ambiguous``) are left to the unit, which runs the steps."""

    def count(command: Command, spec: str, current: tuple[str, ...]) -> int:
        heads: Any = current  # Alembic's private step functions take the current heads as a tuple
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if command is Command.UPGRADE:
                return len(script._upgrade_revs(spec, heads))
            if command is Command.DOWNGRADE:
                return len(script._downgrade_revs(spec, heads))
            return len(script._stamp_revs((spec,), heads))

    return count


def unreachable(
    steps: StepCount,
    heads: tuple[str, ...],
    command: Command,
    spec: str,
    current: Mapping[str, tuple[str, ...]],
) -> dict[str, list[str]]:
    """Why ``command spec`` cannot be carried out from each tenant's ``current`` revisions: reason →
    tenants, empty when every tenant has a path. Each distinct revision is asked once, so a fleet costs a
    handful of calls. A tenant on a revision the scripts do not know is left to its unit, which records
    it as for any rollout: the target is not what is wrong there."""
    by_origin: dict[tuple[str, ...], list[str]] = {}
    for tenant, revisions in current.items():
        by_origin.setdefault(tuple(sorted(revisions)), []).append(tenant)
    found: dict[str, list[str]] = {}
    for origin, tenants in by_origin.items():
        reason = _no_path(steps, heads, command, spec, origin)
        if reason is not None:
            found.setdefault(reason, []).extend(tenants)
    return found


def check_reachable(script: ScriptDirectory, command: Command, spec: str, the_plan: Plan) -> None:
    """Refuse the rollout (TargetUnreachable, exit 3) when a queued tenant cannot reach the target, before
    anything is recorded: ``upgrade head+100`` used to create a rollout whose every tenant failed with a
    bare AssertionError. Queued tenants are checked from the revision they were planned with (read, or
    last seen for those planned unread)."""
    current = {tenant: tuple(rev.split(",")) if rev else () for tenant, rev in the_plan.queued}
    found = unreachable(alembic_steps(script), tuple(sorted(script.get_heads())), command, spec, current)
    if found:
        raise TargetUnreachable(spec, found)


def _no_path(
    steps: StepCount, heads: tuple[str, ...], command: Command, spec: str, origin: tuple[str, ...]
) -> str | None:
    try:
        steps(command, spec, origin)
        return None
    except NO_PATH as exc:
        error = str(exc).splitlines()[0] if str(exc) else ""
    if _counts(steps, Command.UPGRADE, "heads", origin) is None:
        return None  # the tenant's own revision is unknown to the scripts, not the target
    return _overshoot(steps, heads, command, spec, origin) or _other(steps, command, spec, origin, error)


def _overshoot(
    steps: StepCount, heads: tuple[str, ...], command: Command, spec: str, origin: tuple[str, ...]
) -> str | None:
    """``head+100``, ``+7`` or ``-50`` asked for more steps than the history has from where it starts."""
    match = _RELATIVE.match(spec)
    if match is None:
        return None
    anchor, up, n = match["anchor"], match["sign"] == "+", int(match["n"])
    if not anchor and command is Command.STAMP:
        return None  # Alembic's stamp does not count from where the tenant is
    if not anchor and up is (command is Command.DOWNGRADE):
        return f"goes {'up, not down (use upgrade)' if up else 'down, not up (use downgrade)'}"
    if not anchor:
        start = origin
    elif anchor in ("head", "heads", "base"):
        start = () if anchor == "base" else heads
    else:
        start = (anchor,)
    room = _counts(steps, *((Command.UPGRADE, "heads") if up else (Command.DOWNGRADE, "base")), start)
    if room is None or n <= room:
        return None
    beyond = f"past the head {','.join(heads)}" if up else "below base"
    return f"is {_steps(n - room)} {beyond}" + ("" if anchor else f" from {_where(origin)}")


def _other(steps: StepCount, command: Command, spec: str, origin: tuple[str, ...], error: str) -> str:
    if command is Command.DOWNGRADE and _counts(steps, Command.UPGRADE, spec, origin):
        return f"is above {_where(origin)} (use upgrade)"
    return f"cannot be reached by {command.value} from {_where(origin)} ({error or 'Alembic finds no path'})"


def _counts(steps: StepCount, command: Command, spec: str, origin: tuple[str, ...]) -> int | None:
    """The step count, or None where Alembic finds no path (0 is a path: already there)."""
    try:
        return steps(command, spec, origin)
    except NO_PATH:
        return None


def _where(origin: tuple[str, ...]) -> str:
    return ",".join(origin) or "base"


def _steps(n: int) -> str:
    return f"{n} step{'' if n == 1 else 's'}"
