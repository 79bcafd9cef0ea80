"""docker-compose.yml parses and names every service tenantctl needs (no Docker engine runs here)."""

from __future__ import annotations

from typing import Any

import yaml

from tests.conftest import ROOT


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_services_and_their_wiring() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "worker", "beat"} <= set(services)
    assert services["postgres"]["healthcheck"] and services["redis"]["healthcheck"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["worker"]["command"][0] == "worker" and services["beat"]["command"][0] == "beat"
    assert "container_name" not in services["worker"], "`--scale worker=N` needs unnamed containers"
    api = services["api"]
    assert api["command"][0] == "serve" and "--host" in api["command"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(api["healthcheck"]["test"]), "the healthcheck asks the API if it is ready"
    for name in ("migrate", "worker", "beat", "api"):
        assert services[name]["env_file"] == ".env"
        assert services[name]["build"] == "."


def test_no_secret_is_committed() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    password = _compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${") and ":?" in password, "the password must come from .env"
    assert "change-me" not in text
    assert not (ROOT / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text().split()
    example = (ROOT / ".env.example").read_text()
    assert "TENANTCTL_SECRET_KEY=\n" in example


def test_audit_cron_parses_and_rejects() -> None:
    import pytest

    from orchestrator.exceptions import ConfigurationError
    from workers.app import cron

    schedule = cron("15 2 * * 1-5")
    assert schedule.hour == {2} and schedule.minute == {15} and schedule.day_of_week == {1, 2, 3, 4, 5}
    for bad in ("0 3 * *", "99 3 * * *", "nightly"):
        with pytest.raises(ConfigurationError, match="TENANTCTL_AUDIT_CRON"):
            cron(bad)
