"""`tenantctl check`, `show`, `branches`, `history -r -v` and shell completion, run as CI runs them: the CLI
in a subprocess, from the repository root, with a control DB that nothing answers (none of them may need
it) and no tenant. No server: the SQL is rendered offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHECK = Path("tests/fixtures/check")
UNREACHABLE_CONTROL_DB = "postgresql+asyncpg://tenantctl:pw-CONTROL@127.0.0.1:1/nothing"


def tenantctl(
    *args: str, ini: Path | str = "migrations/alembic.ini", **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TENANTCTL_")}
    environ.update(TENANTCTL_ALEMBIC_CONFIG=str(ini), TENANTCTL_DATABASE_URL=UNREACHABLE_CONTROL_DB)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_shipped_migrations_are_clean_with_0003s_index_allowed_in_its_file() -> None:
    """The shipped 0003 builds an index on invoices without CONCURRENTLY; invoices is created by 0002 in
    the same release, and 0003 says so with an allow comment: check exits 0 and lists it as allowed."""
    for clean in (
        tenantctl("check"),
        tenantctl("check", "--since", "0003"),
        tenantctl("check", "--schema", "acme"),
    ):
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert clean.stdout == "" and "Traceback" not in clean.stderr
        assert "0 structural problems, 0 lint findings" in clean.stderr
    report = json.loads(tenantctl("check", "--json").stdout)
    assert report["exit_code"] == 0 and report["findings"] == []
    (allowed,) = report["allowed"]
    assert (allowed["rule"], allowed["revision"]) == ("create-index-not-concurrently", "0003")
    assert allowed["statement"].startswith("CREATE INDEX ix_invoices_status ON invoices (status)")


def test_the_unmodified_async_template_renders_from_sqlalchemy_url() -> None:
    """`alembic init -t async`'s env.py reads only sqlalchemy.url (and configures logging: a subprocess)."""
    result = tenantctl("check", ini="tests/fixtures/envs/sqlalchemy_url/alembic.ini")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 revisions linted (17 statements of PostgreSQL)" in result.stderr
    assert "(1 allowed)" in result.stderr


@pytest.mark.parametrize(
    ("fixture", "lines"),
    [
        (
            "two_heads",
            [
                f"{CHECK}/two_heads/versions/t003a_create_c.py: multiple-heads: t003a is one of 2 heads "
                f"(t003a, t004b), branching from t002; join them: alembic -c {CHECK}/two_heads/alembic.ini "
                "merge -m 'merge heads' t003a t004b",
                f"{CHECK}/two_heads/versions/t004b_create_e.py: multiple-heads: t004b is one of 2 heads "
                f"(t003a, t004b), branching from t002; join them: alembic -c {CHECK}/two_heads/alembic.ini "
                "merge -m 'merge heads' t003a t004b",
            ],
        ),
        (
            "dangling",
            [
                f"{CHECK}/dangling/versions/d003_create_c.py: dangling-reference: d003: down_revision 'd999' "
                "is not a revision of the history"
            ],
        ),
        (
            "duplicate",
            [
                f"{CHECK}/duplicate/versions/u002_create_b.py: duplicate-revision: revision u002 is declared "
                "by 2 files: u002_create_b.py, u002_create_c.py"
            ],
        ),
        (
            "import_error",
            [
                f"{CHECK}/import_error/versions/i002_create_b.py: import-failed: cannot import revision "
                "i002: ModuleNotFoundError: No module named 'tenantctl_check_no_such_module' (line 14)"
            ],
        ),
    ],
)
def test_each_structural_problem_exits_3_with_one_line_each(fixture: str, lines: list[str]) -> None:
    result = tenantctl("check", ini=CHECK / fixture / "alembic.ini")
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.splitlines() == lines
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"tenantctl: error: {len(lines)} structural problem{'s' if len(lines) > 1 else ''} "
        f"in the history of {CHECK}/{fixture}/alembic.ini"
    )


LINT = {
    ("create-index-not-concurrently", "l002"),
    ("add-column-not-null-without-default", "l004"),
    ("change-column-type", "l005"),
    ("add-foreign-key-without-not-valid", "l006"),
    ("drop-column", "l007"),
    ("rename-column", "l008"),
    ("rename-table", "l008"),
    ("update-or-delete-without-where", "l009"),
    ("offline-sql", "l011"),
}


def test_lint_fixture_one_finding_per_rule_and_none_for_the_safe_forms() -> None:
    """l001 does everything on tables it creates, l003 indexes concurrently, l004/l006/l009 beside each
    finding do the safe form (a default, NOT VALID, a WHERE), l010 allows its index in a comment."""
    result = tenantctl("check", ini=CHECK / "lint" / "alembic.ini")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    found = [(line.split(": ")[1].split(" in ")[0], line.split(" in ")[1].split(":")[0]) for line in lines]
    assert sorted(found) == sorted([*LINT, ("update-or-delete-without-where", "l009")])  # UPDATE and DELETE
    assert all("; fix: " in line for line in lines)
    assert "(1 allowed)" in result.stderr


