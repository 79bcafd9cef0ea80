"""A real third-party Alembic history, driven unmodified: optuna's RDB storage ships its alembic.ini,
env.py and versions inside its package (optuna/storages/_rdb/).

Its env.py builds its own Engine from ``sqlalchemy.url`` (``engine_from_config``, NullPool) and ignores
``config.attributes["connection"]`` and ``-x``; its alembic.ini names ``script_location = alembic``
relative to the working directory, as ``alembic -c …`` reads it, so tenantctl runs from that directory,
as a user's shell would. The tenants are registered with a driver the environment has
(``postgresql+psycopg``): env.py hands the URL to SQLAlchemy as given.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from tests.support.harness import Harness, tenant_revision


def _optuna_alembic_ini() -> Path:
    spec = importlib.util.find_spec("optuna")
    if spec is None or spec.origin is None:
        pytest.fail("optuna is in the test extras: pip install -e '.[test]'")
    ini = Path(spec.origin).parent / "storages" / "_rdb" / "alembic.ini"
    assert ini.is_file(), f"optuna no longer ships {ini}"
    return ini


def test_optuna_history_rolls_to_its_head_and_back_one_step(
    harness: Harness, tenant_dbs: Callable[[int], list[str]]
) -> None:
    ini = _optuna_alembic_ini()
    history = ScriptDirectory(str(ini.parent / "alembic"))
    head = history.get_current_head()
    assert head is not None
    head_script = history.get_revision(head)
    assert head_script is not None and isinstance(head_script.down_revision, str)
    previous = head_script.down_revision

    harness.alembic_ini = ini
    urls = tenant_dbs(3)
    for i, url in enumerate(urls):
        harness.register(f"t{i}", url.replace("postgresql://", "postgresql+psycopg://", 1))

    def tenantctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=ini.parent,  # optuna's script_location is relative: `cd` there, as for `alembic`
            env=harness.env(),
            capture_output=True,
            text=True,
            timeout=240,
        )

    up = tenantctl("upgrade", "head", "--json")
    assert up.returncode == 0, up.stdout + up.stderr
    report = json.loads(up.stdout)
    assert report["counts"]["succeeded"] == 3
    assert {t["to_revision"] for t in report["tenants"]} == {head}
    assert all(len(t["applied"]) == len(list(history.walk_revisions())) for t in report["tenants"])
    assert [tenant_revision(u) for u in urls] == [head] * 3

    down = tenantctl("downgrade", "-1", "--tenant", "t0", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    (row,) = json.loads(down.stdout)["tenants"]
    assert (row["from_revision"], row["to_revision"], row["applied"]) == (head, previous, [head])
    assert [tenant_revision(u) for u in urls] == [previous, head, head]

    current = tenantctl("current", "--json")
    assert current.returncode == 0, current.stderr
    assert {r["tenant"]: r["revision"] for r in json.loads(current.stdout)} == {
        "t0": previous,
        "t1": head,
        "t2": head,
    }
