"""Running the user's Alembic history to head in the test process, with their ``env.py`` unmodified.

The database is handed to ``env.py`` exactly as tenantctl's unit of work hands a tenant
(:func:`orchestrator.unit.alembic_config_for`): ``-x url= tenant= [schema=]``, ``sqlalchemy.url`` and a
shared connection in ``config.attributes["connection"]``, so an ``env.py`` that reads any of them works.
A failure becomes one :class:`TemplateMigrationFailed` naming the revision that was running.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from .. import scripts
from ..secrets import mask_text
from ..unit import alembic_config_for
from .errors import TemplateMigrationFailed


def upgrade_to_heads(ini: Path, url: str, *, tenant_id: str, schema: str | None) -> None:
    """Migrate the database at ``url`` (its ``schema``, if given) to every head of the history."""
    script = scripts.load(str(ini))
    running: list[Script] = []
    engine = sa.create_engine(make_url(url).set(drivername="postgresql+psycopg"), poolclass=NullPool)
    try:
        with engine.connect() as conn, _logging_kept():
            _upgrade(
                alembic_config_for(str(ini), url, tenant_id, schema, "alembic_version", conn), script, running
            )
            if conn.in_transaction():
                conn.commit()
    except Exception as exc:  # whatever the user's env.py or migration raised: reported, never ours
        raise _failure(ini, running[0] if running else None, exc) from exc
    finally:
        engine.dispose()


def _upgrade(cfg: Config, script: ScriptDirectory, running: list[Script]) -> None:
    """``alembic.command.upgrade(cfg, "heads")``, over the script directory tenantctl loaded once, noting
    in ``running`` the revision Alembic is running: it takes the next step only after the last one ran."""

    def steps(rev: Any, _ctx: Any) -> Iterator[Any]:
        for step in script._upgrade_revs("heads", rev):
            running[:] = [step.revision]
            yield step
        running.clear()

    with EnvironmentContext(cfg, script, fn=steps, destination_rev="heads"):
        scripts.run_env(script)


def _failure(ini: Path, revision: Script | None, exc: Exception) -> TemplateMigrationFailed:
    location = None
    if revision is not None:
        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == revision.path]
        location = f"{Path(revision.path).name}:{lines[-1]}" if lines else None
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if isinstance(exc, DBAPIError) and exc.statement:
        error += f" [SQL: {' '.join(exc.statement.split())[:300]}]"
    return TemplateMigrationFailed(
        str(ini),
        revision.revision if revision is not None else None,
        revision.doc if revision is not None else None,
        location,
        mask_text(error),
    )


@contextmanager
def _logging_kept() -> Iterator[None]:
    """Leave the test process's logging as it was. Alembic's ``env.py`` templates call
    ``fileConfig(alembic.ini)`` unconditionally: in a test process that replaces pytest's capture
    handlers and disables every logger the application has created (``disable_existing_loggers``)."""
    manager = logging.Logger.manager
    before = {name: lg for name, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    saved = [
        (lg, lg.level, list(lg.handlers), lg.disabled, lg.propagate)
        for lg in [logging.root, *before.values()]
    ]
    try:
        yield
    finally:
        for lg, level, handlers, disabled, propagate in saved:
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.disabled, lg.propagate = disabled, propagate
        for name, new in list(manager.loggerDict.items()):
            if isinstance(new, logging.Logger) and name not in before:  # as if never configured
                new.setLevel(logging.NOTSET)
                new.handlers.clear()
                new.disabled, new.propagate = False, True
