"""How a tenant URL becomes connections, without a server: psycopg's for the migration, asyncpg's for the
reads, and the shared Engine's refusal to connect outside a unit."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy.engine import make_url

from orchestrator import unit
from orchestrator.exceptions import ConfigurationError, EnvIntegrationError
from orchestrator.models import Command, UnitJob
from orchestrator.revisions import _connect_args, asyncpg_params

URL = "postgresql://app:pw@db1:6432/acme"


def _dsn_query(params: dict[str, object]) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(str(params["dsn"])).query).items()}


def test_asyncpg_params_map_libpq_options() -> None:
    params = asyncpg_params(
        URL + "?sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/etc/c.pem&sslkey=/etc/k.pem"
        "&options=-csearch_path%3Ds1&application_name=billing&connect_timeout=7&keepalives=1"
    )
    assert {k: params[k] for k in ("user", "password", "host", "port", "database")} == {
        "user": "app",
        "password": "pw",
        "host": "db1",
        "port": 6432,
        "database": "acme",
    }
    assert _dsn_query(params) == {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ca.pem",
        "sslcert": "/etc/c.pem",
        "sslkey": "/etc/k.pem",
    }
    assert "pw" not in str(params["dsn"]), "the password stays a keyword, out of the DSN"
    assert params["server_settings"] == {"options": "-csearch_path=s1", "application_name": "billing"}
    assert params["timeout"] == 7.0


def test_asyncpg_params_of_a_plain_url_are_the_url_only() -> None:
    assert asyncpg_params(URL) == {
        "user": "app",
        "password": "pw",
        "host": "db1",
        "port": 6432,
        "database": "acme",
    }


@pytest.mark.parametrize("option", ["channel_binding=require", "hostaddr=10.0.0.1", "search_path=s1"])
def test_asyncpg_params_refuse_what_asyncpg_cannot_honour(option: str) -> None:
    with pytest.raises(ConfigurationError, match=repr(option.split("=")[0])):
        asyncpg_params(f"{URL}?{option}")


def test_asyncpg_params_spellings() -> None:
    assert _dsn_query(asyncpg_params(URL + "?ssl=require")) == {"sslmode": "require"}
    fallback = asyncpg_params(URL + "?fallback_application_name=x")
    assert fallback["server_settings"] == {"application_name": "x"}
    assert "timeout" not in asyncpg_params(URL + "?connect_timeout=0")  # libpq: no limit; ours applies
    assert "server_settings" not in asyncpg_params(URL + "?client_encoding=UTF8")
    with pytest.raises(ConfigurationError, match="not a number"):
        asyncpg_params(URL + "?connect_timeout=soon")


def test_reads_name_themselves_unless_the_url_does_and_stay_read_only() -> None:
    plain = _connect_args(URL, 5.0, {"default_transaction_read_only": "on"})
    assert plain["server_settings"] == {
        "application_name": "tenantctl",
        "default_transaction_read_only": "on",
    }
    assert plain["timeout"] == plain["command_timeout"] == 5.0
    named = _connect_args(
        URL + "?application_name=app&connect_timeout=9&options=-cdefault_transaction_read_only%3Doff",
        5.0,
        {"default_transaction_read_only": "on"},
    )
    assert named["server_settings"]["application_name"] == "app"
    assert named["server_settings"]["default_transaction_read_only"] == "on"
    assert named["timeout"] == 9.0 and named["command_timeout"] == 5.0


def _job(url: str) -> UnitJob:
    return UnitJob(
        run_id=1,
        tenant_id="acme",
        command=Command.UPGRADE,
        target="head",
        url=url,
        schema=None,
        alembic_config="alembic.ini",
        lock_timeout_ms=1000,
        statement_timeout_ms=2000,
    )


def test_the_migration_connection_keeps_the_url_options_after_tenantctls() -> None:
    url = URL + "?options=-csearch_path%3Ds1&sslmode=require&connect_timeout=11"
    params = unit.connect_params(_job(url), make_url(url))
    assert params["options"] == (
        "-c lock_timeout=1000 -c statement_timeout=2000 -c application_name=tenantctl -csearch_path=s1"
    )
    assert params["sslmode"] == "require"
    assert params["connect_timeout"] == 11
    assert (params["dbname"], params["user"], params["password"]) == ("acme", "app", "pw")
    plain = unit.connect_params(_job(URL), make_url(URL))
    assert plain["connect_timeout"] == 5  # the job's
    assert plain["options"].endswith("application_name=tenantctl")


def test_the_shared_engine_refuses_a_connection_outside_a_unit() -> None:
    """No LookupError, no network: the Engine says what happened before connecting anywhere."""
    engine = unit._server_engine(make_url("postgresql://u:pw@127.0.0.1:1/db"))
    with pytest.raises(EnvIntegrationError, match="outside a tenant's unit of work"):
        engine.connect()


def test_one_process_serves_one_tenant_at_a_time() -> None:
    tenancy = unit._Tenancy()
    with tenancy.serving("server-a", "t1", {"dbname": "one"}):
        with tenancy.serving("server-a", "t1", {"dbname": "one"}):  # the unit's second connection
            assert tenancy.params("server-a") == {"dbname": "one"}
        assert tenancy.params("server-a") == {"dbname": "one"}
        with pytest.raises(EnvIntegrationError, match="already migrating tenant t1"):
            with tenancy.serving("server-a", "t2", {"dbname": "two"}):
                pass
        with pytest.raises(EnvIntegrationError, match="another database server"):
            tenancy.params("server-b")
    with pytest.raises(EnvIntegrationError, match="outside"):
        tenancy.params("server-a")
