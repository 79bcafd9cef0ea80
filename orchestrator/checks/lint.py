"""The lint of a revision's SQL: statements that lock a busy table for long, or break the code still running
against it while a release rolls out, each with why and the safe way (in the spirit of squawk and
strong_migrations). Pure: SQL text in, findings out, parsed by PostgreSQL's own parser (pglast).

A statement on a table created by the same revision is never flagged: no tenant has rows in it and no
running code uses it. Every other table is taken as busy, whether an earlier revision created it (the
finding names which) or it predates the history.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ConstrType, ObjectType
from pglast.parser import ParseError, scan


class Rule(Enum):
    """A lint rule; its value is the id used in ``# tenantctl: allow RULE`` and TENANTCTL_LINT_DISABLE."""

    CREATE_INDEX_NOT_CONCURRENTLY = "create-index-not-concurrently"
    ADD_COLUMN_NOT_NULL = "add-column-not-null-without-default"
    CHANGE_COLUMN_TYPE = "change-column-type"
    ADD_FOREIGN_KEY = "add-foreign-key-without-not-valid"
    DROP_COLUMN = "drop-column"
    RENAME_COLUMN = "rename-column"
    RENAME_TABLE = "rename-table"
    UNBOUNDED_DATA_CHANGE = "update-or-delete-without-where"
    OFFLINE_SQL = "offline-sql"


@dataclass(frozen=True, kw_only=True)
class Advice:
    why: str
    fix: str


ADVICE: Mapping[Rule, Advice] = {
    Rule.CREATE_INDEX_NOT_CONCURRENTLY: Advice(
        why="CREATE INDEX holds a SHARE lock on {name}{origin} for the whole build: every INSERT, UPDATE and "
        "DELETE on it waits",
        fix="CREATE INDEX CONCURRENTLY: op.create_index(..., postgresql_concurrently=True) inside "
        "`with op.get_context().autocommit_block():` (it cannot run in a transaction)",
    ),
    Rule.ADD_COLUMN_NOT_NULL: Advice(
        why="fails on every tenant whose {name}{origin} has rows (they would hold NULL), and the code still "
        "running does not write the column",
        fix="give it a server_default (a constant default is instant on PostgreSQL 11+), or add it "
        "nullable, backfill in batches, then make it NOT NULL in a later release",
    ),
    Rule.CHANGE_COLUMN_TYPE: Advice(
        why="rewrites {name}{origin} and its indexes under an ACCESS EXCLUSIVE lock (reads and writes wait), "
        "unless the change is binary-compatible, like varchar(n) to text or to a larger n",
        fix="add a column of the new type, backfill it in batches, move the code to it, drop the old one "
        "later; for a binary-compatible change, allow the rule in this revision",
    ),
    Rule.ADD_FOREIGN_KEY: Advice(
        why="validating the key scans {name}{origin} under a SHARE ROW EXCLUSIVE lock on it and on the "
        "table it references: writes to both wait",
        fix="add it NOT VALID (op.create_foreign_key(..., postgresql_not_valid=True)), then "
        "`ALTER TABLE … VALIDATE CONSTRAINT` in a later revision, which lets writes go on",
    ),
    Rule.DROP_COLUMN: Advice(
        why="the code still running reads or writes {name}.{column} (an ORM model lists every column) "
        "and fails from the moment it is gone",
        fix="remove the column from the code and models first and deploy that, then drop it in a later "
        "release",
    ),
    Rule.RENAME_COLUMN: Advice(
        why="the code still running uses {name}.{column} and fails from the moment the rename commits",
        fix="add the new column, write both, backfill, move the reads, and drop the old one in a later "
        "release",
    ),
    Rule.RENAME_TABLE: Advice(
        why="the code still running uses {name} and fails from the moment the rename commits",
        fix="rename it and create a view under the old name (CREATE VIEW {name} AS SELECT * FROM …) "
        "until no code uses it, or move to a new table in steps",
    ),
    Rule.UNBOUNDED_DATA_CHANGE: Advice(
        why="changes every row of {name}{origin} in one transaction: each row stays locked until it commits, "
        "and a big table bloats",
        fix="bound it with a WHERE and run it in batches (by key range), apart from the schema change; "
        "for a table known to stay small, allow the rule in this revision",
    ),
    Rule.OFFLINE_SQL: Advice(
        why="{problem}, so nothing in it was linted",
        fix="make it render without a database (in offline mode env.py configures a URL, upgrade() reads "
        "no rows through op.get_bind()), or allow offline-sql in the revision and review its SQL by hand",
    ),
}


