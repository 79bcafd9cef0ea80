"""Finding the PostgreSQL and Redis the tests use: the machine's own when they answer on their usual
ports, otherwise throwaway servers started from the local binaries (and stopped at exit)."""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(host: str, port: int, what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not answers(host, port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"throwaway {what} did not start on {host}:{port}")
        time.sleep(0.1)


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(f"PostgreSQL is not running on 127.0.0.1:5432 and {name} is not installed")
    return found


def start_postgres() -> str:
    """initdb + postgres on a free port, trust auth, user postgres; as root, run as the postgres user."""
    port = free_port()
    data = tempfile.mkdtemp(prefix="tenantctl-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, _pg_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [
            *as_user,
            _pg_bin("postgres"),
            "-D",
            data,
            "-p",
            str(port),
            "-k",
            data,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(lambda: (proc.terminate(), proc.wait(10), shutil.rmtree(data, ignore_errors=True)))
    _wait("127.0.0.1", port, "PostgreSQL")
    time.sleep(0.5)
    return f"postgresql://postgres@127.0.0.1:{port}"


def start_redis() -> str:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(lambda: (proc.terminate(), proc.wait(10)))
    _wait("127.0.0.1", port, "Redis")
    return f"redis://127.0.0.1:{port}"


def postgres_url() -> str:
    if explicit := os.environ.get("TENANTCTL_TEST_PG"):
        return explicit
    return "postgresql://postgres@127.0.0.1:5432" if answers("127.0.0.1", 5432) else start_postgres()


def redis_url() -> str:
    if explicit := os.environ.get("TENANTCTL_TEST_REDIS"):
        return explicit
    return "redis://127.0.0.1:6379" if answers("127.0.0.1", 6379) else start_redis()
