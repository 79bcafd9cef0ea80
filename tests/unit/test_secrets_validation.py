from __future__ import annotations

import pytest

from orchestrator import validation
from orchestrator.exceptions import ConfigurationError, InvalidTenant
from orchestrator.locking import lock_key
from orchestrator.models import TenantSpec
from orchestrator.registry import display_url, to_tenant
from orchestrator.secrets import SecretBox, mask_text, resolve_url, split_password


def test_split_password_removes_clear_password_and_keeps_env_references() -> None:
    url, pw = split_password("postgresql://app:s3cr%40t@db.example:5432/t1")
    assert pw == "s3cr@t"
    assert "s3cr" not in url
    assert split_password("postgresql://app:${T1_PW}@db/t1") == ("postgresql://app:${T1_PW}@db/t1", None)


def test_password_round_trips_through_encryption_only() -> None:
    box = SecretBox("a long random key")
    tenant = to_tenant(TenantSpec(id="t1", url="postgresql://app:hunter2@db/t1"), box)
    assert "hunter2" not in tenant.url
    assert tenant.password_token and "hunter2" not in tenant.password_token
    assert display_url(tenant) == "postgresql://app:***@db/t1"
    assert resolve_url(tenant.url, box.decrypt(tenant.password_token), {}) == "postgresql://app:hunter2@db/t1"


def test_one_token_per_role_and_database_never_across_them() -> None:
    box = SecretBox("a long random key")

    def token(tenant_id: str, url: str, schema: str | None = None) -> str:
        stored = to_tenant(TenantSpec(id=tenant_id, url=url, schema=schema), box).password_token
        assert stored
        return stored

    shared = {token(f"s{i}", "postgresql://app:pw@db/shared", f"s{i}") for i in range(3)}
    assert len(shared) == 1  # schema tenants of one database: one role, one password, one token
    others = {
        token("a", "postgresql://app:pw@db/a"),  # same password, another database
        token("b", "postgresql://ops:pw@db/shared"),  # same password, another role
        token("c", "postgresql://app:other@db/shared"),  # another password (a stale one, say)
    }
    assert len(others | shared) == 4
    fresh = SecretBox("a long random key")  # another process: nothing remembered, every token opens
    assert {fresh.decrypt(t) for t in shared | others} == {"pw", "other"}
    with pytest.raises(ConfigurationError, match="does not decrypt"):
        SecretBox("another key").decrypt(next(iter(shared)))


def test_clear_password_without_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="TENANTCTL_SECRET_KEY"):
        to_tenant(TenantSpec(id="t1", url="postgresql://app:hunter2@db/t1"), SecretBox(None))


def test_wrong_key_is_a_clear_error() -> None:
    token = SecretBox("one").encrypt("pw")
    with pytest.raises(ConfigurationError, match="does not decrypt"):
        SecretBox("two").decrypt(token)


def test_env_reference_resolved_only_from_given_environ() -> None:
    assert resolve_url("postgresql://app:${PW}@db/t1", None, {"PW": "x y"}).startswith("postgresql://app:x")
    with pytest.raises(ConfigurationError, match="PW"):
        resolve_url("postgresql://app:${PW}@db/t1", None, {})


def test_mask_text_scrubs_urls_known_secrets_and_password_pairs() -> None:
    text = 'connect postgresql://u:hunter2@h/db failed; dsn "password=hunter2 host=h"; again hunter2'
    masked = mask_text(text, ["hunter2"])
    assert "hunter2" not in masked
    assert "postgresql://u:***@h/db" in masked
    assert "hunter2" not in mask_text("x postgresql+asyncpg://u:p%40ss@h/db y")


@pytest.mark.parametrize("schema", ['a"b', "a;drop", "x" * 64, "1abc", "a b", ""])
def test_bad_schema_names_are_rejected(schema: str) -> None:
    with pytest.raises(InvalidTenant):
        validation.schema_name(schema)


@pytest.mark.parametrize("schema", ["tenant_1", "Tenant-2", "x" * 63, "_a$b"])
def test_good_schema_names_pass(schema: str) -> None:
    assert validation.schema_name(schema) == schema


@pytest.mark.parametrize("tid", ["Upper", "-lead", "a b", "x" * 64, "semi;colon", ""])
def test_bad_tenant_ids(tid: str) -> None:
    with pytest.raises(InvalidTenant):
        validation.tenant_id(tid)


def test_invalid_url_error_never_echoes_a_password() -> None:
    with pytest.raises(InvalidTenant) as info:
        validation.url("mysql://u:hunter2@h/db")
    assert "hunter2" not in str(info.value)
    with pytest.raises(InvalidTenant):
        validation.url("not a url")


def test_schema_only_on_postgresql() -> None:
    with pytest.raises(InvalidTenant, match="PostgreSQL"):
        validation.spec(TenantSpec(id="a", url="sqlite:///a.db", schema="s"))


def test_lock_key_is_stable_signed_64_bit_and_distinguishes_schema() -> None:
    key = lock_key("db1", "s1", "alembic_version")
    assert key == lock_key("db1", "s1", "alembic_version")
    assert -(2**63) <= key < 2**63
    assert key != lock_key("db1", "s2", "alembic_version")
    assert key != lock_key("db1", "s1", "other_version")
    # pinned: a change here would let old and new runners migrate one tenant at once
    assert lock_key("db", None, "alembic_version") == lock_key("db", "", "alembic_version")
