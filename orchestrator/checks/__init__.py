"""``tenantctl check``: the tenants' Alembic history checked for CI before a release, with no tenant and no
control database: exactly one head; every revision file imports and the files form one graph
(:mod:`.history`); the offline PostgreSQL SQL of each revision and of base→heads renders (:mod:`.render`);
and that SQL locks no busy table for long nor breaks the code still running (:mod:`.lint`).

Exit 3 on a structural problem, 1 on a lint finding, 0 when clean. A rule is allowed in one revision by a
``# tenantctl: allow RULE`` line in its file, everywhere by TENANTCTL_LINT_DISABLE.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from alembic.util import CommandError

from .. import scripts, validation
from ..exceptions import ConfigurationError, TenantctlError, UnknownRevision, UnsafeMigrations, UnsoundHistory
from ..settings import Settings
from . import history, lint, render
from .history import Problem
from .lint import Finding, Rule


class AllowedBy(Enum):
    COMMENT = "comment"  # ``# tenantctl: allow RULE`` in the revision's file
    SETTINGS = "settings"  # TENANTCTL_LINT_DISABLE


@dataclass(frozen=True, kw_only=True)
class Flagged:
    finding: Finding
    path: str | None
    allowed_by: AllowedBy | None = None


@dataclass(frozen=True, kw_only=True)
class Report:
    config: str
    schema: str | None
    revisions: int
    heads: tuple[str, ...]
    problems: tuple[Problem, ...]
    findings: tuple[Flagged, ...]
    allowed: tuple[Flagged, ...]
    linted: tuple[str, ...]  # the revisions whose SQL was linted, base first
    statements: int
    rendered: bool  # False when the graph was too broken to render anything
    since: str | None = None
    cwd: Path = field(default_factory=Path.cwd)

    @property
    def exit_code(self) -> int:
        return 3 if self.problems else 1 if self.findings else 0

    def error(self) -> TenantctlError | None:
        if self.problems:
            return UnsoundHistory(self.config, [self.line(p) for p in self.problems])
        if self.findings:
            revisions = list(dict.fromkeys(f.finding.revision for f in self.findings))
            return UnsafeMigrations([self.line(f) for f in self.findings], revisions)
        return None

    def shown(self, path: str | None) -> str:
        """A path as a CI log shows it best: relative to the working directory when under it."""
        if path is None:
            return self.config
        try:
            return str(Path(path).relative_to(self.cwd))
        except ValueError:
            return path

    def line(self, item: Problem | Flagged) -> str:
        if isinstance(item, Problem):
            return f"{self.shown(item.path)}: {item.kind.value}: {item.message}"
        f = item.finding
        what = f"{f.statement} -- " if f.statement else ""
        return f"{self.shown(item.path)}: {f.rule.value} in {f.revision}: {what}{f.why}; fix: {f.fix}"

    def summary(self) -> str:
        problems = _count(len(self.problems), "structural problem")
        if not self.rendered:
            return (
                f"{self.config}: {_count(self.revisions, 'revision')} loaded, {problems}; the SQL is "
                "rendered and linted once the graph is sound"
            )
        where = f", schema {self.schema}" if self.schema else ""
        after = f" after {self.since}" if self.since else ""
        allowed = f" ({len(self.allowed)} allowed)" if self.allowed else ""
        return (
            f"{self.config}: {_count(self.revisions, 'revision')}, head {', '.join(self.heads) or 'none'}; "
            f"{_count(len(self.linted), 'revision')}{after} linted ({_count(self.statements, 'statement')} "
            f"of PostgreSQL{where}); {problems}, {_count(len(self.findings), 'lint finding')}{allowed}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "schema": self.schema,
            "since": self.since,
            "exit_code": self.exit_code,
            "revisions": self.revisions,
            "heads": list(self.heads),
            "rendered": self.rendered,
            "linted": list(self.linted),
            "statements": self.statements,
            "problems": [
                {
                    "kind": p.kind.value,
                    "revision": p.revision,
                    "path": self.shown(p.path) if p.path else None,
                    "message": p.message,
                    "line": self.line(p),
                }
                for p in self.problems
            ],
            "findings": [self._finding_json(f) for f in self.findings],
            "allowed": [self._finding_json(f) for f in self.allowed],
        }

    def _finding_json(self, item: Flagged) -> dict[str, Any]:
        f = item.finding
        out = {
            "rule": f.rule.value,
            "revision": f.revision,
            "path": self.shown(item.path) if item.path else None,
            "statement": f.statement or None,
            "why": f.why,
            "fix": f.fix,
            "line": self.line(item),
        }
        if item.allowed_by is not None:
            out["allowed_by"] = item.allowed_by.value
        return out


def check(settings: Settings, *, schema: str | None = None, since: str | None = None) -> Report:
    """Check the history of ``settings.alembic_config``; ``schema`` is passed to env.py as ``-x schema=``,
    and ``since`` (a revision already rolled out everywhere) leaves it and the revisions below it unlinted.
    Raises only for bad input (exit 2): what is wrong with the history is in the report."""
    ini = scripts.config_path(settings.alembic_config)
    try:
        disabled = lint.rules_named(settings.lint_disable)
    except ValueError as exc:
        raise ConfigurationError(f"invalid TENANTCTL_LINT_DISABLE: {exc}") from None
    if schema is not None:
        validation.schema_name(schema)
    config = str(settings.alembic_config)
    loaded = history.load(ini)
    declared = loaded.declared
    problems = history.graph_problems(declared, loaded.broken)
    if not problems:
        refused = history.revision_map(loaded)
        problems = [refused] if refused is not None else []
    if problems:  # nothing to render: the graph is not one Alembic can walk
        return Report(
            config=config,
            schema=schema,
            revisions=len(declared),
            heads=(),
            problems=tuple(problems),
            findings=(),
            allowed=(),
            linted=(),
            statements=0,
            rendered=False,
            since=since,
        )
    heads = tuple(sorted(loaded.script.get_heads()))
    merge = f"alembic -c {shlex.quote(config)} merge -m 'merge heads'"
    problems += history.head_problems(heads, declared, lambda hs: " ".join([merge, *hs]))
    released = _released(loaded, since)
    target = render.Target(ini=ini, script=loaded.script, schema=schema, version_table=settings.version_table)
    found, linted, statements = _lint(target, declared, released)
    shown: list[Flagged] = []
    allowed: list[Flagged] = []
    for f in found:
        if f.allowed_by is None and f.finding.rule in disabled:
            f = Flagged(finding=f.finding, path=f.path, allowed_by=AllowedBy.SETTINGS)
        (allowed if f.allowed_by else shown).append(f)
    return Report(
        config=config,
        schema=schema,
        revisions=len(declared),
        heads=heads,
        problems=tuple(problems),
        findings=tuple(shown),
        allowed=tuple(allowed),
        linted=tuple(linted),
        statements=statements,
        rendered=True,
        since=since,
    )


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _released(loaded: history.Loaded, since: str | None) -> set[str]:
    if since is None:
        return set()
    try:
        rev = loaded.script.get_revision(since)
    except CommandError as exc:
        raise UnknownRevision(since, str(exc).splitlines()[0]) from exc
    if rev is None:
        raise UnknownRevision(since, "--since takes one revision")
    parents = {d.revision: d.down_revisions for d in loaded.declared}
    return history.ancestry(parents, rev.revision)


def _lint(
    target: render.Target, declared: Sequence[history.Declared], released: set[str]
) -> tuple[list[Flagged], list[str], int]:
    """Render each revision alone, base first, and lint what is not released; then base→heads in one run,
    reported only when every revision rendered alone (else it fails for the same reason)."""
    found: list[Flagged] = []
    linted: list[str] = []
    statements = 0
    tables: dict[str, dict[str, str]] = {}
    all_rendered = True
    for d in history.topological(declared):
        earlier: dict[str, str] = {}
        for down in d.down_revisions:
            earlier.update(tables.get(down, {}))
        rendered = render.revision(target, target.script.get_revision(d.revision))
        report = d.revision not in released
        if rendered.sql is None:
            all_rendered = False
            tables[d.revision] = earlier
            if rendered.in_env:  # env.py fails in offline mode: one line, not one per revision
                problem = f"env.py failed in offline mode ({rendered.error})"
                env_py = str(Path(target.script.dir, "env.py"))
                found.append(_flag(lint.finding(Rule.OFFLINE_SQL, "env.py", "", problem=problem), env_py))
                break
            if report:
                problem = f"it failed in offline mode ({rendered.error})"
                found.append(_flag(lint.finding(Rule.OFFLINE_SQL, d.revision, "", problem=problem), d.path))
            continue
        sql = lint.statements(rendered.sql)
        result = lint.lint(d.revision, sql, earlier)
        tables[d.revision] = dict(result.tables)
        if report:
            linted.append(d.revision)
            statements += len(sql)
            found.extend(_flag(f, d.path) for f in result.findings)
    if all_rendered:
        whole = render.base_to_heads(target)
        if whole.error is not None:
            problem = f"upgrade base:heads failed in offline mode ({whole.error})"
            whole_failed = lint.finding(Rule.OFFLINE_SQL, "base:heads", "", problem=problem)
            found.append(Flagged(finding=whole_failed, path=None))
    return found, linted, statements


def _flag(finding: Finding, path: str) -> Flagged:
    allowed = finding.rule.value in lint.allowed(_source(path))
    return Flagged(finding=finding, path=path, allowed_by=AllowedBy.COMMENT if allowed else None)


def _source(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
