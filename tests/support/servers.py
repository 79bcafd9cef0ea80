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


class ThrowawayPostgres:
    """A PostgreSQL server of our own on a free port (initdb, trust auth, user postgres; run as the
    postgres user when we are root), which a test may stop and start again on the same data."""

    def __init__(self) -> None:
        self.port = free_port()
        self.data = tempfile.mkdtemp(prefix="tenantctl-pg-")
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [
                *self.as_user,
                _pg_bin("initdb"),
                "-D",
                self.data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def start(self) -> ThrowawayPostgres:
        self.proc = subprocess.Popen(
            [
                *self.as_user,
                _pg_bin("postgres"),
                "-D",
                self.data,
                "-p",
                str(self.port),
                "-k",
                self.data,
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
        _wait("127.0.0.1", self.port, "PostgreSQL")
        deadline = time.monotonic() + 30
        while subprocess.run(  # accepting TCP is not yet accepting sessions (recovery after a stop)
            [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
        ).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("throwaway PostgreSQL does not accept sessions")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """A fast shutdown: sessions are cut, the data kept (``pg_ctl``, as the server's own user:
        runuser does not pass our signals on to the postmaster)."""
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(
                [*self.as_user, _pg_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"],
                check=True,
                capture_output=True,
            )
            self.proc.wait(30)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


def start_postgres() -> str:
    """A throwaway server for the whole session, removed at exit."""
    server = ThrowawayPostgres().start()
    atexit.register(server.destroy)
    return server.url


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
