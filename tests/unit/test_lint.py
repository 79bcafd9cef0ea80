"""The lint of `tenantctl check`, pure: for each rule a statement that triggers it and one that does not, as
Alembic renders them offline for PostgreSQL; the table ledger; statement splitting; allow comments."""

from __future__ import annotations

import pytest

from orchestrator.checks.lint import Rule, allowed, excerpt, lint, rules_named, statements

EARLIER = {"accounts": "0001", "invoices": "0002"}

CASES = [
    # (rule, triggers, does not trigger)
    (
        Rule.CREATE_INDEX_NOT_CONCURRENTLY,
        "CREATE INDEX ix_invoices_status ON invoices (status)",
        "CREATE INDEX CONCURRENTLY ix_invoices_status ON invoices (status)",
    ),
    (
        Rule.CREATE_INDEX_NOT_CONCURRENTLY,
        "CREATE UNIQUE INDEX ix_accounts_name ON accounts (name)",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_accounts_name ON accounts (name)",
    ),
    (
        Rule.ADD_COLUMN_NOT_NULL,
        "ALTER TABLE accounts ADD COLUMN plan VARCHAR(20) NOT NULL",
        "ALTER TABLE accounts ADD COLUMN plan VARCHAR(20) DEFAULT 'free' NOT NULL",
    ),
    (
        Rule.ADD_COLUMN_NOT_NULL,
        "ALTER TABLE accounts ADD COLUMN code INTEGER PRIMARY KEY",
        "ALTER TABLE accounts ADD COLUMN plan VARCHAR(20)",
    ),
    (
        Rule.ADD_COLUMN_NOT_NULL,
        "ALTER TABLE accounts ADD COLUMN n INTEGER NOT NULL",
        "ALTER TABLE accounts ADD COLUMN n INTEGER GENERATED ALWAYS AS IDENTITY",
    ),
    (
        Rule.ADD_COLUMN_NOT_NULL,
        "ALTER TABLE accounts ADD COLUMN n INTEGER NOT NULL",
        "ALTER TABLE accounts ADD COLUMN n BIGSERIAL NOT NULL",
    ),
    (
        Rule.CHANGE_COLUMN_TYPE,
        "ALTER TABLE accounts ALTER COLUMN name TYPE TEXT",
        "ALTER TABLE accounts ALTER COLUMN name SET DEFAULT 'x'",
    ),
    (
        Rule.ADD_FOREIGN_KEY,
        "ALTER TABLE invoices ADD CONSTRAINT fk_a FOREIGN KEY(account_id) REFERENCES accounts (id)",
        "ALTER TABLE invoices ADD CONSTRAINT fk_a FOREIGN KEY(account_id) REFERENCES accounts (id) NOT VALID",
    ),
    (
        Rule.ADD_FOREIGN_KEY,
        "ALTER TABLE invoices ADD COLUMN owner_id INTEGER REFERENCES accounts (id)",
        "ALTER TABLE invoices VALIDATE CONSTRAINT fk_a",
    ),
    (
        Rule.DROP_COLUMN,
        "ALTER TABLE accounts DROP COLUMN email",
        "ALTER TABLE accounts DROP CONSTRAINT uq_accounts_email",
    ),
    (
        Rule.RENAME_COLUMN,
        "ALTER TABLE accounts RENAME name TO title",
        "ALTER INDEX ix_accounts_name RENAME TO ix_accounts_title",
    ),
    (
        Rule.RENAME_TABLE,
        "ALTER TABLE accounts RENAME TO customers",
        "ALTER TABLE accounts RENAME CONSTRAINT pk TO pk_accounts",
    ),
    (
        Rule.UNBOUNDED_DATA_CHANGE,
        "UPDATE accounts SET plan='free'",
        "UPDATE accounts SET plan='free' WHERE accounts.plan IS NULL",
    ),
    (
        Rule.UNBOUNDED_DATA_CHANGE,
        "DELETE FROM invoices",
        "DELETE FROM invoices WHERE status = 'void'",
    ),
]


@pytest.mark.parametrize(
    ("rule", "bad", "good"), CASES, ids=[f"{c[0].value}-{i}" for i, c in enumerate(CASES)]
)
def test_each_rule_triggers_on_a_busy_table_and_not_on_the_safe_form(rule: Rule, bad: str, good: str) -> None:
    found = lint("r1", [bad], EARLIER).findings
    assert [f.rule for f in found] == [rule]
    assert found[0].revision == "r1"
    assert found[0].statement == bad
    assert found[0].why and found[0].fix
    assert lint("r1", [good], EARLIER).findings == ()


