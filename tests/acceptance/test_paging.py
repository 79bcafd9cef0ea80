"""`--limit` and `--offset` on `tenants list` and `rollouts`, through the CLI as users run it: pages in a
stable order that add up to the whole list, bounds past the end, the default unchanged (every tenant, the
20 newest rollouts), and a bad value as one line and exit 2 before anything is read."""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from orchestrator.controldb.store import Store
from orchestrator.models import Command
from orchestrator.planning import Plan
from tests.support.harness import Harness

IDS = [f"t{i:02d}" for i in range(25)]


def _parallel(harness: Harness, calls: Sequence[Sequence[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Independent CLI calls at once: each is mostly interpreter start."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda argv: harness.cli(*argv), calls))


def _ids(result: subprocess.CompletedProcess[str]) -> list[Any]:
    assert result.returncode == 0, result.stderr
    return [item["id"] for item in json.loads(result.stdout)]


@pytest.fixture
def registered(harness: Harness, tmp_path: Path) -> Harness:
    """25 tenants, imported in a shuffled order (the list's order must come from the ids)."""
    shuffled = random.Random(14).sample(IDS, len(IDS))
    path = tmp_path / "fleet.csv"
    path.write_text("id,url\n" + "".join(f"{i},postgresql://app@db/{i}\n" for i in shuffled))
    result = harness.cli("tenants", "import", str(path))
    assert result.returncode == 0, result.stderr
    return harness


def test_tenant_pages_in_id_order_add_up_to_the_list(registered: Harness) -> None:
    pages = [("--limit", "10", "--offset", str(start)) for start in (0, 10, 20)]
    calls = [
        ("tenants", "list", "--json"),
        *(("tenants", "list", "--json", *page) for page in pages),
        ("tenants", "list", "--json", "--limit", "1000", "--offset", "25"),
        ("tenants", "list", "--limit", "2", "--offset", "3"),
    ]
    everything, first, second, third, past, table = _parallel(registered, calls)
    assert _ids(everything) == IDS, "the default is still every tenant"
    assert _ids(first) + _ids(second) + _ids(third) == IDS
    assert len(_ids(third)) == 5 and _ids(past) == []
    assert table.returncode == 0, table.stderr
    shown = [line.split()[0] for line in table.stdout.splitlines()[1:]]
    assert shown == ["t03", "t04"] and "2 tenant(s)" in table.stderr


def _seed_rollouts(harness: Harness, n: int) -> list[int]:
    """``n`` rollouts with no tenant runs, straight through the store: the listing is under test here."""

    async def go(store: Store) -> list[int]:
        return [
            await store.create_rollout(
                command=Command.STAMP,
                target="head",
                selection={"tenants": [], "tags": [], "group": None, "exclude": []},
                created_by="tests",
                parallel=1,
                plan=Plan(),
                hosts={},
            )
            for _ in range(n)
        ]

    return harness.with_store(go)


def test_rollout_pages_newest_first(harness: Harness) -> None:
    newest_first = sorted(_seed_rollouts(harness, 25), reverse=True)
    calls = [
        ("rollouts", "--json"),
        ("rollouts", "--json", "--limit", "10", "--offset", "10"),
        ("rollouts", "--json", "--limit", "10", "--offset", "20"),
        ("rollouts", "--json", "--offset", "25"),
    ]
    default, second, rest, past = _parallel(harness, calls)
    assert _ids(default) == newest_first[:20], "the default is still the 20 newest"
    assert _ids(second) == newest_first[10:20]
    assert _ids(rest) == newest_first[20:] and len(_ids(rest)) == 5
    assert _ids(past) == []


BAD = [
    (("tenants", "list", "--limit", "0"), "'--limit'"),
    (("tenants", "list", "--limit", "ten"), "'--limit'"),
    (("tenants", "list", "--json", "--offset", "-1"), "'--offset'"),
    (("rollouts", "--offset", "-3"), "'--offset'"),
    (("rollouts", "--limit", "5", "--offset", "1.5"), "'--offset'"),
]


def test_a_bad_limit_or_offset_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Refused while the command line is read: the control DB (never created here) is not opened."""
    harness = Harness(f"sqlite:///{tmp_path / 'never.db'}", tmp_path / "alembic.ini", tmp_path)
    wrong = []
    for (argv, option), result in zip(BAD, _parallel(harness, [argv for argv, _ in BAD]), strict=True):
        lines = result.stderr.strip().splitlines()
        if (
            result.returncode != 2
            or result.stdout
            or len(lines) != 1
            or not lines[0].startswith("tenantctl: error: ")
            or option not in lines[0]
        ):
            wrong.append(f"{' '.join(argv)}: exit {result.returncode}, stderr {result.stderr!r}")
    assert not wrong, "\n".join(wrong)
    assert not (tmp_path / "never.db").exists()
