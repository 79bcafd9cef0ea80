"""`tenantctl check`'s structural half and its renderer, in process, with no server: the graph checks (pure),
the tolerant loader on the fixture histories, the offline SQL of one revision, and the Alembic internals the
loader drives."""

from __future__ import annotations

from pathlib import Path

import alembic
import pytest
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from pydantic import SecretStr

from orchestrator import checks
from orchestrator.checks import AllowedBy, history, render
from orchestrator.checks.history import Broken, Declared, ProblemKind
from orchestrator.checks.lint import Rule
from orchestrator.settings import Settings
from tests.conftest import MIGRATIONS_INI, ROOT

CHECK = ROOT / "tests" / "fixtures" / "check"


def rev(
    revision: str, *downs: str, depends_on: tuple[str, ...] = (), labels: tuple[str, ...] = ()
) -> Declared:
    return Declared(
        revision=revision,
        down_revisions=downs,
        depends_on=depends_on,
        branch_labels=labels,
        path=f"/h/versions/{revision}.py",
    )


def test_graph_problems_one_per_problem() -> None:
    declared = [
        rev("a"),
        rev("b", "a"),
        rev("b", "a"),  # claimed twice
        rev("c", "zz"),  # dangling
        rev("d", "broken"),  # its parent failed to import: said once, by the import line
        rev("e", "a", depends_on=("lbl", "nope")),
        rev("f", "a", labels=("lbl",)),
    ]
    broken = [Broken(path="/h/versions/broken.py", revision="broken", error="NameError: x (line 3)")]
    problems = history.graph_problems(declared, broken)
    assert [(p.kind, p.revision) for p in problems] == [
        (ProblemKind.IMPORT_FAILED, "broken"),
        (ProblemKind.DUPLICATE_REVISION, "b"),
        (ProblemKind.DANGLING_REFERENCE, "c"),
        (ProblemKind.DANGLING_REFERENCE, "e"),
    ]
    assert problems[0].message == "cannot import revision broken: NameError: x (line 3)"
    assert problems[1].message == "revision b is declared by 2 files: b.py, b.py"
    assert "'zz'" in problems[2].message and "'nope'" in problems[3].message
    assert history.graph_problems([rev("a"), rev("b", "a")], []) == []


def test_head_problems_name_the_branch_point_and_the_merge() -> None:
    declared = [rev("a"), rev("b", "a"), rev("c1", "b"), rev("c2", "b"), rev("d2", "c2"), rev("x")]
    merge = " ".join
    assert history.head_problems(["d2"], declared, merge) == []
    (none,) = history.head_problems([], declared, merge)
    assert none.kind is ProblemKind.NO_REVISION
    problems = history.head_problems(["d2", "c1"], declared, merge)
    assert [(p.revision, p.path) for p in problems] == [
        ("c1", "/h/versions/c1.py"),
        ("d2", "/h/versions/d2.py"),
    ]
    assert problems[0].message == "c1 is one of 2 heads (c1, d2), branching from b; join them: c1 d2"
    assert "branching from b" in problems[1].message
    separate = history.head_problems(["c1", "x"], declared, merge)
    assert "with no revision in common" in separate[1].message


def test_topological_order_puts_parents_first_and_merges_after_both() -> None:
    declared = [rev("m", "c", "b"), rev("c", "a"), rev("b", "a"), rev("a")]
    order = [d.revision for d in history.topological(declared)]
    assert order.index("a") == 0 and order[-1] == "m"


@pytest.mark.parametrize(
    ("fixture", "kind", "line"),
    [
        (
            "dangling",
            ProblemKind.DANGLING_REFERENCE,
            "d003: down_revision 'd999' is not a revision of the history",
        ),
        ("duplicate", ProblemKind.DUPLICATE_REVISION, "revision u002 is declared by 2 files"),
        (
            "import_error",
            ProblemKind.IMPORT_FAILED,
            "No module named 'tenantctl_check_no_such_module' (line 14)",
        ),
    ],
)
def test_each_broken_fixture_is_one_problem_and_nothing_is_rendered(
    fixture: str, kind: ProblemKind, line: str
) -> None:
    report = checks.check(settings(CHECK / fixture / "alembic.ini"))
    assert [p.kind for p in report.problems] == [kind]
    assert line in report.problems[0].message
    assert report.exit_code == 3 and not report.rendered and report.findings == ()


