"""The logging setup of every entry point: JSON lines with the run's fields, passwords scrubbed, and the
CLI's text lines as they always were."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator import logs
from orchestrator.settings import Settings

URL = "postgresql://app:S3cret-Pw@db.internal/t1"


class Stderr:
    """What the handler that ``logs.configure`` installs writes (on the stderr of the test's call)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys, self.seen = capsys, ""

    def getvalue(self) -> str:
        self.seen += self.capsys.readouterr().err
        return self.seen


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Stderr]:
    """The root logger and logs' own state are put back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(logs, "_handler", None)
    monkeypatch.setattr(logs, "_cli", None)
    yield Stderr(capsys)
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def lines(stream: Stderr) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_bound_fields_and_extras_scrubbed(stderr: Stderr) -> None:
    logs.configure(Settings(_env_file=None, log_format="JSON"))  # type: ignore[call-arg]
    log = logging.getLogger("tenantctl.test")
    with logs.bind(rollout_id=3, run_id=7, attempt=2):
        with logs.bind(tenant="t1"):
            log.info("cannot reach %s", URL, extra={"hint": f"password={'S3cret-Pw'}", "attempt": 9})
        try:
            raise RuntimeError(f"connect to {URL} failed")
        except RuntimeError:
            log.exception("unit failed")
    log.debug("not at INFO")
    log.warning("outside any run")

    first, second, third = lines(stderr)
    assert list(first)[:4] == ["time", "level", "logger", "message"]
    assert (
        first["time"].endswith("+00:00") and first["level"] == "INFO" and first["logger"] == "tenantctl.test"
    )
    assert first["message"] == "cannot reach postgresql://app:***@db.internal/t1"
    assert (first["rollout_id"], first["run_id"], first["tenant"]) == (3, 7, "t1")
    assert first["attempt"] == 9, "a field passed with extra= wins over the bound one"
    assert first["hint"] == "password=***"
    assert second["level"] == "ERROR" and "tenant" not in second and second["attempt"] == 2
    assert "RuntimeError: connect to postgresql://app:***@db.internal/t1" in second["exc_info"]
    assert third == {**third, "message": "outside any run"} and "run_id" not in third
    assert "S3cret-Pw" not in stderr.getvalue()


def test_configure_again_replaces_the_handler(stderr: Stderr) -> None:
    """The CLI configures when it reads the settings; `serve` configures again: one line per record."""
    logs.configure(Settings(_env_file=None), cli=True)  # type: ignore[call-arg]
    logs.configure(Settings(_env_file=None, log_format="json"))  # type: ignore[call-arg]
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    assert [r["logger"] for r in lines(stderr)] == ["uvicorn.error"]
    assert logs.configured() is False


def test_the_cli_text_lines_stay_bare_warnings(stderr: Stderr) -> None:
    logs.configure(Settings(_env_file=None), cli=True)  # type: ignore[call-arg]
    log = logging.getLogger("tenantctl.runs")
    log.info("run 3 attempt 1 already claimed or finished: duplicate message ignored")
    log.warning("rollout %s halted: %s", 4, f"budget crossed at {URL}")
    assert stderr.getvalue() == "rollout 4 halted: budget crossed at postgresql://app:***@db.internal/t1\n"

    logs.configure(Settings(_env_file=None, log_level="debug"), cli=True)  # type: ignore[call-arg]
    log.debug("now shown")
    assert stderr.getvalue().endswith("now shown\n")


def test_service_text_lines_have_time_level_and_logger(stderr: Stderr) -> None:
    logs.configure(Settings(_env_file=None))  # type: ignore[call-arg]
    logging.getLogger("uvicorn.access").info("GET /metrics 200")
    (line,) = stderr.getvalue().splitlines()
    assert line.endswith(" INFO    uvicorn.access: GET /metrics 200")