@dataclass(frozen=True, kw_only=True)
class Finding:
    rule: Rule
    revision: str
    statement: str  # an excerpt, whitespace collapsed
    why: str
    fix: str


@dataclass(frozen=True, kw_only=True)
class Linted:
    findings: tuple[Finding, ...]
    tables: Mapping[str, str]
    """Every table known once the revision ran, with the revision that created it (the next revision's
    ``created_earlier``): creations added, renames followed, drops removed."""


def finding(rule: Rule, revision: str, statement: str, **facts: str) -> Finding:
    advice = ADVICE[rule]
    return Finding(
        rule=rule,
        revision=revision,
        statement=excerpt(statement),
        why=advice.why.format(**facts),
        fix=advice.fix.format(**facts),
    )


def statements(sql: str) -> list[str]:
    """Split a rendered script into statements with PostgreSQL's own scanner (quotes, ``$$`` bodies and
    comments kept whole; leading comments dropped), so that one statement the parser refuses neither
    hides the others nor vanishes."""
    try:
        tokens = scan(sql)
    except ParseError:  # e.g. an unterminated quote: the parser will say so
        return [sql.strip()] if sql.strip() else []
    found: list[str] = []
    start: int | None = None
    for token in tokens:
        if token.name == "ASCII_59":  # ;
            if start is not None:
                found.append(sql[start : token.start].strip())
            start = None
        elif start is None and token.name not in _COMMENTS:
            start = token.start
    if start is not None:
        found.append(sql[start:].strip())
    return found


_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})


def lint(revision: str, sql: Sequence[str], created_earlier: Mapping[str, str]) -> Linted:
    """The findings of one revision's statements, given the tables earlier revisions created."""
    tables = dict(created_earlier)
    created_here: set[str] = set()
    found: list[Finding] = []
    for text in sql:
        try:
            parsed = parse_sql(text)
        except ParseError as exc:
            problem = f"this statement does not parse as PostgreSQL ({exc.args[0]})"
            found.append(finding(Rule.OFFLINE_SQL, revision, text, problem=problem))
            continue
        for raw in parsed:
            node = raw.stmt
            for rule, table, column in _violations(node):
                if table not in created_here:
                    origin = f" (created by {tables[table]})" if table in tables else ""
                    found.append(
                        finding(rule, revision, text, name=table, origin=origin, column=column or "")
                    )
            _follow(node, revision, tables, created_here)
    return Linted(findings=tuple(found), tables=tables)


def _violations(node: Any) -> Iterator[tuple[Rule, str, str | None]]:
    """(rule, table, column) for each thing in one statement that a rule forbids on a busy table."""
    if isinstance(node, ast.IndexStmt) and not node.concurrent:
        yield Rule.CREATE_INDEX_NOT_CONCURRENTLY, _table(node.relation), None
    elif isinstance(node, ast.AlterTableStmt) and node.objtype == ObjectType.OBJECT_TABLE:
        for cmd in node.cmds or ():
            for rule, column in _alter_violations(cmd):
                yield rule, _table(node.relation), column
    elif isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_COLUMN:
        yield Rule.RENAME_COLUMN, _table(node.relation), node.subname
    elif isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_TABLE:
        yield Rule.RENAME_TABLE, _table(node.relation), None
    elif isinstance(node, ast.UpdateStmt | ast.DeleteStmt) and node.whereClause is None:
        yield Rule.UNBOUNDED_DATA_CHANGE, _table(node.relation), None


