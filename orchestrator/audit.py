"""Drift audits, the pure part: classify what was read from each tenant against the scripts' history,
say what would repair it, group tenants that drift the same way, and tell what changed since the last
audit. No I/O here: ``auditor.py`` reads the tenants and stores the result, ``schema_audit.py`` compares
one tenant's live schema with the models.

A tenant is in exactly one :class:`State`, read from its version table. A schema audit adds, for each
tenant it could reach, the differences between its live schema and the models at head. The models
describe head only, so the differences of a tenant whose version row is elsewhere are kept on the tenant
but only the differences of tenants at head are grouped as schema drift: for the others they are the
expected effect of their revision, or meaningless until their version row is fixed.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any


class AuditKind(enum.StrEnum):
    """``revision`` reads version tables only; ``schema`` also compares each live schema with the models."""

    REVISION = "revision"
    SCHEMA = "schema"


class State(enum.StrEnum):
    """Where a tenant's version table says it is, relative to the scripts' head(s)."""

    AT_HEAD = "at_head"
    BEHIND = "behind"
    UNKNOWN_REVISION = "unknown_revision"
    MULTIPLE_VERSIONS = "multiple_versions"
    NO_VERSION_TABLE = "no_version_table"
    UNREACHABLE = "unreachable"


class Repair(enum.StrEnum):
    """The kind of fix a finding calls for; tenants needing the same fix share one printed command."""

    UPGRADE = "upgrade"
    STAMP = "stamp"
    RESTAMP = "restamp"
    PURGE_STAMP = "purge_stamp"
    EMPTY_OR_STAMP = "empty_or_stamp"
    NEWER_CODE = "newer_code"
    BY_HAND = "by_hand"
    MIGRATION = "migration"
    CHECK_SCHEMA = "check_schema"
    CONNECT = "connect"
    RETRY = "retry"


@dataclass(frozen=True, kw_only=True)
class History:
    """The scripts' revision graph: each revision's parents (``down_revision``) and the heads."""

    parents: Mapping[str, tuple[str, ...]]
    heads: tuple[str, ...]

    def knows(self, revision: str) -> bool:
        return revision in self.parents

    def ancestors(self, revisions: Iterable[str]) -> frozenset[str]:
        """The revisions given and everything below them."""
        seen: set[str] = set()
        stack = [r for r in revisions if r in self.parents]
        while stack:
            rev = stack.pop()
            if rev not in seen:
                seen.add(rev)
                stack.extend(p for p in self.parents[rev] if p in self.parents)
        return frozenset(seen)

    @cached_property
    def order(self) -> tuple[str, ...]:
        """Every revision, base first, parents before children; ties by id so the order is stable."""
        children: dict[str, list[str]] = {r: [] for r in self.parents}
        pending = {r: 0 for r in self.parents}
        for rev, parents in self.parents.items():
            for p in parents:
                if p in children:
                    children[p].append(rev)
                    pending[rev] += 1
        ready = sorted(r for r, n in pending.items() if n == 0)
        out: list[str] = []
        while ready:
            rev = ready.pop(0)
            out.append(rev)
            for child in children[rev]:
                pending[child] -= 1
                if pending[child] == 0:
                    ready.append(child)
            ready.sort()
        return tuple(out)

    @cached_property
    def full(self) -> frozenset[str]:
        return self.ancestors(self.heads)

    @cached_property
    def _missing(self) -> dict[tuple[str, ...], tuple[str, ...]]:
        return {}

    def missing(self, rows: Sequence[str]) -> tuple[str, ...]:
        """What ``upgrade head`` would apply to a tenant at ``rows``, in the order it would (memoised:
        a fleet has few distinct positions)."""
        key = tuple(sorted(rows))
        found = self._missing.get(key)
        if found is None:
            have = self.ancestors(key)
            found = self._missing[key] = tuple(r for r in self.order if r in self.full and r not in have)
        return found


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One tenant in one audit. ``revision`` is its version rows, comma-joined (None when it has none),
    ``unknown`` those rows the scripts do not know; ``differences`` and ``schema_empty`` (no table at
    all) are filled by a schema audit (``schema_checked``); ``hint`` is the repair command, aimed at
    ``target`` (``heads`` when the scripts have several: tenantctl refuses ``head`` then)."""

    tenant_id: str
    state: State
    revision: str | None = None
    behind_by: int | None = None
    missing: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    error: str | None = None
    schema_checked: bool = False
    schema_empty: bool = False
    differences: tuple[str, ...] = ()
    repair: Repair | None = None
    hint: str | None = None
    target: str = "head"

    @property
    def drift(self) -> bool:
        return self.state is not State.AT_HEAD or bool(self.differences) or self.error is not None

    @property
    def rows(self) -> tuple[str, ...]:
        return tuple(self.revision.split(",")) if self.revision else ()

    def details(self) -> dict[str, Any]:
        """What the control DB keeps beside the indexed columns."""
        return {
            "missing": list(self.missing),
            "unknown": list(self.unknown),
            "error": self.error,
            "schema_checked": self.schema_checked,
            "schema_empty": self.schema_empty,
            "differences": list(self.differences),
            "repair": self.repair.value if self.repair else None,
            "target": self.target,
        }

    @classmethod
    def from_stored(
        cls,
        *,
        tenant_id: str,
        state: str,
        revision: str | None,
        behind_by: int | None,
        details: str,
        hint: str | None,
    ) -> Finding:
        extra = json.loads(details or "{}")
        return cls(
            tenant_id=tenant_id,
            state=State(state),
            revision=revision,
            behind_by=behind_by,
            missing=tuple(extra.get("missing") or ()),
            unknown=tuple(extra.get("unknown") or ()),
            error=extra.get("error"),
            schema_checked=bool(extra.get("schema_checked")),
            schema_empty=bool(extra.get("schema_empty")),
            differences=tuple(extra.get("differences") or ()),
            repair=Repair(extra["repair"]) if extra.get("repair") else None,
            hint=hint,
            target=extra.get("target") or "head",
        )


