"""Bad input, as a user types it: one line on stderr, a non-zero exit, nothing changed."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.harness import Harness, tenant_revision


@pytest.fixture
def fleet(harness: Harness, tenant_dbs: Callable[[int], list[str]]) -> list[str]:
    urls = tenant_dbs(2)
    harness.register("t0", urls[0], tags=("x",))
    harness.register("t1", urls[1])
    assert harness.cli("upgrade", "0002").returncode == 0
    return urls


def snapshot(harness: Harness, urls: list[str]) -> tuple[object, ...]:
    tenants = harness.with_store(lambda s: s.list_tenants())
    latest = harness.with_store(lambda s: s.get_rollout())
    return tenants, latest.id, [tenant_revision(u) for u in urls]


def assert_one_line_error(result: object, code: int = 2, *needles: str) -> None:
    stderr = result.stderr.strip()  # type: ignore[attr-defined]
    assert result.returncode == code, (result.returncode, stderr)  # type: ignore[attr-defined]
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("tenantctl: error: ")
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in stderr


CASES = {
    "unknown revision": (["upgrade", "nope"], "nope"),
    "unknown tenant": (["upgrade", "head", "--tenant", "ghost"], "ghost"),
    "empty selection": (["upgrade", "head", "--tag", "nothing"], "--tag nothing"),
    "unknown tenant on show": (["tenants", "show", "ghost"], "ghost"),
    "invalid URL": (["tenants", "add", "n1", "--url", "not a url"], "url"),
    "unsupported URL": (["tenants", "add", "n1", "--url", "mysql://u:pw1@h/db"], "postgresql"),
    "duplicate id": (
        ["tenants", "add", "t0", "--url", "postgresql://postgres@127.0.0.1/x"],
        "already exists",
    ),
    "schema with quote": (
        ["tenants", "add", "n1", "--url", "postgresql://h/db", "--schema", 'a"b'],
        "schema",
    ),
    "schema with semicolon": (
        ["tenants", "add", "n1", "--url", "postgresql://h/db", "--schema", "a;drop"],
        "schema",
    ),
    "schema too long": (["tenants", "add", "n1", "--url", "postgresql://h/db", "--schema", "s" * 64], "63"),
    "bad tenant id": (["tenants", "add", "Bad Id", "--url", "postgresql://h/db"], "tenant id"),
    "unknown option": (["upgrade", "head", "--frobnicate"], "frobnicate"),
    "bad parallel": (["upgrade", "head", "--parallel", "0"], "parallel"),
    "unknown rollout": (["status", "999999"], "999999"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_changes_nothing(harness: Harness, fleet: list[str], case: str) -> None:
    args, needle = CASES[case]
    before = snapshot(harness, fleet)
    assert_one_line_error(harness.cli(*args), 2, needle)
    assert snapshot(harness, fleet) == before


def test_invalid_settings_are_one_line(harness: Harness, fleet: list[str]) -> None:
    assert_one_line_error(
        harness.cli("tenants", "list", TENANTCTL_PARALLELISM="many"), 2, "TENANTCTL_PARALLELISM"
    )
    assert_one_line_error(
        harness.cli("upgrade", "head", TENANTCTL_ALEMBIC_CONFIG="/nonexistent/alembic.ini"), 2, "alembic.ini"
    )
    assert_one_line_error(
        harness.cli("tenants", "list", TENANTCTL_DATABASE_URL="postgresql://postgres@127.0.0.1:1/none"), 2
    )


def test_uninitialised_control_db_says_what_to_run(harness: Harness, tmp_path: Path) -> None:
    result = harness.cli("tenants", "list", TENANTCTL_DATABASE_URL=f"sqlite:///{tmp_path / 'new.db'}")
    assert_one_line_error(result, 2, "tenantctl db upgrade")


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a database that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_unreachable_tenant_fails_within_connect_timeout_others_go_on(
    harness: Harness, fleet: list[str], blackhole: int
) -> None:
    harness.register("hangs", f"postgresql://postgres:pw-hang@127.0.0.1:{blackhole}/db")
    harness.register("refused", "postgresql://postgres@127.0.0.1:1/db")
    started = time.monotonic()
    result = harness.cli("upgrade", "head", "--json", TENANTCTL_CONNECT_TIMEOUT="2")
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    by = {t["tenant"]: t for t in report["tenants"]}
    assert by["t0"]["status"] == by["t1"]["status"] == "succeeded"
    for name in ("hangs", "refused"):
        assert by[name]["status"] == "failed"
        assert by[name]["error_class"] == "unreachable"
        assert len(by[name]["error"].splitlines()) == 1
    assert "timed out" in by["hangs"]["error"]
    assert elapsed < 30, f"a hanging database must fail within the connect timeout, took {elapsed:.1f}s"
    assert "pw-hang" not in result.stdout + result.stderr
    assert [tenant_revision(u) for u in fleet] == ["0004", "0004"]
