"""The embedded default: SQLite control DB, SQLite tenants, in-process pool; no server involved."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from orchestrator.models import Command
from tests.conftest import FIXTURE_ENVS, MIGRATIONS_INI
from tests.support.harness import Harness


def _revision(path: Path) -> str | None:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return ",".join(r[0] for r in rows) or None


def _harness(tmp_path: Path, ini: Path) -> Harness:
    h = Harness(f"sqlite:///{tmp_path / 'control.db'}", ini, tmp_path)
    h.with_store(lambda s: s.migrate())
    return h


def test_sqlite_tenants_roll_up_and_down(tmp_path: Path) -> None:
    h = _harness(tmp_path, MIGRATIONS_INI)
    files = [tmp_path / f"t{i}.db" for i in range(4)]
    for i, f in enumerate(files):
        h.register(f"t{i}", f"sqlite:///{f}")
    up = h.rollout(Command.UPGRADE, "head")
    assert up["counts"]["succeeded"] == 4
    assert [_revision(f) for f in files] == ["0004"] * 4
    down = h.rollout(Command.DOWNGRADE, "-1")
    assert [_revision(f) for f in files] == ["0003"] * 4
    assert {t["to_revision"] for t in down["tenants"]} == {"0003"}
    with sqlite3.connect(files[0]) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(accounts)")]
    assert "email" not in columns


def test_sqlite_failed_revision_rolls_back_whole(tmp_path: Path) -> None:
    h = _harness(tmp_path, FIXTURE_ENVS / "failing" / "alembic.ini")
    good, bad = tmp_path / "good.db", tmp_path / "bad.db"
    with sqlite3.connect(bad) as conn:
        conn.execute("CREATE TABLE poison (id int)")
    h.register("good", f"sqlite:///{good}")
    h.register("bad", f"sqlite:///{bad}")
    report = h.rollout(Command.UPGRADE, "head")
    assert report["state"] == "failed"
    assert _revision(good) == "f003"
    assert _revision(bad) == "f001"
    with sqlite3.connect(bad) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "b" not in tables, "the failed revision's DDL must roll back"
    # fixed tenant: a second rollout picks it up from f001
    with sqlite3.connect(bad) as conn:
        conn.execute("DROP TABLE poison")
    again = h.rollout(Command.UPGRADE, "head")
    assert again["counts"]["succeeded"] == 1 and again["counts"]["skipped"] == 1
    assert _revision(bad) == "f003"
