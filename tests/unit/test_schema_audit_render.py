"""Rendering Alembic's autogenerate differences as sentences, on SQLite files (no server): stable text,
read-only access, and the metadata reference rules."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchestrator.exceptions import ConfigurationError
from orchestrator.schema_audit import SchemaJob, audit_tenant, default_reference, load_metadata
from tests.conftest import ROOT

MODELS = f"{ROOT / 'migrations' / 'models.py'}:metadata"


def _tenant(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
            CREATE TABLE accounts (id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL,
                                   created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
                                   email VARCHAR(255), nickname TEXT);
            CREATE TABLE legacy (id INTEGER PRIMARY KEY);
            """
        )


def test_differences_read_as_sentences_and_the_file_is_untouched(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    _tenant(db)
    before = db.read_bytes()
    result = audit_tenant(SchemaJob(tenant_id="t", url=f"sqlite:///{db}", schema=None, metadata=MODELS))
    assert result.error is None and not result.empty
    assert result.differences == (
        "has column accounts.name of type TEXT (models: VARCHAR(100))",
        "has extra column accounts.nickname",
        "has extra table legacy",
        "lacks table invoices",
    )
    assert db.read_bytes() == before


def test_a_missing_file_lacks_everything_and_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "absent.db"
    result = audit_tenant(SchemaJob(tenant_id="t", url=f"sqlite:///{db}", schema=None, metadata=MODELS))
    assert result.differences == ("lacks table accounts", "lacks table invoices") and result.empty
    assert not db.exists()


def test_metadata_references() -> None:
    assert default_reference(str(ROOT / "migrations")) == MODELS
    assert default_reference(str(ROOT / "tests")) is None
    assert load_metadata(MODELS) is load_metadata(MODELS)
    assert load_metadata("orchestrator.controldb.schema:metadata").tables
    for bad in ("nocolon", "orchestrator.controldb.schema:tenants", "no_such_module_x:metadata"):
        with pytest.raises(ConfigurationError):
            load_metadata(bad)