def test_json_shape() -> None:
    result = tenantctl("check", "--json", ini=CHECK / "lint" / "alembic.ini")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {
        "config",
        "schema",
        "since",
        "exit_code",
        "revisions",
        "heads",
        "rendered",
        "linted",
        "statements",
        "problems",
        "findings",
        "allowed",
    }
    assert report["exit_code"] == 1 and report["heads"] == ["l011"] and report["revisions"] == 11
    assert report["problems"] == [] and report["rendered"] is True
    assert {(f["rule"], f["revision"]) for f in report["findings"]} == LINT
    drop = next(f for f in report["findings"] if f["rule"] == "drop-column")
    assert drop == {
        "rule": "drop-column",
        "revision": "l007",
        "path": f"{CHECK}/lint/versions/l007_drop_column.py",
        "statement": "ALTER TABLE accounts DROP COLUMN email",
        "why": drop["why"],
        "fix": drop["fix"],
        "line": drop["line"],
    }
    assert "accounts.email" in drop["why"] and "later" in drop["fix"]
    (allowed,) = report["allowed"]
    assert (allowed["rule"], allowed["revision"], allowed["allowed_by"]) == (
        "create-index-not-concurrently",
        "l010",
        "comment",
    )

    heads = json.loads(tenantctl("check", "--json", ini=CHECK / "two_heads" / "alembic.ini").stdout)
    assert heads["exit_code"] == 3 and heads["heads"] == ["t003a", "t004b"]
    assert [(p["kind"], p["revision"]) for p in heads["problems"]] == [
        ("multiple-heads", "t003a"),
        ("multiple-heads", "t004b"),
    ]
    assert set(heads["problems"][0]) == {"kind", "revision", "path", "message", "line"}


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (("check", "--since", "nope"), {}, "unknown revision 'nope'"),
        (("check", "--schema", "a b"), {}, "invalid schema 'a b'"),
        (("check",), {"TENANTCTL_LINT_DISABLE": "drop-columns"}, "unknown lint rule 'drop-columns'"),
        (
            ("check",),
            {"TENANTCTL_ALEMBIC_CONFIG": "nowhere/alembic.ini"},
            "Alembic config 'nowhere/alembic.ini'",
        ),
        (("show", "nope"), {}, "unknown revision 'nope'"),
        (("history", "-r", "0001:0002:0003"), {}, "a range is [START]:[END]"),
        (("history", "-r", "current:"), {}, "`tenantctl current` reads the tenants' revisions"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], env: dict[str, str], needle: str) -> None:
    result = tenantctl(*args, **env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and needle in result.stderr
    assert "pw-CONTROL" not in result.stdout + result.stderr


def test_alembic_script_verbs() -> None:
    show = tenantctl("show", "0003")
    assert show.returncode == 0, show.stderr
    assert show.stdout.startswith("Rev: 0003\nParent: 0002\n")

    branches = tenantctl("branches", ini=CHECK / "two_heads" / "alembic.ini")
    assert branches.returncode == 0, branches.stderr
    assert branches.stdout.splitlines()[0].startswith("t002 (branchpoint)")

    default = tenantctl("history")
    assert default.returncode == 0 and default.stdout.splitlines() == [
        "0003 -> 0004 (head), add account email",
        "0002 -> 0003, index invoice status",
        "0001 -> 0002, create invoices",
        "<base> -> 0001, create accounts",
    ]
    ranged = tenantctl("history", "-r", "0002:0003", "-v")
    assert ranged.returncode == 0, ranged.stderr
    assert [line for line in ranged.stdout.splitlines() if line.startswith("Rev: ")] == [
        "Rev: 0003",
        "Rev: 0002",
    ]


def test_shell_completion() -> None:
    # the shell is detected from the process's ancestors (shellingham): run under a bash that waits
    script = subprocess.run(
        ["bash", "-c", '"$@"; exit $?', "bash", sys.executable, "-m", "orchestrator", "--show-completion"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert script.returncode == 0, script.stderr
    assert "_tenantctl_completion" in script.stdout
    completed = tenantctl(
        ini="migrations/alembic.ini",
        _TENANTCTL_COMPLETE="complete_bash",
        COMP_WORDS="tenantctl che",
        COMP_CWORD="1",
    )
    assert completed.stdout.split() == ["check"]
    helped = tenantctl("--help")
    assert helped.returncode == 0 and "--install-completion" in helped.stdout