@dataclass(frozen=True, kw_only=True)
class Group:
    """Tenants that drift the same way, with the one command that repairs them all."""

    summary: str
    tenants: tuple[str, ...]
    hint: str | None


@dataclass(frozen=True, kw_only=True)
class Changes:
    """Drift since the previous audit of the same kind: tenants with an issue they did not have, and
    tenants that drifted then and do not now. Tenants outside either audit's selection count as new."""

    previous: int | None
    new_drift: tuple[str, ...]
    resolved: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """A stored audit, without its findings."""

    id: int
    kind: AuditKind
    created_at: datetime
    created_by: str
    selection: Mapping[str, Any] = field(default_factory=dict)
    head: str
    counts: Mapping[str, int] = field(default_factory=dict)
    drift: int


# -- classification --------------------------------------------------------------------------------


def classify(
    history: History,
    tenant_id: str,
    *,
    version_table: bool,
    rows: Sequence[str] = (),
    error: str | None = None,
) -> Finding:
    """Classify one tenant from its version rows (or the error that kept them from being read).

    A version table with no row is behind, at base. With several heads in the scripts, a tenant whose
    rows are exactly the heads is at head, and one whose rows are each on a different branch is behind.
    """
    target = "heads" if len(history.heads) > 1 else "head"
    if error is not None:
        return _hinted(Finding(tenant_id=tenant_id, state=State.UNREACHABLE, error=error, target=target))
    if not version_table:
        return _hinted(Finding(tenant_id=tenant_id, state=State.NO_VERSION_TABLE, target=target))
    rows = tuple(sorted(set(rows)))
    revision = ",".join(rows) or None
    found = Finding(tenant_id=tenant_id, state=State.AT_HEAD, revision=revision, target=target)
    if set(rows) == set(history.heads):
        return _hinted(found)
    unknown = tuple(r for r in rows if not history.knows(r))
    if len(rows) == 1 and unknown:
        return _hinted(replace(found, state=State.UNKNOWN_REVISION, unknown=unknown))
    if len(rows) > 1 and (unknown or not _branch_position(history, rows)):
        return _hinted(replace(found, state=State.MULTIPLE_VERSIONS, unknown=unknown))
    missing = history.missing(rows)
    return _hinted(replace(found, state=State.BEHIND, behind_by=len(missing), missing=missing))


def _branch_position(history: History, rows: Sequence[str]) -> bool:
    """Rows that each stand on a different branch (none below another): a valid place to be when the
    scripts have several heads. One head means one branch, so several rows there are always wrong."""
    if len(history.heads) < 2:
        return False
    return all(r not in history.ancestors(o for o in rows if o != r) for r in rows)


def with_schema(
    finding: Finding, differences: Sequence[str] = (), *, empty: bool = False, error: str | None = None
) -> Finding:
    """Add a schema comparison's outcome (or the error that stopped it) to a revision finding, and
    re-derive the repair hint. ``empty``: the live schema has no table at all."""
    return _hinted(
        replace(
            finding,
            schema_checked=error is None,
            schema_empty=empty and error is None,
            differences=tuple(sorted(set(differences))),
            error=finding.error if error is None else error,
        )
    )


# -- repair hints ---------------------------------------------------------------------------------


