"""Tenants that cannot be reached fail alone, within the connect timeout. Bad input (one line on stderr, a
non-zero exit, nothing changed) is the table in test_bad_input.py."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.harness import Harness, tenant_revision


@pytest.fixture
def fleet(harness: Harness, tenant_dbs: Callable[[int], list[str]]) -> list[str]:
    urls = tenant_dbs(2)
    harness.register("t0", urls[0], tags=("x",))
    harness.register("t1", urls[1])
    assert harness.cli("upgrade", "0002").returncode == 0
    return urls


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