def _table(relation: ast.RangeVar | None) -> str:
    """The table's name, without its schema: tenants' tables are found through ``search_path``."""
    return str(relation.relname) if relation is not None and relation.relname else "?"


def _alter_violations(cmd: Any) -> Iterator[tuple[Rule, str | None]]:
    if not isinstance(cmd, ast.AlterTableCmd):
        return
    if cmd.subtype == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        column: ast.ColumnDef = cmd.def_
        constraints = [c for c in column.constraints or () if isinstance(c, ast.Constraint)]
        kinds = {c.contype for c in constraints}
        not_null = column.is_not_null or kinds & {ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY}
        filled = kinds & {ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED}
        if not_null and not filled and not _serial(column):
            yield Rule.ADD_COLUMN_NOT_NULL, column.colname
        if any(_validated_foreign_key(c) for c in constraints):
            yield Rule.ADD_FOREIGN_KEY, column.colname
    elif cmd.subtype == AlterTableType.AT_AlterColumnType:
        yield Rule.CHANGE_COLUMN_TYPE, cmd.name
    elif cmd.subtype == AlterTableType.AT_AddConstraint and _validated_foreign_key(cmd.def_):
        yield Rule.ADD_FOREIGN_KEY, None
    elif cmd.subtype == AlterTableType.AT_DropColumn:
        yield Rule.DROP_COLUMN, cmd.name


def _validated_foreign_key(node: Any) -> bool:
    return (
        isinstance(node, ast.Constraint)
        and node.contype == ConstrType.CONSTR_FOREIGN
        and not node.skip_validation
    )


_SERIAL = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})


def _serial(column: ast.ColumnDef) -> bool:
    names = tuple(column.typeName.names or ()) if column.typeName is not None else ()
    return bool(names) and getattr(names[-1], "sval", None) in _SERIAL


def _follow(node: Any, revision: str, tables: dict[str, str], created_here: set[str]) -> None:
    """Keep the table ledger: what this statement creates, renames or drops."""
    created: str | None = None
    if isinstance(node, ast.CreateStmt):
        created = _table(node.relation)
    elif isinstance(node, ast.CreateTableAsStmt) and node.objtype == ObjectType.OBJECT_TABLE:
        created = _table(node.into.rel if node.into is not None else None)
    elif isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_TABLE:
        old, new = _table(node.relation), str(node.newname)
        tables[new] = tables.pop(old, revision)
        if old in created_here:
            created_here.discard(old)
            created_here.add(new)
    elif isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_TABLE:
        for name in node.objects or ():
            dropped = str(getattr(name[-1], "sval", ""))
            tables.pop(dropped, None)
            created_here.discard(dropped)
    if created is not None:
        tables[created] = revision
        created_here.add(created)


_LEADING_COMMENTS = re.compile(r"\A(?:\s*--[^\n]*(?:\n|\Z))+")


def excerpt(statement: str, width: int = 100) -> str:
    """The statement on one line, its leading ``--`` comments dropped, cut at ``width`` characters."""
    text = " ".join(_LEADING_COMMENTS.sub("", statement).split())
    return text if len(text) <= width else text[: width - 1] + "…"


_ALLOW = re.compile(
    r"^[ \t]*#[ \t]*tenantctl:[ \t]*allow[ \t]+(?P<rules>[^\n]+)$", re.MULTILINE | re.IGNORECASE
)


def allowed(source: str) -> frozenset[str]:
    """The rule ids a revision file allows in itself: ``# tenantctl: allow rule-a, rule-b`` lines."""
    return frozenset(
        name.lower()
        for match in _ALLOW.finditer(source)
        for name in re.split(r"[\s,]+", match["rules"].split("#")[0])
        if name
    )


def rules_named(value: str) -> frozenset[Rule]:
    """The rules of a comma-separated list of ids (TENANTCTL_LINT_DISABLE); ValueError names a wrong one."""
    by_id = {rule.value: rule for rule in Rule}
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in by_id]
    if unknown:
        raise ValueError(f"unknown lint rule {unknown[0]!r} (rules: {', '.join(by_id)})")
    return frozenset(by_id[name] for name in names)