def _repair(f: Finding) -> Repair | None:
    """The fix, from the version rows and (after a schema audit) whether the schema is head's."""
    if f.state is State.UNREACHABLE:
        return Repair.CONNECT
    if f.error is not None:
        return Repair.RETRY
    if f.state is State.AT_HEAD:
        return Repair.MIGRATION if f.differences else None
    matches_head = f.schema_checked and not f.differences
    if f.state is State.BEHIND:
        return Repair.STAMP if matches_head else Repair.UPGRADE
    if f.state is State.NO_VERSION_TABLE:
        if not f.schema_checked:
            return Repair.EMPTY_OR_STAMP
        if matches_head:
            return Repair.STAMP
        return Repair.UPGRADE if f.schema_empty else Repair.BY_HAND
    if f.state is State.MULTIPLE_VERSIONS:
        if not f.schema_checked:
            return Repair.CHECK_SCHEMA
        if matches_head:
            return Repair.PURGE_STAMP if f.unknown else Repair.RESTAMP
        return Repair.BY_HAND
    return Repair.PURGE_STAMP if matches_head else Repair.NEWER_CODE


def _hinted(f: Finding) -> Finding:
    repair = _repair(f)
    return replace(f, repair=repair, hint=render_hint(repair, (f.tenant_id,), f) if repair else None)


def _tenant_flags(tenants: Sequence[str]) -> str:
    return " ".join(f"--tenant {t}" for t in tenants)


def render_hint(repair: Repair, tenants: Sequence[str], example: Finding | None = None) -> str:
    """The command (and the condition it needs) that fixes every tenant of ``tenants``. Printed, never
    run: the audit itself changes nothing."""
    flags = _tenant_flags(tenants)
    names = ", ".join(tenants)
    revision = example.revision if example is not None and example.revision else "its revision"
    head = example.target if example is not None else "head"
    purge = (
        'alembic -c "$TENANTCTL_ALEMBIC_CONFIG" -x url=<tenant URL> [-x schema=<schema>] '
        f"stamp --purge {head}, for {names} (tenantctl cannot stamp over an unknown or extra version row)"
    )
    return {
        Repair.UPGRADE: f"tenantctl upgrade {head} {flags}",
        Repair.STAMP: f"tenantctl stamp {head} {flags}  (the schema already matches head)",
        Repair.RESTAMP: f"tenantctl stamp base {flags} && tenantctl stamp {head} {flags}",
        Repair.PURGE_STAMP: f"the schema matches head: {purge}",
        Repair.EMPTY_OR_STAMP: (
            f"tenantctl upgrade {head} {flags}  if the database is empty; otherwise "
            f"`tenantctl audit --schema {flags}` tells whether `tenantctl stamp {head}` fits"
        ),
        Repair.NEWER_CODE: (
            f"{revision} is ahead of these scripts or from another branch: deploy the code that knows it; "
            f"if the schema is this code's head (`tenantctl audit --schema {flags}`): {purge}"
        ),
        Repair.BY_HAND: (
            f"the version rows ({revision}) do not match the schema: bring the schema to a known revision "
            f"by hand (`tenantctl audit --schema {flags}` lists the differences), then stamp it"
        ),
        Repair.MIGRATION: (
            "the schema differs from the models at head: write a migration for it "
            "(`alembic revision --autogenerate`) if the models are right, or put the schema back "
            f"(`tenantctl downgrade -1 {flags}` then `tenantctl upgrade {head} {flags}`, or by hand)"
        ),
        Repair.CHECK_SCHEMA: (
            f"several version rows: `tenantctl audit --schema {flags}` tells whether the schema is "
            "head's and how to stamp it"
        ),
        Repair.CONNECT: f"check the URL, password and network of {names} (`tenantctl tenants show ID`)",
        Repair.RETRY: f"the schema could not be compared: run `tenantctl audit --schema {flags}` again",
    }[repair]


# -- grouping -------------------------------------------------------------------------------------

_PLURAL = {"lacks": "lack", "has": "have", "is": "are"}


def _phrase(n: int, text: str) -> str:
    """``1 tenant lacks …`` / ``37 tenants lack …``: ``text`` is written for one tenant."""
    if n == 1:
        return f"1 tenant {text}"
    verb, _, rest = text.partition(" ")
    return f"{n} tenants {_PLURAL.get(verb, verb)} {rest}".rstrip()


def _revision_phrase(f: Finding) -> str:
    if f.state is State.BEHIND:
        at = f"at {f.revision}" if f.revision else "at base, empty version table"
        plural = "s" if f.behind_by != 1 else ""
        text = f"is behind head by {f.behind_by} revision{plural} ({at}; missing {', '.join(f.missing)})"
    elif f.state is State.UNKNOWN_REVISION:
        text = f"is on revision {f.revision}, unknown to the scripts"
    elif f.state is State.MULTIPLE_VERSIONS:
        text = f"has several version rows ({(f.revision or '').replace(',', ', ')})"
    elif f.state is State.NO_VERSION_TABLE:
        text = "has no version table"
    elif f.state is State.UNREACHABLE:
        text = "is unreachable"
    else:
        text = "is at head"
    if f.schema_checked and not f.differences and f.state not in (State.AT_HEAD, State.UNREACHABLE):
        text += ", schema matches head"
    elif f.error is not None and f.state is not State.UNREACHABLE:
        text += ", schema not compared"
    return text


