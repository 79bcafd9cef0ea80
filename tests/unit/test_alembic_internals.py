"""The Alembic internals tenantctl relies on, each pinned by what tenantctl needs of it.

Alembic has no public API for these: ``command.upgrade`` and friends build the same step lists with
``ScriptDirectory._upgrade_revs`` / ``_downgrade_revs`` / ``_stamp_revs`` inside closures, and re-read
every revision file on each call. pyproject.toml pins ``alembic`` to the versions these tests passed on;
when a new Alembic breaks one, its message says what changed and what tenantctl needs of it, so the pin
is raised only together with a fix.

Used by: orchestrator/unit.py ``run_alembic`` (the three ``_*_revs``), orchestrator/preview.py
``steps_for`` (``_upgrade_revs``, ``_downgrade_revs``), orchestrator/auditor.py
(``Script._all_down_revisions``), orchestrator/cli/app.py ``history`` (``Script._format_down_revision``)
and orchestrator/scripts.py ``run_env`` (a copy of Alembic's env.py loader).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import alembic
import pytest
from alembic.config import Config
from alembic.script import Script, ScriptDirectory

from orchestrator import scripts
from tests.conftest import MIGRATIONS_INI


@contextmanager
def needs(internal: str, what: str) -> Iterator[None]:
    """Turn any failure inside into one line naming the internal, the Alembic version and the need."""
    try:
        yield
    except Exception as exc:  # AssertionError, AttributeError (gone), TypeError (new signature)...
        pytest.fail(
            f"Alembic {alembic.__version__} changed {internal}: tenantctl needs {what} "
            f"({exc.__class__.__name__}: {exc}). Adapt its callers, then widen the alembic pin in "
            "pyproject.toml.",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def script() -> ScriptDirectory:
    """The shipped history: 0001 -> 0002 -> 0003 -> 0004, one head."""
    return ScriptDirectory.from_config(Config(str(MIGRATIONS_INI)))


def _shape(steps: Any) -> list[tuple[str, tuple[str, ...], tuple[str, ...], bool]]:
    return [
        (step.short_log, tuple(step.from_revisions), tuple(step.to_revisions), step.is_upgrade)
        for step in steps
    ]


def test_upgrade_revs(script: ScriptDirectory) -> None:
    with needs(
        "ScriptDirectory._upgrade_revs",
        "_upgrade_revs(destination: str, current_heads: tuple) -> list of steps in the order they run, "
        "each with short_log, from_revisions, to_revisions and is_upgrade; relative specs resolved",
    ):
        assert _shape(script._upgrade_revs("head", ())) == [
            ("upgrade  -> 0001", (), ("0001",), True),
            ("upgrade 0001 -> 0002", ("0001",), ("0002",), True),
            ("upgrade 0002 -> 0003", ("0002",), ("0003",), True),
            ("upgrade 0003 -> 0004", ("0003",), ("0004",), True),
        ]
        assert _shape(script._upgrade_revs("+1", ("0002",))) == [
            ("upgrade 0002 -> 0003", ("0002",), ("0003",), True)
        ]
        assert list(script._upgrade_revs("head", ("0004",))) == []


def test_downgrade_revs(script: ScriptDirectory) -> None:
    with needs(
        "ScriptDirectory._downgrade_revs",
        "_downgrade_revs(destination: str, current_heads: tuple) -> list of steps in the order they run, "
        "newest first, each with short_log, from_revisions, to_revisions and is_upgrade False",
    ):
        assert _shape(script._downgrade_revs("base", ("0002",))) == [
            ("downgrade 0002 -> 0001", ("0002",), ("0001",), False),
            ("downgrade 0001 -> ", ("0001",), (), False),
        ]
        assert _shape(script._downgrade_revs("-1", ("0004",))) == [
            ("downgrade 0004 -> 0003", ("0004",), ("0003",), False)
        ]


def test_stamp_revs(script: ScriptDirectory) -> None:
    with needs(
        "ScriptDirectory._stamp_revs",
        "_stamp_revs(targets: tuple, current_heads: tuple) -> list of stamp steps with from_revisions "
        "and to_revisions, which MigrationContext.run_migrations applies without running a migration",
    ):
        (to_0002,) = script._stamp_revs(("0002",), ())
        assert (tuple(to_0002.from_revisions), tuple(to_0002.to_revisions)) == ((), ("0002",))
        (to_base,) = script._stamp_revs(("base",), ("0004",))
        assert (tuple(to_base.from_revisions), tuple(to_base.to_revisions)) == (("0004",), ())


def test_script_all_down_revisions(script: ScriptDirectory) -> None:
    with needs(
        "Script._all_down_revisions",
        "a tuple of the revision ids a script depends on (down revisions and dependencies), () at base",
    ):
        assert script.get_revision("0002")._all_down_revisions == ("0001",)
        assert script.get_revision("0001")._all_down_revisions == ()


def test_script_format_down_revision(script: ScriptDirectory) -> None:
    with needs(
        "Script._format_down_revision",
        "_format_down_revision() -> the down revisions joined by ', ', or '<base>'",
    ):
        revision = script.get_revision("0002")
        assert isinstance(revision, Script)
        assert revision._format_down_revision() == "0001"
        base = script.get_revision("0001")
        assert isinstance(base, Script)
        assert base._format_down_revision() == "<base>"


ENV_PY = """
import sys
seen = sys.modules["_tenantctl_env_probe"].seen
seen.append((__name__, __file__, id(sys.modules[__name__]) if __name__ in sys.modules else None,
             "first" if "marker" not in globals() else "again"))
marker = True
"""


def test_run_env_copies_alembics_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts.run_env compiles env.py once per process but must run it as Alembic's own loader does:
    a fresh module named ``env_py`` for every call, ``__file__`` the env.py, nothing left in
    sys.modules, so an env.py behaves the same under tenantctl and under ``alembic``."""
    (tmp_path / "env.py").write_text(ENV_PY)
    (tmp_path / "versions").mkdir()
    probe = type(sys)("_tenantctl_env_probe")
    probe.seen = []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "_tenantctl_env_probe", probe)
    directory = ScriptDirectory(str(tmp_path))
    with needs(
        "ScriptDirectory.run_env (util.load_python_file)",
        "run_env() to execute env.py as a new module named 'env_py' on every call, not kept in "
        "sys.modules, as orchestrator/scripts.py run_env copies it",
    ):
        directory.run_env()
        directory.run_env()
        scripts.run_env(directory)
        scripts.run_env(directory)
        seen = probe.seen  # type: ignore[attr-defined]
        expected = ("env_py", str(tmp_path / "env.py"), None, "first")
        assert seen[:2] == [expected, expected], "Alembic's own loader"
        assert seen[2:] == [expected, expected], "tenantctl's copy no longer matches Alembic's loader"
        assert "env_py" not in sys.modules