def test_every_rule_has_a_case_here() -> None:
    assert {c[0] for c in CASES} == set(Rule) - {Rule.OFFLINE_SQL}


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE INDEX ix_t_a ON t (a)",
        "ALTER TABLE t ADD COLUMN b INTEGER NOT NULL",
        "ALTER TABLE t ALTER COLUMN a TYPE BIGINT",
        "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY(a) REFERENCES accounts (id)",
        "ALTER TABLE t DROP COLUMN a",
        "ALTER TABLE t RENAME a TO z",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "ALTER TABLE t RENAME TO u",
    ],
)
def test_nothing_is_flagged_on_a_table_created_by_the_same_revision(statement: str) -> None:
    sql = ["CREATE TABLE t (id SERIAL NOT NULL, a INTEGER, PRIMARY KEY (id))", statement]
    assert lint("r2", sql, EARLIER).findings == ()


def test_a_table_unknown_to_the_history_counts_as_busy_and_an_earlier_one_is_named() -> None:
    (legacy,) = lint("r2", ["CREATE INDEX ix ON legacy (a)"], EARLIER).findings
    assert "legacy for" in legacy.why
    (known,) = lint("r2", ["CREATE INDEX ix ON invoices (a)"], EARLIER).findings
    assert "invoices (created by 0002)" in known.why


def test_the_ledger_follows_creations_renames_and_drops() -> None:
    sql = [
        "CREATE TABLE plans (id VARCHAR(20) NOT NULL, PRIMARY KEY (id))",
        "CREATE TABLE archive AS SELECT * FROM invoices",
        "ALTER TABLE accounts RENAME TO customers",
        "DROP TABLE invoices",
    ]
    assert dict(lint("r3", sql, EARLIER).tables) == {"customers": "0001", "plans": "r3", "archive": "r3"}
    # a table created here then renamed is still new: nothing on it is flagged
    sql = ["CREATE TABLE t (a INTEGER)", "ALTER TABLE t RENAME TO u", "CREATE INDEX ix ON u (a)"]
    assert lint("r4", sql, {}).findings == ()


def test_schema_qualified_and_version_table_statements() -> None:
    sql = [
        "CREATE SCHEMA IF NOT EXISTS acme",
        "SET search_path TO acme",
        "BEGIN",
        "CREATE TABLE acme.alembic_version (version_num VARCHAR(32) NOT NULL)",
        "INSERT INTO acme.alembic_version (version_num) VALUES ('0001')",
        "UPDATE acme.alembic_version SET version_num='0002' WHERE acme.alembic_version.version_num = '0001'",
        "CREATE INDEX ix ON acme.invoices (status)",
        "COMMIT",
    ]
    found = lint("r5", sql, EARLIER).findings
    assert [(f.rule, f.statement) for f in found] == [
        (Rule.CREATE_INDEX_NOT_CONCURRENTLY, "CREATE INDEX ix ON acme.invoices (status)")
    ]


def test_a_statement_that_does_not_parse_is_a_finding_and_the_others_are_still_linted() -> None:
    found = lint("r6", ["CREAT TABLE x (a int)", "DROP TABLE x", "DELETE FROM accounts"], EARLIER).findings
    assert [f.rule for f in found] == [Rule.OFFLINE_SQL, Rule.UNBOUNDED_DATA_CHANGE]
    assert "does not parse as PostgreSQL" in found[0].why


def test_statements_split_as_postgresql_scans_them() -> None:
    sql = """
-- Running upgrade 0001 -> 0002
BEGIN;

CREATE TABLE t (a TEXT DEFAULT 'a;b');

DO $$ BEGIN UPDATE t SET a = 'x'; END $$;

/* a comment */ INSERT INTO t VALUES ('café;');
CREAT nonsense;
COMMIT;
-- done
"""
    assert statements(sql) == [
        "BEGIN",
        "CREATE TABLE t (a TEXT DEFAULT 'a;b')",
        "DO $$ BEGIN UPDATE t SET a = 'x'; END $$",
        "INSERT INTO t VALUES ('café;')",
        "CREAT nonsense",
        "COMMIT",
    ]
    assert statements("") == []
    assert statements("SELECT 'unterminated") == ["SELECT 'unterminated"]


def test_excerpt_is_one_line_and_short() -> None:
    assert (
        excerpt("CREATE TABLE t (\n    a INTEGER,\n    b TEXT\n)") == "CREATE TABLE t ( a INTEGER, b TEXT )"
    )
    long = excerpt("UPDATE t SET a = " + "1" * 200)
    assert len(long) == 100 and long.endswith("…")


def test_allow_comments_of_a_revision_file() -> None:
    source = '''"""doc: tenantctl: allow rename-table is not a comment"""
# tenantctl: allow create-index-not-concurrently
#tenantctl:allow Drop-Column, rename-column  # the old app reads neither
x = 1  # tenantctl: allow offline-sql  (not a line of its own)
'''
    assert allowed(source) == {"create-index-not-concurrently", "drop-column", "rename-column"}
    assert allowed("") == frozenset()


def test_rules_named_from_settings() -> None:
    assert rules_named("") == frozenset()
    assert rules_named(" drop-column , RENAME-TABLE,") == {Rule.DROP_COLUMN, Rule.RENAME_TABLE}
    with pytest.raises(ValueError, match="unknown lint rule 'drop-columns'"):
        rules_named("drop-columns")