def groups(findings: Sequence[Finding]) -> list[Group]:
    """Revision drift grouped by state, revision and repair; then schema drift of tenants at head, one
    group per difference, largest first: "37 tenants lack index ix_invoices_status on invoices"."""
    order = list(State)
    by_key: dict[tuple[int, str, str], list[Finding]] = {}
    for f in findings:
        if f.state is State.AT_HEAD and f.error is None:
            continue
        if f.state is State.AT_HEAD:
            key = (order.index(f.state), "", "schema_error")
        else:
            revision = "" if f.state is State.UNREACHABLE else (f.revision or "")
            key = (order.index(f.state), revision, f.repair.value if f.repair else "")
        by_key.setdefault(key, []).append(f)
    out: list[Group] = []
    for key in sorted(by_key):
        members = by_key[key]
        first = members[0]
        ids = tuple(m.tenant_id for m in members)
        summary = _phrase(len(ids), _revision_phrase(first))
        if key[2] == "schema_error":
            summary = _phrase(len(ids), "is at head, schema not compared")
        out.append(
            Group(
                summary=summary,
                tenants=ids,
                hint=render_hint(first.repair, ids, first) if first.repair else None,
            )
        )
    by_difference: dict[str, list[Finding]] = {}
    for f in findings:
        if f.state is State.AT_HEAD:
            for d in f.differences:
                by_difference.setdefault(d, []).append(f)
    for difference, members in sorted(by_difference.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        ids = tuple(m.tenant_id for m in members)
        out.append(
            Group(
                summary=_phrase(len(ids), difference),
                tenants=ids,
                hint=render_hint(Repair.MIGRATION, ids, members[0]),
            )
        )
    return out


# -- totals, changes, the report ------------------------------------------------------------------


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    found = Counter(f.state.value for f in findings)
    return {s.value: found.get(s.value, 0) for s in State}


def drift(findings: Iterable[Finding]) -> int:
    return sum(1 for f in findings if f.drift)


def issues(f: Finding) -> frozenset[str]:
    """What is wrong with a tenant, coarse enough that "behind by 2" then "behind by 1" is no change."""
    found = {f"state:{f.state.value}"} if f.state is not State.AT_HEAD else set()
    found |= {f"schema:{d}" for d in f.differences}
    if f.error is not None and f.state is not State.UNREACHABLE:
        found.add("schema_error")
    return frozenset(found)


def changes(
    current: Sequence[Finding], previous: Sequence[Finding] | None, previous_id: int | None
) -> Changes:
    """New and resolved drift against the previous audit (``None``: no previous audit, so all drift is
    new)."""
    before = {f.tenant_id: issues(f) for f in previous or ()}
    new: list[str] = []
    resolved: list[str] = []
    for f in current:
        now = issues(f)
        then = before.get(f.tenant_id, frozenset())
        if now - then:
            new.append(f.tenant_id)
        elif then and not now:
            resolved.append(f.tenant_id)
    return Changes(previous=previous_id, new_drift=tuple(new), resolved=tuple(resolved))


def tenant_json(f: Finding) -> dict[str, Any]:
    return {
        "tenant": f.tenant_id,
        "state": f.state.value,
        "revision": f.revision,
        "behind_by": f.behind_by,
        "missing": list(f.missing),
        "error": f.error,
        "drift": f.drift,
        "schema_checked": f.schema_checked,
        "differences": list(f.differences),
        "hint": f.hint,
    }


def report(audit: AuditRecord, findings: Sequence[Finding], change: Changes) -> dict[str, Any]:
    """An audit as ``tenantctl audit --json`` prints it: a contract alerting and CI scripts read."""
    return {
        "id": audit.id,
        "kind": audit.kind.value,
        "created_at": audit.created_at.isoformat(),
        "created_by": audit.created_by,
        "selection": dict(audit.selection),
        "head": audit.head,
        "counts": dict(audit.counts),
        "drift": audit.drift,
        "tenants": [tenant_json(f) for f in findings],
        "groups": [
            {"summary": g.summary, "tenants": list(g.tenants), "hint": g.hint} for g in groups(findings)
        ],
        "changes": {
            "previous": change.previous,
            "new_drift": list(change.new_drift),
            "resolved": list(change.resolved),
        },
    }
