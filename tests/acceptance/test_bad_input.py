"""Every command's inputs, wrong the ways users get them wrong: one line on stderr naming the input and the
problem, a non-zero exit (2 bad input, 3 refused by preflight), no traceback, no password, and nothing
changed (registry, rollouts, tenant revisions).

One table, run through the CLI in a subprocess against one control DB and two tenants at 0002, shared by
the whole module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import MIGRATIONS_INI, DatabaseFactory
from tests.support.harness import Harness, alembic, tenant_revision

SECRET = "pw-SECRET-7"  # in every password a case types: it must never be printed


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    code: int
    needle: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."
    recorded: bool = False  # a tenant's own failure, recorded in a rollout: exit 1 and one ✗ line for it


FILES: dict[str, str | bytes] = {
    "python-tag.yaml": '- !!python/object/apply:os.system ["touch pwned"]\n',
    "bad-syntax.yaml": "tenants:\n  - id: a\n    url: [unclosed\n",
    "empty.yaml": "",
    "bad.json": '[{"id": "a", "url": "postgresql://h/db"},\n {"id": }]\n',
    "quote.csv": 'id,url\n"a,postgresql://h/db\nb,postgresql://h/b\n',
    "nul.csv": b"id,url\na\x00,postgresql://h/db\n",
    "columns.csv": "name,address\nacme,postgresql://h/db\n",
    "latin1.csv": "id,url\nacme,postgresql://h/db\ncafé,postgresql://h/db\n".encode("latin-1"),
    "dotenv/.env": b"TENANTCTL_PARALLELISM=\xff\xfe\n",
    "not-an-ini": "this is not an alembic.ini\n",
}

ADD = ("tenants", "add", "n1", "--url")
CASES = [
    # revision specs (the tenants are at 0002; four revisions, head 0004)
    pytest.param(Case(("upgrade", "head+100"), 3, "is 100 steps past the head 0004 for tenants t0, t1")),
    pytest.param(Case(("downgrade", "-50"), 3, "'-50' is 48 steps below base from 0002")),
    pytest.param(Case(("upgrade", "+7"), 3, "'+7' is 5 steps past the head 0004 from 0002")),
    pytest.param(Case(("upgrade", "nope"), 2, "unknown revision 'nope'")),
    pytest.param(Case(("upgrade", "head+100", "--dry-run"), 3, "'head+100' is 100 steps past the head")),
    # selectors
    pytest.param(Case(("upgrade", "head", "--tenant", "a;b"), 2, "unknown tenant 'a;b'")),
    pytest.param(Case(("upgrade", "head", "--tag", "nothing"), 2, "no enabled tenant matches --tag nothing")),
    # options and numbers
    pytest.param(Case(("upgrade", "head", "--parallel", "-1"), 2, "'--parallel'")),
    pytest.param(Case(("upgrade", "head", "--max-failure-rate", "150%"), 2, "between 0% and 100%")),
    pytest.param(Case(("upgrade", "head", "--max-failure-rate", "abc"), 2, "--max-failure-rate 'abc'")),
    pytest.param(Case(("rollouts", "--limit", "0"), 2, "'--limit'")),
    # rollout ids
    pytest.param(Case(("status", "999999"), 2, "unknown rollout '999999'")),
    pytest.param(Case(("status", "99999999999999999999"), 2, "'[ROLLOUT_ID]': Input should be less than")),
    # tenant ids, names and URLs
    pytest.param(Case(("tenants", "add", "Bad/Id", "--url", "postgresql://h/db"), 2, "invalid tenant id")),
    pytest.param(Case(("tenants", "add", "t0", "--url", "postgresql://h/db"), 2, "'t0' already exists")),
    pytest.param(Case((*ADD, f"postgresql://u:{SECRET}@h:99999/db"), 2, "port 99999 is out of range")),
    pytest.param(Case((*ADD, f"mysql://u:{SECRET}@h/db"), 2, "only postgresql:// and sqlite://")),
    pytest.param(Case((*ADD, "postgresql://h/db", "--schema", 'a"b'), 2, "invalid schema 'a\"b'")),
    # tenant files
    pytest.param(
        Case(("tenants", "import", "python-tag.yaml"), 2, "python-tag.yaml:1: unsupported YAML tag")
    ),
    pytest.param(Case(("tenants", "import", "bad-syntax.yaml"), 2, "bad-syntax.yaml:3: not valid YAML")),
    pytest.param(Case(("tenants", "import", "empty.yaml"), 2, "empty.yaml: the file is empty")),
    pytest.param(Case(("tenants", "import", "bad.json"), 2, "bad.json:2: not valid JSON")),
    pytest.param(Case(("tenants", "import", "quote.csv"), 2, "quote.csv:2: not valid CSV")),
    pytest.param(Case(("tenants", "import", "nul.csv"), 2, "nul.csv:2: a NUL byte")),
    pytest.param(Case(("tenants", "import", "columns.csv"), 2, "columns.csv:1: unknown column 'name'")),
    pytest.param(Case(("tenants", "import", "latin1.csv"), 2, "latin1.csv:3: not UTF-8 text")),
    pytest.param(Case(("tenants", "import", "dotenv"), 2, "dotenv: a directory, not a file")),
    pytest.param(Case(("tenants", "import", "missing.yaml"), 2, "missing.yaml: no such file")),
    # settings
    pytest.param(
        Case(("tenants", "list"), 2, "invalid TENANTCTL_PARALLELISM", {"TENANTCTL_PARALLELISM": "many"})
    ),
    pytest.param(
        Case(
            ("upgrade", "head"),
            2,
            "nowhere/alembic.ini' not found",
            {"TENANTCTL_ALEMBIC_CONFIG": "nowhere/alembic.ini"},
        )
    ),
    pytest.param(Case(("upgrade", "head"), 2, "not-an-ini", {"TENANTCTL_ALEMBIC_CONFIG": "not-an-ini"})),
    pytest.param(
        Case(
            ("tenants", "list"),
            2,
            "TENANTCTL_DATABASE_URL 'postgresql://postgres:***@127.0.0.1:99999/db': port 99999",
            {"TENANTCTL_DATABASE_URL": f"postgresql://postgres:{SECRET}@127.0.0.1:99999/db"},
        )
    ),
    pytest.param(
        Case(
            ("tenants", "list"),
            2,
            "control database postgresql://postgres:***@127.0.0.1:1/none",
            {"TENANTCTL_DATABASE_URL": f"postgresql://postgres:{SECRET}@127.0.0.1:1/none"},
        )
    ),
    pytest.param(
        Case(
            ("tenants", "list"),
            2,
            "run `tenantctl db upgrade`",
            {"TENANTCTL_DATABASE_URL": "sqlite:///never-upgraded.db"},
        )
    ),
    pytest.param(
        Case(
            ("tenants", "list"),
            2,
            "invalid TENANTCTL_WEBHOOK_URL: use http:// or https://",
            {"TENANTCTL_WEBHOOK_URL": f"ftp://hooks.example/{SECRET}"},
        )
    ),
    pytest.param(
        Case(
            ("tenants", "list"),
            2,
            "invalid TENANTCTL_BROKER_URL 'notaurl'",
            {"TENANTCTL_BROKER_URL": "notaurl"},
        )
    ),
    pytest.param(Case(("tenants", "list"), 2, "cannot read .env: not UTF-8 text", cwd="dotenv")),
    # a ${VAR} password not set where the rollout runs: that tenant fails (invalid_config), others go on
    pytest.param(
        Case(
            ("upgrade", "head", "--tag", "envref", "--json"),
            1,
            "envref: environment variable TCTL_UNSET_PW referenced by a tenant URL is not set",
            recorded=True,
        )
    ),
    pytest.param(
        Case(
            ("upgrade", "head"),
            2,
            "broker redis://127.0.0.1:1/0 does not answer",
            {"TENANTCTL_BROKER_URL": "redis://127.0.0.1:1/0"},
        )
    ),
]


@dataclass
class Bench:
    harness: Harness
    tenant_urls: list[str]


@pytest.fixture(scope="module")
def bench(pg_server: str, control_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    dbs = DatabaseFactory(pg_server)
    workdir = tmp_path_factory.mktemp("bad-input")
    for name, content in FILES.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    harness = Harness(
        dbs.url(dbs.create(template=control_template), driver="postgresql+asyncpg"), MIGRATIONS_INI, workdir
    )
    urls = [dbs.url(dbs.create(prefix="tctl_tenant")) for _ in range(2)]
    for url in urls:
        alembic(url, "upgrade", "0002")
    harness.register("t0", urls[0], tags=("x",))
    harness.register("t1", urls[1])
    harness.register("envref", "postgresql://app:${TCTL_UNSET_PW}@127.0.0.1:1/x", tags=("envref",))
    try:
        yield Bench(harness=harness, tenant_urls=urls)
    finally:
        dbs.drop_all()


def snapshot(bench: Bench) -> tuple[Any, ...]:
    h = bench.harness

    async def rollouts(store: Any) -> list[Any]:
        return [(r.id, r.state) for r, _counts in await store.list_rollouts(1000)]

    return (
        h.with_store(lambda s: s.list_tenants()),
        h.with_store(rollouts),
        [tenant_revision(u) for u in bench.tenant_urls],
        (h.workdir / "pwned").exists(),
    )


def cli(bench: Bench, case: Case) -> subprocess.CompletedProcess[str]:
    h = bench.harness
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *case.argv],
        cwd=h.workdir / case.cwd,
        env=h.env(**case.env),
        capture_output=True,
        text=True,
        timeout=10 if "TENANTCTL_BROKER_URL" in case.env else 120,
    )


def _id(case: Case) -> str:
    env = [f"{k}={v}".replace(SECRET, "***") for k, v in case.env.items()]
    return " ".join((*case.argv, *env, *([f"(in {case.cwd})"] if case.cwd != "." else [])))[:90]


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_bad_input_is_one_line_and_changes_nothing(bench: Bench, case: Case) -> None:
    before = snapshot(bench)
    result = cli(bench, case)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == case.code, result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout
    if case.recorded:
        assert [line for line in lines if case.needle in line] == [f"✗ {case.needle}"], result.stderr
        report = json.loads(result.stdout)
        (failed,) = report["tenants"]
        assert (failed["status"], failed["error_class"]) == ("failed", "invalid_config")
        return
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tenantctl: error: ") and case.needle in lines[0], lines[0]
    assert snapshot(bench) == before


def test_an_unreachable_target_records_no_rollout(bench: Bench) -> None:
    """What users see: the refusal, and `tenantctl rollouts --json` the same before and after it."""
    history = bench.harness.cli("rollouts", "--json")
    refused = bench.harness.cli("upgrade", "head+100", "--json")
    assert refused.returncode == 3 and refused.stdout == "", refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "tenantctl: error: revision 'head+100' is 100 steps past the head 0004 for tenants t0, t1"
    ]
    assert bench.harness.cli("rollouts", "--json").stdout == history.stdout
    assert [tenant_revision(u) for u in bench.tenant_urls] == ["0002", "0002"]
