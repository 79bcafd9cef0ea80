"""The offline SQL of the history for PostgreSQL, as ``alembic upgrade A:B --sql`` writes it: of each
revision alone (from its down revisions) and of base→heads in one run. No database is touched: env.py gets
a dummy URL with no password the ways tenantctl hands it a tenant (``-x url= tenant= [schema=]`` and
``sqlalchemy.url``), and ``attributes["configure_logger"] = False`` (the shipped env.py's switch).
"""

from __future__ import annotations

import io
import logging
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory
from alembic.util import to_tuple

from .. import scripts
from ..unit import alembic_config_for

OFFLINE_URL = "postgresql://tenantctl-check@localhost/tenantctl_check"
"""Never connected to: offline mode only needs a dialect."""
TENANT = "tenantctl-check"


@dataclass(frozen=True, kw_only=True)
class Rendered:
    sql: str | None
    error: str | None  # ``AttributeError: … (line 12 of the revision)`` when upgrade() or env.py failed
    in_env: bool = False  # env.py itself failed, not the revision: every revision would fail alike


@dataclass(frozen=True, kw_only=True)
class Target:
    """What to render and how env.py sees the tenant."""

    ini: Path
    script: ScriptDirectory
    schema: str | None
    version_table: str


def revision(target: Target, rev: Script) -> Rendered:
    """The SQL of ``rev``'s own upgrade step, from its down revisions (a merge from all of them)."""
    downs = to_tuple(rev.down_revision, default=())

    def step(heads: Any, _ctx: Any) -> list[Any]:
        steps = target.script._upgrade_revs(rev.revision, heads)
        return [s for s in steps if s.revision.revision == rev.revision]  # not its depends_on

    return _render(target, step, starting=downs or None, destination=rev.revision, source=Path(rev.path))


def base_to_heads(target: Target) -> Rendered:
    """``upgrade heads --sql`` from an empty database: every revision, in the order a new tenant runs them."""

    def steps(heads: Any, _ctx: Any) -> list[Any]:
        return list(target.script._upgrade_revs("heads", heads))

    return _render(target, steps, starting=None, destination="heads", source=None)


def _render(
    target: Target, fn: Any, *, starting: Sequence[str] | None, destination: str, source: Path | None
) -> Rendered:
    buffer = io.StringIO()
    cfg = alembic_config_for(str(target.ini), OFFLINE_URL, TENANT, target.schema, target.version_table, None)
    cfg.output_buffer = buffer
    cfg.attributes["configure_logger"] = False
    try:
        with (
            _quiet(),
            EnvironmentContext(
                cfg, target.script, fn=fn, as_sql=True, starting_rev=starting, destination_rev=destination
            ),
        ):
            scripts.run_env(target.script)
    except Exception as exc:  # env.py and upgrade() are the user's code: any failure is a finding
        error, in_env = _describe(exc, source)
        return Rendered(sql=None, error=error, in_env=in_env)
    return Rendered(sql=buffer.getvalue(), error=None)


@contextmanager
def _quiet() -> Iterator[None]:
    """Alembic's INFO lines (``Running upgrade …``) once per revision are noise in a CI log; env.py's own
    ``fileConfig`` cannot undo a global ``logging.disable``."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


def _describe(exc: BaseException, source: Path | None) -> tuple[str, bool]:
    """The error on one line with where it was raised: the revision's line, else env.py's."""
    text = str(exc).strip()
    what = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if source is not None and Path(frame.filename) == source:
            return f"{what} (line {frame.lineno} of the revision)", False
        if Path(frame.filename).name == "env.py":
            return f"{what} (env.py line {frame.lineno})", True
    return what, False