def test_two_heads_are_rendered_and_linted_too() -> None:
    report = checks.check(settings(CHECK / "two_heads" / "alembic.ini"))
    assert [p.kind for p in report.problems] == [ProblemKind.MULTIPLE_HEADS] * 2
    assert report.heads == ("t003a", "t004b") and report.rendered and report.exit_code == 3


def test_settings_and_since_leave_findings_out() -> None:
    ini = CHECK / "lint" / "alembic.ini"
    full = checks.check(settings(ini))
    rules = {f.finding.rule for f in full.findings}
    assert Rule.DROP_COLUMN in rules and Rule.RENAME_TABLE in rules
    quiet = checks.check(settings(ini, lint_disable="drop-column,rename-table"))
    assert {f.finding.rule for f in quiet.findings} == rules - {Rule.DROP_COLUMN, Rule.RENAME_TABLE}
    assert {(f.finding.rule, f.allowed_by) for f in quiet.allowed} == {
        (Rule.CREATE_INDEX_NOT_CONCURRENTLY, AllowedBy.COMMENT),
        (Rule.DROP_COLUMN, AllowedBy.SETTINGS),
        (Rule.RENAME_TABLE, AllowedBy.SETTINGS),
    }
    later = checks.check(settings(ini), since="l008")
    assert later.linted == ("l009", "l010")  # l011 does not render offline: its finding says so
    assert {f.finding.revision for f in later.findings} == {"l009", "l011"}


def test_one_revision_renders_alone_with_the_schema_passed_to_env_py() -> None:
    loaded = history.load(MIGRATIONS_INI)
    assert history.revision_map(loaded) is None
    target = render.Target(
        ini=MIGRATIONS_INI, script=loaded.script, schema="acme", version_table="alembic_version"
    )
    rendered = render.revision(target, loaded.script.get_revision("0003"))  # type: ignore[arg-type]
    assert rendered.error is None and rendered.sql is not None
    assert 'SET search_path TO "acme"' in rendered.sql
    assert "CREATE INDEX ix_invoices_status ON invoices (status)" in rendered.sql
    assert "CREATE TABLE" not in rendered.sql.replace("CREATE TABLE acme.alembic_version", "")
    assert "UPDATE acme.alembic_version SET version_num='0003'" in rendered.sql
    whole = render.base_to_heads(target)
    assert whole.sql is not None and whole.sql.count("-- Running upgrade") == 4


def test_an_env_py_that_cannot_run_offline_is_one_finding() -> None:
    report = checks.check(settings(ROOT / "tests" / "fixtures" / "envs" / "connection_only" / "alembic.ini"))
    (only,) = report.findings
    assert only.finding.rule is Rule.OFFLINE_SQL and only.finding.revision == "env.py"
    assert "env.py failed in offline mode" in only.finding.why


def settings(ini: Path, **values: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, alembic_config=ini, database_url=SecretStr("sqlite+aiosqlite:///unused.db"), **values
    )


def test_alembic_internals_the_loader_drives() -> None:
    """``ScriptDirectory._version_locations``, ``Script._list_py_dir`` and ``Script._from_path``: Alembic's
    own discovery and import of one revision file, which orchestrator/checks/history.py calls file by file."""
    script = ScriptDirectory.from_config(Config(str(MIGRATIONS_INI)))
    try:
        (location,) = [Path(str(v)) for v in script._version_locations]
        files = sorted(Path(p).name for p in Script._list_py_dir(script, location))
        loaded = Script._from_path(script, str(location / "0003_index_invoice_status.py"))
    except Exception as exc:
        pytest.fail(
            f"Alembic {alembic.__version__} changed its revision-file discovery ({type(exc).__name__}: "
            f"{exc}); adapt orchestrator/checks/history.py load(), then widen the alembic pin"
        )
    assert files[:4] == [
        "0001_create_accounts.py",
        "0002_create_invoices.py",
        "0003_index_invoice_status.py",
        "0004_add_account_email.py",
    ]
    assert loaded is not None and loaded.revision == "0003" and loaded.down_revision == "0002"
